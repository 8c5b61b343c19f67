//! Test plugin `many-decisions`: answers a million decisions for any batch.

use serde_json::Value;
use wasmdaemon_plugin_sdk::{Decision, Interest, Nodes, Plugin, PluginInfo, SetInfo};

/// How many decisions the plugin returns unless the config says otherwise.
pub const DECISIONS: usize = 1_000_000;

/// Floods the host with decisions.
pub struct ManyDecisions;

impl Plugin for ManyDecisions {
    /// Any config; `{"count": N}` answers `N` decisions instead of [`DECISIONS`]. A million plain
    /// decisions take tens of MiB of guest memory, near the host's limit; a smaller count surely
    /// lets the answer reach the host's count check.
    type Config = Value;

    fn describe() -> PluginInfo {
        PluginInfo::new(
            "test-many-decisions",
            env!("CARGO_PKG_VERSION"),
            "Answers 1M decisions",
        )
        .with_interest(Interest::nothing())
    }

    fn decide<'a>(
        _: &'a SetInfo,
        config: &'a Value,
        _: &'a Nodes<'a>,
    ) -> Result<Vec<Decision<'a>>, String> {
        let count = config.get("count").and_then(Value::as_u64);
        let count = count.map_or(DECISIONS, |count| {
            usize::try_from(count).unwrap_or(usize::MAX)
        });
        Ok(vec![Decision::plain(); count])
    }
}

wasmdaemon_plugin_sdk::export_plugin!(ManyDecisions);
