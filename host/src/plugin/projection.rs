//! Turns a Kubernetes `Node` into the WIT node record, keeping only what a plugin reads.
//!
//! Sending a plugin every label of every node dominates the cost of a call; a plugin that
//! reads three labels and one resource gets exactly those.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::bindings::{self, Interest, KeyValue, Resource, TaintEffect};
use crate::quantity::parse_milli;

/// Which keys of a map the plugin asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct KeyFilter {
    all: bool,
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

    /// Picks the wanted entries. With only exact keys, looks each up instead of scanning.
    fn select(&self, map: Option<&BTreeMap<String, String>>) -> Vec<KeyValue> {
        let Some(map) = map else { return Vec::new() };
        if self.is_empty() {
            return Vec::new();
        }
        let pair = |(k, v): (&String, &String)| KeyValue {
            key: k.clone(),
            value: v.clone(),
        };
        if !self.all && self.prefixes.is_empty() {
            return self
                .exact
                .iter()
                .filter_map(|k| map.get_key_value(k))
                .map(pair)
                .collect();
        }
        map.iter()
            .filter(|(k, _)| self.matches(k))
            .map(pair)
            .collect()
    }

    fn select_resources(&self, map: Option<&BTreeMap<String, Quantity>>) -> Vec<Resource> {
        let Some(map) = map else { return Vec::new() };
        if self.is_empty() {
            return Vec::new();
        }
        // A quantity the API server would never have stored is left out rather than guessed.
        let resource = |(name, quantity): (&String, &Quantity)| {
            parse_milli(&quantity.0).ok().map(|milli_value| Resource {
                name: name.clone(),
                milli_value,
            })
        };
        if !self.all && self.prefixes.is_empty() {
            return self
                .exact
                .iter()
                .filter_map(|k| map.get_key_value(k))
                .filter_map(resource)
                .collect();
        }
        map.iter()
            .filter(|(k, _)| self.matches(k))
            .filter_map(resource)
            .collect()
    }
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

    /// Whether a label key is one the plugin reads; a change to any other label cannot change
    /// the plugin's answer.
    pub fn reads_label(&self, key: &str) -> bool {
        self.labels.matches(key)
    }

    /// The node as this plugin sees it.
    pub fn project(&self, node: &Node) -> bindings::Node {
        let meta = &node.metadata;
        let spec = node.spec.as_ref();
        let status = node.status.as_ref();

        let taints = if self.taints {
            spec.and_then(|s| s.taints.as_ref())
                .map(|taints| {
                    taints
                        .iter()
                        .filter_map(|t| {
                            let effect = match t.effect.as_str() {
                                "NoSchedule" => TaintEffect::NoSchedule,
                                "PreferNoSchedule" => TaintEffect::PreferNoSchedule,
                                "NoExecute" => TaintEffect::NoExecute,
                                _ => return None,
                            };
                            Some(bindings::Taint {
                                key: t.key.clone(),
                                value: t.value.clone().unwrap_or_default(),
                                effect,
                            })
                        })
                        .collect()
                })
                .unwrap_or_default()
        } else {
            Vec::new()
        };

        let conditions = if self.conditions {
            status
                .and_then(|s| s.conditions.as_ref())
                .map(|conditions| {
                    conditions
                        .iter()
                        .map(|c| bindings::Condition {
                            type_: c.type_.clone(),
                            status: c.status.clone(),
                        })
                        .collect()
                })
                .unwrap_or_default()
        } else {
            Vec::new()
        };

        let info = if self.node_info {
            status
                .and_then(|s| s.node_info.as_ref())
                .map(|i| bindings::NodeInfo {
                    architecture: i.architecture.clone(),
                    operating_system: i.operating_system.clone(),
                    kernel_version: i.kernel_version.clone(),
                    container_runtime_version: i.container_runtime_version.clone(),
                    kubelet_version: i.kubelet_version.clone(),
                    os_image: i.os_image.clone(),
                })
        } else {
            None
        };

        bindings::Node {
            name: meta.name.clone().unwrap_or_default(),
            labels: self.labels.select(meta.labels.as_ref()),
            annotations: self.annotations.select(meta.annotations.as_ref()),
            taints,
            unschedulable: self.unschedulable
                && spec.and_then(|s| s.unschedulable).unwrap_or(false),
            conditions,
            capacity: self
                .resources
                .select_resources(status.and_then(|s| s.capacity.as_ref())),
            allocatable: self
                .resources
                .select_resources(status.and_then(|s| s.allocatable.as_ref())),
            info,
        }
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

    fn node() -> Node {
        serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": "n1",
                "labels": {
                    "kubernetes.io/arch": "arm64",
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
                    "architecture": "arm64", "operatingSystem": "linux",
                    "kernelVersion": "6.1", "containerRuntimeVersion": "containerd://1.7",
                    "kubeletVersion": "v1.29.0", "osImage": "Debian", "bootID": "",
                    "machineID": "", "systemUUID": "", "kubeProxyVersion": ""
                }
            }
        }))
        .unwrap()
    }

    #[test]
    fn only_declared_labels_and_resources_are_sent() {
        let projection = Projection::new(&interest(
            &["kubernetes.io/arch", "missing"],
            &["nvidia.com/gpu"],
        ));
        let projected = projection.project(&node());
        assert_eq!(projected.name, "n1");
        assert_eq!(
            projected.labels,
            vec![KeyValue {
                key: "kubernetes.io/arch".into(),
                value: "arm64".into()
            }]
        );
        assert_eq!(
            projected.capacity,
            vec![Resource {
                name: "nvidia.com/gpu".into(),
                milli_value: 2000
            }]
        );
        assert!(projected.annotations.is_empty());
        assert!(projected.taints.is_empty());
        assert!(!projected.unschedulable);
        assert!(projected.info.is_none());
    }

    #[test]
    fn prefix_and_wildcard_entries_select_many_keys() {
        let prefixed = Projection::new(&interest(&["feature.node.kubernetes.io/"], &["*"]));
        let projected = prefixed.project(&node());
        let keys: Vec<_> = projected.labels.iter().map(|l| l.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "feature.node.kubernetes.io/cpu-model",
                "feature.node.kubernetes.io/pci-10de.present"
            ]
        );
        assert_eq!(projected.capacity.len(), 3);

        let all = Projection::new(&interest(&["*"], &[]));
        assert_eq!(all.project(&node()).labels.len(), 4);
        assert!(all.reads_label("anything"));
        assert!(!prefixed.reads_label("zone"));
    }

    #[test]
    fn flags_bring_taints_cordon_and_node_info() {
        let mut wanted = interest(&[], &[]);
        wanted.taints = true;
        wanted.unschedulable = true;
        wanted.node_info = true;
        let projected = Projection::new(&wanted).project(&node());
        assert_eq!(projected.taints.len(), 1);
        assert!(projected.unschedulable);
        assert_eq!(
            projected.info.map(|i| i.architecture),
            Some("arm64".to_string())
        );
    }
}
