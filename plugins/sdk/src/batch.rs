//! A checked, indexed view over a columnar `node-batch`, and per-node accessors.

use std::fmt;
use std::ops::Range;

use crate::hash::FastMap;
use crate::wit::{Amount, Entry, NodeBatch, TaintEffect};

/// Tables with per-node rows, in the order of a node's `starts` entry.
const LABELS: usize = 0;
const ANNOTATIONS: usize = 1;
const TAINTS: usize = 2;
const CONDITIONS: usize = 3;
const CAPACITY: usize = 4;
const ALLOCATABLE: usize = 5;
const INFOS: usize = 6;
const TABLES: usize = 7;
const TABLE_NAMES: [&str; TABLES] = [
    "labels",
    "annotations",
    "taints",
    "conditions",
    "capacity",
    "allocatable",
    "infos",
];

/// Why a batch cannot be read. The host builds batches itself, so any of these is a host bug;
/// the plugin answers it as an error instead of trusting the batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchError {
    /// A row names a node the batch does not have.
    NodeOutOfRange {
        /// The table holding the row.
        table: &'static str,
        /// The row's position in its table.
        row: usize,
    },
    /// A row belongs to an earlier node than the row before it.
    OutOfOrder {
        /// The table holding the row.
        table: &'static str,
        /// The row's position in its table.
        row: usize,
    },
    /// A row or node refers to a string the table does not have.
    StringOutOfRange {
        /// The table holding the row (`nodes` for a node name).
        table: &'static str,
        /// The row's position in its table.
        row: usize,
    },
    /// The same key appears at two positions of the string table.
    RepeatedString(String),
    /// A table has more rows than a `u32` counts.
    TooLarge(&'static str),
}

impl fmt::Display for BatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NodeOutOfRange { table, row } => {
                write!(f, "{table}[{row}] names a node the batch does not have")
            }
            Self::OutOfOrder { table, row } => {
                write!(
                    f,
                    "{table}[{row}] belongs to an earlier node than the row before it"
                )
            }
            Self::StringOutOfRange { table, row } => {
                write!(
                    f,
                    "{table}[{row}] refers to a string the batch does not have"
                )
            }
            Self::RepeatedString(text) => write!(f, "the string table repeats `{text}`"),
            Self::TooLarge(table) => write!(f, "table {table} has more than 2^32 rows"),
        }
    }
}

impl std::error::Error for BatchError {}

/// A key (label or annotation key, condition type, taint key or resource name) of one batch,
/// resolved once with [`Nodes::key`] so that per-node lookups compare integers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key(u32);

impl Key {
    /// The key's position in the batch's string table.
    pub fn index(self) -> u32 {
        self.0
    }
}

/// Positions of some names among the keys of one batch; see [`Nodes::key_slots`].
#[derive(Debug, Clone)]
pub struct KeySlots {
    /// Indexed by string position: the position in the names list, or `u32::MAX`.
    slots: Vec<u32>,
}

impl KeySlots {
    /// The position in the names list of the name `key` stands for, if it was listed.
    #[inline]
    pub fn slot(&self, key: Key) -> Option<usize> {
        match self.slots.get(key.0 as usize) {
            Some(&slot) if slot != u32::MAX => Some(slot as usize),
            _ => None,
        }
    }
}

/// The nodes of a batch, checked once and indexed for cheap per-node access.
///
/// Building the view is one pass over each table plus hashing each distinct key; every accessor
/// afterwards touches only the node's own rows.
pub struct Nodes<'a> {
    batch: &'a NodeBatch,
    /// `starts[i][table]` is the first row of node `i` in `table`; `starts[len]` ends the last.
    starts: Vec<[u32; TABLES]>,
    /// Every string used as a key, to its position.
    keys: FastMap<&'a str, u32>,
}

