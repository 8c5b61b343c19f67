//! One wasmtime engine, a compile cache keyed by content digest, and sandboxed calls.
//!
//! Every call gets a fresh `Store` built from a reused `InstancePre`, so a guest that trapped,
//! ran out of memory or was interrupted leaves nothing behind. A store carries an epoch
//! deadline and a memory limit; the WASI context grants no files, sockets, environment,
//! arguments or stdin, and captures stdout/stderr into bounded buffers.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Config, Engine, ResourceLimiter, Store, Trap};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use k8s_openapi::api::core::v1::Node as K8sNode;

use super::bindings::{self, Answer, Decision, NodeBatch, PluginInfo, PluginPre, SetInfo};
use super::cache::{CacheError, DiskCache};
use super::error::PluginError;
use super::output::{BoundedPipe, head, tail};
use super::projection::{Projection, SharedBatches};

/// How often the epoch ticker advances. Deadlines are rounded up to whole ticks.
const TICK: Duration = Duration::from_millis(2);

/// Bounds on one plugin call and on what it may return.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Wall-clock time a call may run before it is interrupted.
    pub deadline: Duration,
    /// Largest linear memory (per memory) a guest may grow to.
    pub memory_bytes: usize,
    /// Longest skip reason, plugin error message, name or override string.
    pub max_string_bytes: usize,
    /// Most entries in any list a plugin returns besides the decisions themselves.
    pub max_list_len: usize,
    /// Bytes of stdout and of stderr kept per call.
    pub max_output_bytes: usize,
    /// Log lines kept per call; each is cut to `max_string_bytes`.
    pub max_log_lines: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            deadline: Duration::from_millis(100),
            memory_bytes: 64 << 20,
            max_string_bytes: 4096,
            max_list_len: 256,
            max_output_bytes: 16 * 1024,
            max_log_lines: 64,
        }
    }
}

/// A plugin's answer for one node, checked and resolved. Strings and overrides are shared
/// between the nodes that got the same answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginDecision {
    /// The plugin does not want the set on this node; the reason is meant for people.
    Skip(Arc<str>),
    /// The node runs the set: the plain template (`variant: None`) or a declared variant, with
    /// optional per-node overrides.
    Run {
        variant: Option<Arc<str>>,
        overrides: Option<Arc<bindings::Overrides>>,
    },
}

/// Per-call store data.
struct CallState {
    wasi: WasiCtx,
    table: ResourceTable,
    memory: MemoryGuard,
    logs: Vec<(bindings::Level, String)>,
    max_log_lines: usize,
    max_string_bytes: usize,
    dropped_logs: usize,
}

impl WasiView for CallState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl bindings::wasmdaemon::placement::host::Host for CallState {
    fn log(&mut self, level: bindings::Level, message: String) {
        if self.logs.len() >= self.max_log_lines {
            self.dropped_logs += 1;
            return;
        }
        let message = head(&message, self.max_string_bytes).to_string();
        self.logs.push((level, message));
    }
}

impl bindings::wasmdaemon::placement::types::Host for CallState {}

/// Refuses memory growth past the limit and remembers that it did, so a guest that dies of the
/// refusal is reported as out of memory rather than as a generic trap.
struct MemoryGuard {
    limit: usize,
    refused: bool,
}

impl ResourceLimiter for MemoryGuard {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.limit {
            self.refused = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1 << 20)
    }
}

/// The shared engine and its cache of compiled plugins.
///
/// Cloning is cheap and shares the cache.
#[derive(Clone)]
pub struct PluginEngine {
    engine: Engine,
    linker: Arc<Linker<CallState>>,
    limits: Limits,
    compiled: Arc<Mutex<HashMap<String, Arc<LoadedPlugin>>>>,
    /// Compiled components kept across restarts, when a cache directory is configured.
    disk: Option<Arc<DiskCache>>,
    /// Components compiled by Cranelift (not found in memory or on disk).
    compilations: Arc<AtomicU64>,
}

/// The step of [`PluginEngine::load_staged`] that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadStage {
    /// The bytes are not a component this engine can compile.
    Compile,
    /// The component does not link against the host or does not export the plugin world.
    Link,
    /// Instantiating it or calling `describe` failed, or `describe` answered badly.
    Describe,
}

