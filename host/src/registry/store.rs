//! The live plugin store: each user plugin's current good version, swapped atomically.
//!
//! Sources (a plugin directory, ConfigMaps) [`offer`](PluginStore::offer) new bytes. A new
//! version becomes current only after it compiled, linked, described itself and accepted the
//! config of every set that uses it; otherwise the old version stays and the failure is
//! reported. Readers take an `Arc` of the version they use, so a call already running finishes
//! on the version it started with.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use tokio::sync::broadcast;

use super::{RegistryError, STOCK, valid_name};
use crate::plugin::bindings::SetInfo;
use crate::plugin::{LoadStage, LoadedPlugin, PluginEngine, digest_of};

/// Events kept for a receiver that falls behind; one that lags past this should treat every
/// plugin as changed.
const EVENT_BUFFER: usize = 256;

/// Where a user plugin came from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Source {
    /// A `<name>.wasm` file (or symlink) in the plugin directory.
    File(PathBuf),
    /// A key of a ConfigMap's `binaryData`.
    ConfigMap {
        namespace: String,
        name: String,
        key: String,
    },
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::File(path) => write!(f, "{}", path.display()),
            Source::ConfigMap {
                namespace,
                name,
                key,
            } => write!(f, "configmap {namespace}/{name} key {key}"),
        }
    }
}

/// A set that uses a plugin, as the store needs to see it to validate a new version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetUse {
    /// `<namespace>/<name>`.
    pub set: String,
    pub info: SetInfo,
    /// `spec.policy.digest`, when the set pins a version.
    pub pinned: Option<String>,
}

/// The step of a swap that failed; the old version stays current.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FailureKind {
    /// The source could not be read.
    Read,
    /// The name is not a valid plugin name, or a source names it ambiguously.
    InvalidName,
    /// The name is a stock plugin's and overriding stock plugins is not allowed.
    ShadowsStock,
    /// The bytes are not a component this engine compiles.
    Compile,
    /// The component does not link against the host or is not a placement plugin.
    Instantiate,
    /// `describe` failed or answered badly.
    Describe,
    /// A set that uses the plugin has a config the new version rejects.
    ValidateConfig,
}

impl FailureKind {
    /// The `kind` label of `swap_failures_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Read => "read",
            FailureKind::InvalidName => "invalid_name",
            FailureKind::ShadowsStock => "shadows_stock",
            FailureKind::Compile => "compile",
            FailureKind::Instantiate => "instantiate",
            FailureKind::Describe => "describe",
            FailureKind::ValidateConfig => "validate_config",
        }
    }

    /// A PascalCase reason for conditions and events.
    pub fn reason(self) -> &'static str {
        match self {
            FailureKind::Read => "PluginReadFailed",
            FailureKind::InvalidName => "PluginInvalidName",
            FailureKind::ShadowsStock => "PluginShadowsStock",
            FailureKind::Compile => "PluginCompileFailed",
            FailureKind::Instantiate => "PluginInstantiateFailed",
            FailureKind::Describe => "PluginDescribeFailed",
            FailureKind::ValidateConfig => "PluginConfigRejected",
        }
    }
}

/// A version that did not become current.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwapFailure {
    pub plugin: String,
    pub source: Source,
    /// The digest of the refused bytes, when they could be read.
    pub digest: Option<String>,
    pub kind: FailureKind,
    pub message: String,
    /// The sets concerned: those whose config was rejected for [`FailureKind::ValidateConfig`],
    /// every set using the plugin otherwise.
    pub sets: Vec<String>,
}

impl fmt::Display for SwapFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "failed to swap plugin {} from {}: {}",
            self.plugin, self.source, self.message
        )
    }
}

/// What changed in the store. A receiver re-plans the sets using [`plugin`](Self::plugin).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginEvent {
    /// A new version is current.
    Swapped {
        plugin: String,
        from: Option<String>,
        to: String,
        sets: Vec<String>,
    },
    /// A version was refused; the previous one (if any) stays current.
    SwapFailed(SwapFailure),
    /// The source of a plugin went away. Sets listed in `in_use` keep running the last good
    /// version, which stays current and is flagged [`PluginStatus::removed`].
    Removed {
        plugin: String,
        digest: String,
        in_use: Vec<String>,
    },
}