impl<'a> Nodes<'a> {
    /// Checks the batch (row order, node and string indexes) and indexes it.
    ///
    /// # Errors
    ///
    /// The batch breaks the contract: see [`BatchError`].
    pub fn new(batch: &'a NodeBatch) -> Result<Self, BatchError> {
        let count = batch.nodes.len();
        let strings = batch.strings.len();
        let mut starts = vec![[0; TABLES]; count + 1];
        let mut is_key = vec![false; strings];

        let text = |table, row, index: u32| -> Result<usize, BatchError> {
            let index = index as usize;
            if index < strings {
                Ok(index)
            } else {
                Err(BatchError::StringOutOfRange { table, row })
            }
        };
        for (row, node) in batch.nodes.iter().enumerate() {
            text("nodes", row, node.name)?;
        }
        let mut entries = |rows: &[Entry], table: usize| -> Result<(), BatchError> {
            let name = TABLE_NAMES[table];
            group(rows, |entry| entry.node, table, &mut starts)?;
            for (row, entry) in rows.iter().enumerate() {
                is_key[text(name, row, entry.key)?] = true;
                text(name, row, entry.value)?;
            }
            Ok(())
        };
        entries(&batch.labels, LABELS)?;
        entries(&batch.annotations, ANNOTATIONS)?;
        entries(&batch.conditions, CONDITIONS)?;

        group(&batch.taints, |taint| taint.node, TAINTS, &mut starts)?;
        for (row, taint) in batch.taints.iter().enumerate() {
            is_key[text("taints", row, taint.key)?] = true;
            text("taints", row, taint.value)?;
        }
        let mut amounts = |rows: &[Amount], table: usize| -> Result<(), BatchError> {
            group(rows, |amount| amount.node, table, &mut starts)?;
            for (row, amount) in rows.iter().enumerate() {
                is_key[text(TABLE_NAMES[table], row, amount.name)?] = true;
            }
            Ok(())
        };
        amounts(&batch.capacity, CAPACITY)?;
        amounts(&batch.allocatable, ALLOCATABLE)?;
        group(&batch.infos, |info| info.node, INFOS, &mut starts)?;
        for (row, info) in batch.infos.iter().enumerate() {
            for index in [
                info.architecture,
                info.operating_system,
                info.kernel_version,
                info.container_runtime_version,
                info.kubelet_version,
                info.os_image,
            ] {
                text("infos", row, index)?;
            }
        }

        let mut keys = FastMap::default();
        keys.reserve(is_key.iter().filter(|flag| **flag).count());
        for (index, text) in batch.strings.iter().enumerate() {
            if is_key[index] && keys.insert(text.as_str(), index as u32).is_some() {
                return Err(BatchError::RepeatedString(text.clone()));
            }
        }
        Ok(Nodes {
            batch,
            starts,
            keys,
        })
    }

    /// The batch this view reads.
    pub fn batch(&self) -> &'a NodeBatch {
        self.batch
    }

    /// How many nodes the batch has.
    pub fn len(&self) -> usize {
        self.batch.nodes.len()
    }

    /// Whether the batch has no nodes.
    pub fn is_empty(&self) -> bool {
        self.batch.nodes.is_empty()
    }

    /// The node at `index`, in batch order.
    pub fn get(&self, index: usize) -> Option<NodeRef<'_>> {
        (index < self.len()).then_some(NodeRef { nodes: self, index })
    }

    /// The nodes in batch order.
    pub fn iter(&self) -> Iter<'_> {
        Iter {
            nodes: self,
            indexes: 0..self.len(),
        }
    }

    /// Resolves a key once for the whole batch; `None` when no node of the batch has it (as a
    /// label, annotation, condition, taint or resource).
    pub fn key(&self, name: &str) -> Option<Key> {
        self.keys.get(name).copied().map(Key)
    }

    /// Resolves several names at once, for plugins that dispatch on many keys: for a node's row
    /// with key `k`, `slots.slot(k)` is the position of `k`'s name in `names`.
    pub fn key_slots(&self, names: &[&str]) -> KeySlots {
        let mut slots = vec![u32::MAX; self.batch.strings.len()];
        for (position, name) in names.iter().enumerate() {
            if let Some(key) = self.key(name) {
                // Names beyond u32::MAX - 1 cannot be told apart from "not listed"; no plugin
                // names that many keys.
                slots[key.0 as usize] = u32::try_from(position).unwrap_or(u32::MAX);
            }
        }
        KeySlots { slots }
    }

    fn text(&self, index: u32) -> &'a str {
        // Every index was checked in `new`; the fallback is never taken.
        self.batch
            .strings
            .get(index as usize)
            .map_or("", String::as_str)
    }

    fn rows(&self, node: usize, table: usize) -> Range<usize> {
        let start = self.starts[node][table] as usize;
        let end = self.starts[node + 1][table] as usize;
        start..end
    }
}

