//! Plans a set off the async workers: loads its plugin, keeps its decider, calls the planner.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;

use crate::crd::WasmDaemonSet;
use crate::planner::{self, Applied, Decider, Plan, PlanError, PlanKey, PluginDecider, SetPlanner};
use crate::plugin::LoadedPlugin;
use crate::plugin::bindings::SetInfo;
use crate::registry::{Registry, RegistryError};

use super::context::{Context, SetState};
use super::nodes::Nodes;

/// A plan and the plugin version behind it.
pub struct Planned {
    /// The plan, when pods were given.
    pub plan: Option<Plan>,
    /// `<name>@<digest>` when the set has a policy.
    pub plugin: Option<String>,
    /// The plugin version that decided, when the set has a policy.
    pub loaded: Option<Arc<LoadedPlugin>>,
    /// What deciding did: how many nodes, and whether any decision changed.
    pub applied: Applied,
}

/// Why a set could not be planned.
#[derive(Debug)]
pub enum Failure {
    /// The plugin could not be loaded, rejected the config, or failed to answer; the set is
    /// left exactly as it is.
    Plugin { reason: String, message: String },
    /// Anything else: a rendering error, or the planning thread panicked.
    Other(String),
}

/// What a set's planning carries to the blocking thread and back.
struct Memory {
    decider: Option<PluginDecider>,
    validated: Option<SetInfo>,
    planner: SetPlanner,
}

/// Plans `set` on a blocking thread once a plugin slot is free: decides the nodes that changed
/// since the last pass, then, when `pods` are given, compares every decision with them. The
/// set's decider and kept decisions travel to the thread and back.
pub async fn plan(
    ctx: &Context,
    state: &mut SetState,
    set: Arc<WasmDaemonSet>,
    pods: Option<Vec<Pod>>,
) -> Result<Planned, Failure> {
    let Ok(_slot) = ctx.plugin_slots.clone().acquire_owned().await else {
        return Err(Failure::Other("plugin slots closed".to_string()));
    };
    let registry = ctx.registry.clone();
    let nodes = ctx.nodes.clone();
    let memory = Memory {
        decider: state.decider.take(),
        validated: state.validated.take(),
        planner: std::mem::take(&mut state.planner),
    };
    let span = tracing::Span::current();
    let task = tokio::task::spawn_blocking(move || {
        let _entered = span.enter();
        plan_blocking(&registry, &nodes, memory, &set, pods.as_deref())
    });
    match task.await {
        Ok((memory, result)) => {
            state.decider = memory.decider;
            state.validated = memory.validated;
            state.planner = memory.planner;
            result
        }
        Err(error) => Err(Failure::Other(format!("planning thread failed: {error}"))),
    }
}

fn plan_blocking(
    registry: &Registry,
    nodes: &Nodes,
    mut memory: Memory,
    set: &WasmDaemonSet,
    pods: Option<&[Pod]>,
) -> (Memory, Result<Planned, Failure>) {
    let Some(policy) = &set.spec.policy else {
        memory.decider = None;
        memory.validated = None;
        let result = decide(&mut memory.planner, nodes, set, None, None)
            .map(|applied| Planned {
                plan: pods.map(|pods| memory.planner.plan(set, pods)),
                plugin: None,
                loaded: None,
                applied,
            })
            .map_err(plan_failure);
        return (memory, result);
    };

    let plugin = match registry.load(&policy.plugin, policy.digest.as_deref()) {
        Ok(plugin) => plugin,
        Err(error) => return (memory, Err(registry_failure(error))),
    };
    let swapped = memory
        .decider
        .as_ref()
        .is_none_or(|d| d.plugin().digest != plugin.digest);
    if swapped {
        if let Some(old) = &memory.decider {
            tracing::info!(plugin = %policy.plugin, from = %old.plugin().digest,
                to = %plugin.digest, "plugin swapped");
        }
        memory.decider = Some(PluginDecider::new(plugin.clone()));
        memory.validated = None;
    }

    let info = planner::set_info(set);
    if memory.validated.as_ref() != Some(&info) {
        if let Err(error) = plugin.validate_config(&info.config, &info.variants) {
            memory.validated = None;
            return (memory, Err(plan_failure(PlanError::Plugin(error))));
        }
        memory.validated = Some(info);
    }

    let decider = memory.decider.as_mut().map(|d| d as &mut dyn Decider);
    let result = decide(
        &mut memory.planner,
        nodes,
        set,
        Some(&plugin.digest),
        decider,
    );
    let id = format!("{}@{}", policy.plugin, plugin.digest);
    let result = result
        .map(|applied| Planned {
            plan: pods.map(|pods| memory.planner.plan(set, pods)),
            plugin: Some(id),
            loaded: Some(plugin.clone()),
            applied,
        })
        .map_err(plan_failure);
    (memory, result)
}

/// Decides the nodes that changed since the planner's last pass (every node when the set or
/// its plugin changed).
fn decide(
    planner: &mut SetPlanner,
    nodes: &Nodes,
    set: &WasmDaemonSet,
    digest: Option<&str>,
    decider: Option<&mut dyn Decider>,
) -> Result<Applied, PlanError> {
    let key = PlanKey::of(set, digest);
    let delta = nodes.read().delta(planner.since(&key));
    planner.apply(set, key, &delta, decider)
}

fn plan_failure(error: PlanError) -> Failure {
    match error {
        PlanError::Plugin(error) => Failure::Plugin {
            reason: error.kind().to_string(),
            message: error.to_string(),
        },
        PlanError::MissingPlugin(_) => Failure::Plugin {
            reason: "PluginNotFound".to_string(),
            message: error.to_string(),
        },
        PlanError::Render { .. } | PlanError::StaleDelta => Failure::Other(error.to_string()),
    }
}

fn registry_failure(error: RegistryError) -> Failure {
    let reason = match &error {
        RegistryError::Plugin(e) => e.kind(),
        RegistryError::Unknown { .. } => "PluginNotFound",
        RegistryError::DigestMismatch { .. } => "PluginDigestMismatch",
        RegistryError::ShadowsStock { .. } => "PluginShadowsStock",
        RegistryError::InvalidName(_) => "PluginInvalidName",
        RegistryError::Read { .. } => "PluginReadFailed",
    };
    Failure::Plugin {
        reason: reason.to_string(),
        message: error.to_string(),
    }
}
