//! Test plugin `environment`: reports the environment variables and arguments it sees.

use wasmdaemon_plugin_sdk::{Decision, Interest, NoConfig, Nodes, Plugin, PluginInfo, SetInfo};

/// Reports what the sandbox lets it see of its environment.
pub struct Environment;

/// `env: [..]; args: [..]`, listing every variable and argument seen.
pub fn probe() -> String {
    let vars: Vec<String> = std::env::vars_os()
        .map(|(key, value)| format!("{}={}", key.to_string_lossy(), value.to_string_lossy()))
        .collect();
    let args: Vec<String> = std::env::args_os()
        .map(|arg| arg.to_string_lossy().into_owned())
        .collect();
    format!("env: [{}]; args: [{}]", vars.join(", "), args.join(", "))
}

impl Plugin for Environment {
    type Config = NoConfig;

    fn describe() -> PluginInfo {
        PluginInfo::new(
            "test-environment",
            env!("CARGO_PKG_VERSION"),
            "Reads its environment",
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

wasmdaemon_plugin_sdk::export_plugin!(Environment);
