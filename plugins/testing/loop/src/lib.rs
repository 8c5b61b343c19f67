//! Test plugin `loop`: never returns, so only the host's deadline ends the call.

use wasmdaemon_plugin_sdk::{Decision, Interest, NoConfig, Node, Plugin, PluginInfo, SetInfo};

/// Spins forever in `decide`.
pub struct Loop;

impl Plugin for Loop {
    type Config = NoConfig;

    fn describe() -> PluginInfo {
        PluginInfo::new(
            "test-loop",
            env!("CARGO_PKG_VERSION"),
            "Loops forever in decide",
        )
        .with_interest(Interest::nothing())
    }

    fn decide(_: &SetInfo, _: &NoConfig, _: &[Node]) -> Result<Vec<Decision>, String> {
        let mut spins: u64 = 0;
        loop {
            // Opaque to the optimizer, so the loop stays a loop that does work.
            spins = std::hint::black_box(spins.wrapping_add(1));
        }
    }
}

wasmdaemon_plugin_sdk::export_plugin!(Loop);
