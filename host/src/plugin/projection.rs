//! Turns Kubernetes `Node`s into the WIT node batch, keeping only what a plugin reads.
//!
//! Sending a plugin every label of every node dominates the cost of a call, and so does sending
//! one string per label: a plugin that reads three labels and one resource gets exactly those,
//! in columnar tables where each distinct string travels once. The same walk over a node also
//! yields a fingerprint, so a node whose projected parts did not change is not sent again.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hash, Hasher};

use k8s_openapi::api::core::v1::{Node, NodeSystemInfo};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::bindings::{self, Interest, NodeBatch, TaintEffect};
use crate::node_table::Parts;
use crate::quantity::parse_milli;

/// Which keys of a map the plugin asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct KeyFilter {
    all: bool,
    /// Sorted and deduplicated.
    exact: Vec<String>,
    prefixes: Vec<String>,
}

impl KeyFilter {
    fn new(entries: &[String]) -> Self {
        let mut filter = Self::default();
        for entry in entries {
            if entry == "*" {
                filter.all = true;
            } else if entry.ends_with('/') {
                filter.prefixes.push(entry.clone());
            } else {
                filter.exact.push(entry.clone());
            }
        }
        filter.exact.sort();
        filter.exact.dedup();
        filter
    }

    fn is_empty(&self) -> bool {
        !self.all && self.exact.is_empty() && self.prefixes.is_empty()
    }

    fn matches(&self, key: &str) -> bool {
        self.all
            || self.exact.binary_search_by(|k| k.as_str().cmp(key)).is_ok()
            || self.prefixes.iter().any(|p| key.starts_with(p.as_str()))
    }

    /// Calls `f` for every wanted entry of `map`, in key order. With only exact keys it walks
    /// the two sorted lists side by side instead of searching for each key.
    fn for_each<'a, V>(
        &self,
        map: Option<&'a BTreeMap<String, V>>,
        mut f: impl FnMut(&'a str, &'a V),
    ) {
        let Some(map) = map else { return };
        if self.is_empty() {
            return;
        }
        if self.all || !self.prefixes.is_empty() {
            for (k, v) in map.iter().filter(|(k, _)| self.matches(k)) {
                f(k, v);
            }
            return;
        }
        let mut wanted = self.exact.iter().peekable();
        for (k, v) in map {
            while wanted.next_if(|w| w.as_str() < k.as_str()).is_some() {}
            match wanted.peek() {
                None => break,
                Some(w) if w.as_str() == k.as_str() => f(k, v),
                Some(_) => {}
            }
        }
    }
}

