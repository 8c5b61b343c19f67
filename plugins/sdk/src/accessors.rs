//! Accessors and constructors on the generated contract types.

use crate::{
    Condition, Decision, Interest, KeyValue, Node, NodeInfo, PluginInfo, Resource, Run, SetInfo,
    Taint, TaintEffect,
};

fn find<'a>(pairs: &'a [KeyValue], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|pair| pair.key == key)
        .map(|pair| pair.value.as_str())
}

fn amount(resources: &[Resource], name: &str) -> Option<i64> {
    resources
        .iter()
        .find(|resource| resource.name == name)
        .map(|resource| resource.milli_value)
}

impl Node {
    /// The well-known label holding the node's CPU architecture.
    pub const ARCH_LABEL: &str = "kubernetes.io/arch";
    /// The well-known label holding the node's operating system.
    pub const OS_LABEL: &str = "kubernetes.io/os";

    /// A node with only a name, for tests and benchmarks; add parts with the `with_*` methods.
    pub fn named(name: impl Into<String>) -> Self {
        Node {
            name: name.into(),
            labels: Vec::new(),
            annotations: Vec::new(),
            taints: Vec::new(),
            unschedulable: false,
            conditions: Vec::new(),
            capacity: Vec::new(),
            allocatable: Vec::new(),
            info: None,
        }
    }

    /// The value of a label, if the node has it (and the plugin declared interest in it).
    pub fn label(&self, key: &str) -> Option<&str> {
        find(&self.labels, key)
    }

    /// Whether the node has a label, whatever its value.
    pub fn has_label(&self, key: &str) -> bool {
        self.label(key).is_some()
    }

    /// The labels whose key starts with `prefix`, as `(key, value)`.
    pub fn labels_with_prefix<'a>(
        &'a self,
        prefix: &'a str,
    ) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        self.labels
            .iter()
            .filter(move |pair| pair.key.starts_with(prefix))
            .map(|pair| (pair.key.as_str(), pair.value.as_str()))
    }

    /// The value of an annotation.
    pub fn annotation(&self, key: &str) -> Option<&str> {
        find(&self.annotations, key)
    }

    /// A capacity amount in thousandths (one CPU is 1000, 1Gi is 1073741824000).
    pub fn capacity(&self, name: &str) -> Option<i64> {
        amount(&self.capacity, name)
    }

    /// An allocatable amount in thousandths.
    pub fn allocatable(&self, name: &str) -> Option<i64> {
        amount(&self.allocatable, name)
    }

    /// The capacity amount, or the allocatable amount when the node reports no capacity for it.
    pub fn resource(&self, name: &str) -> Option<i64> {
        self.capacity(name).or_else(|| self.allocatable(name))
    }

    /// The status (`True`, `False`, `Unknown`) of a condition such as `Ready`.
    pub fn condition(&self, kind: &str) -> Option<&str> {
        self.conditions
            .iter()
            .find(|condition| condition.type_ == kind)
            .map(|condition| condition.status.as_str())
    }

    /// Whether the `Ready` condition is `True`.
    pub fn is_ready(&self) -> bool {
        self.condition("Ready") == Some("True")
    }

    /// The first taint with this key.
    pub fn taint(&self, key: &str) -> Option<&Taint> {
        self.taints.iter().find(|taint| taint.key == key)
    }

    /// The CPU architecture: the `kubernetes.io/arch` label, else `nodeInfo.architecture`.
    pub fn architecture(&self) -> Option<&str> {
        self.label(Self::ARCH_LABEL)
            .or_else(|| self.info.as_ref().map(|info| info.architecture.as_str()))
            .filter(|arch| !arch.is_empty())
    }

    /// The operating system: the `kubernetes.io/os` label, else `nodeInfo.operatingSystem`.
    pub fn operating_system(&self) -> Option<&str> {
        self.label(Self::OS_LABEL)
            .or_else(|| {
                self.info
                    .as_ref()
                    .map(|info| info.operating_system.as_str())
            })
            .filter(|os| !os.is_empty())
    }

    /// Adds a label.
    pub fn with_label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.push(KeyValue::new(key, value));
        self
    }

    /// Adds an annotation.
    pub fn with_annotation(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.annotations.push(KeyValue::new(key, value));
        self
    }

    /// Adds a capacity amount, in thousandths.
    pub fn with_capacity(mut self, name: impl Into<String>, milli_value: i64) -> Self {
        self.capacity.push(Resource {
            name: name.into(),
            milli_value,
        });
        self
    }

    /// Adds an allocatable amount, in thousandths.
    pub fn with_allocatable(mut self, name: impl Into<String>, milli_value: i64) -> Self {
        self.allocatable.push(Resource {
            name: name.into(),
            milli_value,
        });
        self
    }

    /// Adds a condition.
    pub fn with_condition(mut self, kind: impl Into<String>, status: impl Into<String>) -> Self {
        self.conditions.push(Condition {
            type_: kind.into(),
            status: status.into(),
        });
        self
    }

    /// Adds a taint.
    pub fn with_taint(
        mut self,
        key: impl Into<String>,
        value: impl Into<String>,
        effect: TaintEffect,
    ) -> Self {
        self.taints.push(Taint {
            key: key.into(),
            value: value.into(),
            effect,
        });
        self
    }

    /// Sets the node info.
    pub fn with_info(mut self, info: NodeInfo) -> Self {
        self.info = Some(info);
        self
    }
}

