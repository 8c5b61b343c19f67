//! What every reconcile shares: the client, the caches, the plugin registry, the plugin-call
//! slots, the event recorder, and each set's memory between passes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, api::DynamicObject};
use tokio::sync::Semaphore;

use crate::crd::WasmDaemonSet;
use crate::planner::{PluginDecider, SetPlanner};
use crate::plugin::LoadedPlugin;
use crate::plugin::bindings::SetInfo;
use crate::registry::Registry;
use crate::telemetry::ControllerMetrics;

use super::Options;
use super::backoff::FailedPodBackoff;
use super::expectations::Expectations;
use super::nodes::Nodes;

/// What the controller remembers about one set between passes. Only one pass of a set runs
/// at a time, so the lock is never contended for long.
#[derive(Default)]
pub struct SetState {
    /// Kept across passes so unchanged nodes are not sent to the plugin again; replaced when
    /// the plugin's digest changes.
    pub decider: Option<PluginDecider>,
    /// The plugin input whose config the current decider's plugin accepted.
    pub validated: Option<SetInfo>,
    /// Every node's decision, kept so a pass decides only nodes that changed.
    pub planner: SetPlanner,
    pub expectations: Expectations,
    pub backoff: FailedPodBackoff,
    /// What the last complete pass saw, while nothing it depends on has changed since.
    pub settled: Option<Settled>,
}

/// The inputs of a complete pass. A later pass that finds the same inputs and no changed node
/// decision would write nothing, so it stops after deciding.
#[derive(Debug, Clone, PartialEq)]
pub struct Settled {
    pub generation: Option<i64>,
    /// The set's pod-event count ([`Context::pod_events`]) before the pass read the pods.
    pub pod_events: u64,
    /// The plugin notice the pass reported, if any.
    pub notice: Option<(&'static str, String)>,
    /// `<name>@<digest>` of the plugin version the status names.
    pub plugin: Option<String>,
    /// When a pass must look again anyway: a rollout or backoff wait ends, or the resync.
    pub until: std::time::Instant,
}

/// State shared by every reconcile.
pub struct Context {
    pub client: Client,
    pub nodes: Arc<Nodes>,
    pub pods: Store<Pod>,
    pub registry: Arc<Registry>,
    /// Bounds plugin calls (which run on blocking threads) across all sets.
    pub plugin_slots: Arc<Semaphore>,
    pub metrics: Arc<ControllerMetrics>,
    recorder: Recorder,
    sets: Mutex<HashMap<ObjectRef<WasmDaemonSet>, Arc<tokio::sync::Mutex<SetState>>>>,
    failures: Mutex<HashMap<ObjectRef<WasmDaemonSet>, u32>>,
    /// The plugin version each set was last planned with: what it reads decides which node
    /// changes concern the set.
    plugins: Mutex<HashMap<ObjectRef<WasmDaemonSet>, Arc<LoadedPlugin>>>,
    /// Pod watch events seen per set (its own pods, and orphans it could adopt).
    pod_events: Mutex<HashMap<ObjectRef<WasmDaemonSet>, u64>>,
    /// Reconciles running now.
    running: std::sync::atomic::AtomicUsize,
}

/// Counts a reconcile as running while it lives.
pub struct Running<'a>(&'a Context);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0
            .running
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Context {
    pub fn new(
        client: Client,
        registry: Registry,
        nodes: Arc<Nodes>,
        pods: Store<Pod>,
        options: &Options,
    ) -> Self {
        let reporter = Reporter {
            controller: "wasmdaemon".to_string(),
            instance: options.instance.clone(),
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            nodes,
            pods,
            registry: Arc::new(registry),
            plugin_slots: Arc::new(Semaphore::new(options.plugin_slots.max(1))),
            metrics: options.metrics.clone(),
            sets: Mutex::default(),
            failures: Mutex::default(),
            plugins: Mutex::default(),
            pod_events: Mutex::default(),
            running: Default::default(),
        }
    }

    /// The memory of `set`, created on first use.
    pub fn state(&self, set: &ObjectRef<WasmDaemonSet>) -> Arc<tokio::sync::Mutex<SetState>> {
        let mut sets = self.sets.lock().unwrap_or_else(PoisonError::into_inner);
        sets.entry(set.clone()).or_default().clone()
    }

    /// Drops everything remembered about a set that is gone.
    pub fn forget(&self, set: &ObjectRef<DynamicObject>) {
        let name = set.name.as_str();
        let ns = set.namespace.as_deref();
        let same =
            |key: &ObjectRef<WasmDaemonSet>| key.name == name && key.namespace.as_deref() == ns;
        self.sets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|key, _| !same(key));
        self.failures
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|key, _| !same(key));
        self.plugins
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|key, _| !same(key));
        self.pod_events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|key, _| !same(key));
    }

    /// Marks a reconcile as running until the returned guard is dropped.
    pub fn running(&self) -> Running<'_> {
        self.running
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Running(self)
    }

    /// How many reconciles are running now.
    pub fn reconciles_running(&self) -> usize {
        self.running.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Counts a pod watch event concerning `sets`. Called after the pod cache took the event,
    /// so a pass that reads the count before the cache sees at least those events.
    pub fn pod_event(&self, sets: &[ObjectRef<WasmDaemonSet>]) {
        let mut counts = self
            .pod_events
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for set in sets {
            *counts.entry(set.clone()).or_default() += 1;
        }
    }

    /// Pod watch events seen for `set` so far.
    pub fn pod_events(&self, set: &ObjectRef<WasmDaemonSet>) -> u64 {
        let counts = self
            .pod_events
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        counts.get(set).copied().unwrap_or(0)
    }

    /// Records the plugin version `set` was planned with (`None`: it has no policy, or its
    /// plugin failed to load).
    pub fn planned_with(&self, set: &ObjectRef<WasmDaemonSet>, plugin: Option<Arc<LoadedPlugin>>) {
        let mut plugins = self.plugins.lock().unwrap_or_else(PoisonError::into_inner);
        match plugin {
            Some(plugin) => plugins.insert(set.clone(), plugin),
            None => plugins.remove(set),
        };
    }

    /// The plugin version `set` was last planned with.
    pub fn plugin_of(&self, set: &ObjectRef<WasmDaemonSet>) -> Option<Arc<LoadedPlugin>> {
        let plugins = self.plugins.lock().unwrap_or_else(PoisonError::into_inner);
        plugins.get(set).cloned()
    }

    /// Counts a failed pass of `set`; returns how many failed in a row.
    pub fn failed(&self, set: &ObjectRef<WasmDaemonSet>) -> u32 {
        let mut failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        let count = failures.entry(set.clone()).or_default();
        *count = count.saturating_add(1);
        *count
    }

    /// Clears the failure count of `set` after a pass that finished.
    pub fn succeeded(&self, set: &ObjectRef<WasmDaemonSet>) {
        self.failures
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(set);
    }

    /// Records an event about `set`. Losing an event is not worth failing the pass for.
    pub async fn event(
        &self,
        set: &WasmDaemonSet,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let event = Event {
            type_,
            reason: reason.to_string(),
            note: Some(note),
            action: action.to_string(),
            secondary: None,
        };
        if let Err(error) = self.recorder.publish(&event, &set.object_ref(&())).await {
            tracing::debug!(%error, reason, "failed to record event");
        }
    }
}
