//! Building a columnar `node-batch` from owned node descriptions, for tests and benchmarks.

use crate::hash::FastMap;
use crate::quantity::parse_quantity;
use crate::wit::{Amount, Entry, Node, NodeBatch, NodeInfo, Taint, TaintEffect};

/// An amount given to [`NodeSpec::with_capacity`]: thousandths (`i64`) or a Kubernetes
/// quantity (`"64Gi"`, `"250m"`).
pub trait IntoMilli {
    /// The amount in thousandths.
    ///
    /// # Panics
    ///
    /// A quantity that does not parse; the builder serves tests, where that is a typo.
    fn into_milli(self) -> i64;
}

impl IntoMilli for i64 {
    fn into_milli(self) -> i64 {
        self
    }
}

impl IntoMilli for &str {
    fn into_milli(self) -> i64 {
        parse_quantity(self).unwrap_or_else(|error| panic!("quantity `{self}`: {error}"))
    }
}

/// `status.nodeInfo` of a [`NodeSpec`]; fields not set are empty.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeInfoSpec {
    /// `amd64`, `arm64`, ...
    pub architecture: String,
    /// `linux`, `windows`.
    pub operating_system: String,
    /// The kernel version.
    pub kernel_version: String,
    /// The container runtime and its version.
    pub container_runtime_version: String,
    /// The kubelet version.
    pub kubelet_version: String,
    /// The OS image.
    pub os_image: String,
}

impl NodeInfoSpec {
    /// Node info with an architecture and operating system.
    pub fn new(architecture: impl Into<String>, operating_system: impl Into<String>) -> Self {
        NodeInfoSpec {
            architecture: architecture.into(),
            operating_system: operating_system.into(),
            ..NodeInfoSpec::default()
        }
    }
}

/// One node, described with owned strings; add it to a batch with [`BatchBuilder::node`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeSpec {
    /// The node name.
    pub name: String,
    /// Labels, in any order (the batch sorts them by key).
    pub labels: Vec<(String, String)>,
    /// Annotations, in any order.
    pub annotations: Vec<(String, String)>,
    /// Taints as key, value, effect.
    pub taints: Vec<(String, String, TaintEffect)>,
    /// `spec.unschedulable`.
    pub unschedulable: bool,
    /// Conditions as type, status.
    pub conditions: Vec<(String, String)>,
    /// Capacity in thousandths.
    pub capacity: Vec<(String, i64)>,
    /// Allocatable in thousandths.
    pub allocatable: Vec<(String, i64)>,
    /// `status.nodeInfo`.
    pub info: Option<NodeInfoSpec>,
}

impl NodeSpec {
    /// A node with only a name; add parts with the `with_*` methods.
    pub fn named(name: impl Into<String>) -> Self {
        NodeSpec {
            name: name.into(),
            ..NodeSpec::default()
        }
    }

    /// Adds a label.
    pub fn with_label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.push((key.into(), value.into()));
        self
    }

    /// Adds an annotation.
    pub fn with_annotation(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.annotations.push((key.into(), value.into()));
        self
    }

    /// Adds a capacity amount: thousandths, or a quantity such as `"64Gi"`.
    pub fn with_capacity(mut self, name: impl Into<String>, amount: impl IntoMilli) -> Self {
        self.capacity.push((name.into(), amount.into_milli()));
        self
    }

    /// Adds an allocatable amount: thousandths, or a quantity such as `"60Gi"`.
    pub fn with_allocatable(mut self, name: impl Into<String>, amount: impl IntoMilli) -> Self {
        self.allocatable.push((name.into(), amount.into_milli()));
        self
    }

    /// Adds a condition.
    pub fn with_condition(mut self, kind: impl Into<String>, status: impl Into<String>) -> Self {
        self.conditions.push((kind.into(), status.into()));
        self
    }

    /// Adds a taint.
    pub fn with_taint(
        mut self,
        key: impl Into<String>,
        value: impl Into<String>,
        effect: TaintEffect,
    ) -> Self {
        self.taints.push((key.into(), value.into(), effect));
        self
    }

    /// Marks the node unschedulable.
    pub fn unschedulable(mut self) -> Self {
        self.unschedulable = true;
        self
    }

    /// Sets the node info.
    pub fn with_info(mut self, info: NodeInfoSpec) -> Self {
        self.info = Some(info);
        self
    }
}