impl KeyValue {
    /// A key and its value.
    pub fn new(key: impl Into<String>, value: impl Into<String>) -> Self {
        KeyValue {
            key: key.into(),
            value: value.into(),
        }
    }
}

impl Decision {
    /// Run the set's plain template on the node.
    pub fn plain() -> Self {
        Decision::Run(Run {
            variant: None,
            overrides: None,
        })
    }

    /// Run the named variant on the node.
    pub fn variant(name: impl Into<String>) -> Self {
        Decision::Run(Run {
            variant: Some(name.into()),
            overrides: None,
        })
    }

    /// Do not run the set on the node, for a reason meant for people.
    pub fn skip(reason: impl Into<String>) -> Self {
        Decision::Skip(reason.into())
    }

    /// Whether the node does not run the set.
    pub fn is_skip(&self) -> bool {
        matches!(self, Decision::Skip(_))
    }

    /// The variant a running node gets; `None` for a skip or the plain template.
    pub fn variant_name(&self) -> Option<&str> {
        match self {
            Decision::Run(run) => run.variant.as_deref(),
            Decision::Skip(_) => None,
        }
    }
}

impl Interest {
    /// Interest in nothing but node names; widen it with the builder methods.
    pub fn nothing() -> Self {
        Interest {
            labels: Vec::new(),
            annotations: Vec::new(),
            taints: false,
            unschedulable: false,
            conditions: false,
            resources: Vec::new(),
            node_info: false,
        }
    }

    /// Adds label keys; an entry ending in `/` is a prefix, `*` selects all labels.
    pub fn labels<I, S>(mut self, keys: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.labels.extend(keys.into_iter().map(Into::into));
        self
    }

    /// Adds annotation keys, with the same rules as [`Interest::labels`].
    pub fn annotations<I, S>(mut self, keys: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.annotations.extend(keys.into_iter().map(Into::into));
        self
    }

    /// Adds resource names read from capacity and allocatable; `*` selects all.
    pub fn resources<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.resources.extend(names.into_iter().map(Into::into));
        self
    }

    /// Asks for the node's taints.
    pub fn taints(mut self) -> Self {
        self.taints = true;
        self
    }

    /// Asks for the node's `spec.unschedulable`.
    pub fn unschedulable(mut self) -> Self {
        self.unschedulable = true;
        self
    }

    /// Asks for the node's conditions.
    pub fn conditions(mut self) -> Self {
        self.conditions = true;
        self
    }

    /// Asks for `status.nodeInfo`.
    pub fn node_info(mut self) -> Self {
        self.node_info = true;
        self
    }
}

impl PluginInfo {
    /// A description with no interest; set it with [`PluginInfo::with_interest`].
    pub fn new(
        name: impl Into<String>,
        version: impl Into<String>,
        description: impl Into<String>,
    ) -> Self {
        PluginInfo {
            name: name.into(),
            version: version.into(),
            description: description.into(),
            interest: Interest::nothing(),
        }
    }

    /// Sets the node parts the plugin reads.
    pub fn with_interest(mut self, interest: Interest) -> Self {
        self.interest = interest;
        self
    }
}

impl SetInfo {
    /// A set in namespace `default`, for tests and benchmarks.
    pub fn new<I, S>(name: impl Into<String>, config: impl Into<String>, variants: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        SetInfo {
            namespace: "default".into(),
            name: name.into(),
            config: config.into(),
            variants: variants.into_iter().map(Into::into).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_accessors_find_labels_resources_and_conditions() {
        let node = Node::named("n1")
            .with_label("a", "1")
            .with_capacity("memory", 8_000)
            .with_allocatable("cpu", 2_000)
            .with_condition("Ready", "True");
        assert_eq!(node.label("a"), Some("1"));
        assert_eq!(node.label("b"), None);
        let prefixed: Vec<_> = node.labels_with_prefix("a").collect();
        assert_eq!(prefixed, vec![("a", "1")]);
        assert_eq!(node.capacity("memory"), Some(8_000));
        assert_eq!(node.resource("cpu"), Some(2_000));
        assert!(node.is_ready());
    }

    #[test]
    fn architecture_prefers_the_label_over_node_info() {
        let info = NodeInfo {
            architecture: "amd64".into(),
            operating_system: "linux".into(),
            kernel_version: String::new(),
            container_runtime_version: String::new(),
            kubelet_version: String::new(),
            os_image: String::new(),
        };
        let node = Node::named("n").with_info(info);
        assert_eq!(node.architecture(), Some("amd64"));
        let node = node.with_label(Node::ARCH_LABEL, "arm64");
        assert_eq!(node.architecture(), Some("arm64"));
    }

    #[test]
    fn decision_constructors_say_what_they_build() {
        assert_eq!(Decision::variant("gpu").variant_name(), Some("gpu"));
        assert_eq!(Decision::plain().variant_name(), None);
        assert!(Decision::skip("no").is_skip());
    }
}
