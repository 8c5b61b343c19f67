//! `wasmdaemon explain`: why one node does or does not run a set, and with which variant.

use std::fmt::Write as _;

use k8s_openapi::api::core::v1::Node;
use thiserror::Error;

use crate::crd::WasmDaemonSet;
use crate::planner::Outcome;
use crate::registry::Registry;
use crate::simulate::{self, SimulateError};

/// Why there is nothing to explain.
#[derive(Debug, Error)]
pub enum ExplainError {
    #[error("node {0:?} is not among the given nodes")]
    UnknownNode(String),

    #[error(transparent)]
    Simulate(#[from] SimulateError),
}

/// Plans `set` over `nodes` the way the controller does and describes the answer for `node`
/// in a few lines: the upstream predicates, the plugin's answer, the variant and pod hash.
pub fn explain(
    set: &WasmDaemonSet,
    nodes: &[Node],
    node: &str,
    registry: &Registry,
) -> Result<String, ExplainError> {
    let index = nodes
        .iter()
        .position(|n| n.metadata.name.as_deref() == Some(node))
        .ok_or_else(|| ExplainError::UnknownNode(node.to_string()))?;
    // Only this node is planned: the answer does not depend on the others.
    let simulation = simulate::simulate(set, &nodes[index..=index], registry)?;
    let set_name = set.metadata.name.as_deref().unwrap_or_default();
    let mut out = String::new();
    let Some(plan) = simulation.plan.nodes.first() else {
        return Err(ExplainError::UnknownNode(node.to_string()));
    };

    let placement = &plan.placement;
    let predicates = match (&placement.reason, placement.should_run) {
        (None, _) => "pass".to_string(),
        (Some(reason), true) => format!("pass ({reason})"),
        (Some(reason), false) if placement.should_continue_running => {
            format!("no new pod, an existing one may stay: {reason}")
        }
        (Some(reason), false) => format!("fail: {reason}"),
    };
    let _ = writeln!(out, "set:        {set_name}");
    let _ = writeln!(out, "node:       {node}");
    let _ = writeln!(out, "predicates: {predicates}");
    match &simulation.plugin {
        Some(plugin) => {
            let _ = writeln!(out, "plugin:     {}@{}", plugin.name(), plugin.digest);
        }
        None => {
            let _ = writeln!(out, "plugin:     none (placed as an upstream DaemonSet)");
        }
    }
    match &plan.outcome {
        Outcome::Run { variant, hash, .. } => {
            let variant = variant.as_deref().unwrap_or("(plain template)");
            let _ = writeln!(out, "decision:   run");
            let _ = writeln!(out, "variant:    {variant}");
            let _ = writeln!(out, "pod hash:   {hash}");
        }
        Outcome::Skip {
            reason,
            keep_existing,
        } => {
            let _ = writeln!(out, "decision:   skip");
            let _ = writeln!(out, "reason:     {reason}");
            if *keep_existing {
                let _ = writeln!(out, "existing:   a pod already on the node keeps running");
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::{Limits, PluginEngine};

    fn set() -> WasmDaemonSet {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "wasmdaemon.io/v1alpha1", "kind": "WasmDaemonSet",
            "metadata": {"name": "agent", "namespace": "ns"},
            "spec": {"selector": {"matchLabels": {"app": "agent"}},
                     "template": {"metadata": {"labels": {"app": "agent"}},
                                  "spec": {"nodeSelector": {"disk": "ssd"},
                                           "containers": [{"name": "a", "image": "a:1"}]}}}
        }))
        .unwrap()
    }

    fn node(name: &str, disk: &str) -> Node {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "labels": {"disk": disk}},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}
        }))
        .unwrap()
    }

    #[test]
    fn explains_a_node_that_runs_and_one_that_does_not() {
        let registry = Registry::new(PluginEngine::new(Limits::default()).unwrap(), None);
        let nodes = [node("fast", "ssd"), node("slow", "hdd")];
        let yes = explain(&set(), &nodes, "fast", &registry).unwrap();
        assert!(yes.contains("decision:   run"), "{yes}");
        let no = explain(&set(), &nodes, "slow", &registry).unwrap();
        assert!(no.contains("decision:   skip"), "{no}");
        assert!(matches!(
            explain(&set(), &nodes, "gone", &registry),
            Err(ExplainError::UnknownNode(_))
        ));
    }
}
