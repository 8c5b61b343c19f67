//! The controller: watches sets, nodes and pods, and drives every set toward its plan.
//!
//! One [`kube::runtime::Controller`] runs [`reconcile`](reconcile::reconcile) for one set at a
//! time and at most `concurrency` sets at once. Pods come from a reflector cache and nodes from
//! a [`NodeTable`](crate::node_table::NodeTable), both shared by every set. A node change
//! triggers only the sets it can affect, and their passes decide only the changed nodes (see
//! [`nodes`]); node updates that cannot change placement do nothing at all.

mod backoff;
mod claim;
mod context;
mod expectations;
pub mod explain;
mod nodes;
mod plan;
mod reconcile;
mod rollout;
mod status;
mod sync;

use std::future::Future;
use std::sync::Arc;

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::runtime::controller::{self, Controller};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use thiserror::Error;

use crate::crd::{GROUP, WasmDaemonSet};
use crate::registry::Registry;
use crate::telemetry::ControllerMetrics;

pub use context::Context;
pub use status::{PLUGIN_READY, ROLLOUT_COMPLETE};

/// How long running reconciles may take to finish once shutdown is requested. A pass that
/// is cut short leaves nothing half-done that the next host would not redo: its writes are
/// each atomic, and the next host rebuilds its state from the cluster.
const DRAIN_LIMIT: std::time::Duration = std::time::Duration::from_secs(10);

/// How the controller runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Watch sets (and their pods) in this namespace only; all namespaces when `None`.
    pub namespace: Option<String>,
    /// Most sets reconciled at once.
    pub concurrency: u16,
    /// Most plugin calls running at once, each on a blocking thread.
    pub plugin_slots: usize,
    /// Names this controller instance in events (the pod name, in cluster).
    pub instance: Option<String>,
    /// Where the controller counts what it does.
    pub metrics: Arc<ControllerMetrics>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            namespace: None,
            concurrency: 4,
            plugin_slots: std::thread::available_parallelism().map_or(2, |n| n.get()),
            instance: None,
            metrics: Arc::default(),
        }
    }
}

/// A reconcile that did not finish; the set is retried with backoff.
#[derive(Debug, Error)]
pub enum Error {
    #[error("failed to {action} pod {pod}: {}", reconcile::api_message(source))]
    Pod {
        action: &'static str,
        pod: String,
        source: kube::Error,
    },

    #[error("failed to write the status: {0}")]
    Status(#[source] kube::Error),

    #[error("invalid set: {0}")]
    InvalidSet(String),

    #[error("failed to plan: {0}")]
    Plan(String),

    #[error("the node or pod cache stopped")]
    CacheStopped,

    #[error("the node or pod cache has not finished its first list")]
    CacheNotReady,
}

/// Runs the controller until `shutdown` resolves, then lets running reconciles finish.
pub async fn run(
    client: Client,
    registry: Registry,
    options: Options,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let (sets_api, pods_api): (Api<WasmDaemonSet>, Api<Pod>) = match &options.namespace {
        Some(ns) => (
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client.clone(), ns),
        ),
        None => (Api::all(client.clone()), Api::all(client.clone())),
    };

    let nodes = Arc::new(nodes::Nodes::default());
    let node_events =
        watcher(Api::<Node>::all(client.clone()), watcher::Config::default()).default_backoff();

    let (pods, pod_writer) = reflector::store();
    let pod_events = watcher(pods_api, watcher::Config::default())
        .default_backoff()
        .modify(slim_pod)
        .reflect(pod_writer)
        .touched_objects();