/// What a walk over a node's projected parts reports, in a fixed order.
trait Visitor<'a> {
    fn label(&mut self, key: &'a str, value: &'a str);
    fn annotation(&mut self, key: &'a str, value: &'a str);
    fn taint(&mut self, key: &'a str, value: &'a str, effect: TaintEffect);
    fn condition(&mut self, kind: &'a str, status: &'a str);
    fn capacity(&mut self, name: &'a str, milli: i64);
    fn allocatable(&mut self, name: &'a str, milli: i64);
    fn info(&mut self, info: &'a NodeSystemInfo);
}

/// A compiled `interest`: the recipe for projecting nodes for one plugin.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Projection {
    labels: KeyFilter,
    annotations: KeyFilter,
    resources: KeyFilter,
    taints: bool,
    unschedulable: bool,
    conditions: bool,
    node_info: bool,
}

impl Projection {
    /// Compiles what a plugin declared it reads.
    pub fn new(interest: &Interest) -> Self {
        Self {
            labels: KeyFilter::new(&interest.labels),
            annotations: KeyFilter::new(&interest.annotations),
            resources: KeyFilter::new(&interest.resources),
            taints: interest.taints,
            unschedulable: interest.unschedulable,
            conditions: interest.conditions,
            node_info: interest.node_info,
        }
    }

    /// Every part of a node: what the host itself watches for placement-relevant change.
    pub fn everything() -> Self {
        let all = KeyFilter {
            all: true,
            ..KeyFilter::default()
        };
        Self {
            labels: all.clone(),
            annotations: all.clone(),
            resources: all,
            taints: true,
            unschedulable: true,
            conditions: true,
            node_info: true,
        }
    }

    /// Whether a change to `parts` of a node can change what the plugin is sent about it.
    pub fn reads(&self, parts: &Parts) -> bool {
        parts.labels.iter().any(|k| self.labels.matches(k))
            || parts
                .annotations
                .iter()
                .any(|k| self.annotations.matches(k))
            || parts.resources.iter().any(|k| self.resources.matches(k))
            || (self.taints && parts.taints)
            || (self.unschedulable && parts.unschedulable)
            || (self.conditions && parts.conditions)
            || (self.node_info && parts.node_info)
    }

    /// Whether a label key is one the plugin reads; a change to any other label cannot change
    /// the plugin's answer.
    pub fn reads_label(&self, key: &str) -> bool {
        self.labels.matches(key)
    }

    fn unschedulable(&self, node: &Node) -> bool {
        self.unschedulable
            && node
                .spec
                .as_ref()
                .and_then(|s| s.unschedulable)
                .unwrap_or(false)
    }

    fn visit<'a>(&self, node: &'a Node, v: &mut impl Visitor<'a>) {
        let meta = &node.metadata;
        let spec = node.spec.as_ref();
        let status = node.status.as_ref();

        self.labels
            .for_each(meta.labels.as_ref(), |k, val| v.label(k, val));
        self.annotations
            .for_each(meta.annotations.as_ref(), |k, val| v.annotation(k, val));
        if self.taints {
            for t in spec.and_then(|s| s.taints.as_ref()).into_iter().flatten() {
                let effect = match t.effect.as_str() {
                    "NoSchedule" => TaintEffect::NoSchedule,
                    "PreferNoSchedule" => TaintEffect::PreferNoSchedule,
                    "NoExecute" => TaintEffect::NoExecute,
                    _ => continue,
                };
                v.taint(&t.key, t.value.as_deref().unwrap_or(""), effect);
            }
        }
        if self.conditions {
            for c in status
                .and_then(|s| s.conditions.as_ref())
                .into_iter()
                .flatten()
            {
                v.condition(&c.type_, &c.status);
            }
        }
        // A quantity the API server would never have stored is left out rather than guessed.
        let milli = |q: &Quantity| parse_milli(&q.0).ok();
        self.resources
            .for_each(status.and_then(|s| s.capacity.as_ref()), |name, q| {
                if let Some(m) = milli(q) {
                    v.capacity(name, m);
                }
            });
        self.resources
            .for_each(status.and_then(|s| s.allocatable.as_ref()), |name, q| {
                if let Some(m) = milli(q) {
                    v.allocatable(name, m);
                }
            });
        if self.node_info
            && let Some(info) = status.and_then(|s| s.node_info.as_ref())
        {
            v.info(info);
        }
    }

    /// A hash of everything the plugin would be sent about `node`. Equal fingerprints mean the
    /// plugin would see the same node, so its earlier answer still holds.
    pub fn fingerprint(&self, node: &Node) -> u64 {
        let mut hasher = Fingerprint(FastHasher::default());
        node.metadata.name.hash(&mut hasher.0);
        self.unschedulable(node).hash(&mut hasher.0);
        self.visit(node, &mut hasher);
        hasher.0.finish()
    }

    /// The batch the plugin is sent for `nodes`, in order.
    pub fn batch<'a>(&self, nodes: impl IntoIterator<Item = &'a Node>) -> NodeBatch {
        let mut builder = BatchBuilder::default();
        for (index, node) in nodes.into_iter().enumerate() {
            builder.node = index as u32;
            let name = builder.text(node.metadata.name.as_deref().unwrap_or(""));
            let unschedulable = self.unschedulable(node);
            builder.batch.nodes.push(bindings::Node {
                name,
                unschedulable,
            });
            self.visit(node, &mut builder);
        }
        builder.batch
    }
}