impl PluginEvent {
    /// The plugin the event is about.
    pub fn plugin(&self) -> &str {
        match self {
            PluginEvent::Swapped { plugin, .. } | PluginEvent::Removed { plugin, .. } => plugin,
            PluginEvent::SwapFailed(failure) => &failure.plugin,
        }
    }
}

/// A user plugin's state, for status and conditions.
#[derive(Debug, Clone)]
pub struct PluginStatus {
    pub plugin: Arc<LoadedPlugin>,
    pub source: Source,
    /// The source was deleted while sets still used the plugin.
    pub removed: bool,
    /// The most recent refused version since the current one became current.
    pub last_failure: Option<SwapFailure>,
}

/// Counters of swaps, for the metrics endpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SwapMetrics {
    pub swaps_total: u64,
    /// By [`FailureKind::as_str`].
    pub swap_failures_total: BTreeMap<&'static str, u64>,
}

impl SwapMetrics {
    /// The counters in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::from(
            "# HELP wasmdaemon_plugin_swaps_total Plugin versions that became current.\n\
             # TYPE wasmdaemon_plugin_swaps_total counter\n",
        );
        out.push_str(&format!(
            "wasmdaemon_plugin_swaps_total {}\n",
            self.swaps_total
        ));
        out.push_str(
            "# HELP wasmdaemon_plugin_swap_failures_total Plugin versions refused, by the step \
             that failed.\n# TYPE wasmdaemon_plugin_swap_failures_total counter\n",
        );
        for (kind, count) in &self.swap_failures_total {
            out.push_str(&format!(
                "wasmdaemon_plugin_swap_failures_total{{kind=\"{kind}\"}} {count}\n"
            ));
        }
        out
    }
}

type Users = Arc<dyn Fn(&str) -> Vec<SetUse> + Send + Sync>;

#[derive(Clone)]
struct Refused {
    source: Source,
    bytes: Arc<[u8]>,
    users: Vec<SetUse>,
}

struct Entry {
    current: Arc<LoadedPlugin>,
    source: Source,
    removed: bool,
    last_failure: Option<SwapFailure>,
    /// Good versions by digest: the current one and those sets pin.
    versions: HashMap<String, Arc<LoadedPlugin>>,
}

/// User plugins by name, the stock plugins behind them, and who to tell about changes.
pub struct PluginStore {
    engine: PluginEngine,
    allow_stock_override: bool,
    entries: RwLock<HashMap<String, Entry>>,
    /// Refusals of plugins that have no good version yet.
    orphan_failures: Mutex<HashMap<String, SwapFailure>>,
    /// Versions refused only because a set's config was rejected, with the sets as they were
    /// then; offered again by [`retry_refused`](Self::retry_refused) once those sets change.
    refused: Mutex<HashMap<String, Refused>>,
    users: RwLock<Option<Users>>,
    /// Held for a whole offer or removal, so two versions of a plugin never race to current.
    swapping: Mutex<()>,
    events: broadcast::Sender<PluginEvent>,
    swaps_total: AtomicU64,
    failures: Mutex<BTreeMap<&'static str, u64>>,
}

impl PluginStore {
    /// An empty store; `allow_stock_override` lets a user plugin take a stock plugin's name.
    pub fn new(engine: PluginEngine, allow_stock_override: bool) -> Self {
        Self {
            engine,
            allow_stock_override,
            entries: RwLock::default(),
            orphan_failures: Mutex::default(),
            refused: Mutex::default(),
            users: RwLock::default(),
            swapping: Mutex::new(()),
            events: broadcast::channel(EVENT_BUFFER).0,
            swaps_total: AtomicU64::new(0),
            failures: Mutex::default(),
        }
    }

