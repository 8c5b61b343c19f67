//! Stock `hardware` plugin: picks a pod variant from a node's GPUs, architecture, memory and type.
//!
//! The decision logic lives in [`logic`] and works on the SDK's batch view, so the same code runs
//! inside the WebAssembly component and natively (tests, benchmarks).

pub mod config;
pub mod logic;

use wasmdaemon_plugin_sdk::{Decision, Interest, Nodes, Plugin, PluginInfo, SetInfo};

pub use config::Config;

/// The `hardware` plugin.
pub struct Hardware;

impl Plugin for Hardware {
    type Config = Config;

    fn describe() -> PluginInfo {
        PluginInfo::new(
            "hardware",
            env!("CARGO_PKG_VERSION"),
            "Chooses a variant from node hardware: GPU vendor, count and product, architecture, \
             operating system, instance type, memory and CPU capacity. First matching rule wins.",
        )
        .with_interest(
            Interest::nothing()
                .labels(logic::LABELS.iter().copied())
                .resources(logic::RESOURCES.iter().copied()),
        )
    }

    fn validate_config(config: &Config, variants: &[String]) -> Result<(), String> {
        config.check(variants)
    }

    fn decide<'a>(
        _set: &'a SetInfo,
        config: &'a Config,
        nodes: &'a Nodes<'a>,
    ) -> Result<Vec<Decision<'a>>, String> {
        Ok(logic::decide(config, nodes))
    }
}

wasmdaemon_plugin_sdk::export_plugin!(Hardware);

#[cfg(test)]
mod tests;