/// Batches a plugin version was recently sent, for other sets to reuse: after a swap every set
/// using the plugin decides every node, and projecting 10,000 nodes costs several times the
/// plugin call itself. Keyed by what identifies a batch's content exactly (see
/// [`Cursor`](crate::node_table::Cursor)); the few most recent are kept.
#[derive(Default)]
pub struct SharedBatches {
    recent: std::sync::Mutex<std::collections::VecDeque<(u64, std::sync::Arc<NodeBatch>)>>,
    built: std::sync::atomic::AtomicU64,
}

impl SharedBatches {
    const KEEP: usize = 8;

    /// How many batches were projected rather than reused.
    pub fn built(&self) -> u64 {
        self.built.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The batch stored under `key`, or `build`'s, stored for next time.
    pub fn get_or_build(
        &self,
        key: u64,
        build: impl FnOnce() -> NodeBatch,
    ) -> std::sync::Arc<NodeBatch> {
        let lock = || {
            self.recent
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        };
        if let Some((_, batch)) = lock().iter().find(|(k, _)| *k == key) {
            return batch.clone();
        }
        let batch = std::sync::Arc::new(build());
        self.built
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut recent = lock();
        if recent.len() >= Self::KEEP {
            recent.pop_front();
        }
        recent.push_back((key, batch.clone()));
        batch
    }
}

/// A 64-bit key for `parts`, with the hasher fingerprints use.
pub fn key_of(parts: impl Hash) -> u64 {
    let mut hasher = FastHasher::default();
    parts.hash(&mut hasher);
    hasher.finish()
}

struct Fingerprint(FastHasher);

/// A multiply-rotate hasher over 8-byte words: several times faster than SipHash on the short
/// strings of a node. It only detects change; equal hashes of different content would leave a
/// node's earlier answer in place until its next change, a risk of about 2^-64 per change.
#[derive(Default)]
struct FastHasher(u64);

impl FastHasher {
    const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(Self::SEED);
    }
}

impl Hasher for FastHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let mut tail = [0u8; 8];
        tail[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
        self.add(u64::from_le_bytes(tail) ^ ((bytes.len() as u64) << 56));
    }

    fn write_u8(&mut self, value: u8) {
        self.add(u64::from(value));
    }

    fn write_u64(&mut self, value: u64) {
        self.add(value);
    }

    fn write_usize(&mut self, value: usize) {
        self.add(value as u64);
    }

    fn finish(&self) -> u64 {
        // A final avalanche so nearby inputs land far apart.
        let mut x = self.0;
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
        x ^= x >> 33;
        x
    }
}

impl<'a> Visitor<'a> for Fingerprint {
    fn label(&mut self, key: &'a str, value: &'a str) {
        (0u8, key, value).hash(&mut self.0);
    }
    fn annotation(&mut self, key: &'a str, value: &'a str) {
        (1u8, key, value).hash(&mut self.0);
    }
    fn taint(&mut self, key: &'a str, value: &'a str, effect: TaintEffect) {
        (2u8, key, value, effect as u8).hash(&mut self.0);
    }
    fn condition(&mut self, kind: &'a str, status: &'a str) {
        (3u8, kind, status).hash(&mut self.0);
    }
    fn capacity(&mut self, name: &'a str, milli: i64) {
        (4u8, name, milli).hash(&mut self.0);
    }
    fn allocatable(&mut self, name: &'a str, milli: i64) {
        (5u8, name, milli).hash(&mut self.0);
    }
    fn info(&mut self, i: &'a NodeSystemInfo) {
        6u8.hash(&mut self.0);
        (&i.architecture, &i.operating_system, &i.kernel_version).hash(&mut self.0);
        (
            &i.container_runtime_version,
            &i.kubelet_version,
            &i.os_image,
        )
            .hash(&mut self.0);
    }
}

/// Fills a batch, sending each distinct string once.
#[derive(Default)]
struct BatchBuilder<'a> {
    batch: NodeBatch,
    strings: HashMap<&'a str, u32, BuildHasherDefault<FastHasher>>,
    node: u32,
}

