//! The cluster's nodes as placement sees them, each stamped with the revision of its last
//! placement-relevant change, so a set re-decides only the nodes that changed since it last
//! looked.
//!
//! Kubelets rewrite their Node every few seconds (heartbeats, condition timestamps, image
//! lists). Such an update leaves a node's revision alone; only a change to a part that the
//! predicates or a plugin can read (labels, annotations, taints, unschedulable, condition
//! statuses, capacity and allocatable, system info) moves it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use k8s_openapi::api::core::v1::{Node, NodeSpec, NodeStatus};

use crate::crd::WasmDaemonSet;
use crate::plugin::Projection;
use crate::predicates;

/// Tombstones of removed nodes kept before the log forgets them (see [`NodeTable::remove`]).
const MAX_TOMBSTONES: usize = 4096;

static TABLE_IDS: AtomicU64 = AtomicU64::new(1);

/// Which parts of a node an update changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Parts {
    /// Label keys added, removed or given another value.
    pub labels: Vec<String>,
    pub annotations: Vec<String>,
    /// Resource names whose capacity or allocatable amount changed.
    pub resources: Vec<String>,
    pub taints: bool,
    pub unschedulable: bool,
    /// A condition's type or status (not its timestamps or message).
    pub conditions: bool,
    pub node_info: bool,
}

/// What happened to a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Added,
    Removed,
    Updated(Box<Parts>),
}

/// A placement-relevant change to one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeChange {
    pub node: Arc<str>,
    pub change: Change,
}

/// A point in one table's history. At a given cursor each node name stands for one exact
/// content, so anything computed from nodes at a cursor can be shared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cursor {
    table: u64,
    revision: u64,
}

/// What changed since a cursor, or everything when the history does not reach back that far.
#[derive(Debug, Clone)]
pub struct Delta {
    /// The cursor this delta starts from (the one asked for, even when the answer is full).
    pub from: Cursor,
    /// Where the next delta starts.
    pub cursor: Cursor,
    /// `nodes` is every node, and anything not in it is gone.
    pub full: bool,
    /// Nodes that exist and changed (or all nodes, when `full`), in name order.
    pub nodes: Vec<Arc<Node>>,
    /// The names of `nodes`, the table's own copies: keeping them costs no allocation.
    pub names: Vec<Arc<str>>,
    /// Nodes removed since the cursor.
    pub removed: Vec<Arc<str>>,
}

struct Entry {
    node: Arc<Node>,
    /// A hash of every placement-relevant part.
    print: u64,
    revision: u64,
}

/// The nodes, a revision counter, and a log with the latest revision of each changed node.
pub struct NodeTable {
    id: u64,
    revision: u64,
    /// History before this revision is forgotten: a cursor older than it gets a full delta.
    floor: u64,
    nodes: HashMap<Arc<str>, Entry>,
    /// Revision → node name, one entry per name: its last change (or removal).
    log: BTreeMap<u64, Arc<str>>,
    /// Removed nodes still in the log, with the revision of their removal.
    tombstones: HashMap<Arc<str>, u64>,
    everything: Projection,
}

impl Default for NodeTable {
    fn default() -> Self {
        Self {
            id: TABLE_IDS.fetch_add(1, Ordering::Relaxed),
            revision: 0,
            floor: 0,
            nodes: HashMap::new(),
            log: BTreeMap::new(),
            tombstones: HashMap::new(),
            everything: Projection::everything(),
        }
    }
}

