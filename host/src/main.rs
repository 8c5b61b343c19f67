//! The `wasmdaemon` command line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use k8s_openapi::api::core::v1::Node;
use kube::CustomResourceExt;
use wasmdaemon::controller::explain;
use wasmdaemon::crd::WasmDaemonSet;
use wasmdaemon::plugin::cache::DiskCache;
use wasmdaemon::plugin::{Limits, PluginEngine};
use wasmdaemon::registry::dir::{self, DirWatch};
use wasmdaemon::registry::{PluginStore, Registry, configmap};
use wasmdaemon::{controller, input, simulate, telemetry};

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
        #[arg(long, required_unless_present = "nodes_from")]
        nodes: Option<PathBuf>,
        /// Instead of --nodes, list the nodes of the cluster this kubeconfig names (read only).
        #[arg(long, value_name = "KUBECONFIG", conflicts_with = "nodes")]
        nodes_from: Option<PathBuf>,
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
        /// Wall-clock limit of one plugin call, in milliseconds (1 to 60000).
        #[arg(long, default_value_t = 100, value_parser = deadline_ms)]
        plugin_deadline_ms: u64,
        /// Memory limit of one plugin instance, in MiB (1 to 4096).
        #[arg(long, default_value_t = 64, value_parser = memory_mib)]
        plugin_memory_mib: usize,
        /// Instead of the set's plugin, run two versions of it (component files) and print
        /// the nodes whose decision, variant or pod changes from OLD to NEW.
        #[arg(long, num_args = 2, value_names = ["OLD", "NEW"])]
        compare: Option<Vec<PathBuf>>,
    },
    /// Prints the WasmDaemonSet CustomResourceDefinition as YAML.
    Crd,
    /// Runs the controller against a cluster until SIGTERM or SIGINT.
    Run {
        /// A kubeconfig file; without it the in-cluster or default kubeconfig is used.
        #[arg(long)]
        kubeconfig: Option<PathBuf>,
        /// Watch sets in this namespace only (default: all namespaces).
        #[arg(long, value_parser = namespace_name)]
        namespace: Option<String>,
        /// A directory of `<name>.wasm` plugins, besides the stock ones, watched for changes:
        /// a changed plugin is swapped in once it compiles and accepts every set's config.
        #[arg(long)]
        plugin_dir: Option<PathBuf>,
        /// Let a user plugin replace a stock plugin of the same name.
        #[arg(long)]
        allow_stock_override: bool,
        /// Where compiled plugins are kept across restarts (default: `$XDG_CACHE_HOME/wasmdaemon`,
        /// else `/var/cache/wasmdaemon`, else the temporary directory).
        #[arg(long)]
        cache_dir: Option<PathBuf>,
        /// Also load plugins from ConfigMaps labelled `wasmdaemon.io/plugin` in this namespace
        /// (default: `POD_NAMESPACE`; none when neither is set).
        #[arg(long, value_parser = namespace_name)]
        plugin_namespace: Option<String>,
        /// Wall-clock limit of one plugin call, in milliseconds (1 to 60000).
        #[arg(long, default_value_t = 100, value_parser = deadline_ms)]
        plugin_deadline_ms: u64,
        /// Memory limit of one plugin instance, in MiB (1 to 4096).
        #[arg(long, default_value_t = 64, value_parser = memory_mib)]
        plugin_memory_mib: usize,
        /// Most sets reconciled at once.
        #[arg(long, default_value_t = 4)]
        concurrency: u16,
        /// Serve Prometheus metrics at `http://<addr>/metrics` (and `/healthz`), for example
        /// `0.0.0.0:9090`; off when not given.
        #[arg(long)]
        metrics_addr: Option<std::net::SocketAddr>,
    },
    /// Explains why a node does or does not run a set, and with which variant: offline from
    /// files (--set and --nodes), or from a cluster, with the set's pods on the node.
    Explain {
        /// The set's name.
        set_name: String,
        /// The node's name.
        node: String,
        /// A node dump, as for `simulate`; with --set, explains offline.
        #[arg(long)]
        nodes: Option<PathBuf>,
        /// The WasmDaemonSet file; with --nodes, explains offline.
        #[arg(long)]
        set: Option<PathBuf>,
        /// A kubeconfig file; without it the in-cluster or default kubeconfig is used.
        #[arg(long, conflicts_with_all = ["nodes", "set"])]
        kubeconfig: Option<PathBuf>,
        /// The set's namespace (default: the kubeconfig context's, else `default`).
        #[arg(long, conflicts_with_all = ["nodes", "set"])]
        namespace: Option<String>,
        /// Also use plugins from ConfigMaps labelled `wasmdaemon.io/plugin` in this namespace
        /// (default: `POD_NAMESPACE`; none when neither is set).
        #[arg(long, conflicts_with_all = ["nodes", "set"])]
        plugin_namespace: Option<String>,
        /// A directory of `<name>.wasm` plugins, besides the stock ones.
        #[arg(long)]
        plugin_dir: Option<PathBuf>,
        /// Let a plugin in --plugin-dir (or a plugin ConfigMap) replace a stock plugin of the
        /// same name.
        #[arg(long)]
        allow_stock_override: bool,
        /// Wall-clock limit of one plugin call, in milliseconds (1 to 60000); give what `run`
        /// is given, so the answer is the one the controller gets.
        #[arg(long, default_value_t = 100, value_parser = deadline_ms)]
        plugin_deadline_ms: u64,
        /// Memory limit of one plugin instance, in MiB (1 to 4096), as for `run`.
        #[arg(long, default_value_t = 64, value_parser = memory_mib)]
        plugin_memory_mib: usize,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_filter = match cli.command {
        // A failed request is the one error line of `explain`; the client's log would repeat it.
        Command::Explain { .. } => "warn,wasmtime=error,cranelift=error,kube_client=off",
        // What the controller changes in the cluster is logged at info.
        Command::Run { .. } => "info,wasmtime=error,cranelift=error",
        _ => "warn,wasmtime=error,cranelift=error",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| default_filter.into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();

    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {}", one_line(&error));
            ExitCode::FAILURE
        }
    }
}

