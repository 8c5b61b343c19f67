//! The `wasmdaemon` command line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use kube::CustomResourceExt;
use wasmdaemon::crd::WasmDaemonSet;
use wasmdaemon::plugin::{Limits, PluginEngine};
use wasmdaemon::registry::Registry;
use wasmdaemon::{input, simulate};

/// A DaemonSet controller whose placement and per-node variants are decided by WebAssembly
/// plugins.
#[derive(Parser)]
#[command(name = "wasmdaemon", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Plans a WasmDaemonSet over a node dump, offline, and prints the outcome per node.
    Simulate {
        /// A node dump (`kubectl get nodes -o yaml|json`), a YAML/JSON file of Node objects,
        /// or a directory of such files.
        #[arg(long)]
        nodes: PathBuf,
        /// The WasmDaemonSet file.
        #[arg(long)]
        set: PathBuf,
        /// A directory of `<name>.wasm` plugins, besides the stock ones.
        #[arg(long)]
        plugin_dir: Option<PathBuf>,
        /// Let a plugin in --plugin-dir replace a stock plugin of the same name.
        #[arg(long)]
        allow_stock_override: bool,
        #[arg(long, short, value_enum, default_value = "table")]
        output: simulate::Format,
        /// Wall-clock limit of one plugin call, in milliseconds.
        #[arg(long, default_value_t = 100)]
        plugin_deadline_ms: u64,
        /// Memory limit of one plugin instance, in MiB.
        #[arg(long, default_value_t = 64)]
        plugin_memory_mib: usize,
    },
    /// Prints the WasmDaemonSet CustomResourceDefinition as YAML.
    Crd,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,wasmtime=error,cranelift=error".into()),
        )
        .with_writer(std::io::stderr)
        .init();

    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {}", format!("{error:#}").replace('\n', " "));
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Simulate {
            nodes,
            set,
            plugin_dir,
            allow_stock_override,
            output,
            plugin_deadline_ms,
            plugin_memory_mib,
        } => {
            let nodes = input::load_nodes(&nodes)?;
            let set_file = set;
            let set = input::load_set(&set_file)?;
            let limits = Limits {
                deadline: Duration::from_millis(plugin_deadline_ms),
                memory_bytes: plugin_memory_mib.saturating_mul(1 << 20),
                ..Limits::default()
            };
            let engine = PluginEngine::new(limits)?;
            let registry = Registry::new(engine, plugin_dir).allow_shadowing(allow_stock_override);
            let simulation = simulate::simulate(&set, &nodes, &registry)
                .with_context(|| format!("{}", set_file.display()))?;
            print!("{}", simulate::format(&simulation, output)?);
        }
        Command::Crd => {
            let crd = serde_yaml::to_string(&WasmDaemonSet::crd())
                .context("failed to serialize the CRD")?;
            print!("{crd}");
        }
    }
    Ok(())
}