/// A compiled, described plugin version, ready to be called.
pub struct LoadedPlugin {
    pre: PluginPre<CallState>,
    engine: Engine,
    limits: Limits,
    /// `sha256:<hex>` of the component bytes.
    pub digest: String,
    /// What the plugin said about itself.
    pub info: PluginInfo,
    /// The node parts the plugin asked for.
    pub projection: Projection,
    /// Batches recently projected for this version, shared by the sets it decides.
    pub batches: SharedBatches,
}

impl std::fmt::Debug for LoadedPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedPlugin")
            .field("name", &self.info.name)
            .field("version", &self.info.version)
            .field("digest", &self.digest)
            .finish_non_exhaustive()
    }
}

/// `sha256:<hex>` of some bytes.
pub fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

impl PluginEngine {
    /// Builds the engine, its linker, and starts the epoch ticker.
    ///
    /// The ticker is a thread that holds only a weak reference to the engine and stops once the
    /// last clone of it is dropped.
    pub fn new(limits: Limits) -> Result<Self, PluginError> {
        let host_error = |e: wasmtime::Error| PluginError::Host {
            plugin: String::new(),
            message: format!("failed to set up the wasm engine: {e:#}"),
        };

        let mut config = Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        config.cranelift_opt_level(wasmtime::OptLevel::Speed);
        let engine = Engine::new(&config).map_err(host_error)?;

        let mut linker = Linker::<CallState>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(host_error)?;
        bindings::Plugin::add_to_linker::<CallState, HasSelf<CallState>>(&mut linker, |s| s)
            .map_err(host_error)?;

        let weak = engine.weak();
        std::thread::Builder::new()
            .name("wasm-epoch".into())
            .spawn(move || {
                while let Some(engine) = weak.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(TICK);
                }
            })
            .map_err(|e| PluginError::Host {
                plugin: String::new(),
                message: format!("failed to start the epoch ticker: {e}"),
            })?;