/// Builds a [`NodeBatch`] as the host does: every distinct string once, rows grouped by node in
/// node order, labels and annotations sorted by key within a node.
///
/// ```
/// use wasmdaemon_plugin_sdk::{BatchBuilder, NodeSpec, Nodes};
///
/// let batch = BatchBuilder::new()
///     .node(NodeSpec::named("a").with_label("zone", "x").with_capacity("memory", "64Gi"))
///     .node(NodeSpec::named("b"))
///     .build();
/// let nodes = Nodes::new(&batch).unwrap();
/// assert_eq!(nodes.get(0).unwrap().label("zone"), Some("x"));
/// assert_eq!(nodes.get(1).unwrap().capacity("memory"), None);
/// ```
#[derive(Debug)]
pub struct BatchBuilder {
    batch: NodeBatch,
    index: FastMap<String, u32>,
}

impl Default for BatchBuilder {
    fn default() -> Self {
        BatchBuilder::new()
    }
}

impl BatchBuilder {
    /// An empty batch.
    pub fn new() -> Self {
        BatchBuilder {
            batch: NodeBatch {
                strings: Vec::new(),
                nodes: Vec::new(),
                labels: Vec::new(),
                annotations: Vec::new(),
                taints: Vec::new(),
                conditions: Vec::new(),
                capacity: Vec::new(),
                allocatable: Vec::new(),
                infos: Vec::new(),
            },
            index: FastMap::default(),
        }
    }

    /// A batch of these nodes, in order.
    pub fn of(nodes: impl IntoIterator<Item = NodeSpec>) -> NodeBatch {
        nodes
            .into_iter()
            .fold(BatchBuilder::new(), BatchBuilder::node)
            .build()
    }

    fn text(&mut self, text: &str) -> u32 {
        if let Some(&index) = self.index.get(text) {
            return index;
        }
        let index = u32::try_from(self.batch.strings.len()).expect("fewer than 2^32 strings");
        self.batch.strings.push(text.to_owned());
        self.index.insert(text.to_owned(), index);
        index
    }

    /// Appends a node.
    ///
    /// # Panics
    ///
    /// More than 2^32 nodes or strings.
    pub fn node(mut self, spec: NodeSpec) -> Self {
        let node = u32::try_from(self.batch.nodes.len()).expect("fewer than 2^32 nodes");
        let name = self.text(&spec.name);
        self.batch.nodes.push(Node {
            name,
            unschedulable: spec.unschedulable,
        });

        let mut labels = spec.labels;
        labels.sort_by(|a, b| a.0.cmp(&b.0));
        for (key, value) in &labels {
            let entry = self.entry(node, key, value);
            self.batch.labels.push(entry);
        }
        let mut annotations = spec.annotations;
        annotations.sort_by(|a, b| a.0.cmp(&b.0));
        for (key, value) in &annotations {
            let entry = self.entry(node, key, value);
            self.batch.annotations.push(entry);
        }
        for (kind, status) in &spec.conditions {
            let entry = self.entry(node, kind, status);
            self.batch.conditions.push(entry);
        }
        for (key, value, effect) in &spec.taints {
            let (key, value) = (self.text(key), self.text(value));
            let effect = *effect;
            self.batch.taints.push(Taint {
                node,
                key,
                value,
                effect,
            });
        }
        for (name, milli_value) in &spec.capacity {
            let name = self.text(name);
            let milli_value = *milli_value;
            self.batch.capacity.push(Amount {
                node,
                name,
                milli_value,
            });
        }
        for (name, milli_value) in &spec.allocatable {
            let name = self.text(name);
            let milli_value = *milli_value;
            self.batch.allocatable.push(Amount {
                node,
                name,
                milli_value,
            });
        }
        if let Some(info) = &spec.info {
            let info = NodeInfo {
                node,
                architecture: self.text(&info.architecture),
                operating_system: self.text(&info.operating_system),
                kernel_version: self.text(&info.kernel_version),
                container_runtime_version: self.text(&info.container_runtime_version),
                kubelet_version: self.text(&info.kubelet_version),
                os_image: self.text(&info.os_image),
            };
            self.batch.infos.push(info);
        }
        self
    }

    fn entry(&mut self, node: u32, key: &str, value: &str) -> Entry {
        Entry {
            node,
            key: self.text(key),
            value: self.text(value),
        }
    }

    /// The finished batch.
    pub fn build(self) -> NodeBatch {
        self.batch
    }
}
