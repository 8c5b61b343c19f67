//! A simulated scheduler: a client of the API that binds pending pods to feasible nodes.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{
    Node, NodeSelectorRequirement, NodeSelectorTerm, Pod, Taint, Toleration,
};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use serde_json::{Value, json};
use tokio::task::AbortHandle;

use crate::store::now;

/// A simulated default scheduler. Stops when dropped.
#[derive(Debug)]
pub struct Scheduler {
    task: AbortHandle,
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Scheduler {
    /// Starts scheduling pods whose `schedulerName` is `default-scheduler`.
    pub fn start(client: kube::Client) -> Self {
        Self {
            task: tokio::spawn(run(client)).abort_handle(),
        }
    }
}

fn tolerates(tolerations: &[Toleration], taint: &Taint) -> bool {
    tolerations.iter().any(|t| {
        let effect_ok = t
            .effect
            .as_deref()
            .is_none_or(|e| e.is_empty() || e == taint.effect);
        let key = t.key.as_deref().unwrap_or_default();
        let key_ok = key.is_empty() || key == taint.key;
        let value_ok = match t.operator.as_deref() {
            Some("Exists") => true,
            _ => {
                t.value.as_deref().unwrap_or_default() == taint.value.as_deref().unwrap_or_default()
            }
        };
        effect_ok
            && key_ok
            && value_ok
            && !(key.is_empty() && t.operator.as_deref() != Some("Exists"))
    })
}

fn requirement_matches(req: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = req.values.clone().unwrap_or_default();
    let number = |s: &str| s.parse::<i64>().ok();
    match req.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => value.is_none_or(|v| values.iter().all(|x| x != v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" => match (
            value.and_then(number),
            values.first().and_then(|v| number(v)),
        ) {
            (Some(a), Some(b)) => a > b,
            _ => false,
        },
        "Lt" => match (
            value.and_then(number),
            values.first().and_then(|v| number(v)),
        ) {
            (Some(a), Some(b)) => a < b,
            _ => false,
        },
        _ => false,
    }
}

fn term_matches(term: &NodeSelectorTerm, node: &Node) -> bool {
    let exprs = term.match_expressions.as_deref().unwrap_or_default();
    let fields = term.match_fields.as_deref().unwrap_or_default();
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    let labels = node.metadata.labels.clone().unwrap_or_default();
    exprs
        .iter()
        .all(|r| requirement_matches(r, labels.get(&r.key).map(String::as_str)))
        && fields.iter().all(|r| {
            let value = match r.key.as_str() {
                "metadata.name" => node.metadata.name.as_deref(),
                _ => None,
            };
            requirement_matches(r, value)
        })
}

/// Why `pod` cannot run on `node`, or `Ok` if it can.
pub fn fits(pod: &Pod, node: &Node) -> Result<(), &'static str> {
    let spec = pod.spec.clone().unwrap_or_default();
    let labels = node.metadata.labels.clone().unwrap_or_default();
    let tolerations = spec.tolerations.clone().unwrap_or_default();
    let node_spec = node.spec.clone().unwrap_or_default();
    if node_spec.unschedulable == Some(true) {
        let taint = Taint {
            key: "node.kubernetes.io/unschedulable".into(),
            effect: "NoSchedule".into(),
            value: None,
            time_added: None,
        };
        if !tolerates(&tolerations, &taint) {
            return Err("node(s) were unschedulable");
        }
    }
    for (k, v) in spec.node_selector.iter().flatten() {
        if labels.get(k) != Some(v) {
            return Err("node(s) didn't match Pod's node affinity/selector");
        }
    }
    let required = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|na| {
            na.required_during_scheduling_ignored_during_execution
                .as_ref()
        });
    if let Some(required) = required
        && !required
            .node_selector_terms
            .iter()
            .any(|t| term_matches(t, node))
    {
        return Err("node(s) didn't match Pod's node affinity/selector");
    }
    for taint in node_spec.taints.iter().flatten() {
        if matches!(taint.effect.as_str(), "NoSchedule" | "NoExecute")
            && !tolerates(&tolerations, taint)
        {
            return Err("node(s) had untolerated taint");
        }
    }
    Ok(())
}