impl<'n> IntoIterator for &'n Nodes<'_> {
    type Item = NodeRef<'n>;
    type IntoIter = Iter<'n>;

    fn into_iter(self) -> Iter<'n> {
        self.iter()
    }
}

/// The nodes of a batch in order; see [`Nodes::iter`].
#[derive(Debug, Clone)]
pub struct Iter<'n> {
    nodes: &'n Nodes<'n>,
    indexes: Range<usize>,
}

impl<'n> Iterator for Iter<'n> {
    type Item = NodeRef<'n>;

    fn next(&mut self) -> Option<NodeRef<'n>> {
        let index = self.indexes.next()?;
        Some(NodeRef {
            nodes: self.nodes,
            index,
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.indexes.size_hint()
    }
}

impl ExactSizeIterator for Iter<'_> {}

impl fmt::Debug for Nodes<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// Fills column `table` of `starts` from rows grouped by node in node order.
fn group<R>(
    rows: &[R],
    node_of: impl Fn(&R) -> u32,
    table: usize,
    starts: &mut [[u32; TABLES]],
) -> Result<(), BatchError> {
    let name = TABLE_NAMES[table];
    let count = starts.len() - 1;
    let total = u32::try_from(rows.len()).map_err(|_| BatchError::TooLarge(name))?;
    // The next node whose first row is still to be found.
    let mut next = 0;
    for (row, item) in rows.iter().enumerate() {
        let node = node_of(item) as usize;
        if node >= count {
            return Err(BatchError::NodeOutOfRange { table: name, row });
        }
        if node + 1 < next {
            return Err(BatchError::OutOfOrder { table: name, row });
        }
        while next <= node {
            // `row < total`, which fits a u32.
            starts[next][table] = row as u32;
            next += 1;
        }
    }
    for start in &mut starts[next..] {
        start[table] = total;
    }
    Ok(())
}

/// One node of a batch. Cheap to copy; the strings it hands out live as long as the batch.
#[derive(Clone, Copy)]
pub struct NodeRef<'n> {
    nodes: &'n Nodes<'n>,
    index: usize,
}

/// A node taint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaintRef<'a> {
    /// The taint key.
    pub key: &'a str,
    /// The taint value; empty when the taint has none.
    pub value: &'a str,
    /// What the taint does.
    pub effect: TaintEffect,
}

/// `status.nodeInfo` of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InfoRef<'a> {
    /// `amd64`, `arm64`, ...
    pub architecture: &'a str,
    /// `linux`, `windows`.
    pub operating_system: &'a str,
    /// The kernel version.
    pub kernel_version: &'a str,
    /// The container runtime and its version.
    pub container_runtime_version: &'a str,
    /// The kubelet version.
    pub kubelet_version: &'a str,
    /// The OS image.
    pub os_image: &'a str,
}

impl<'n> NodeRef<'n> {
    /// The well-known label holding the node's CPU architecture.
    pub const ARCH_LABEL: &'static str = "kubernetes.io/arch";
    /// The well-known label holding the node's operating system.
    pub const OS_LABEL: &'static str = "kubernetes.io/os";

    /// The node's position in the batch.
    pub fn index(self) -> usize {
        self.index
    }

