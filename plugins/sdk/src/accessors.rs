//! Constructors on the generated contract types a plugin builds or tests with.

use crate::{Interest, KeyValue, PluginInfo, SetInfo};

impl KeyValue {
    /// A key and its value.
    pub fn new(key: impl Into<String>, value: impl Into<String>) -> Self {
        KeyValue {
            key: key.into(),
            value: value.into(),
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