    pub fn engine(&self) -> &PluginEngine {
        &self.engine
    }

    /// Tells the store which sets use a plugin, so a new version is checked against their
    /// configs before it becomes current. Without it no set is validated on swap.
    pub fn set_users(&self, users: impl Fn(&str) -> Vec<SetUse> + Send + Sync + 'static) {
        *self.users.write().unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(users));
    }

    /// Every change from now on. A receiver that lags (`RecvError::Lagged`) missed events and
    /// should re-plan every set.
    pub fn subscribe(&self) -> broadcast::Receiver<PluginEvent> {
        self.events.subscribe()
    }

    pub fn metrics(&self) -> SwapMetrics {
        SwapMetrics {
            swaps_total: self.swaps_total.load(Ordering::Relaxed),
            swap_failures_total: self
                .failures
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        }
    }

    /// The current version of a user plugin and its flags; `None` for stock and unknown names.
    pub fn status(&self, name: &str) -> Option<PluginStatus> {
        let entries = self.entries.read().unwrap_or_else(PoisonError::into_inner);
        entries.get(name).map(|e| PluginStatus {
            plugin: e.current.clone(),
            source: e.source.clone(),
            removed: e.removed,
            last_failure: e.last_failure.clone(),
        })
    }

    /// The most recent refusal of a plugin that never had a good version.
    pub fn failure_without_version(&self, name: &str) -> Option<SwapFailure> {
        let failures = self
            .orphan_failures
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        failures.get(name).cloned()
    }

    /// The names of the user plugins.
    pub fn names(&self) -> Vec<String> {
        let entries = self.entries.read().unwrap_or_else(PoisonError::into_inner);
        let mut names: Vec<String> = entries.keys().cloned().collect();
        names.sort();
        names
    }

    /// The version a set should use: the pinned digest if given, otherwise the current user
    /// version, otherwise the stock plugin.
    ///
    /// # Errors
    ///
    /// [`RegistryError::DigestMismatch`] when the pinned version is not loaded,
    /// [`RegistryError::Unknown`] when no source provides the name.
    pub fn get(
        &self,
        name: &str,
        pinned: Option<&str>,
    ) -> Result<Arc<LoadedPlugin>, RegistryError> {
        if !valid_name(name) {
            return Err(RegistryError::InvalidName(name.to_string()));
        }
        let user = {
            let entries = self.entries.read().unwrap_or_else(PoisonError::into_inner);
            entries.get(name).map(|e| {
                let version = pinned
                    .map_or(Some(&e.current), |p| e.versions.get(p))
                    .cloned();
                (version, e.current.digest.clone())
            })
        };
        let plugin = match user {
            Some((Some(version), _)) => return Ok(version),
            Some((None, actual)) => {
                return Err(RegistryError::DigestMismatch {
                    name: name.to_string(),
                    actual,
                    pinned: pinned.unwrap_or_default().to_string(),
                });
            }
            None => self.stock(name)?,
        };
        match pinned {
            Some(pinned) if pinned != plugin.digest => Err(RegistryError::DigestMismatch {
                name: name.to_string(),
                actual: plugin.digest.clone(),
                pinned: pinned.to_string(),
            }),
            _ => Ok(plugin),
        }
    }

    fn stock(&self, name: &str) -> Result<Arc<LoadedPlugin>, RegistryError> {
        let Some((_, bytes)) = STOCK.iter().find(|(n, _)| *n == name) else {
            let searched = match self.failure_without_version(name) {
                Some(refused) => format!(
                    "; its only version, from {}, was refused ({}): {}",
                    refused.source,
                    refused.kind.as_str(),
                    refused.message
                ),
                None => " and no plugin source provides it".to_string(),
            };
            return Err(RegistryError::Unknown {
                name: name.to_string(),
                stock: STOCK.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", "),
                searched,
            });
        };
        Ok(self.engine.load(name, bytes)?)
    }

    /// Offers new bytes for plugin `name`. Returns the new current digest, or the failure
    /// (also logged, counted and broadcast); on failure the previous version stays current.
    ///
    /// Compiles and calls the plugin: run it on a blocking thread.
    pub fn offer(
        &self,
        name: &str,
        source: Source,
        bytes: &[u8],
    ) -> Result<String, Box<SwapFailure>> {
        let _swapping = self.swapping.lock().unwrap_or_else(PoisonError::into_inner);
        let digest = digest_of(bytes);
        let users = self.users_of(name);
        let fail = |kind, message: String| SwapFailure {
            plugin: name.to_string(),
            source: source.clone(),
            digest: Some(digest.clone()),
            kind,
            message,
            sets: users.iter().map(|u| u.set.clone()).collect(),
        };

        if !valid_name(name) {
            let message = "use lower-case letters, digits and '-', at most 63".to_string();
            return Err(Box::new(
                self.refuse(fail(FailureKind::InvalidName, message)),
            ));
        }
        if !self.allow_stock_override && STOCK.iter().any(|(n, _)| *n == name) {
            let message = "the name belongs to a stock plugin; rename it, or allow stock \
                           plugins to be overridden (--allow-stock-override)"
                .to_string();
            return Err(Box::new(
                self.refuse(fail(FailureKind::ShadowsStock, message)),
            ));
        }
        self.refused
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(name);
        if let Some(unchanged) = self.unchanged(name, &source, &digest) {
            return Ok(unchanged);
        }

        let plugin = match self.engine.load_staged(name, bytes) {
            Ok(plugin) => plugin,
            Err((stage, error)) => {
                let kind = match stage {
                    LoadStage::Compile => FailureKind::Compile,
                    LoadStage::Link => FailureKind::Instantiate,
                    LoadStage::Describe => FailureKind::Describe,
                };
                return Err(Box::new(self.refuse(fail(kind, error.to_string()))));
            }
        };

        let rejected: Vec<(&str, String)> = users
            .iter()
            .filter(|u| u.pinned.as_ref().is_none_or(|p| *p == digest))
            .filter_map(|u| {
                let answer = plugin.validate_config(&u.info.config, &u.info.variants);
                answer.err().map(|e| (u.set.as_str(), e.to_string()))
            })
            .collect();
        if !rejected.is_empty() {
            let message: Vec<String> = rejected.iter().map(|(s, e)| format!("{s}: {e}")).collect();
            let mut failure = fail(FailureKind::ValidateConfig, message.join("; "));
            failure.sets = rejected.iter().map(|(s, _)| s.to_string()).collect();
            let refused = Refused {
                source: source.clone(),
                bytes: Arc::from(bytes),
                users: users.clone(),
            };
            self.refused
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(name.to_string(), refused);
            return Err(Box::new(self.refuse(failure)));
        }

        self.install(name, source, plugin, &users);
        Ok(digest)
    }

    /// The current digest when `digest` already is current (clearing a removal flag).
    fn unchanged(&self, name: &str, source: &Source, digest: &str) -> Option<String> {
        let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
        let entry = entries
            .get_mut(name)
            .filter(|e| e.current.digest == digest)?;
        entry.source = source.clone();
        if entry.removed {
            entry.removed = false;
            tracing::info!(plugin = name, digest, source = %source, "plugin source restored");
        }
        Some(digest.to_string())
    }

    fn install(&self, name: &str, source: Source, plugin: Arc<LoadedPlugin>, users: &[SetUse]) {
        let to = plugin.digest.clone();
        let from = {
            let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
            let entry = entries.entry(name.to_string());
            match entry {
                std::collections::hash_map::Entry::Occupied(mut e) => {
                    let e = e.get_mut();
                    let from = std::mem::replace(&mut e.current, plugin.clone());
                    e.source = source.clone();
                    e.removed = false;
                    e.last_failure = None;
                    e.versions.insert(to.clone(), plugin);
                    e.versions.retain(|d, _| {
                        *d == to || users.iter().any(|u| u.pinned.as_deref() == Some(d))
                    });
                    Some(from.digest.clone())
                }
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(Entry {
                        current: plugin.clone(),
                        source: source.clone(),
                        removed: false,
                        last_failure: None,
                        versions: HashMap::from([(to.clone(), plugin)]),
                    });
                    None
                }
            }
        };
        self.orphan_failures
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(name);
        self.swaps_total.fetch_add(1, Ordering::Relaxed);
        tracing::info!(plugin = name, from = from.as_deref().unwrap_or("-"), to = %to,
            source = %source, sets = users.len(), "plugin swapped");
        let _ = self.events.send(PluginEvent::Swapped {
            plugin: name.to_string(),
            from,
            to,
            sets: users.iter().map(|u| u.set.clone()).collect(),
        });
    }

    /// Records a failure that happened before the store saw any bytes (an unreadable file, an
    /// ambiguous ConfigMap), exactly as a refused offer is recorded.
    pub fn report(&self, failure: SwapFailure) -> SwapFailure {
        self.refuse(failure)
    }

    fn refuse(&self, failure: SwapFailure) -> SwapFailure {
        *self
            .failures
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(failure.kind.as_str())
            .or_default() += 1;
        tracing::warn!(plugin = %failure.plugin, source = %failure.source,
            digest = failure.digest.as_deref().unwrap_or("-"), kind = failure.kind.as_str(),
            sets = ?failure.sets, error = %failure.message, "plugin version refused");

        let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
        match entries.get_mut(&failure.plugin) {
            Some(entry) => entry.last_failure = Some(failure.clone()),
            None => {
                self.orphan_failures
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(failure.plugin.clone(), failure.clone());
            }
        }
        drop(entries);
        let _ = self.events.send(PluginEvent::SwapFailed(failure.clone()));
        failure
    }

    /// Offers again each version refused for a set's config once the sets using its plugin
    /// changed (a set was edited, added or deleted). Sources call this periodically; it costs
    /// one look at the sets per refused version. Returns how many were offered.
    pub fn retry_refused(&self) -> usize {
        let candidates: Vec<(String, Refused)> = {
            let refused = self.refused.lock().unwrap_or_else(PoisonError::into_inner);
            refused
                .iter()
                .map(|(n, r)| (n.clone(), r.clone()))
                .collect()
        };
        let mut offered = 0;
        for (name, refused) in candidates {
            if self.users_of(&name) != refused.users {
                offered += 1;
                let _ = self.offer(&name, refused.source, &refused.bytes);
            }
        }
        offered
    }

    /// The source of `name` went away. Ignored when another source provides it now. When sets
    /// still use it, its last good version stays current, flagged as removed.
    pub fn remove(&self, name: &str, source: &Source) {
        let _swapping = self.swapping.lock().unwrap_or_else(PoisonError::into_inner);
        let users = self.users_of(name);
        let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
        self.refused
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|n, r| n != name || r.source != *source);
        let Some(entry) = entries.get_mut(name).filter(|e| e.source == *source) else {
            drop(entries);
            self.orphan_failures
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(name);
            return;
        };
        let digest = entry.current.digest.clone();
        let in_use: Vec<String> = users.iter().map(|u| u.set.clone()).collect();
        if in_use.is_empty() {
            entries.remove(name);
            tracing::info!(plugin = name, digest, source = %source, "plugin removed");
        } else {
            entry.removed = true;
            tracing::warn!(plugin = name, digest, source = %source, sets = ?in_use,
                "plugin source removed while sets use it; they keep the last good version");
        }
        drop(entries);
        let _ = self.events.send(PluginEvent::Removed {
            plugin: name.to_string(),
            digest,
            in_use,
        });
    }

    /// The sets using `name`, sorted by set, so two answers compare equal when the sets did
    /// not change whatever order the source lists them in.
    fn users_of(&self, name: &str) -> Vec<SetUse> {
        let users = self
            .users
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let mut users = users.map(|f| f(name)).unwrap_or_default();
        users.sort_by(|a, b| a.set.cmp(&b.set));
        users
    }
}
