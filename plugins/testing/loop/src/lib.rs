//! Test plugin `loop`: never returns, so only the host's deadline ends the call.

use serde_json::Value;
use wasmdaemon_plugin_sdk::{Decision, Interest, Nodes, Plugin, PluginInfo, SetInfo};

/// Spins forever in `decide`, and in `validate-config` when the config is `"validate"`.
pub struct Loop;

/// Spins until interrupted.
pub fn spin() -> ! {
    let mut spins: u64 = 0;
    loop {
        // Opaque to the optimizer, so the loop stays a loop that does work.
        spins = std::hint::black_box(spins.wrapping_add(1));
    }
}

impl Plugin for Loop {
    type Config = Value;

    fn describe() -> PluginInfo {
        PluginInfo::new(
            "test-loop",
            env!("CARGO_PKG_VERSION"),
            "Loops forever in decide",
        )
        .with_interest(Interest::nothing())
    }

    fn validate_config(config: &Value, _: &[String]) -> Result<(), String> {
        if config.as_str() == Some("validate") {
            spin();
        }
        Ok(())
    }

    fn decide<'a>(
        _: &'a SetInfo,
        _: &'a Value,
        _: &'a Nodes<'a>,
    ) -> Result<Vec<Decision<'a>>, String> {
        spin()
    }
}

wasmdaemon_plugin_sdk::export_plugin!(Loop);
