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
                node: n.node.to_string(),
                decision: "run",
                variant: variant.clone(),
                reason: match variant {
                    Some(v) => format!("eligible; variant {v}"),
                    None => "eligible".to_string(),
                },
            },
            Outcome::Skip { reason, .. } => Row {
                node: n.node.to_string(),
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

/// Text for a terminal: control characters (a newline in a node name, an escape sequence in a
/// plugin's reason) are shown escaped instead of breaking rows or driving the terminal.
fn printable(text: &str) -> String {
    if !text.chars().any(char::is_control) {
        return text.to_string();
    }
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

fn table(simulation: &Simulation) -> String {
    let mut rows = rows(&simulation.plan);
    for row in &mut rows {
        row.node = printable(&row.node);
        row.reason = printable(&row.reason);
        row.variant = row.variant.as_deref().map(printable);
    }
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

/// How one node's outcome changes between two plugin versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Change {
    /// Skipped before, runs after.
    Start,
    /// Ran before, skipped after.
    Stop,
    /// Runs both times, with another variant.
    Variant,
    /// Runs both times with the same variant, but the rendered pod differs (plugin overrides).
    Pod,
}

/// One node whose outcome changes, in the shape `--compare --output json` prints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChangedNode {
    pub node: String,
    pub change: Change,
    pub before: Row,
    pub after: Row,
}

/// Counts of a comparison.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CompareSummary {
    pub nodes: usize,
    pub unchanged: usize,
    pub start: usize,
    pub stop: usize,
    pub variant: usize,
    pub pod: usize,
}

/// Which plugin version a side of a comparison ran.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VersionInfo {
    pub name: String,
    pub version: String,
    pub digest: String,
}

/// What swapping the set's plugin from one version to another would change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Comparison {
    pub old: VersionInfo,
    pub new: VersionInfo,
    pub changes: Vec<ChangedNode>,
    pub summary: CompareSummary,
}

/// Plans `set` over `nodes` once with each plugin version and lists the nodes whose decision,
/// variant or rendered pod differs. Each version must accept the set's config.
pub fn compare(
    set: &WasmDaemonSet,
    nodes: &[Node],
    old: Arc<LoadedPlugin>,
    new: Arc<LoadedPlugin>,
) -> Result<Comparison, SimulateError> {
    let info = planner::set_info(set);
    let mut plans = Vec::with_capacity(2);
    for plugin in [&old, &new] {
        plugin
            .validate_config(&info.config, &info.variants)
            .map_err(SimulateError::InvalidConfig)?;
        let mut decider = PluginDecider::new(plugin.clone());
        plans.push(planner::plan(set, nodes, &[], Some(&mut decider))?);
    }

    let (before, after) = (&plans[0], &plans[1]);
    let mut summary = CompareSummary {
        nodes: after.nodes.len(),
        ..CompareSummary::default()
    };
    let mut changes = Vec::new();
    for ((b, a), (row_b, row_a)) in before
        .nodes
        .iter()
        .zip(&after.nodes)
        .zip(rows(before).into_iter().zip(rows(after)))
    {
        let change = match (&b.outcome, &a.outcome) {
            (Outcome::Skip { .. }, Outcome::Run { .. }) => Some(Change::Start),
            (Outcome::Run { .. }, Outcome::Skip { .. }) => Some(Change::Stop),
            (Outcome::Run { variant: vb, .. }, Outcome::Run { variant: va, .. }) if vb != va => {
                Some(Change::Variant)
            }
            (Outcome::Run { hash: hb, .. }, Outcome::Run { hash: ha, .. }) if hb != ha => {
                Some(Change::Pod)
            }
            _ => None,
        };
        match change {
            None => summary.unchanged += 1,
            Some(change) => {
                *match change {
                    Change::Start => &mut summary.start,
                    Change::Stop => &mut summary.stop,
                    Change::Variant => &mut summary.variant,
                    Change::Pod => &mut summary.pod,
                } += 1;
                changes.push(ChangedNode {
                    node: a.node.to_string(),
                    change,
                    before: row_b,
                    after: row_a,
                });
            }
        }
    }

    let version = |p: &LoadedPlugin| VersionInfo {
        name: p.info.name.clone(),
        version: p.info.version.clone(),
        digest: p.digest.clone(),
    };
    Ok(Comparison {
        old: version(&old),
        new: version(&new),
        changes,
        summary,
    })
}

/// Prints a comparison as a table of changed nodes and a summary, or as JSON.
pub fn format_comparison(comparison: &Comparison, format: Format) -> Result<String, SimulateError> {
    match format {
        Format::Table => {}
        Format::Json => {
            return serde_json::to_string_pretty(comparison)
                .map(|s| s + "\n")
                .map_err(|e| SimulateError::Output(e.to_string()));
        }
        Format::Yaml => {
            return serde_yaml::to_string(comparison)
                .map_err(|e| SimulateError::Output(e.to_string()));
        }
    }
    let outcome = |r: &Row| match &r.variant {
        Some(v) => format!("run:{v}"),
        None => r.decision.to_string(),
    };
    let changes = &comparison.changes;
    let node_w = changes
        .iter()
        .map(|c| c.node.len())
        .max()
        .unwrap_or(0)
        .max(4);
    let before_w = changes
        .iter()
        .map(|c| outcome(&c.before).len())
        .max()
        .unwrap_or(0)
        .max(6);
    let after_w = changes
        .iter()
        .map(|c| outcome(&c.after).len())
        .max()
        .unwrap_or(0)
        .max(5);

    let mut out = String::new();
    let short = |d: &str| d[..d.len().min(19)].to_string();
    let _ = writeln!(
        out,
        "comparing {} {} {} -> {} {} {}\n",
        comparison.old.name,
        comparison.old.version,
        short(&comparison.old.digest),
        comparison.new.name,
        comparison.new.version,
        short(&comparison.new.digest)
    );
    let _ = writeln!(
        out,
        "{:node_w$}  {:before_w$}  {:after_w$}  CHANGE",
        "NODE", "BEFORE", "AFTER"
    );
    for c in changes {
        let change = serde_json::to_value(c.change)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "{:node_w$}  {:before_w$}  {:after_w$}  {change}",
            c.node,
            outcome(&c.before),
            outcome(&c.after)
        );
    }
    let s = &comparison.summary;
    let _ = writeln!(
        out,
        "\n{} of {} nodes change: {} start, {} stop, {} change variant, {} change pod; {} unchanged",
        s.nodes - s.unchanged,
        s.nodes,
        s.start,
        s.stop,
        s.variant,
        s.pod,
        s.unchanged
    );
    Ok(out)
}