type Key = (String, String);

fn pod_key(pod: &Pod) -> Key {
    (
        pod.metadata.namespace.clone().unwrap_or_default(),
        pod.metadata.name.clone().unwrap_or_default(),
    )
}

struct Sched {
    client: kube::Client,
    nodes: BTreeMap<String, Node>,
    pending: HashMap<Key, Pod>,
    bound: HashMap<String, usize>,
    /// Pods already marked unschedulable with this many nodes known.
    marked: HashMap<Key, String>,
}

impl Sched {
    async fn schedule_all(&mut self) {
        let pods: Vec<Pod> = self.pending.values().cloned().collect();
        for pod in pods {
            if pod.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let spec = pod.spec.clone().unwrap_or_default();
            if spec
                .scheduler_name
                .as_deref()
                .unwrap_or("default-scheduler")
                != "default-scheduler"
                || spec.node_name.as_deref().is_some_and(|n| !n.is_empty())
                || spec
                    .scheduling_gates
                    .as_ref()
                    .is_some_and(|g| !g.is_empty())
            {
                continue;
            }
            let mut reasons: BTreeMap<&'static str, usize> = BTreeMap::new();
            let mut best: Option<(&String, usize)> = None;
            for (name, node) in &self.nodes {
                match fits(&pod, node) {
                    Ok(()) => {
                        let load = self.bound.get(name).copied().unwrap_or(0);
                        if best.is_none_or(|(_, b)| load < b) {
                            best = Some((name, load));
                        }
                    }
                    Err(reason) => *reasons.entry(reason).or_default() += 1,
                }
            }
            let key = pod_key(&pod);
            let api: Api<Pod> = Api::namespaced(self.client.clone(), &key.0);
            match best {
                Some((node, _)) => {
                    let node = node.clone();
                    let binding = json!({
                        "apiVersion": "v1",
                        "kind": "Binding",
                        "metadata": {"name": key.1},
                        "target": {"apiVersion": "v1", "kind": "Node", "name": node},
                    });
                    let bound: Result<Value, _> = api
                        .create_subresource("binding", &key.1, &PostParams::default(), &binding)
                        .await;
                    if bound.is_ok() {
                        *self.bound.entry(node).or_default() += 1;
                        self.pending.remove(&key);
                        self.marked.remove(&key);
                    }
                }
                None => {
                    let detail: Vec<String> =
                        reasons.iter().map(|(r, n)| format!("{n} {r}")).collect();
                    let message = format!(
                        "0/{} nodes are available: {}.",
                        self.nodes.len(),
                        detail.join(", ")
                    );
                    if self.marked.get(&key) == Some(&message) {
                        continue;
                    }
                    self.marked.insert(key.clone(), message.clone());
                    let patch = json!({"status": {"conditions": [{
                        "type": "PodScheduled",
                        "status": "False",
                        "reason": "Unschedulable",
                        "message": message,
                        "lastProbeTime": null,
                        "lastTransitionTime": now(),
                    }]}});
                    let _ = api
                        .patch_status(&key.1, &PatchParams::default(), &Patch::Strategic(&patch))
                        .await;
                }
            }
        }
    }
}