/// A plugin call deadline in milliseconds: at least 1, at most a minute.
fn deadline_ms(text: &str) -> Result<u64, String> {
    match text.parse::<u64>() {
        Ok(ms @ 1..=60_000) => Ok(ms),
        _ => Err(format!(
            "{text:?} is not a whole number of milliseconds from 1 to 60000"
        )),
    }
}

/// A namespace name the API server accepts.
fn namespace_name(text: &str) -> Result<String, String> {
    explain::check_name("namespace", text, 63)
        .map(|()| text.to_string())
        .map_err(|e| e.to_string())
}

/// A plugin memory limit in MiB: at least 1, at most 4096 (a 32-bit guest's whole space).
fn memory_mib(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(mib @ 1..=4096) => Ok(mib),
        _ => Err(format!(
            "{text:?} is not a whole number of MiB from 1 to 4096"
        )),
    }
}

/// The error and its causes on one line, each cause once: an error whose message already
/// includes its source would otherwise print that source twice.
fn one_line(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line.replace('\n', " ")
}

/// Writes command output; a reader that went away (`| head`) ends the command quietly, any
/// other failure (a full disk) is an error.
fn emit(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(error) if error.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(anyhow::anyhow!("failed to write the output: {error}"))
        }
        _ => Ok(()),
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let plugin_dir = match &cli.command {
        Command::Simulate { plugin_dir, .. }
        | Command::Explain { plugin_dir, .. }
        | Command::Run { plugin_dir, .. } => plugin_dir.as_deref(),
        Command::Crd => None,
    };
    if let Some(dir) = plugin_dir
        && !dir.is_dir()
    {
        anyhow::bail!("--plugin-dir {}: not a directory", dir.display());
    }
    match cli.command {
        Command::Simulate {
            nodes,
            nodes_from,
            set,
            plugin_dir,
            allow_stock_override,
            output,
            plugin_deadline_ms,
            plugin_memory_mib,
            compare,
        } => {
            let nodes = match (nodes, nodes_from) {
                (Some(path), _) => input::load_nodes(&path)?,
                (None, Some(kubeconfig)) => cluster_nodes(&kubeconfig)?,
                (None, None) => anyhow::bail!("give --nodes or --nodes-from"),
            };
            let set_file = set;
            let set = input::load_set(&set_file)?;
            let limits = Limits {
                deadline: Duration::from_millis(plugin_deadline_ms),
                memory_bytes: plugin_memory_mib.saturating_mul(1 << 20),
                ..Limits::default()
            };
            let engine = PluginEngine::new(limits)?;
            if let Some(files) = compare {
                let [old, new] = files.as_slice() else {
                    anyhow::bail!("--compare takes two component files");
                };
                let load = |path: &PathBuf| -> anyhow::Result<_> {
                    let bytes = std::fs::read(path)
                        .with_context(|| format!("failed to read {}", path.display()))?;
                    let name = path
                        .file_stem()
                        .and_then(|s| s.to_str())
                        .unwrap_or("plugin");
                    engine
                        .load(name, &bytes)
                        .with_context(|| format!("{}", path.display()))
                };
                if set.spec.policy.is_none() {
                    anyhow::bail!("{} has no spec.policy to compare", set_file.display());
                }
                let comparison = simulate::compare(&set, &nodes, load(old)?, load(new)?)
                    .with_context(|| format!("{}", set_file.display()))?;
                emit(&simulate::format_comparison(&comparison, output)?)?;
                return Ok(());
            }
            let registry = Registry::new(engine, plugin_dir).allow_shadowing(allow_stock_override);
            let simulation = simulate::simulate(&set, &nodes, &registry)
                .with_context(|| format!("{}", set_file.display()))?;
            emit(&simulate::format(&simulation, output)?)?;
        }
        Command::Crd => {
            let crd = serde_yaml::to_string(&WasmDaemonSet::crd())
                .context("failed to serialize the CRD")?;
            emit(&crd)?;
        }
        Command::Run {
            kubeconfig,
            namespace,
            plugin_dir,
            allow_stock_override,
            cache_dir,
            plugin_namespace,
            plugin_deadline_ms,
            plugin_memory_mib,
            concurrency,
            metrics_addr,
        } => {
            let limits = Limits {
                deadline: Duration::from_millis(plugin_deadline_ms),
                memory_bytes: plugin_memory_mib.saturating_mul(1 << 20),
                ..Limits::default()
            };
            let engine = with_disk_cache(PluginEngine::new(limits)?, cache_dir);
            let store = Arc::new(PluginStore::new(engine, allow_stock_override));
            let _dir_watch = plugin_dir
                .map(|dir| DirWatch::start(store.clone(), dir, dir::POLL_INTERVAL))
                .transpose()
                .context("failed to start watching the plugin directory")?;
            let plugin_namespace = plugin_namespace.or_else(|| std::env::var("POD_NAMESPACE").ok());
            let registry = Registry::live(store);
            let options = controller::Options {
                namespace,
                concurrency: concurrency.max(1),
                instance: std::env::var("POD_NAME").ok(),
                ..controller::Options::default()
            };
            let runtime = tokio::runtime::Runtime::new().context("failed to start the runtime")?;
            runtime.block_on(run_controller(
                kubeconfig,
                registry,
                plugin_namespace,
                metrics_addr,
                options,
            ))?;
        }
        Command::Explain {
            set_name,
            node,
            nodes,
            set,
            kubeconfig,
            namespace,
            plugin_namespace,
            plugin_dir,
            allow_stock_override,
            plugin_deadline_ms,
            plugin_memory_mib,
        } => {
            let limits = Limits {
                deadline: Duration::from_millis(plugin_deadline_ms),
                memory_bytes: plugin_memory_mib.saturating_mul(1 << 20),
                ..Limits::default()
            };
            let text = match (set, nodes) {
                (Some(set_file), Some(nodes)) => {
                    let nodes = input::load_nodes(&nodes)?;
                    let set = input::load_set(&set_file)?;
                    if set.metadata.name.as_deref() != Some(set_name.as_str()) {
                        anyhow::bail!(
                            "{} holds set {:?}, not {set_name:?}",
                            set_file.display(),
                            set.metadata.name.as_deref().unwrap_or_default()
                        );
                    }
                    let engine = PluginEngine::new(limits)?;
                    let registry =
                        Registry::new(engine, plugin_dir).allow_shadowing(allow_stock_override);
                    explain::explain(&set, &nodes, &node, &registry)?
                }
                (None, None) => {
                    let plugin_namespace =
                        plugin_namespace.or_else(|| std::env::var("POD_NAMESPACE").ok());
                    let view =
                        read_cluster(kubeconfig, namespace, set_name, node, plugin_namespace)?;
                    let engine = PluginEngine::new(limits)?;
                    let registry =
                        explain::live_registry(&view, engine, allow_stock_override, plugin_dir);
                    explain::explain_live(&view, &registry)?
                }
                (Some(_), None) | (None, Some(_)) => anyhow::bail!(
                    "explain takes --set and --nodes together (offline), or neither (from the \
                     cluster)"
                ),
            };
            emit(&text)?;
        }
    }
    Ok(())
}

