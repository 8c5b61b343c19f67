//! Test plugin `stdio`: writes 4 MiB to each of stdout and stderr per call.

use std::io::Write;

use wasmdaemon_plugin_sdk::{Decision, Interest, NoConfig, Nodes, Plugin, PluginInfo, SetInfo};

/// Bytes written to each of stdout and stderr per `decide` call.
pub const BYTES_PER_STREAM: usize = 4 << 20;

/// Floods stdout and stderr.
pub struct Stdio;

impl Plugin for Stdio {
    type Config = NoConfig;

    fn describe() -> PluginInfo {
        PluginInfo::new(
            "test-stdio",
            env!("CARGO_PKG_VERSION"),
            "Writes lots to stdout/stderr",
        )
        .with_interest(Interest::nothing())
    }

    fn decide<'a>(
        _: &'a SetInfo,
        _: &'a NoConfig,
        nodes: &'a Nodes<'a>,
    ) -> Result<Vec<Decision<'a>>, String> {
        let line = [b"test-stdio: noise ".repeat(3).as_slice(), b"\n"].concat();
        for _ in 0..BYTES_PER_STREAM / line.len() {
            // Failed writes (a closed or absent stream) are what a sandbox may well answer.
            let _ = std::io::stdout().write_all(&line);
            let _ = std::io::stderr().write_all(&line);
        }
        println!("test-stdio: {} nodes", nodes.len());
        Ok(vec![Decision::plain(); nodes.len()])
    }
}

wasmdaemon_plugin_sdk::export_plugin!(Stdio);