impl NodeTable {
    /// A table holding `nodes`.
    pub fn from_nodes(nodes: impl IntoIterator<Item = Node>) -> Self {
        let mut table = Self::default();
        for node in nodes {
            table.apply(node);
        }
        table
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Node>> {
        self.nodes.get(name).map(|e| &e.node)
    }

    /// Every node, in no particular order.
    pub fn nodes(&self) -> impl Iterator<Item = &Arc<Node>> {
        self.nodes.values().map(|e| &e.node)
    }

    /// Where the table is now.
    pub fn cursor(&self) -> Cursor {
        Cursor {
            table: self.id,
            revision: self.revision,
        }
    }

    /// Stores a new or updated node; returns the change, or `None` when no part placement can
    /// read changed (the stored copy is then left as it was).
    pub fn apply(&mut self, node: Node) -> Option<NodeChange> {
        let name: Arc<str> = Arc::from(node.metadata.name.as_deref().unwrap_or_default());
        let print = self.everything.fingerprint(&node);
        let change = match self.nodes.get(&name) {
            Some(old) if old.print == print => return None,
            Some(old) => Change::Updated(Box::new(changed_parts(&old.node, &node))),
            None => Change::Added,
        };

        self.revision += 1;
        let revision = self.revision;
        let previous = match self.nodes.get(&name) {
            Some(old) => Some(old.revision),
            None => self.tombstones.remove(&name),
        };
        if let Some(previous) = previous {
            self.log.remove(&previous);
        }
        self.log.insert(revision, name.clone());
        self.nodes.insert(
            name.clone(),
            Entry {
                node: Arc::new(node),
                print,
                revision,
            },
        );
        Some(NodeChange { node: name, change })
    }

    /// Removes a node; returns the change, or `None` when it was not there.
    ///
    /// A removal stays in the log as a tombstone so a set that has not looked since learns of
    /// it. Past [`MAX_TOMBSTONES`] the oldest are dropped together and the history floor moves
    /// up: a set whose cursor is older then re-decides every node, which is correct, only
    /// slower.
    pub fn remove(&mut self, name: &str) -> Option<NodeChange> {
        let (name, entry) = self.nodes.remove_entry(name)?;
        self.revision += 1;
        self.log.remove(&entry.revision);
        self.log.insert(self.revision, name.clone());
        self.tombstones.insert(name.clone(), self.revision);
        if self.tombstones.len() > MAX_TOMBSTONES {
            for (_, revision) in self.tombstones.drain() {
                self.log.remove(&revision);
            }
            self.floor = self.revision;
        }
        Some(NodeChange {
            node: name,
            change: Change::Removed,
        })
    }

    /// Replaces the whole table with `nodes` (a relist); returns what changed.
    pub fn replace_all(&mut self, nodes: Vec<Node>) -> Vec<NodeChange> {
        let mut seen: HashMap<Arc<str>, ()> = HashMap::with_capacity(nodes.len());
        let mut changes = Vec::new();
        for node in nodes {
            let name: Arc<str> = Arc::from(node.metadata.name.as_deref().unwrap_or_default());
            seen.insert(name, ());
            changes.extend(self.apply(node));
        }
        let gone: Vec<Arc<str>> = self
            .nodes
            .keys()
            .filter(|name| !seen.contains_key(*name))
            .cloned()
            .collect();
        for name in gone {
            changes.extend(self.remove(&name));
        }
        changes
    }

    /// What changed after `since`; everything when `since` is `None`, from another table, or
    /// older than the history kept.
    pub fn delta(&self, asked: Option<Cursor>) -> Delta {
        let from = asked.unwrap_or(Cursor {
            table: self.id,
            revision: 0,
        });
        let since = asked.filter(|c| c.table == self.id && c.revision >= self.floor);
        let (full, mut present, removed) = match since {
            None => {
                let all: Vec<(&Arc<str>, &Entry)> = self.nodes.iter().collect();
                (true, all, Vec::new())
            }
            Some(since) => {
                let mut present = Vec::new();
                let mut removed = Vec::new();
                for (_, name) in self.log.range(since.revision + 1..) {
                    match self.nodes.get_key_value(name) {
                        Some(found) => present.push(found),
                        None => removed.push(name.clone()),
                    }
                }
                (false, present, removed)
            }
        };
        present.sort_unstable_by(|a, b| a.0.cmp(b.0));
        Delta {
            from,
            cursor: self.cursor(),
            full,
            nodes: present.iter().map(|(_, e)| e.node.clone()).collect(),
            names: present.iter().map(|(name, _)| Arc::clone(name)).collect(),
            removed,
        }
    }
}

/// Whether `change` can alter where `set` runs. `plugin` is what the set's plugin reads, when
/// known; a set with a policy whose plugin is not known yet is always affected.
pub fn affects(set: &WasmDaemonSet, plugin: Option<&Projection>, change: &Change) -> bool {
    let Change::Updated(parts) = change else {
        return true;
    };
    if parts.taints {
        return true;
    }
    let empty = Default::default();
    let template = set.spec.template.spec.as_ref().unwrap_or(&empty);
    if parts
        .labels
        .iter()
        .any(|key| predicates::reads_label(template, key))
    {
        return true;
    }
    match (&set.spec.policy, plugin) {
        (None, _) => false,
        (Some(_), None) => true,
        (Some(_), Some(projection)) => projection.reads(parts),
    }
}

/// Which placement-relevant parts differ between two versions of a node.
fn changed_parts(old: &Node, new: &Node) -> Parts {
    let (old_spec, new_spec) = (old.spec.as_ref(), new.spec.as_ref());
    let (old_status, new_status) = (old.status.as_ref(), new.status.as_ref());

    let mut resources = changed_keys(
        old_status.and_then(|s| s.capacity.as_ref()),
        new_status.and_then(|s| s.capacity.as_ref()),
    );
    resources.extend(changed_keys(
        old_status.and_then(|s| s.allocatable.as_ref()),
        new_status.and_then(|s| s.allocatable.as_ref()),
    ));
    resources.sort();
    resources.dedup();

    Parts {
        labels: changed_keys(old.metadata.labels.as_ref(), new.metadata.labels.as_ref()),
        annotations: changed_keys(
            old.metadata.annotations.as_ref(),
            new.metadata.annotations.as_ref(),
        ),
        resources,
        taints: taints(old_spec) != taints(new_spec),
        unschedulable: unschedulable(old_spec) != unschedulable(new_spec),
        conditions: conditions(old_status) != conditions(new_status),
        node_info: info(old_status) != info(new_status),
    }
}

fn taints(spec: Option<&NodeSpec>) -> Vec<(&String, &Option<String>, &String)> {
    spec.and_then(|s| s.taints.as_ref())
        .into_iter()
        .flatten()
        .map(|t| (&t.key, &t.value, &t.effect))
        .collect()
}

fn unschedulable(spec: Option<&NodeSpec>) -> bool {
    spec.and_then(|s| s.unschedulable).unwrap_or(false)
}

/// Condition types and statuses, sorted; timestamps and messages are not placement's concern.
fn conditions(status: Option<&NodeStatus>) -> Vec<(&String, &String)> {
    let mut list: Vec<_> = status
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .map(|c| (&c.type_, &c.status))
        .collect();
    list.sort();
    list
}

fn info(status: Option<&NodeStatus>) -> Option<[&String; 6]> {
    status.and_then(|s| s.node_info.as_ref()).map(|i| {
        [
            &i.architecture,
            &i.operating_system,
            &i.kernel_version,
            &i.container_runtime_version,
            &i.kubelet_version,
            &i.os_image,
        ]
    })
}

/// Keys present in one map and not the other, or with different values, in key order.
fn changed_keys<V: PartialEq>(
    old: Option<&BTreeMap<String, V>>,
    new: Option<&BTreeMap<String, V>>,
) -> Vec<String> {
    let empty = BTreeMap::new();
    let (old, new) = (old.unwrap_or(&empty), new.unwrap_or(&empty));
    let mut keys: Vec<String> = old
        .iter()
        .filter(|(k, v)| new.get(*k) != Some(*v))
        .map(|(k, _)| k.clone())
        .collect();
    keys.extend(new.keys().filter(|k| !old.contains_key(*k)).cloned());
    keys.sort();
    keys
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::bindings::Interest;

    fn set(template: serde_json::Value, policy: bool) -> WasmDaemonSet {
        let mut spec = serde_json::json!({
            "selector": {"matchLabels": {"app": "x"}},
            "template": {"metadata": {"labels": {"app": "x"}}, "spec": template},
        });
        if policy {
            spec["policy"] = serde_json::json!({"plugin": "hardware"});
        }
        serde_json::from_value(serde_json::json!({
            "apiVersion": "wasmdaemon.io/v1alpha1", "kind": "WasmDaemonSet",
            "metadata": {"name": "s", "namespace": "default"}, "spec": spec,
        }))
        .unwrap()
    }

    fn labels(keys: &[&str]) -> Change {
        Change::Updated(Box::new(Parts {
            labels: keys.iter().map(|k| k.to_string()).collect(),
            ..Parts::default()
        }))
    }

    fn reads_gpu_label() -> Projection {
        Projection::new(&Interest {
            labels: vec!["gpu".into()],
            annotations: vec![],
            taints: false,
            unschedulable: false,
            conditions: false,
            resources: vec![],
            node_info: false,
        })
    }

    #[test]
    fn nodes_added_or_removed_and_taint_changes_affect_every_set() {
        let plain = set(serde_json::json!({"containers": []}), false);
        assert!(affects(&plain, None, &Change::Added));
        assert!(affects(&plain, None, &Change::Removed));
        let taint = Change::Updated(Box::new(Parts {
            taints: true,
            ..Parts::default()
        }));
        assert!(affects(&plain, None, &taint));
    }

    #[test]
    fn a_label_change_affects_only_sets_whose_selector_affinity_or_plugin_reads_it() {
        let plain = set(serde_json::json!({"containers": []}), false);
        let selecting = set(
            serde_json::json!({"containers": [], "nodeSelector": {"zone": "a"}}),
            false,
        );
        let affine = set(
            serde_json::json!({"containers": [], "affinity": {"nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "rack", "operator": "Exists"}]}]}}}}),
            false,
        );
        let with_plugin = set(serde_json::json!({"containers": []}), true);
        let gpu = reads_gpu_label();

        assert!(!affects(&plain, None, &labels(&["zone"])));
        assert!(affects(&selecting, None, &labels(&["zone"])));
        assert!(!affects(&selecting, None, &labels(&["rack"])));
        assert!(affects(&affine, None, &labels(&["rack"])));
        assert!(affects(&with_plugin, Some(&gpu), &labels(&["gpu"])));
        assert!(!affects(&with_plugin, Some(&gpu), &labels(&["zone"])));
        assert!(
            affects(&with_plugin, None, &labels(&["zone"])),
            "a plugin not loaded yet may read anything"
        );
    }

    fn node(json: serde_json::Value) -> Node {
        serde_json::from_value(json).unwrap()
    }

    fn base(name: &str) -> serde_json::Value {
        serde_json::json!({
            "metadata": {"name": name, "resourceVersion": "1", "labels": {"zone": "a"}},
            "status": {
                "conditions": [{"type": "Ready", "status": "True",
                                "lastHeartbeatTime": "2024-01-01T00:00:00Z"}],
                "capacity": {"cpu": "4"},
                "images": [{"names": ["a"]}]
            }
        })
    }

    fn names(delta: &Delta) -> Vec<&str> {
        delta
            .nodes
            .iter()
            .map(|n| n.metadata.name.as_deref().unwrap())
            .collect()
    }

    #[test]
    fn heartbeats_and_resource_versions_change_nothing() {
        let mut table = NodeTable::default();
        assert!(table.apply(node(base("n1"))).is_some());
        let mut beat = base("n1");
        beat["metadata"]["resourceVersion"] = "2".into();
        beat["status"]["conditions"][0]["lastHeartbeatTime"] = "2024-01-01T00:01:00Z".into();
        beat["status"]["images"] = serde_json::json!([{"names": ["b"]}]);
        let before = table.cursor();
        assert_eq!(table.apply(node(beat)), None);
        assert_eq!(table.cursor(), before);
    }

    #[test]
    fn an_update_names_the_parts_it_changed() {
        let mut table = NodeTable::default();
        table.apply(node(base("n1")));
        let mut changed = base("n1");
        changed["metadata"]["labels"] = serde_json::json!({"zone": "b", "gpu": "yes"});
        changed["status"]["capacity"]["cpu"] = "8".into();
        changed["status"]["conditions"][0]["status"] = "False".into();
        changed["spec"] = serde_json::json!({"taints": [{"key": "k", "effect": "NoSchedule"}]});

        let change = table.apply(node(changed)).unwrap();
        let Change::Updated(parts) = change.change else {
            panic!("expected an update, got {:?}", change.change)
        };
        assert_eq!(parts.labels, ["gpu", "zone"]);
        assert_eq!(parts.resources, ["cpu"]);
        assert!(parts.taints && parts.conditions);
        assert!(!parts.unschedulable && !parts.node_info && parts.annotations.is_empty());
    }

    #[test]
    fn a_delta_holds_only_what_changed_after_the_cursor() {
        let mut table = NodeTable::from_nodes(["n1", "n2", "n3"].map(|n| node(base(n))));
        let first = table.delta(None);
        assert!(first.full);
        assert_eq!(names(&first), ["n1", "n2", "n3"]);

        let mut relabelled = base("n2");
        relabelled["metadata"]["labels"]["zone"] = "b".into();
        table.apply(node(relabelled));
        table.remove("n3");
        table.apply(node(base("n4")));

        let delta = table.delta(Some(first.cursor));
        assert!(!delta.full);
        assert_eq!(names(&delta), ["n2", "n4"]);
        assert_eq!(delta.removed, [Arc::<str>::from("n3")]);

        let none = table.delta(Some(delta.cursor));
        assert!(none.nodes.is_empty() && none.removed.is_empty() && !none.full);
    }

    #[test]
    fn a_node_removed_and_added_again_appears_once() {
        let mut table = NodeTable::from_nodes([node(base("n1"))]);
        let start = table.cursor();
        table.remove("n1");
        table.apply(node(base("n1")));
        let delta = table.delta(Some(start));
        assert_eq!(names(&delta), ["n1"]);
        assert!(delta.removed.is_empty());
    }

    #[test]
    fn a_cursor_from_another_table_or_beyond_the_history_gets_everything() {
        let mut table = NodeTable::from_nodes([node(base("keep"))]);
        let other = NodeTable::default();
        assert!(table.delta(Some(other.cursor())).full);

        let start = table.cursor();
        for i in 0..=MAX_TOMBSTONES {
            let name = format!("gone-{i}");
            table.apply(node(base(&name)));
            table.remove(&name);
        }
        let delta = table.delta(Some(start));
        assert!(delta.full);
        assert_eq!(names(&delta), ["keep"]);
    }

    #[test]
    fn a_relist_reports_added_changed_and_removed_nodes() {
        let mut table = NodeTable::from_nodes(["n1", "n2"].map(|n| node(base(n))));
        let mut changed = base("n1");
        changed["metadata"]["annotations"] = serde_json::json!({"a": "b"});
        let changes = table.replace_all(vec![node(changed), node(base("n3"))]);
        let summary: Vec<(&str, &Change)> = changes.iter().map(|c| (&*c.node, &c.change)).collect();
        assert_eq!(summary.len(), 3);
        assert!(matches!(summary[0], ("n1", Change::Updated(p)) if p.annotations == ["a"]));
        assert_eq!(summary[1], ("n3", &Change::Added));
        assert_eq!(summary[2], ("n2", &Change::Removed));

        assert!(table.replace_all(vec![]).len() == 2);
        assert!(table.is_empty());
    }
}