/// Reads what `explain` needs from the cluster `kubeconfig` names (or the inferred one); the
/// set's namespace defaults to the kubeconfig context's.
fn read_cluster(
    kubeconfig: Option<PathBuf>,
    namespace: Option<String>,
    set: String,
    node: String,
    plugin_namespace: Option<String>,
) -> anyhow::Result<explain::ClusterView> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("failed to start the runtime")?;
    runtime.block_on(async {
        let mut config = cluster_config(kubeconfig.as_deref()).await?;
        // A one-shot command should fail soon rather than wait as long as the controller does.
        config.connect_timeout = Some(Duration::from_secs(10));
        config.read_timeout = Some(Duration::from_secs(30));
        let query = explain::Query {
            namespace: namespace.unwrap_or_else(|| config.default_namespace.clone()),
            set,
            node,
            plugin_namespace,
        };
        let url = config
            .cluster_url
            .to_string()
            .trim_end_matches('/')
            .to_string();
        let client = kube::Client::try_from(config).context("failed to build the API client")?;
        Ok(explain::read_cluster(&client, &url, &query).await?)
    })
}

/// The cluster `kubeconfig` names, or without one the in-cluster or default configuration.
async fn cluster_config(kubeconfig: Option<&std::path::Path>) -> anyhow::Result<kube::Config> {
    match kubeconfig {
        Some(path) => {
            let file = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("failed to read kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(file, &Default::default())
                .await
                .with_context(|| format!("failed to load kubeconfig {}", path.display()))
        }
        None => kube::Config::infer()
            .await
            .context("failed to find a cluster configuration"),
    }
}

/// Lists every node of the cluster `kubeconfig` names, a page at a time.
fn cluster_nodes(kubeconfig: &std::path::Path) -> anyhow::Result<Vec<Node>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("failed to start the runtime")?;
    runtime.block_on(async {
        let config = cluster_config(Some(kubeconfig)).await?;
        let client = kube::Client::try_from(config).context("failed to build the API client")?;
        let api: kube::Api<Node> = kube::Api::all(client);
        let mut nodes = Vec::new();
        let mut params = kube::api::ListParams::default().limit(500);
        loop {
            let page = api.list(&params).await.context("failed to list nodes")?;
            nodes.extend(page.items);
            match page.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(token) => params = params.continue_token(&token),
                None => return Ok(nodes),
            }
        }
    })
}

