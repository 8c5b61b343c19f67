//! Stock `label-rules` plugin: ordered label-selector rules pick a variant or skip a node.
//!
//! The decision logic works on the SDK's batch view, so the same code runs inside the
//! WebAssembly component and natively (tests, benchmarks).

pub mod config;

use wasmdaemon_plugin_sdk::{Decision, Interest, NodeRef, Nodes, Plugin, PluginInfo, SetInfo};

pub use config::Config;

/// The `label-rules` plugin.
pub struct LabelRules;

impl Plugin for LabelRules {
    type Config = Config;

    fn describe() -> PluginInfo {
        // `describe` cannot see the config, so it cannot narrow interest to the keys the rules
        // name; it asks for all labels and nothing else.
        PluginInfo::new(
            "label-rules",
            env!("CARGO_PKG_VERSION"),
            "Ordered rules, each a Kubernetes label selector leading to a variant or a skip; the \
             first rule that selects a node decides it, else the default applies.",
        )
        .with_interest(Interest::nothing().labels(["*"]))
    }

    fn validate_config(config: &Config, variants: &[String]) -> Result<(), String> {
        config.check(variants)
    }

    fn decide<'a>(
        _set: &'a SetInfo,
        config: &'a Config,
        nodes: &'a Nodes<'a>,
    ) -> Result<Vec<Decision<'a>>, String> {
        Ok(decide(config, nodes))
    }
}

wasmdaemon_plugin_sdk::export_plugin!(LabelRules);

/// Decides one node: the first rule whose selector matches, else the config's default.
pub fn decide_node<'c>(config: &'c Config, node: NodeRef<'_>) -> Decision<'c> {
    match config.rules.iter().find(|rule| rule.selector.matches(node)) {
        Some(rule) => rule.decision(),
        None => config.default.decision(),
    }
}

/// Decides a batch: one decision per node, in order. The decisions borrow from the config.
pub fn decide<'c>(config: &'c Config, nodes: &Nodes<'_>) -> Vec<Decision<'c>> {
    nodes.iter().map(|node| decide_node(config, node)).collect()
}

#[cfg(test)]
mod tests;
