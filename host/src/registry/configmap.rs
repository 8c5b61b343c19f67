//! Keeps a [`PluginStore`] in step with the plugin ConfigMaps of one namespace.
//!
//! A ConfigMap labelled [`LABEL`] carries components in `binaryData`. With a non-empty label
//! value the ConfigMap holds one plugin of that name; with an empty value every key is a
//! plugin named after the key (without `.wasm`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::runtime::{WatchStreamExt, watcher};

use super::store::{FailureKind, PluginStore, Source, SwapFailure};

/// How often versions refused for a set's config are reconsidered.
const RETRY_INTERVAL: Duration = Duration::from_secs(1);

/// The label that marks a plugin ConfigMap.
pub const LABEL: &str = "wasmdaemon.io/plugin";

/// The plugins one ConfigMap provides: name → (key, bytes), or why it provides none.
pub fn plugins_in(cm: &ConfigMap) -> Result<BTreeMap<String, (String, Vec<u8>)>, String> {
    let label = cm
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(LABEL))
        .map(String::as_str)
        .unwrap_or_default();
    let empty = BTreeMap::new();
    let data = cm.binary_data.as_ref().unwrap_or(&empty);

    if label.is_empty() {
        return Ok(data
            .iter()
            .map(|(key, bytes)| {
                let name = key.strip_suffix(".wasm").unwrap_or(key).to_string();
                (name, (key.clone(), bytes.0.clone()))
            })
            .collect());
    }

    let wanted = format!("{label}.wasm");
    let chosen = match data.len() {
        0 => return Ok(BTreeMap::new()),
        1 => data.iter().next(),
        _ => data.get_key_value(&wanted),
    };
    match chosen {
        Some((key, bytes)) => Ok(BTreeMap::from([(
            label.to_string(),
            (key.clone(), bytes.0.clone()),
        )])),
        None => Err(format!(
            "label {LABEL}={label} names one plugin but binaryData has {} keys and none is \
             {wanted}",
            data.len()
        )),
    }
}

/// Applies ConfigMap events to the store, remembering which plugins each ConfigMap provided.
pub struct ConfigMapSync {
    store: Arc<PluginStore>,
    namespace: String,
    provided: HashMap<String, BTreeSet<(String, String)>>,
    /// ConfigMaps seen since the watch (re)started, to drop those deleted meanwhile.
    relisting: Option<BTreeSet<String>>,
}

impl ConfigMapSync {
    pub fn new(store: Arc<PluginStore>, namespace: &str) -> Self {
        Self {
            store,
            namespace: namespace.to_string(),
            provided: HashMap::new(),
            relisting: None,
        }
    }

    /// Handles one watch event. Compiles and calls plugins: run it on a blocking thread.
    pub fn apply(&mut self, event: watcher::Event<ConfigMap>) {
        match event {
            watcher::Event::Init => self.relisting = Some(BTreeSet::new()),
            watcher::Event::InitApply(cm) => {
                let name = cm.metadata.name.clone().unwrap_or_default();
                if let Some(seen) = self.relisting.as_mut() {
                    seen.insert(name);
                }
                self.upsert(&cm);
            }
            watcher::Event::InitDone => {
                let seen = self.relisting.take().unwrap_or_default();
                let gone: Vec<String> = self
                    .provided
                    .keys()
                    .filter(|name| !seen.contains(*name))
                    .cloned()
                    .collect();
                for name in gone {
                    self.drop_configmap(&name);
                }
            }
            watcher::Event::Apply(cm) => self.upsert(&cm),
            watcher::Event::Delete(cm) => {
                self.drop_configmap(&cm.metadata.name.clone().unwrap_or_default());
            }
        }
    }

    fn source(&self, cm: &str, key: &str) -> Source {
        Source::ConfigMap {
            namespace: self.namespace.clone(),
            name: cm.to_string(),
            key: key.to_string(),
        }
    }