/// Adds the compiled-plugin disk cache; without one (an unusable directory) plugins are
/// compiled at every start, which is slower but correct.
fn with_disk_cache(engine: PluginEngine, dir: Option<PathBuf>) -> PluginEngine {
    let dir = dir.unwrap_or_else(DiskCache::default_dir);
    match engine.clone().with_disk_cache(&dir) {
        Ok(engine) => engine,
        Err(error) => {
            tracing::warn!(%error, "compiled plugins will not be cached on disk");
            engine
        }
    }
}

async fn run_controller(
    kubeconfig: Option<PathBuf>,
    registry: Registry,
    plugin_namespace: Option<String>,
    metrics_addr: Option<std::net::SocketAddr>,
    options: controller::Options,
) -> anyhow::Result<()> {
    if let Some(addr) = metrics_addr {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("failed to listen on {addr} for metrics"))?;
        let controller = options.metrics.clone();
        let store = registry.store().cloned();
        let render: telemetry::Render = Arc::new(move || {
            let mut page = controller.render();
            if let Some(store) = &store {
                page.push_str(&store.metrics().render());
            }
            page
        });
        tracing::info!(addr = %listener.local_addr().unwrap_or(addr), "serving metrics");
        tokio::spawn(telemetry::serve(listener, render));
    }
    let config = cluster_config(kubeconfig.as_deref()).await?;
    let client = kube::Client::try_from(config).context("failed to build the API client")?;
    if let (Some(store), Some(namespace)) = (registry.store(), plugin_namespace) {
        tokio::spawn(configmap::watch(store.clone(), client.clone(), namespace));
    }
    controller::run(client, registry, options, shutdown_signal()).await;
    Ok(())
}

/// Resolves on the first SIGINT or SIGTERM.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = interrupt => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
    tracing::info!("shutting down");
}
