//! Test plugin `describe-trap`: panics in `describe`, so loading it fails.

use wasmdaemon_plugin_sdk::{Decision, NoConfig, Nodes, Plugin, PluginInfo, SetInfo};

/// The panic message.
pub const MESSAGE: &str = "test-describe-trap: deliberate panic in describe";

/// Panics in `describe`; never gets further.
pub struct DescribeTrap;

impl Plugin for DescribeTrap {
    type Config = NoConfig;

    fn describe() -> PluginInfo {
        panic!("{MESSAGE}");
    }

    fn decide<'a>(
        _: &'a SetInfo,
        _: &'a NoConfig,
        nodes: &'a Nodes<'a>,
    ) -> Result<Vec<Decision<'a>>, String> {
        Ok(vec![Decision::plain(); nodes.len()])
    }
}

wasmdaemon_plugin_sdk::export_plugin!(DescribeTrap);
