//! Test plugin `memory-bomb`: allocates until the host refuses to grow memory.

use serde_json::Value;
use wasmdaemon_plugin_sdk::{Decision, Interest, Nodes, Plugin, PluginInfo, SetInfo};

/// Grows linear memory in `decide`, and in `validate-config` when the config is `"validate"`,
/// until the host refuses; the failed allocation aborts, which traps.
pub struct MemoryBomb;

const CHUNK: usize = 1 << 20;

/// Allocates and writes 1 MiB blocks until allocation fails.
pub fn explode() -> ! {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        // Filled with non-zero bytes so every page is really written.
        hoard.push(vec![0xa5; CHUNK]);
        std::hint::black_box(&hoard);
    }
}

impl Plugin for MemoryBomb {
    type Config = Value;

    fn describe() -> PluginInfo {
        PluginInfo::new(
            "test-memory-bomb",
            env!("CARGO_PKG_VERSION"),
            "Allocates without end",
        )
        .with_interest(Interest::nothing())
    }

    fn validate_config(config: &Value, _: &[String]) -> Result<(), String> {
        if config.as_str() == Some("validate") {
            explode();
        }
        Ok(())
    }

    fn decide<'a>(
        _: &'a SetInfo,
        _: &'a Value,
        _: &'a Nodes<'a>,
    ) -> Result<Vec<Decision<'a>>, String> {
        explode()
    }
}

wasmdaemon_plugin_sdk::export_plugin!(MemoryBomb);
