//! Test plugin `huge-reason`: skips the first node with a 10 MiB reason.

use wasmdaemon_plugin_sdk::{Decision, Interest, NoConfig, Nodes, Plugin, PluginInfo, SetInfo};

/// The length of the skip reason, in bytes.
pub const REASON_BYTES: usize = 10 << 20;

/// Answers an oversized skip reason.
pub struct HugeReason;

impl Plugin for HugeReason {
    type Config = NoConfig;

    fn describe() -> PluginInfo {
        PluginInfo::new(
            "test-huge-reason",
            env!("CARGO_PKG_VERSION"),
            "Gives a 10 MiB reason",
        )
        .with_interest(Interest::nothing())
    }

    fn decide<'a>(
        _: &'a SetInfo,
        _: &'a NoConfig,
        nodes: &'a Nodes<'a>,
    ) -> Result<Vec<Decision<'a>>, String> {
        let mut decisions = vec![Decision::plain(); nodes.len()];
        if let Some(first) = decisions.first_mut() {
            *first = Decision::skip("x".repeat(REASON_BYTES));
        }
        Ok(decisions)
    }
}

wasmdaemon_plugin_sdk::export_plugin!(HugeReason);