async fn run(client: kube::Client) {
    let nodes: Api<Node> = Api::all(client.clone());
    let pods: Api<Pod> = Api::all(client.clone());
    let mut node_events = watcher(nodes, watcher::Config::default()).boxed();
    let mut pod_events = watcher(pods, watcher::Config::default().fields("spec.nodeName=")).boxed();
    let mut sched = Sched {
        client,
        nodes: BTreeMap::new(),
        pending: HashMap::new(),
        bound: HashMap::new(),
        marked: HashMap::new(),
    };
    loop {
        let changed = tokio::select! {
            Some(event) = node_events.next() => match event {
                Ok(watcher::Event::Apply(n) | watcher::Event::InitApply(n)) => {
                    sched.nodes.insert(n.metadata.name.clone().unwrap_or_default(), n);
                    true
                }
                Ok(watcher::Event::Delete(n)) => {
                    sched.nodes.remove(n.metadata.name.as_deref().unwrap_or_default());
                    true
                }
                Ok(watcher::Event::Init) => {
                    sched.nodes.clear();
                    false
                }
                Ok(watcher::Event::InitDone) => true,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    false
                }
            },
            Some(event) = pod_events.next() => match event {
                Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) => {
                    sched.pending.insert(pod_key(&p), p);
                    true
                }
                Ok(watcher::Event::Delete(p)) => {
                    sched.pending.remove(&pod_key(&p));
                    sched.marked.remove(&pod_key(&p));
                    false
                }
                Ok(watcher::Event::Init) => {
                    sched.pending.clear();
                    false
                }
                Ok(watcher::Event::InitDone) => true,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    false
                }
            },
            else => break,
        };
        if changed {
            sched.schedule_all().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NodeShape;

    fn pod(spec: Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": spec})).expect("valid pod")
    }

    /// A pod spec requiring one node selector term.
    fn required(term: Value) -> Value {
        json!({"containers": [], "affinity": {"nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [term]}
        }}})
    }

    #[test]
    fn match_fields_on_metadata_name_pins_a_pod_to_one_node() {
        let p = pod(required(json!({
            "matchFields": [{"key": "metadata.name", "operator": "In", "values": ["a"]}]
        })));
        assert!(fits(&p, &NodeShape::new().to_node("a")).is_ok());
        assert!(fits(&p, &NodeShape::new().to_node("b")).is_err());
    }

    #[test]
    fn numeric_and_existence_operators_follow_kubernetes() {
        let p = pod(required(json!({"matchExpressions": [
            {"key": "cores", "operator": "Gt", "values": ["4"]},
            {"key": "spot", "operator": "DoesNotExist"},
            {"key": "kubernetes.io/arch", "operator": "NotIn", "values": ["arm64"]}
        ]})));
        assert!(fits(&p, &NodeShape::new().label("cores", "8").to_node("a")).is_ok());
        assert!(fits(&p, &NodeShape::new().label("cores", "4").to_node("a")).is_err());
        assert!(
            fits(
                &p,
                &NodeShape::new()
                    .label("cores", "8")
                    .label("spot", "")
                    .to_node("a")
            )
            .is_err()
        );
        assert!(
            fits(
                &p,
                &NodeShape::new()
                    .label("cores", "8")
                    .arch("arm64")
                    .to_node("a")
            )
            .is_err()
        );
    }

    #[test]
    fn taints_need_matching_tolerations() {
        let node = NodeShape::new()
            .taint("gpu", Some("yes"), "NoSchedule")
            .to_node("a");
        assert!(fits(&pod(json!({"containers": []})), &node).is_err());
        let tolerating = pod(json!({"containers": [], "tolerations": [
            {"key": "gpu", "operator": "Equal", "value": "yes", "effect": "NoSchedule"}
        ]}));
        assert!(fits(&tolerating, &node).is_ok());
        let everything = pod(json!({"containers": [], "tolerations": [{"operator": "Exists"}]}));
        assert!(fits(&everything, &node).is_ok());
        let prefer = NodeShape::new()
            .taint("x", None, "PreferNoSchedule")
            .to_node("b");
        assert!(fits(&pod(json!({"containers": []})), &prefer).is_ok());
    }

    #[test]
    fn cordoned_nodes_are_skipped() {
        let mut node = NodeShape::new().to_node("a");
        node.spec.get_or_insert_with(Default::default).unschedulable = Some(true);
        assert!(fits(&pod(json!({"containers": []})), &node).is_err());
    }
}
