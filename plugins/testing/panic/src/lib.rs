//! Test plugin `panic`: panics with a known message, which traps on wasm32-wasip2.

use wasmdaemon_plugin_sdk::{Decision, Interest, NoConfig, Node, Plugin, PluginInfo, SetInfo};

/// The message the panic carries, for tests that look for it in the host's report.
pub const MESSAGE: &str = "test-panic: deliberate panic in decide";

/// Panics in `decide`.
pub struct Panic;

impl Plugin for Panic {
    type Config = NoConfig;

    fn describe() -> PluginInfo {
        PluginInfo::new("test-panic", env!("CARGO_PKG_VERSION"), "Panics in decide")
            .with_interest(Interest::nothing())
    }

    fn decide(_: &SetInfo, _: &NoConfig, nodes: &[Node]) -> Result<Vec<Decision>, String> {
        panic!("{MESSAGE} ({} nodes)", nodes.len());
    }
}

wasmdaemon_plugin_sdk::export_plugin!(Panic);
