//! Test plugin `memory-bomb`: allocates until the host refuses to grow memory.

use wasmdaemon_plugin_sdk::{Decision, Interest, NoConfig, Node, Plugin, PluginInfo, SetInfo};

/// Grows linear memory in `decide` until the host refuses.
pub struct MemoryBomb;

const CHUNK: usize = 1 << 20;

impl Plugin for MemoryBomb {
    type Config = NoConfig;

    fn describe() -> PluginInfo {
        PluginInfo::new(
            "test-memory-bomb",
            env!("CARGO_PKG_VERSION"),
            "Allocates without end",
        )
        .with_interest(Interest::nothing())
    }

    fn decide(_: &SetInfo, _: &NoConfig, _: &[Node]) -> Result<Vec<Decision>, String> {
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            // Filled with non-zero bytes so every page is really written.
            hoard.push(vec![0xa5; CHUNK]);
            std::hint::black_box(&hoard);
        }
    }
}

wasmdaemon_plugin_sdk::export_plugin!(MemoryBomb);
