//! Test plugin `many-decisions`: answers a million decisions for any batch.

use wasmdaemon_plugin_sdk::{Decision, Interest, NoConfig, Node, Plugin, PluginInfo, SetInfo};

/// How many decisions the plugin returns.
pub const DECISIONS: usize = 1_000_000;

/// Floods the host with decisions.
pub struct ManyDecisions;

impl Plugin for ManyDecisions {
    type Config = NoConfig;

    fn describe() -> PluginInfo {
        PluginInfo::new(
            "test-many-decisions",
            env!("CARGO_PKG_VERSION"),
            "Answers 1M decisions",
        )
        .with_interest(Interest::nothing())
    }

    fn decide(_: &SetInfo, _: &NoConfig, _: &[Node]) -> Result<Vec<Decision>, String> {
        Ok(vec![Decision::skip("many"); DECISIONS])
    }
}

wasmdaemon_plugin_sdk::export_plugin!(ManyDecisions);