    /// The node's name.
    pub fn name(self) -> &'n str {
        self.nodes.text(self.nodes.batch.nodes[self.index].name)
    }

    /// `spec.unschedulable`; false unless the plugin declared interest in it.
    pub fn unschedulable(self) -> bool {
        self.nodes.batch.nodes[self.index].unschedulable
    }

    fn entries(self, table: usize) -> &'n [Entry] {
        let batch = self.nodes.batch;
        let rows = match table {
            LABELS => &batch.labels,
            ANNOTATIONS => &batch.annotations,
            _ => &batch.conditions,
        };
        &rows[self.nodes.rows(self.index, table)]
    }

    fn amounts(self, table: usize) -> &'n [Amount] {
        let batch = self.nodes.batch;
        let rows = if table == CAPACITY {
            &batch.capacity
        } else {
            &batch.allocatable
        };
        &rows[self.nodes.rows(self.index, table)]
    }

    fn entry_at(self, table: usize, key: Key) -> Option<&'n str> {
        self.entries(table)
            .iter()
            .find(|entry| entry.key == key.0)
            .map(|entry| self.nodes.text(entry.value))
    }

    fn entry(self, table: usize, key: &str) -> Option<&'n str> {
        self.entry_at(table, self.nodes.key(key)?)
    }

    fn pairs(self, table: usize) -> impl Iterator<Item = (&'n str, &'n str)> + 'n {
        let nodes = self.nodes;
        self.entries(table)
            .iter()
            .map(move |entry| (nodes.text(entry.key), nodes.text(entry.value)))
    }

    fn amount_at(self, table: usize, name: Key) -> Option<i64> {
        self.amounts(table)
            .iter()
            .find(|amount| amount.name == name.0)
            .map(|amount| amount.milli_value)
    }

    /// The value of a label, if the node has it (and the plugin declared interest in it).
    pub fn label(self, key: &str) -> Option<&'n str> {
        self.entry(LABELS, key)
    }

    /// The value of a label whose key was resolved with [`Nodes::key`].
    pub fn label_at(self, key: Key) -> Option<&'n str> {
        self.entry_at(LABELS, key)
    }

    /// Whether the node has a label, whatever its value.
    pub fn has_label(self, key: &str) -> bool {
        self.label(key).is_some()
    }

    /// The node's labels as `(key, value)`, sorted by key.
    pub fn labels(self) -> impl Iterator<Item = (&'n str, &'n str)> + 'n {
        self.pairs(LABELS)
    }

    /// The node's labels as `(key, value)` with the key unresolved: the cheapest way to
    /// dispatch on many keys (see [`Nodes::key_slots`]).
    pub fn label_keys(self) -> impl Iterator<Item = (Key, &'n str)> + 'n {
        let nodes = self.nodes;
        self.entries(LABELS)
            .iter()
            .map(move |entry| (Key(entry.key), nodes.text(entry.value)))
    }

    /// The labels whose key starts with `prefix`, as `(key, value)`.
    pub fn labels_with_prefix<'p>(
        self,
        prefix: &'p str,
    ) -> impl Iterator<Item = (&'n str, &'n str)> + 'p
    where
        'n: 'p,
    {
        self.labels()
            .filter(move |(key, _)| key.starts_with(prefix))
    }

    /// The value of an annotation.
    pub fn annotation(self, key: &str) -> Option<&'n str> {
        self.entry(ANNOTATIONS, key)
    }

    /// The value of an annotation whose key was resolved with [`Nodes::key`].
    pub fn annotation_at(self, key: Key) -> Option<&'n str> {
        self.entry_at(ANNOTATIONS, key)
    }

    /// The node's annotations as `(key, value)`, sorted by key.
    pub fn annotations(self) -> impl Iterator<Item = (&'n str, &'n str)> + 'n {
        self.pairs(ANNOTATIONS)
    }

    /// A capacity amount in thousandths (one CPU is 1000, 1Gi is 1073741824000).
    pub fn capacity(self, name: &str) -> Option<i64> {
        self.amount_at(CAPACITY, self.nodes.key(name)?)
    }

    /// A capacity amount of a resource resolved with [`Nodes::key`].
    pub fn capacity_at(self, name: Key) -> Option<i64> {
        self.amount_at(CAPACITY, name)
    }

    /// An allocatable amount in thousandths.
    pub fn allocatable(self, name: &str) -> Option<i64> {
        self.amount_at(ALLOCATABLE, self.nodes.key(name)?)
    }

    /// An allocatable amount of a resource resolved with [`Nodes::key`].
    pub fn allocatable_at(self, name: Key) -> Option<i64> {
        self.amount_at(ALLOCATABLE, name)
    }

    /// The capacity amount, or the allocatable amount when the node reports no capacity for it.
    pub fn resource(self, name: &str) -> Option<i64> {
        let name = self.nodes.key(name)?;
        self.capacity_at(name).or_else(|| self.allocatable_at(name))
    }

    /// Capacity amounts as `(resource name, thousandths)`.
    pub fn capacities(self) -> impl Iterator<Item = (&'n str, i64)> + 'n {
        let nodes = self.nodes;
        self.amounts(CAPACITY)
            .iter()
            .map(move |amount| (nodes.text(amount.name), amount.milli_value))
    }

    /// Allocatable amounts as `(resource name, thousandths)`.
    pub fn allocatables(self) -> impl Iterator<Item = (&'n str, i64)> + 'n {
        let nodes = self.nodes;
        self.amounts(ALLOCATABLE)
            .iter()
            .map(move |amount| (nodes.text(amount.name), amount.milli_value))
    }

    /// Capacity then allocatable amounts with the name unresolved, as `(name, thousandths)`.
    pub fn amount_keys(self) -> impl Iterator<Item = (Key, i64)> + 'n {
        self.amounts(CAPACITY)
            .iter()
            .chain(self.amounts(ALLOCATABLE))
            .map(|amount| (Key(amount.name), amount.milli_value))
    }

    /// The status (`True`, `False`, `Unknown`) of a condition such as `Ready`.
    pub fn condition(self, kind: &str) -> Option<&'n str> {
        self.entry(CONDITIONS, kind)
    }

    /// The node's conditions as `(type, status)`.
    pub fn conditions(self) -> impl Iterator<Item = (&'n str, &'n str)> + 'n {
        self.pairs(CONDITIONS)
    }

    /// Whether the `Ready` condition is `True`.
    pub fn is_ready(self) -> bool {
        self.condition("Ready") == Some("True")
    }

    /// The node's taints.
    pub fn taints(self) -> impl Iterator<Item = TaintRef<'n>> + 'n {
        let nodes = self.nodes;
        nodes.batch.taints[nodes.rows(self.index, TAINTS)]
            .iter()
            .map(move |taint| TaintRef {
                key: nodes.text(taint.key),
                value: nodes.text(taint.value),
                effect: taint.effect,
            })
    }

    /// The first taint with this key.
    pub fn taint(self, key: &str) -> Option<TaintRef<'n>> {
        self.taints().find(|taint| taint.key == key)
    }

    /// `status.nodeInfo`, when the plugin declared interest in it and the node reports it.
    pub fn info(self) -> Option<InfoRef<'n>> {
        let nodes = self.nodes;
        let rows = nodes.rows(self.index, INFOS);
        nodes.batch.infos[rows].first().map(|info| InfoRef {
            architecture: nodes.text(info.architecture),
            operating_system: nodes.text(info.operating_system),
            kernel_version: nodes.text(info.kernel_version),
            container_runtime_version: nodes.text(info.container_runtime_version),
            kubelet_version: nodes.text(info.kubelet_version),
            os_image: nodes.text(info.os_image),
        })
    }

    fn info_field(self, field: impl Fn(InfoRef<'n>) -> &'n str) -> Option<&'n str> {
        self.info().map(field).filter(|text| !text.is_empty())
    }

    /// The CPU architecture: the `kubernetes.io/arch` label, else `nodeInfo.architecture`.
    pub fn architecture(self) -> Option<&'n str> {
        self.label(Self::ARCH_LABEL)
            .or_else(|| self.info().map(|info| info.architecture))
            .filter(|arch| !arch.is_empty())
    }

    /// The operating system: the `kubernetes.io/os` label, else `nodeInfo.operatingSystem`.
    pub fn operating_system(self) -> Option<&'n str> {
        self.label(Self::OS_LABEL)
            .or_else(|| self.info().map(|info| info.operating_system))
            .filter(|os| !os.is_empty())
    }

    /// `nodeInfo.kernelVersion`, when reported.
    pub fn kernel_version(self) -> Option<&'n str> {
        self.info_field(|info| info.kernel_version)
    }

    /// `nodeInfo.containerRuntimeVersion`, when reported.
    pub fn container_runtime_version(self) -> Option<&'n str> {
        self.info_field(|info| info.container_runtime_version)
    }

    /// `nodeInfo.kubeletVersion`, when reported.
    pub fn kubelet_version(self) -> Option<&'n str> {
        self.info_field(|info| info.kubelet_version)
    }

    /// `nodeInfo.osImage`, when reported.
    pub fn os_image(self) -> Option<&'n str> {
        self.info_field(|info| info.os_image)
    }
}

