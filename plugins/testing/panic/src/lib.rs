//! Test plugin `panic`: panics with a known message, which traps on wasm32-wasip2.

use serde_json::Value;
use wasmdaemon_plugin_sdk::{Decision, Interest, Nodes, Plugin, PluginInfo, SetInfo};

/// The start of the panic message, for tests that look for it in the host's report.
pub const MESSAGE: &str = "test-panic: deliberate panic";

/// Panics in `decide`, and in `validate-config` when the config is `"validate"`.
pub struct Panic;

impl Plugin for Panic {
    type Config = Value;

    fn describe() -> PluginInfo {
        PluginInfo::new("test-panic", env!("CARGO_PKG_VERSION"), "Panics in decide")
            .with_interest(Interest::nothing())
    }

    fn validate_config(config: &Value, _: &[String]) -> Result<(), String> {
        if config.as_str() == Some("validate") {
            panic!("{MESSAGE} in validate-config");
        }
        Ok(())
    }

    fn decide<'a>(
        _: &'a SetInfo,
        _: &'a Value,
        nodes: &'a Nodes<'a>,
    ) -> Result<Vec<Decision<'a>>, String> {
        panic!("{MESSAGE} in decide ({} nodes)", nodes.len());
    }
}

wasmdaemon_plugin_sdk::export_plugin!(Panic);
