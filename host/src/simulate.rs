//! `wasmdaemon simulate`: plans a set over a node dump offline and prints the outcome.

use std::fmt::Write as _;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Node;
use serde::Serialize;
use thiserror::Error;

use crate::crd::WasmDaemonSet;
use crate::planner::{self, Decider, Outcome, Plan, PlanError, PluginDecider};
use crate::plugin::{LoadedPlugin, PluginError};
use crate::registry::{Registry, RegistryError};

/// How to print the outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One aligned row per node.
    Table,
    /// An array of `{"node", "decision", "variant", "reason"}`.
    Json,
    /// The pods that would be created, as multi-document YAML.
    Yaml,
}

/// Why a simulation could not run.
#[derive(Debug, Error)]
pub enum SimulateError {
    #[error("spec.policy.plugin: {0}")]
    Registry(#[from] RegistryError),

    #[error("spec.policy.config: {0}")]
    InvalidConfig(PluginError),

    #[error("{0}")]
    Plan(#[from] PlanError),

    #[error("failed to print the result: {0}")]
    Output(String),
}

/// One node's outcome in the shape `--output json` prints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Row {
    pub node: String,
    /// `run` or `skip`.
    pub decision: &'static str,
    pub variant: Option<String>,
    pub reason: String,
}

/// The outcome of a simulation.
pub struct Simulation {
    pub plan: Plan,
    /// The plugin that decided, when the set has a policy.
    pub plugin: Option<Arc<LoadedPlugin>>,
}

/// Loads the set's plugin (if any), validates the set's config with it, and plans the set over
/// `nodes` with no existing pods.
pub fn simulate(
    set: &WasmDaemonSet,
    nodes: &[Node],
    registry: &Registry,
) -> Result<Simulation, SimulateError> {
    let mut decider = None;
    if let Some(policy) = &set.spec.policy {
        let plugin = registry.load(&policy.plugin, policy.digest.as_deref())?;
        let info = planner::set_info(set);
        plugin
            .validate_config(&info.config, &info.variants)
            .map_err(SimulateError::InvalidConfig)?;
        decider = Some(PluginDecider::new(plugin));
    }
    let plan = planner::plan(
        set,
        nodes,
        &[],
        decider.as_mut().map(|d| d as &mut dyn Decider),
    )?;
    Ok(Simulation {
        plan,
        plugin: decider.map(|d| d.plugin().clone()),
    })
}

/// The per-node rows of a plan.
pub fn rows(plan: &Plan) -> Vec<Row> {
    plan.nodes
        .iter()
        .map(|n| match &n.outcome {
            Outcome::Run { variant, .. } => Row {
                node: n.node.clone(),
                decision: "run",
                variant: variant.clone(),
                reason: match variant {
                    Some(v) => format!("eligible; variant {v}"),
                    None => "eligible".to_string(),
                },
            },
            Outcome::Skip { reason, .. } => Row {
                node: n.node.clone(),
                decision: "skip",
                variant: None,
                reason: reason.clone(),
            },
        })
        .collect()
}

/// Prints a simulation in the chosen format.
pub fn format(simulation: &Simulation, format: Format) -> Result<String, SimulateError> {
    let plan = &simulation.plan;
    match format {
        Format::Json => serde_json::to_string_pretty(&rows(plan))
            .map(|s| s + "\n")
            .map_err(|e| SimulateError::Output(e.to_string())),
        Format::Yaml => {
            let mut out = String::new();
            for create in &plan.create {
                let yaml = serde_yaml::to_string(&create.pod)
                    .map_err(|e| SimulateError::Output(e.to_string()))?;
                out.push_str("---\n");
                out.push_str(&yaml);
            }
            Ok(out)
        }
        Format::Table => Ok(table(simulation)),
    }
}

fn table(simulation: &Simulation) -> String {
    let rows = rows(&simulation.plan);
    let width =
        |f: fn(&Row) -> usize, title: &str| rows.iter().map(f).max().unwrap_or(0).max(title.len());
    let node_w = width(|r| r.node.len(), "NODE");
    let variant_w = width(|r| r.variant.as_deref().map_or(1, str::len), "VARIANT");

    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:node_w$}  {:8}  {:variant_w$}  REASON",
        "NODE", "DECISION", "VARIANT"
    );
    for row in &rows {
        let variant = row.variant.as_deref().unwrap_or("-");
        let _ = writeln!(
            out,
            "{:node_w$}  {:8}  {:variant_w$}  {}",
            row.node, row.decision, variant, row.reason
        );
    }
    let running = rows.iter().filter(|r| r.decision == "run").count();
    let _ = write!(out, "\n{running} of {} nodes run the set", rows.len());
    if let Some(plugin) = &simulation.plugin {
        let _ = write!(
            out,
            " (plugin {} {} {})",
            plugin.info.name,
            plugin.info.version,
            &plugin.digest[..plugin.digest.len().min(19)]
        );
    }
    out.push('\n');
    out
}