impl fmt::Debug for NodeRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeRef")
            .field("name", &self.name())
            .field("labels", &self.labels().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BatchBuilder, NodeInfoSpec, NodeSpec};

    fn batch() -> NodeBatch {
        BatchBuilder::of([
            NodeSpec::named("n1")
                .with_label("b", "2")
                .with_label("a", "1")
                .with_capacity("memory", "8")
                .with_allocatable("cpu", 2_000)
                .with_condition("Ready", "True")
                .with_taint("dedicated", "gpu", TaintEffect::NoSchedule),
            NodeSpec::named("n2"),
            NodeSpec::named("n3")
                .with_label("a", "3")
                .with_info(NodeInfoSpec::new("amd64", "linux")),
        ])
    }

    #[test]
    fn accessors_read_only_the_nodes_own_rows() {
        let batch = batch();
        let nodes = Nodes::new(&batch).unwrap();
        let names: Vec<_> = nodes.iter().map(NodeRef::name).collect();
        assert_eq!(names, ["n1", "n2", "n3"]);

        let first = nodes.get(0).unwrap();
        assert_eq!(first.labels().collect::<Vec<_>>(), [("a", "1"), ("b", "2")]);
        assert_eq!(
            first.labels_with_prefix("b").collect::<Vec<_>>(),
            [("b", "2")]
        );
        assert_eq!(first.capacity("memory"), Some(8_000));
        assert_eq!(first.resource("cpu"), Some(2_000));
        assert!(first.is_ready());
        assert_eq!(first.taint("dedicated").unwrap().value, "gpu");
        assert_eq!(first.info(), None);

        let empty = nodes.get(1).unwrap();
        assert_eq!(empty.label("a"), None);
        assert_eq!(empty.labels().count(), 0);
        assert!(!empty.is_ready());

        let last = nodes.get(2).unwrap();
        let key = nodes.key("a").unwrap();
        assert_eq!(last.label_at(key), Some("3"));
        assert_eq!(last.architecture(), Some("amd64"));
        assert_eq!(last.kernel_version(), None);
        assert!(nodes.get(3).is_none());
        assert_eq!(nodes.key("n1"), None, "node names are not keys");
    }

    #[test]
    fn architecture_prefers_the_label_over_node_info() {
        let batch = BatchBuilder::of([NodeSpec::named("n")
            .with_info(NodeInfoSpec::new("amd64", "linux"))
            .with_label(NodeRef::ARCH_LABEL, "arm64")]);
        let nodes = Nodes::new(&batch).unwrap();
        assert_eq!(nodes.get(0).unwrap().architecture(), Some("arm64"));
    }

    #[test]
    fn key_slots_map_a_nodes_keys_to_positions_in_a_list() {
        let batch = batch();
        let nodes = Nodes::new(&batch).unwrap();
        let slots = nodes.key_slots(&["zzz", "b", "a"]);
        let first = nodes.get(0).unwrap();
        let found: Vec<_> = first
            .label_keys()
            .map(|(key, value)| (slots.slot(key), value))
            .collect();
        assert_eq!(found, [(Some(2), "1"), (Some(1), "2")]);
    }

    #[test]
    fn a_malformed_batch_is_an_error_not_a_panic() {
        let mut late = batch();
        late.labels[0].node = 7;
        assert_eq!(
            Nodes::new(&late).unwrap_err(),
            BatchError::NodeOutOfRange {
                table: "labels",
                row: 0
            }
        );
        let mut backwards = batch();
        backwards.capacity[0].node = 2;
        backwards.capacity.push(Amount {
            node: 0,
            name: 0,
            milli_value: 1,
        });
        assert!(matches!(
            Nodes::new(&backwards),
            Err(BatchError::OutOfOrder {
                table: "capacity",
                row: 1
            })
        ));
        let mut dangling = batch();
        dangling.infos[0].os_image = 999;
        assert!(matches!(
            Nodes::new(&dangling),
            Err(BatchError::StringOutOfRange { table: "infos", .. })
        ));
        let mut repeated = batch();
        repeated.strings.push("a".into());
        repeated.labels[0].key = u32::try_from(repeated.strings.len() - 1).unwrap();
        assert_eq!(
            Nodes::new(&repeated).unwrap_err(),
            BatchError::RepeatedString("a".into())
        );
    }
}