    fn upsert(&mut self, cm: &ConfigMap) {
        let cm_name = cm.metadata.name.clone().unwrap_or_default();
        let plugins = match plugins_in(cm) {
            Ok(plugins) => plugins,
            Err(message) => {
                let label = cm.metadata.labels.as_ref().and_then(|l| l.get(LABEL));
                self.store.report(SwapFailure {
                    plugin: label.cloned().unwrap_or_default(),
                    source: self.source(&cm_name, ""),
                    digest: None,
                    kind: FailureKind::InvalidName,
                    message,
                    sets: Vec::new(),
                });
                BTreeMap::new()
            }
        };

        let now: BTreeSet<(String, String)> = plugins
            .iter()
            .map(|(n, (k, _))| (n.clone(), k.clone()))
            .collect();
        let before = self
            .provided
            .insert(cm_name.clone(), now.clone())
            .unwrap_or_default();
        for (plugin, key) in before.difference(&now) {
            self.store.remove(plugin, &self.source(&cm_name, key));
        }
        for (plugin, (key, bytes)) in plugins {
            let _ = self
                .store
                .offer(&plugin, self.source(&cm_name, &key), &bytes);
        }
    }

    fn drop_configmap(&mut self, cm_name: &str) {
        for (plugin, key) in self.provided.remove(cm_name).unwrap_or_default() {
            self.store.remove(&plugin, &self.source(cm_name, &key));
        }
    }
}

/// Watches the plugin ConfigMaps of `namespace` until the returned future is dropped.
///
/// Each event is applied on a blocking thread (compiling and validating run guest code), one
/// at a time and in order. Watch errors are retried with backoff and logged at debug. Every
/// second, versions refused for a set's config are reconsidered.
pub async fn watch(store: Arc<PluginStore>, client: kube::Client, namespace: String) {
    let api: Api<ConfigMap> = Api::namespaced(client, &namespace);
    let config = watcher::Config::default().labels(LABEL);
    let mut events = watcher(api, config).default_backoff().boxed();
    let mut sync = Some(ConfigMapSync::new(store.clone(), &namespace));

    let mut retry = tokio::time::interval(RETRY_INTERVAL);
    retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let event = tokio::select! {
            event = events.next() => event,
            _ = retry.tick() => {
                let store = store.clone();
                let _ = tokio::task::spawn_blocking(move || store.retry_refused()).await;
                continue;
            }
        };
        let Some(event) = event else {
            return;
        };
        let event = match event {
            Ok(event) => event,
            Err(error) => {
                tracing::debug!(%error, "plugin configmap watch failed; retrying");
                continue;
            }
        };
        let Some(mut current) = sync.take() else {
            return;
        };
        let applied = tokio::task::spawn_blocking(move || {
            current.apply(event);
            current
        })
        .await;
        match applied {
            Ok(current) => sync = Some(current),
            Err(error) => {
                tracing::error!(%error, "plugin configmap sync thread failed");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::ByteString;
    use kube::api::ObjectMeta;

    use super::*;

    fn configmap(label: &str, keys: &[&str]) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some("plugins".into()),
                labels: Some(BTreeMap::from([(LABEL.to_string(), label.to_string())])),
                ..ObjectMeta::default()
            },
            binary_data: Some(
                keys.iter()
                    .map(|k| (k.to_string(), ByteString(k.as_bytes().to_vec())))
                    .collect(),
            ),
            ..ConfigMap::default()
        }
    }

    fn names(cm: &ConfigMap) -> Result<Vec<(String, String)>, String> {
        plugins_in(cm).map(|p| p.into_iter().map(|(n, (k, _))| (n, k)).collect())
    }

    #[test]
    fn an_empty_label_names_each_plugin_after_its_key() {
        let cm = configmap("", &["gpu.wasm", "zones"]);
        let expected = vec![
            ("gpu".to_string(), "gpu.wasm".to_string()),
            ("zones".to_string(), "zones".to_string()),
        ];
        assert_eq!(names(&cm), Ok(expected));
    }

    #[test]
    fn a_label_value_names_the_only_key_whatever_it_is_called() {
        let cm = configmap("gpu", &["component.bin"]);
        let expected = vec![("gpu".to_string(), "component.bin".to_string())];
        assert_eq!(names(&cm), Ok(expected));
    }

    #[test]
    fn a_label_value_with_several_keys_needs_a_key_of_that_name() {
        let chosen = configmap("gpu", &["gpu.wasm", "README"]);
        let expected = vec![("gpu".to_string(), "gpu.wasm".to_string())];
        assert_eq!(names(&chosen), Ok(expected));

        let ambiguous = configmap("gpu", &["a.wasm", "b.wasm"]);
        let error = names(&ambiguous).expect_err("ambiguous");
        assert!(error.contains("none is gpu.wasm"), "{error}");
    }
}
