//! Test plugin `log-flood`: floods the host log with 100,000 lines of 64 KiB.

use wasmdaemon_plugin_sdk::{
    Decision, Interest, Level, NoConfig, Nodes, Plugin, PluginInfo, SetInfo, log,
};

/// Log calls per `decide` call.
pub const LINES: usize = 100_000;
/// Bytes per log line.
pub const LINE_BYTES: usize = 64 << 10;

/// Floods the host log.
pub struct LogFlood;

impl Plugin for LogFlood {
    type Config = NoConfig;

    fn describe() -> PluginInfo {
        PluginInfo::new(
            "test-log-flood",
            env!("CARGO_PKG_VERSION"),
            "Floods the host log",
        )
        .with_interest(Interest::nothing())
    }

    fn decide<'a>(
        _: &'a SetInfo,
        _: &'a NoConfig,
        nodes: &'a Nodes<'a>,
    ) -> Result<Vec<Decision<'a>>, String> {
        let line = "y".repeat(LINE_BYTES);
        for _ in 0..LINES {
            log(Level::Error, &line);
        }
        Ok(vec![Decision::plain(); nodes.len()])
    }
}

wasmdaemon_plugin_sdk::export_plugin!(LogFlood);
