//! Plans a set off the async workers: loads its plugin, keeps its decider, calls the planner.

use std::collections::HashSet;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod};

use crate::crd::WasmDaemonSet;
use crate::planner::{self, Decider, Plan, PlanError, PluginDecider};
use crate::plugin::bindings::SetInfo;
use crate::registry::{Registry, RegistryError};

use super::context::{Context, SetState};

/// A plan and the plugin version behind it.
pub struct Planned {
    pub plan: Plan,
    /// `<name>@<digest>` when the set has a policy.
    pub plugin: Option<String>,
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

/// Plans `set` on a blocking thread once a plugin slot is free. The set's decider travels
/// to the thread and back, so a later pass reuses what it memoized.
pub async fn plan(
    ctx: &Context,
    state: &mut SetState,
    set: Arc<WasmDaemonSet>,
    nodes: Vec<Node>,
    pods: Vec<Pod>,
) -> Result<Planned, Failure> {
    let Ok(_slot) = ctx.plugin_slots.clone().acquire_owned().await else {
        return Err(Failure::Other("plugin slots closed".to_string()));
    };
    let registry = ctx.registry.clone();
    let decider = state.decider.take();
    let validated = state.validated.take();
    let span = tracing::Span::current();
    let task = tokio::task::spawn_blocking(move || {
        let _entered = span.enter();
        plan_blocking(&registry, decider, validated, &set, &nodes, &pods)
    });
    match task.await {
        Ok((decider, validated, result)) => {
            state.decider = decider;
            state.validated = validated;
            result
        }
        Err(error) => Err(Failure::Other(format!("planning thread failed: {error}"))),
    }
}

fn plan_blocking(
    registry: &Registry,
    mut decider: Option<PluginDecider>,
    mut validated: Option<SetInfo>,
    set: &WasmDaemonSet,
    nodes: &[Node],
    pods: &[Pod],
) -> (
    Option<PluginDecider>,
    Option<SetInfo>,
    Result<Planned, Failure>,
) {
    let Some(policy) = &set.spec.policy else {
        let result = planner::plan(set, nodes, pods, None)
            .map(|plan| Planned { plan, plugin: None })
            .map_err(plan_failure);
        return (None, None, result);
    };

    let plugin = match registry.load(&policy.plugin, policy.digest.as_deref()) {
        Ok(plugin) => plugin,
        Err(error) => return (decider, validated, Err(registry_failure(error))),
    };
    let swapped = decider
        .as_ref()
        .is_none_or(|d| d.plugin().digest != plugin.digest);
    if swapped {
        if let Some(old) = &decider {
            tracing::info!(plugin = %policy.plugin, from = %old.plugin().digest,
                to = %plugin.digest, "plugin swapped");
        }
        decider = Some(PluginDecider::new(plugin.clone()));
        validated = None;
    }

    let info = planner::set_info(set);
    if validated.as_ref() != Some(&info) {
        if let Err(error) = plugin.validate_config(&info.config, &info.variants) {
            return (decider, None, Err(plan_failure(PlanError::Plugin(error))));
        }
        validated = Some(info);
    }

    let (decider, result) = run_planner(decider, set, nodes, pods);
    let id = format!("{}@{}", policy.plugin, plugin.digest);
    let result = result.map(|plan| Planned {
        plan,
        plugin: Some(id),
    });
    (decider, validated, result)
}

fn run_planner(
    mut decider: Option<PluginDecider>,
    set: &WasmDaemonSet,
    nodes: &[Node],
    pods: &[Pod],
) -> (Option<PluginDecider>, Result<Plan, Failure>) {
    let result = planner::plan(
        set,
        nodes,
        pods,
        decider.as_mut().map(|d| d as &mut dyn Decider),
    );
    if let Some(decider) = decider.as_mut() {
        let names: HashSet<&str> = nodes
            .iter()
            .filter_map(|n| n.metadata.name.as_deref())
            .collect();
        decider.retain_nodes(|n| names.contains(n));
    }
    (decider, result.map_err(plan_failure))
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
        PlanError::Render { .. } => Failure::Other(error.to_string()),
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
