//! Turns the node watch into reconcile triggers, dropping updates no placement can see.
//!
//! Kubelets rewrite their Node every few seconds (heartbeats, condition timestamps, image
//! lists). Only the parts that the predicates or a plugin can read make a difference, so only a
//! change in those parts, a new node or a removed node triggers a reconcile.

use std::collections::{BTreeMap, HashMap};

use futures::{Stream, StreamExt, future};
use k8s_openapi::api::core::v1::Node;
use kube::runtime::watcher;

/// The placement-relevant parts of a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint {
    labels: BTreeMap<String, String>,
    /// Plugins may read annotations, so they count.
    annotations: BTreeMap<String, String>,
    taints: Vec<(String, String, String)>,
    unschedulable: bool,
    /// Condition type and status; timestamps and messages are left out.
    conditions: Vec<(String, String)>,
    capacity: Vec<(String, String)>,
    allocatable: Vec<(String, String)>,
    /// Architecture, OS, kernel, container runtime, kubelet and OS image.
    info: Option<[String; 6]>,
}

impl Fingerprint {
    pub fn of(node: &Node) -> Self {
        let spec = node.spec.as_ref();
        let status = node.status.as_ref();
        let quantities = |map: Option<&BTreeMap<String, _>>| {
            map.iter()
                .flat_map(|m| m.iter())
                .map(
                    |(k, v): (
                        &String,
                        &k8s_openapi::apimachinery::pkg::api::resource::Quantity,
                    )| { (k.clone(), v.0.clone()) },
                )
                .collect()
        };
        let mut conditions: Vec<(String, String)> = status
            .and_then(|s| s.conditions.as_ref())
            .iter()
            .flat_map(|c| c.iter())
            .map(|c| (c.type_.clone(), c.status.clone()))
            .collect();
        conditions.sort();
        Self {
            labels: node.metadata.labels.clone().unwrap_or_default(),
            annotations: node.metadata.annotations.clone().unwrap_or_default(),
            taints: spec
                .and_then(|s| s.taints.as_ref())
                .iter()
                .flat_map(|t| t.iter())
                .map(|t| {
                    (
                        t.key.clone(),
                        t.value.clone().unwrap_or_default(),
                        t.effect.clone(),
                    )
                })
                .collect(),
            unschedulable: spec.and_then(|s| s.unschedulable).unwrap_or(false),
            conditions,
            capacity: quantities(status.and_then(|s| s.capacity.as_ref())),
            allocatable: quantities(status.and_then(|s| s.allocatable.as_ref())),
            info: status.and_then(|s| s.node_info.as_ref()).map(|i| {
                [
                    i.architecture.clone(),
                    i.operating_system.clone(),
                    i.kernel_version.clone(),
                    i.container_runtime_version.clone(),
                    i.kubelet_version.clone(),
                    i.os_image.clone(),
                ]
            }),
        }
    }
}

/// Remembers each node's fingerprint and says whether a watch event changed placement.
#[derive(Debug, Default)]
pub struct NodeFilter {
    known: HashMap<String, Fingerprint>,
    /// Fingerprints collected during a relist, swapped in when it completes.
    relist: Option<HashMap<String, Fingerprint>>,
}

impl NodeFilter {
    /// Whether `event` may change where any set runs.
    pub fn relevant(&mut self, event: &watcher::Event<Node>) -> bool {
        match event {
            watcher::Event::Apply(node) => {
                let name = node.metadata.name.clone().unwrap_or_default();
                let print = Fingerprint::of(node);
                self.known.insert(name, print.clone()) != Some(print)
            }
            watcher::Event::Delete(node) => {
                let name = node.metadata.name.as_deref().unwrap_or_default();
                self.known.remove(name).is_some()
            }
            watcher::Event::Init => {
                self.relist = Some(HashMap::new());
                false
            }
            watcher::Event::InitApply(node) => {
                let name = node.metadata.name.clone().unwrap_or_default();
                self.relist
                    .get_or_insert_with(HashMap::new)
                    .insert(name, Fingerprint::of(node));
                false
            }
            watcher::Event::InitDone => {
                let fresh = self.relist.take().unwrap_or_default();
                let changed = fresh != self.known;
                self.known = fresh;
                changed
            }
        }
    }
}

/// One `()` per watch event that may change placement; watch errors are logged and dropped
/// (the watcher retries with backoff).
pub fn triggers<S>(events: S) -> impl Stream<Item = ()> + Send
where
    S: Stream<Item = Result<watcher::Event<Node>, watcher::Error>> + Send,
{
    let mut filter = NodeFilter::default();
    events.filter_map(move |event| {
        let out = match event {
            Ok(event) => filter.relevant(&event).then_some(()),
            Err(error) => {
                tracing::warn!(%error, "node watch failed; retrying");
                None
            }
        };
        future::ready(out)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(json: serde_json::Value) -> Node {
        serde_json::from_value(json).unwrap()
    }

    fn base() -> serde_json::Value {
        serde_json::json!({
            "metadata": {"name": "n1", "resourceVersion": "1", "labels": {"zone": "a"}},
            "status": {
                "conditions": [{"type": "Ready", "status": "True",
                                "lastHeartbeatTime": "2024-01-01T00:00:00Z"}],
                "capacity": {"cpu": "4"},
                "images": [{"names": ["a"]}]
            }
        })
    }

    #[test]
    fn heartbeats_and_resource_versions_are_not_relevant() {
        let mut filter = NodeFilter::default();
        assert!(filter.relevant(&watcher::Event::Apply(node(base()))));
        let mut beat = base();
        beat["metadata"]["resourceVersion"] = "2".into();
        beat["status"]["conditions"][0]["lastHeartbeatTime"] = "2024-01-01T00:01:00Z".into();
        beat["status"]["images"] = serde_json::json!([{"names": ["b"]}]);
        assert!(!filter.relevant(&watcher::Event::Apply(node(beat))));
    }

    #[test]
    fn labels_taints_readiness_and_removal_are_relevant() {
        let mut filter = NodeFilter::default();
        filter.relevant(&watcher::Event::Apply(node(base())));
        let mut labelled = base();
        labelled["metadata"]["labels"]["gpu"] = "yes".into();
        assert!(filter.relevant(&watcher::Event::Apply(node(labelled.clone()))));
        let mut not_ready = labelled.clone();
        not_ready["status"]["conditions"][0]["status"] = "False".into();
        assert!(filter.relevant(&watcher::Event::Apply(node(not_ready.clone()))));
        let mut tainted = not_ready;
        tainted["spec"] = serde_json::json!({"taints": [{"key": "k", "effect": "NoSchedule"}]});
        assert!(filter.relevant(&watcher::Event::Apply(node(tainted.clone()))));
        assert!(filter.relevant(&watcher::Event::Delete(node(tainted))));
    }

    #[test]
    fn a_relist_that_finds_the_same_nodes_is_not_relevant() {
        let mut filter = NodeFilter::default();
        filter.relevant(&watcher::Event::Apply(node(base())));
        assert!(!filter.relevant(&watcher::Event::Init));
        assert!(!filter.relevant(&watcher::Event::InitApply(node(base()))));
        assert!(!filter.relevant(&watcher::Event::InitDone));
        filter.relevant(&watcher::Event::Init);
        assert!(filter.relevant(&watcher::Event::InitDone));
    }
}
