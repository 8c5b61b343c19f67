//! Test plugin `wrong-count`: answers one decision fewer than the batch has nodes.

use wasmdaemon_plugin_sdk::{Decision, Interest, NoConfig, Nodes, Plugin, PluginInfo, SetInfo};

/// Returns the wrong number of decisions.
pub struct WrongCount;

impl Plugin for WrongCount {
    type Config = NoConfig;

    fn describe() -> PluginInfo {
        PluginInfo::new(
            "test-wrong-count",
            env!("CARGO_PKG_VERSION"),
            "Miscounts decisions",
        )
        .with_interest(Interest::nothing())
    }

    fn decide<'a>(
        _: &'a SetInfo,
        _: &'a NoConfig,
        nodes: &'a Nodes<'a>,
    ) -> Result<Vec<Decision<'a>>, String> {
        let count = if nodes.is_empty() { 1 } else { nodes.len() - 1 };
        Ok(vec![Decision::plain(); count])
    }
}

wasmdaemon_plugin_sdk::export_plugin!(WrongCount);
