//! Shared pieces of the hot-swap tests: plugin bytes, sets, a store, and bounded waits.

#![allow(dead_code, reason = "each test binary uses a different part")]

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node;
use wasmdaemon::plugin::bindings::{Interest, NodeBatch, SetInfo};
use wasmdaemon::plugin::{Limits, PluginEngine, Projection};
use wasmdaemon::registry::{PluginStore, SetUse};

/// Longest any wait in these tests lasts before it fails with what it saw.
pub const WAIT: Duration = Duration::from_secs(60);

pub fn bytes_of(path: &str) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("failed to read built plugin {path}: {e}"))
}

pub fn echo() -> Vec<u8> {
    bytes_of(env!("WASMDAEMON_TEST_PLUGIN_ECHO"))
}

/// The echo plugin with a custom section appended: a different digest, the same behaviour.
pub fn echo_version(tag: &str) -> Vec<u8> {
    with_custom_section(&echo(), tag)
}

pub fn with_custom_section(component: &[u8], tag: &str) -> Vec<u8> {
    let name = b"wasmdaemon-test";
    let mut payload = vec![name.len() as u8];
    payload.extend_from_slice(name);
    payload.extend_from_slice(tag.as_bytes());

    let mut out = component.to_vec();
    out.push(0);
    let mut len = payload.len() as u32;
    loop {
        let byte = (len & 0x7f) as u8;
        len >>= 7;
        if len == 0 {
            out.push(byte);
            break;
        }
        out.push(byte | 0x80);
    }
    out.extend_from_slice(&payload);
    out
}

/// A component with no exports: it compiles, but it is not a placement plugin.
pub const EMPTY_COMPONENT: &[u8] = &[0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00];

/// A core module with nothing in it: wasm, but not a component.
pub const CORE_MODULE: &[u8] = &[0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00];

/// An engine whose deadline no honest call on a loaded machine comes near.
pub fn engine() -> PluginEngine {
    let limits = Limits {
        deadline: Duration::from_secs(20),
        ..Limits::default()
    };
    PluginEngine::new(limits).expect("engine")
}

pub fn set_info(name: &str, config: &str) -> SetInfo {
    SetInfo {
        namespace: "default".into(),
        name: name.into(),
        config: config.into(),
        variants: vec![],
    }
}

pub fn set_use(name: &str, config: &str, pinned: Option<&str>) -> SetUse {
    SetUse {
        set: format!("default/{name}"),
        info: set_info(name, config),
        pinned: pinned.map(str::to_string),
    }
}

/// The sets using each plugin, editable while the store runs.
#[derive(Clone, Default)]
pub struct Sets(Arc<Mutex<Vec<(String, SetUse)>>>);

impl Sets {
    pub fn add(&self, plugin: &str, set: SetUse) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((plugin.to_string(), set));
    }

    pub fn replace(&self, plugin: &str, set: SetUse) {
        let mut sets = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        sets.retain(|(_, s)| s.set != set.set);
        sets.push((plugin.to_string(), set));
    }

    pub fn clear(&self) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    fn of(&self, plugin: &str) -> Vec<SetUse> {
        let sets = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        sets.iter()
            .filter(|(p, _)| p == plugin)
            .map(|(_, s)| s.clone())
            .collect()
    }
}

pub fn store(engine: PluginEngine, sets: &Sets, allow_stock_override: bool) -> Arc<PluginStore> {
    let store = Arc::new(PluginStore::new(engine, allow_stock_override));
    let sets = sets.clone();
    store.set_users(move |plugin| sets.of(plugin));
    store
}

/// The digest `store` holds for `plugin`, or `-`.
pub fn current(store: &PluginStore, plugin: &str) -> String {
    store
        .status(plugin)
        .map_or_else(|| "-".to_string(), |s| s.plugin.digest.clone())
}

/// Polls `done` until it holds, failing after [`WAIT`] with `what` and the store's state.
pub fn wait_until(store: &PluginStore, what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        if start.elapsed() > WAIT {
            let plugins: Vec<String> = store
                .names()
                .iter()
                .map(|n| {
                    format!(
                        "{n}={} {:?}",
                        current(store, n),
                        store.status(n).map(|s| s.removed)
                    )
                })
                .collect();
            panic!(
                "timed out after {WAIT:?} waiting until {what}; plugins: {plugins:?}; metrics: {:?}",
                store.metrics()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A batch of `n` nodes with a `zone` label, as a plugin reading every label is sent it.
pub fn nodes(n: usize) -> Arc<NodeBatch> {
    let nodes: Vec<Node> = (0..n)
        .map(|i| {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": format!("node-{i}"), "labels": {"zone": format!("z{}", i % 3)}}
            }))
            .expect("node is valid")
        })
        .collect();
    let everything = Interest {
        labels: vec!["*".into()],
        annotations: vec![],
        taints: false,
        unschedulable: false,
        conditions: false,
        resources: vec![],
        node_info: false,
    };
    Arc::new(Projection::new(&everything).batch(&nodes))
}

pub fn write_atomically(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp-write");
    std::fs::write(&tmp, bytes).expect("write temporary file");
    std::fs::rename(&tmp, path).expect("rename over the plugin");
}
