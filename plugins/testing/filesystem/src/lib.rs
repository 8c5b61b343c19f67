//! Test plugin `filesystem`: tries to use files and reports what happened.

use wasmdaemon_plugin_sdk::{Decision, Interest, NoConfig, Nodes, Plugin, PluginInfo, SetInfo};

/// Probes the filesystem from inside the sandbox.
pub struct Filesystem;

/// What each attempt gave; in a sandbox every part should say `error`.
pub fn probe() -> String {
    let read = match std::fs::read_to_string("/etc/passwd") {
        Ok(text) => format!("ok, {} bytes", text.len()),
        Err(error) => format!("error: {error}"),
    };
    let list = match std::fs::read_dir("/") {
        Ok(entries) => format!("ok, {} entries", entries.count()),
        Err(error) => format!("error: {error}"),
    };
    let write = match std::fs::write("/tmp/wasmdaemon-test-plugin", b"escaped") {
        Ok(()) => "ok".to_owned(),
        Err(error) => format!("error: {error}"),
    };
    let cwd = match std::env::current_dir() {
        Ok(dir) => format!("ok, {}", dir.display()),
        Err(error) => format!("error: {error}"),
    };
    format!("read /etc/passwd: {read}; list /: {list}; write /tmp: {write}; current dir: {cwd}")
}

impl Plugin for Filesystem {
    type Config = NoConfig;

    fn describe() -> PluginInfo {
        PluginInfo::new(
            "test-filesystem",
            env!("CARGO_PKG_VERSION"),
            "Tries to use files",
        )
        .with_interest(Interest::nothing())
    }

    fn decide<'a>(
        _: &'a SetInfo,
        _: &'a NoConfig,
        nodes: &'a Nodes<'a>,
    ) -> Result<Vec<Decision<'a>>, String> {
        let report = probe();
        Ok(nodes
            .iter()
            .map(|_| Decision::skip(report.clone()))
            .collect())
    }
}

wasmdaemon_plugin_sdk::export_plugin!(Filesystem);