#[expect(
    clippy::derivable_impls,
    reason = "the type is generated; deriving would ask bindgen to derive Default for every type"
)]
impl Default for NodeBatch {
    fn default() -> Self {
        Self {
            strings: Vec::new(),
            nodes: Vec::new(),
            labels: Vec::new(),
            annotations: Vec::new(),
            taints: Vec::new(),
            conditions: Vec::new(),
            capacity: Vec::new(),
            allocatable: Vec::new(),
            infos: Vec::new(),
        }
    }
}

impl<'a> BatchBuilder<'a> {
    fn text(&mut self, s: &'a str) -> u32 {
        match self.strings.entry(s) {
            Entry::Occupied(e) => *e.get(),
            Entry::Vacant(e) => {
                let index = self.batch.strings.len() as u32;
                self.batch.strings.push(s.to_string());
                *e.insert(index)
            }
        }
    }

    fn entry(&mut self, key: &'a str, value: &'a str) -> bindings::Entry {
        bindings::Entry {
            node: self.node,
            key: self.text(key),
            value: self.text(value),
        }
    }

    fn amount(&mut self, name: &'a str, milli_value: i64) -> bindings::Amount {
        bindings::Amount {
            node: self.node,
            name: self.text(name),
            milli_value,
        }
    }
}

