//! Test plugin `unknown-variant`: runs every node with a variant no set declares.

use wasmdaemon_plugin_sdk::{Decision, Interest, NoConfig, Nodes, Plugin, PluginInfo, SetInfo};

/// The variant name the plugin answers, which no set declares.
pub const VARIANT: &str = "no-such-variant";

/// Answers an undeclared variant for every node.
pub struct UnknownVariant;

impl Plugin for UnknownVariant {
    type Config = NoConfig;

    fn describe() -> PluginInfo {
        PluginInfo::new(
            "test-unknown-variant",
            env!("CARGO_PKG_VERSION"),
            "Names a bad variant",
        )
        .with_interest(Interest::nothing())
    }

    fn decide<'a>(
        _: &'a SetInfo,
        _: &'a NoConfig,
        nodes: &'a Nodes<'a>,
    ) -> Result<Vec<Decision<'a>>, String> {
        Ok(nodes.iter().map(|_| Decision::variant(VARIANT)).collect())
    }
}

wasmdaemon_plugin_sdk::export_plugin!(UnknownVariant);