    let shutdown = shutdown.shared();
    let ctx = Arc::new(Context::new(
        client,
        registry,
        nodes.clone(),
        pods,
        &options,
    ));
    let controller = Controller::new(sets_api, watcher::Config::default());
    let sets = controller.store();
    let plugins = ctx.clone();
    let counted = ctx.clone();
    let node_changes = nodes::triggers(
        nodes,
        node_events,
        sets.clone(),
        options.metrics.clone(),
        move |set| plugins.plugin_of(set),
    );
    let plugin_changes = crate::registry::sets::replan_triggers(&ctx.registry, sets.clone());
    let drained = controller
        .with_config(controller::Config::default().concurrency(options.concurrency))
        .watches_stream(pod_events, move |pod| {
            let concerned = sets_for_pod(&sets, &pod);
            counted.pod_event(&concerned);
            concerned
        })
        .reconcile_on(node_changes)
        .reconcile_on(plugin_changes)
        .graceful_shutdown_on(shutdown.clone())
        .run(reconcile::reconcile, reconcile::error_policy, ctx.clone())
        .for_each(|result| {
            match result {
                Ok((set, _)) => {
                    ctx.metrics.reconciles.inc();
                    tracing::trace!(%set, "reconciled");
                }
                Err(controller::Error::ObjectNotFound(set)) => ctx.forget(&set),
                Err(error) => tracing::debug!(%error, "reconcile did not finish"),
            }
            futures::future::ready(())
        });
    // Once shutdown is requested no reconcile starts. The controller's stream ends when the
    // running ones finish, but only after its watches yield, which an unreachable API server
    // delays indefinitely; so the count of running reconciles decides, within the limit.
    let watched = ctx.clone();
    let deadline = async move {
        shutdown.await;
        let start = tokio::time::Instant::now();
        while start.elapsed() < DRAIN_LIMIT {
            if watched.reconciles_running() == 0 {
                return true;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        false
    };
    tokio::select! {
        () = drained => tracing::info!("controller stopped"),
        idle = deadline => match idle {
            true => tracing::info!("controller stopped"),
            false => tracing::warn!(limit = ?DRAIN_LIMIT,
                "running reconciles did not finish after shutdown was requested; stopping anyway"),
        },
    }
}

/// Keeps of a cached pod only what a pass reads: its metadata without managed fields and
/// annotations, the node it is on or pinned to, its phase and its condition statuses. A pod as
/// the API server returns it is several kilobytes, most of it containers, volumes, tolerations
/// and container statuses; at 30,000 pods that is most of the controller's memory.
pub fn slim_pod(pod: &mut Pod) {
    pod.metadata.managed_fields = None;
    pod.metadata.annotations = None;
    if let Some(spec) = pod.spec.take() {
        let pinned = spec
            .affinity
            .and_then(|a| a.node_affinity)
            .map(|node_affinity| k8s_openapi::api::core::v1::Affinity {
                node_affinity: Some(k8s_openapi::api::core::v1::NodeAffinity {
                    preferred_during_scheduling_ignored_during_execution: None,
                    ..node_affinity
                }),
                ..Default::default()
            });
        pod.spec = Some(k8s_openapi::api::core::v1::PodSpec {
            affinity: pinned.filter(|_| spec.node_name.is_none()),
            node_name: spec.node_name,
            ..Default::default()
        });
    }
    if let Some(status) = pod.status.take() {
        let conditions = status.conditions.map(|list| {
            list.into_iter()
                .map(|c| k8s_openapi::api::core::v1::PodCondition {
                    message: None,
                    reason: None,
                    last_probe_time: None,
                    ..c
                })
                .collect()
        });
        pod.status = Some(k8s_openapi::api::core::v1::PodStatus {
            phase: status.phase,
            conditions,
            ..Default::default()
        });
    }
}

/// The sets a pod event concerns: its controller when that is a set, otherwise every set of
/// its namespace whose selector matches it (a possible adoption).
fn sets_for_pod(
    sets: &reflector::Store<WasmDaemonSet>,
    pod: &Pod,
) -> Vec<ObjectRef<WasmDaemonSet>> {
    let ns = pod.namespace().unwrap_or_default();
    if let Some(owner) = claim::controller_of(pod) {
        let ours =
            owner.kind == "WasmDaemonSet" && owner.api_version.split('/').next() == Some(GROUP);
        return match ours {
            true => vec![ObjectRef::new(&owner.name).within(&ns)],
            false => Vec::new(),
        };
    }
    sets.state()
        .iter()
        .filter(|s| s.namespace().as_deref() == Some(ns.as_str()))
        .filter(|s| {
            !crate::selector::is_empty(&s.spec.selector)
                && crate::selector::matches(&s.spec.selector, pod.metadata.labels.as_ref())
                    .unwrap_or(false)
        })
        .map(|s| ObjectRef::from_obj(&**s))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::planner::pod_node;

    fn pod(node_name: Option<&str>) -> Pod {
        let mut pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": "p", "namespace": "ns", "uid": "u", "resourceVersion": "7",
                "labels": {"app": "a", "wasmdaemon.io/spec-hash": "h"},
                "annotations": {"big": "x".repeat(4096)},
                "ownerReferences": [{"apiVersion": "wasmdaemon.io/v1alpha1",
                    "kind": "WasmDaemonSet", "name": "s", "uid": "su", "controller": true}],
                "managedFields": [{"manager": "kubectl"}]
            },
            "spec": {
                "containers": [{"name": "c", "image": "i"}],
                "tolerations": [{"operator": "Exists"}],
                "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [{"matchFields": [
                        {"key": "metadata.name", "operator": "In", "values": ["n1"]}]}]}}}
            },
            "status": {
                "phase": "Running",
                "conditions": [{"type": "Ready", "status": "True", "message": "m",
                                "lastTransitionTime": "2026-01-01T00:00:00Z"}],
                "containerStatuses": [{"name": "c", "image": "i", "imageID": "", "ready": true,
                                       "restartCount": 0}]
            }
        }))
        .unwrap();
        if let Some(name) = node_name {
            pod.spec.as_mut().unwrap().node_name = Some(name.to_string());
        }
        pod
    }

    #[test]
    fn a_slimmed_pod_answers_every_question_a_pass_asks() {
        for bound in [None, Some("n1")] {
            let full = pod(bound);
            let mut slim = full.clone();
            slim_pod(&mut slim);
            assert_eq!(pod_node(&slim), Some("n1"));
            assert_eq!(rollout::is_ready(&slim), rollout::is_ready(&full));
            assert_eq!(
                rollout::available_in(&slim, std::time::Duration::from_secs(5), Default::default()),
                rollout::available_in(&full, std::time::Duration::from_secs(5), Default::default())
            );
            assert_eq!(rollout::pod_hash(&slim), Some("h"));
            assert_eq!(claim::controller_of(&slim), claim::controller_of(&full));
            let (m, f) = (&slim.metadata, &full.metadata);
            assert_eq!(
                (&m.uid, &m.resource_version, &m.labels),
                (&f.uid, &f.resource_version, &f.labels)
            );
            assert_eq!(
                slim.status.as_ref().unwrap().phase.as_deref(),
                Some("Running")
            );
            assert!(slim.metadata.annotations.is_none() && slim.metadata.managed_fields.is_none());
            assert!(slim.spec.as_ref().unwrap().containers.is_empty());
            let size = |p: &Pod| serde_json::to_string(p).unwrap().len();
            assert!(
                size(&slim) * 4 < size(&full),
                "{} vs {}",
                size(&slim),
                size(&full)
            );
        }
    }
}