impl<'a> Visitor<'a> for BatchBuilder<'a> {
    fn label(&mut self, key: &'a str, value: &'a str) {
        let entry = self.entry(key, value);
        self.batch.labels.push(entry);
    }
    fn annotation(&mut self, key: &'a str, value: &'a str) {
        let entry = self.entry(key, value);
        self.batch.annotations.push(entry);
    }
    fn taint(&mut self, key: &'a str, value: &'a str, effect: TaintEffect) {
        let (key, value) = (self.text(key), self.text(value));
        self.batch.taints.push(bindings::Taint {
            node: self.node,
            key,
            value,
            effect,
        });
    }
    fn condition(&mut self, kind: &'a str, status: &'a str) {
        let entry = self.entry(kind, status);
        self.batch.conditions.push(entry);
    }
    fn capacity(&mut self, name: &'a str, milli: i64) {
        let amount = self.amount(name, milli);
        self.batch.capacity.push(amount);
    }
    fn allocatable(&mut self, name: &'a str, milli: i64) {
        let amount = self.amount(name, milli);
        self.batch.allocatable.push(amount);
    }
    fn info(&mut self, i: &'a NodeSystemInfo) {
        let info = bindings::NodeInfo {
            node: self.node,
            architecture: self.text(&i.architecture),
            operating_system: self.text(&i.operating_system),
            kernel_version: self.text(&i.kernel_version),
            container_runtime_version: self.text(&i.container_runtime_version),
            kubelet_version: self.text(&i.kubelet_version),
            os_image: self.text(&i.os_image),
        };
        self.batch.infos.push(info);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn interest(labels: &[&str], resources: &[&str]) -> Interest {
        Interest {
            labels: labels.iter().map(|s| s.to_string()).collect(),
            annotations: Vec::new(),
            taints: false,
            unschedulable: false,
            conditions: false,
            resources: resources.iter().map(|s| s.to_string()).collect(),
            node_info: false,
        }
    }

    fn node(name: &str, arch: &str) -> Node {
        serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": name,
                "labels": {
                    "kubernetes.io/arch": arch,
                    "feature.node.kubernetes.io/cpu-model": "x",
                    "feature.node.kubernetes.io/pci-10de.present": "true",
                    "zone": "a"
                },
                "annotations": {"a": "b"}
            },
            "spec": {"taints": [{"key": "k", "effect": "NoSchedule"}], "unschedulable": true},
            "status": {
                "capacity": {"memory": "1Gi", "cpu": "4", "nvidia.com/gpu": "2"},
                "nodeInfo": {
                    "architecture": arch, "operatingSystem": "linux",
                    "kernelVersion": "6.1", "containerRuntimeVersion": "containerd://1.7",
                    "kubeletVersion": "v1.29.0", "osImage": "Debian", "bootID": "",
                    "machineID": "", "systemUUID": "", "kubeProxyVersion": ""
                }
            }
        }))
        .unwrap()
    }

    fn text(batch: &NodeBatch, index: u32) -> &str {
        &batch.strings[index as usize]
    }

    #[test]
    fn only_declared_labels_and_resources_are_sent() {
        let projection = Projection::new(&interest(
            &["kubernetes.io/arch", "missing"],
            &["nvidia.com/gpu"],
        ));
        let batch = projection.batch([&node("n1", "arm64")]);
        assert_eq!(batch.nodes.len(), 1);
        assert_eq!(text(&batch, batch.nodes[0].name), "n1");
        let labels: Vec<_> = batch
            .labels
            .iter()
            .map(|e| (e.node, text(&batch, e.key), text(&batch, e.value)))
            .collect();
        assert_eq!(labels, [(0, "kubernetes.io/arch", "arm64")]);
        let capacity: Vec<_> = batch
            .capacity
            .iter()
            .map(|a| (text(&batch, a.name), a.milli_value))
            .collect();
        assert_eq!(capacity, [("nvidia.com/gpu", 2000)]);
        assert!(batch.annotations.is_empty());
        assert!(batch.taints.is_empty());
        assert!(!batch.nodes[0].unschedulable);
        assert!(batch.infos.is_empty());
    }

    #[test]
    fn each_distinct_string_is_sent_once() {
        let projection = Projection::new(&interest(&["kubernetes.io/arch", "zone"], &["cpu"]));
        let nodes: Vec<Node> = (0..100).map(|i| node(&format!("n{i}"), "amd64")).collect();
        let batch = projection.batch(&nodes);
        // 100 names, the two keys, their two values, and "cpu".
        assert_eq!(batch.strings.len(), 105);
        assert_eq!(batch.labels.len(), 200);
        assert!(batch.labels.windows(2).all(|w| w[0].node <= w[1].node));
        assert_eq!(batch.labels[199].node, 99);
    }

    #[test]
    fn prefix_and_wildcard_entries_select_many_keys() {
        let prefixed = Projection::new(&interest(&["feature.node.kubernetes.io/"], &["*"]));
        let batch = prefixed.batch([&node("n1", "arm64")]);
        let keys: Vec<_> = batch.labels.iter().map(|e| text(&batch, e.key)).collect();
        assert_eq!(
            keys,
            [
                "feature.node.kubernetes.io/cpu-model",
                "feature.node.kubernetes.io/pci-10de.present"
            ]
        );
        assert_eq!(batch.capacity.len(), 3);

        let all = Projection::new(&interest(&["*"], &[]));
        assert_eq!(all.batch([&node("n1", "arm64")]).labels.len(), 4);
        assert!(all.reads_label("anything"));
        assert!(!prefixed.reads_label("zone"));
    }

    #[test]
    fn flags_bring_taints_cordon_and_node_info() {
        let mut wanted = interest(&[], &[]);
        wanted.taints = true;
        wanted.unschedulable = true;
        wanted.node_info = true;
        let batch = Projection::new(&wanted).batch([&node("n1", "arm64")]);
        assert_eq!(batch.taints.len(), 1);
        assert!(batch.nodes[0].unschedulable);
        assert_eq!(text(&batch, batch.infos[0].architecture), "arm64");
    }

    #[test]
    fn fingerprint_changes_only_with_what_the_plugin_reads() {
        let projection = Projection::new(&interest(&["kubernetes.io/arch"], &["memory"]));
        let base = node("n1", "amd64");
        let print = projection.fingerprint(&base);
        assert_eq!(print, projection.fingerprint(&base.clone()));

        let mut unread = base.clone();
        unread
            .metadata
            .labels
            .as_mut()
            .unwrap()
            .insert("zone".into(), "b".into());
        unread.metadata.resource_version = Some("42".into());
        assert_eq!(print, projection.fingerprint(&unread));

        assert_ne!(print, projection.fingerprint(&node("n1", "arm64")));
        let mut bigger = base.clone();
        let capacity = bigger.status.as_mut().unwrap().capacity.as_mut().unwrap();
        capacity.insert("memory".into(), Quantity("2Gi".into()));
        assert_ne!(print, projection.fingerprint(&bigger));
    }
}