        Ok(Self {
            engine,
            linker: Arc::new(linker),
            limits,
            compiled: Arc::new(Mutex::new(HashMap::new())),
            disk: None,
            compilations: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Keeps compiled components in `dir` and reuses them across restarts.
    ///
    /// # Errors
    ///
    /// When `dir` cannot be created or is writable by other users.
    pub fn with_disk_cache(mut self, dir: &Path) -> Result<Self, CacheError> {
        self.disk = Some(Arc::new(DiskCache::open(dir, &self.engine)?));
        Ok(self)
    }

    /// The on-disk cache of compiled components, when one is configured.
    pub fn disk_cache(&self) -> Option<&DiskCache> {
        self.disk.as_deref()
    }

    /// How many components this engine (and its clones) compiled with Cranelift, as opposed to
    /// finding them in memory or on disk.
    pub fn compilations(&self) -> u64 {
        self.compilations.load(Ordering::Relaxed)
    }

    /// The limits every call runs under.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Compiles (once per digest), links and describes a plugin.
    ///
    /// `name` is only used in error messages; the plugin's own name comes from `describe`.
    pub fn load(&self, name: &str, bytes: &[u8]) -> Result<Arc<LoadedPlugin>, PluginError> {
        self.load_staged(name, bytes).map_err(|(_, error)| error)
    }

    /// As [`load`](Self::load), telling which step failed.
    pub fn load_staged(
        &self,
        name: &str,
        bytes: &[u8],
    ) -> Result<Arc<LoadedPlugin>, (LoadStage, PluginError)> {
        let digest = digest_of(bytes);
        if let Some(hit) = self.cache().get(&digest) {
            return Ok(hit.clone());
        }

        let load_error = |message: String| PluginError::Load {
            plugin: name.to_string(),
            message,
        };
        let component = self.compile(&digest, bytes).map_err(|e| {
            (
                LoadStage::Compile,
                load_error(format!("failed to compile: {e:#}")),
            )
        })?;
        let instance_pre = self.linker.instantiate_pre(&component).map_err(|e| {
            let error = load_error(format!("failed to link: {e:#}"));
            (LoadStage::Link, error)
        })?;
        let pre = PluginPre::new(instance_pre).map_err(|e| {
            let error = load_error(format!("does not implement the plugin world: {e:#}"));
            (LoadStage::Link, error)
        })?;

        let mut loaded = LoadedPlugin {
            pre,
            engine: self.engine.clone(),
            limits: self.limits.clone(),
            digest: digest.clone(),
            info: PluginInfo {
                name: name.to_string(),
                version: String::new(),
                description: String::new(),
                interest: bindings::Interest {
                    labels: Vec::new(),
                    annotations: Vec::new(),
                    taints: false,
                    unschedulable: false,
                    conditions: false,
                    resources: Vec::new(),
                    node_info: false,
                },
            },
            projection: Projection::default(),
            batches: SharedBatches::default(),
        };
        let info = loaded.describe().map_err(|e| (LoadStage::Describe, e))?;
        loaded.projection = Projection::new(&info.interest);
        loaded.info = info;

        let loaded = Arc::new(loaded);
        self.cache().insert(digest, loaded.clone());
        Ok(loaded)
    }

    /// The component for `digest`: from the disk cache when it holds a trustworthy copy,
    /// otherwise compiled (and then written to the disk cache).
    fn compile(&self, digest: &str, bytes: &[u8]) -> wasmtime::Result<Component> {
        if let Some(component) = self.disk.as_ref().and_then(|d| d.get(&self.engine, digest)) {
            return Ok(component);
        }
        let component = Component::new(&self.engine, bytes)?;
        self.compilations.fetch_add(1, Ordering::Relaxed);
        if let Some(disk) = &self.disk {
            disk.put(digest, &component);
        }
        Ok(component)
    }

    /// Drops a compiled version from the cache.
    pub fn forget(&self, digest: &str) {
        self.cache().remove(digest);
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<LoadedPlugin>>> {
        self.compiled.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl LoadedPlugin {
    /// The plugin's name as it describes itself.
    pub fn name(&self) -> &str {
        &self.info.name
    }

    /// Checks a set's configuration; `Err(PluginError::Reported)` carries the plugin's message.
    pub fn validate_config(&self, config: &str, variants: &[String]) -> Result<(), PluginError> {
        let answer =
            self.call(|plugin, store| plugin.call_validate_config(store, config, variants))?;
        answer.map_err(|message| PluginError::Reported {
            plugin: self.info.name.clone(),
            message: head(&message, self.limits.max_string_bytes).to_string(),
        })
    }

    /// Decides a batch of already projected nodes.
    ///
    /// On success there is exactly one decision per node, every variant is one the set
    /// declares, and every string, index and list is within bounds.
    pub fn decide(
        &self,
        set: &SetInfo,
        nodes: &NodeBatch,
    ) -> Result<Vec<PluginDecision>, PluginError> {
        let answer = self.call(|plugin, store| plugin.call_decide(store, set, nodes))?;
        let answer = answer.map_err(|message| PluginError::Reported {
            plugin: self.info.name.clone(),
            message: head(&message, self.limits.max_string_bytes).to_string(),
        })?;
        self.read_answer(set, nodes, answer)
    }

    /// Projects `nodes` as this plugin asked to see them and decides them.
    pub fn decide_nodes(
        &self,
        set: &SetInfo,
        nodes: &[&K8sNode],
    ) -> Result<Vec<PluginDecision>, PluginError> {
        self.decide(set, &self.projection.batch(nodes.iter().copied()))
    }

    fn describe(&self) -> Result<PluginInfo, PluginError> {
        let info = self.call(|plugin, store| plugin.call_describe(store))?;
        let max = self.limits.max_string_bytes;
        let lists = [
            info.interest.labels.len(),
            info.interest.annotations.len(),
            info.interest.resources.len(),
        ];
        if info.name.is_empty() {
            return Err(self.malformed("describe returned an empty name".to_string()));
        }
        if [&info.name, &info.version, &info.description]
            .iter()
            .any(|s| s.len() > max)
            || lists.iter().any(|&n| n > self.limits.max_list_len)
        {
            return Err(self.malformed("describe returned oversized fields".to_string()));
        }
        Ok(info)
    }

    fn malformed(&self, message: String) -> PluginError {
        PluginError::Malformed {
            plugin: self.info.name.clone(),
            message,
        }
    }

    /// Checks an answer against the contract and resolves its indexes.
    fn read_answer(
        &self,
        set: &SetInfo,
        nodes: &NodeBatch,
        answer: Answer,
    ) -> Result<Vec<PluginDecision>, PluginError> {
        let count = nodes.nodes.len();
        if answer.decisions.len() != count {
            return Err(self.malformed(format!(
                "{} decisions for {} nodes",
                answer.decisions.len(),
                count
            )));
        }
        let max = self.limits.max_string_bytes;
        let max_list = self.limits.max_list_len;
        let table_limit = count.saturating_mul(2).saturating_add(max_list);
        if answer.strings.len() > table_limit || answer.overrides.len() > table_limit {
            return Err(self.malformed(format!(
                "{} strings and {} overrides for {count} nodes",
                answer.strings.len(),
                answer.overrides.len()
            )));
        }
        if let Some(long) = answer.strings.iter().find(|s| s.len() > max) {
            return Err(self.malformed(format!(
                "a string of {} bytes (limit {max}), such as a skip reason",
                long.len()
            )));
        }
        let strings: Vec<Arc<str>> = answer.strings.into_iter().map(Arc::from).collect();
        let mut overrides = Vec::with_capacity(answer.overrides.len());
        for (i, o) in answer.overrides.into_iter().enumerate() {
            check_overrides(&o, max, max_list)
                .map_err(|what| self.malformed(format!("overrides[{i}]: {what}")))?;
            overrides.push(Arc::new(o));
        }

        let node_name = |i: usize| {
            let name = nodes
                .nodes
                .get(i)
                .and_then(|n| nodes.strings.get(n.name as usize));
            name.map(String::as_str).unwrap_or("?").to_string()
        };
        let string = |i: usize, index: u32, what: &str| {
            strings.get(index as usize).cloned().ok_or_else(|| {
                self.malformed(format!(
                    "node {}: {what} index {index} is out of range ({} strings)",
                    node_name(i),
                    strings.len()
                ))
            })
        };
        // Whether each string is a declared variant, worked out once per string.
        let mut declared: Vec<Option<bool>> = vec![None; strings.len()];

        let mut decisions = Vec::with_capacity(count);
        for (i, decision) in answer.decisions.into_iter().enumerate() {
            decisions.push(match decision {
                Decision::Skip(reason) => PluginDecision::Skip(string(i, reason, "skip reason")?),
                Decision::Run(run) => {
                    let variant = match run.variant {
                        None => None,
                        Some(index) => {
                            let name = string(i, index, "variant")?;
                            let known = *declared[index as usize]
                                .get_or_insert_with(|| set.variants.iter().any(|v| **v == *name));
                            if !known {
                                return Err(self.malformed(format!(
                                    "node {}: unknown variant {:?}; the set declares {:?}",
                                    node_name(i),
                                    head(&name, 256),
                                    set.variants
                                )));
                            }
                            Some(name)
                        }
                    };
                    let overrides = match run.overrides {
                        None => None,
                        Some(index) => {
                            Some(overrides.get(index as usize).cloned().ok_or_else(|| {
                                self.malformed(format!(
                                    "node {}: overrides index {index} is out of range",
                                    node_name(i)
                                ))
                            })?)
                        }
                    };
                    PluginDecision::Run { variant, overrides }
                }
            });
        }
        Ok(decisions)
    }

    /// Runs one guest call in a fresh store under the deadline and memory limit.
    fn call<R>(
        &self,
        f: impl FnOnce(&bindings::Plugin, &mut Store<CallState>) -> wasmtime::Result<R>,
    ) -> Result<R, PluginError> {
        let plugin_name = self.info.name.clone();
        let stdout = BoundedPipe::new(self.limits.max_output_bytes);
        let stderr = BoundedPipe::new(self.limits.max_output_bytes);
        let wasi = WasiCtx::builder()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        let state = CallState {
            wasi,
            table: ResourceTable::new(),
            memory: MemoryGuard {
                limit: self.limits.memory_bytes,
                refused: false,
            },
            logs: Vec::new(),
            max_log_lines: self.limits.max_log_lines,
            max_string_bytes: self.limits.max_string_bytes,
            dropped_logs: 0,
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.memory);
        let ticks = self.limits.deadline.as_micros().div_ceil(TICK.as_micros()) as u64 + 1;
        store.set_epoch_deadline(ticks);
        store.epoch_deadline_trap();

        let outcome = self
            .pre
            .instantiate(&mut store)
            .and_then(|plugin| f(&plugin, &mut store));

        let state = store.into_data();
        emit_output(&plugin_name, &self.digest, &state, &stdout, &stderr);

        outcome.map_err(|error| {
            if let Some(trap) = error.downcast_ref::<Trap>() {
                if *trap == Trap::Interrupt {
                    return PluginError::DeadlineExceeded {
                        plugin: plugin_name,
                        deadline: self.limits.deadline,
                    };
                }
                if state.memory.refused {
                    return PluginError::MemoryLimit {
                        plugin: plugin_name,
                        limit_bytes: self.limits.memory_bytes,
                    };
                }
                let said = stderr.text();
                let said = tail(said.trim_end(), 1024);
                let message = if said.is_empty() {
                    trap.to_string()
                } else {
                    format!("{trap}; stderr: {said}")
                };
                return PluginError::Trap {
                    plugin: plugin_name,
                    message,
                };
            }
            if state.memory.refused {
                return PluginError::MemoryLimit {
                    plugin: plugin_name,
                    limit_bytes: self.limits.memory_bytes,
                };
            }
            PluginError::Host {
                plugin: plugin_name,
                message: format!("{error:#}"),
            }
        })
    }
}

fn check_overrides(
    overrides: &bindings::Overrides,
    max: usize,
    max_list: usize,
) -> Result<(), String> {
    let pairs_ok = |pairs: &[bindings::KeyValue]| {
        pairs.len() <= max_list
            && pairs
                .iter()
                .all(|p| p.key.len() <= max && p.value.len() <= max)
    };
    if overrides.containers.len() > max_list
        || !pairs_ok(&overrides.labels)
        || !pairs_ok(&overrides.annotations)
    {
        return Err("overrides exceed the size limits".to_string());
    }
    for container in &overrides.containers {
        let args_ok = container
            .args
            .as_ref()
            .is_none_or(|args| args.len() <= max_list && args.iter().all(|a| a.len() <= max));
        let ok = container.name.len() <= max
            && container.image.as_ref().is_none_or(|i| i.len() <= max)
            && args_ok
            && pairs_ok(&container.env)
            && pairs_ok(&container.requests)
            && pairs_ok(&container.limits);
        if !ok {
            return Err(format!(
                "overrides of container {:?} exceed the size limits",
                head(&container.name, 64)
            ));
        }
    }
    Ok(())
}

fn emit_output(
    plugin: &str,
    digest: &str,
    state: &CallState,
    stdout: &BoundedPipe,
    stderr: &BoundedPipe,
) {
    use bindings::Level;
    for (level, message) in &state.logs {
        match level {
            Level::Trace => tracing::trace!(plugin, digest, "{message}"),
            Level::Debug => tracing::debug!(plugin, digest, "{message}"),
            Level::Info => tracing::info!(plugin, digest, "{message}"),
            Level::Warn => tracing::warn!(plugin, digest, "{message}"),
            Level::Error => tracing::error!(plugin, digest, "{message}"),
        }
    }
    if state.dropped_logs > 0 {
        tracing::debug!(
            plugin,
            digest,
            dropped = state.dropped_logs,
            "plugin log lines dropped"
        );
    }
    for (stream, pipe) in [("stdout", stdout), ("stderr", stderr)] {
        let text = pipe.text();
        if !text.is_empty() {
            tracing::debug!(plugin, digest, stream, output = %text.trim_end(), "plugin output");
        }
    }
}
