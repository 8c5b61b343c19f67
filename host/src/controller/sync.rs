//! What one pass changes: the planner's creates and deletes, held back by in-flight writes and
//! failed-pod backoff, plus the next rolling-update step.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;

use crate::crd::WasmDaemonSet;
use crate::planner::{self, Create, DeleteReason, Outcome, Plan, pod_node};
use crate::render;

use super::backoff::FailedPodBackoff;
use super::expectations::Expectations;
use super::rollout::{self, NodeState};

/// Why the controller deletes a pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// The planner said so.
    Plan(DeleteReason),
    /// A rolling update replaces it.
    Outdated,
}

/// A pod to delete.
#[derive(Debug, Clone, PartialEq)]
pub struct PodDelete {
    pub pod: String,
    /// Deletion is conditional on this uid, so a pod recreated under the same name survives.
    pub uid: Option<String>,
    pub node: String,
    pub why: Why,
}

/// A failed pod left in place for now.
#[derive(Debug, Clone, PartialEq)]
pub struct BackingOff {
    pub node: String,
    pub pod: String,
    pub wait: Duration,
}

/// Everything one pass changes.
#[derive(Debug, Default)]
pub struct Changes {
    pub create: Vec<Create>,
    pub delete: Vec<PodDelete>,
    pub backing_off: Vec<BackingOff>,
    /// When the set should be looked at again even if nothing changes.
    pub recheck_in: Option<Duration>,
}

fn is_terminal(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    matches!(phase, Some("Succeeded" | "Failed"))
}

/// Live pods (not terminating, not finished) by node, oldest first.
pub fn live_by_node(pods: &[Pod]) -> HashMap<&str, Vec<&Pod>> {
    planner::pods_by_node(pods, |p| {
        p.metadata.deletion_timestamp.is_none() && !is_terminal(p)
    })
}

/// Decides this pass's writes for `set` from its `plan` and its `pods`.
pub fn changes(
    set: &WasmDaemonSet,
    plan: &Plan,
    pods: &[Pod],
    expectations: &Expectations,
    backoff: &mut FailedPodBackoff,
    now: Instant,
    wall: Timestamp,
) -> Result<Changes, String> {
    let runs: HashMap<&str, &Outcome> = plan
        .nodes
        .iter()
        .filter(|n| n.outcome.runs())
        .map(|n| (&*n.node, &n.outcome))
        .collect();
    let min_ready = rollout::min_ready(set);
    let budget = rollout::budget(set, runs.len())?;
    let rolling = rollout::is_rolling(set);
    let surge = rolling && budget.max_surge > 0;
    let live = live_by_node(pods);
    let uids: HashMap<&str, &str> = pods
        .iter()
        .filter_map(|p| Some((p.metadata.name.as_deref()?, p.metadata.uid.as_deref()?)))
        .collect();
    let uid_of = |name: &str| uids.get(name).map(|uid| uid.to_string());

    let mut out = Changes::default();
    let wait = |slot: &mut Option<Duration>, d: Duration| {
        *slot = Some(slot.map_or(d, |w: Duration| w.min(d)));
    };
    let mut terminal_nodes = HashSet::new();
    for delete in &plan.delete {
        if expectations.deleting(&delete.pod) {
            continue;
        }
        match delete.reason {
            DeleteReason::Failed => {
                terminal_nodes.insert(delete.node.as_str());
                if let Some(left) = backoff.wait(&delete.node, now) {
                    wait(&mut out.recheck_in, left);
                    out.backing_off.push(BackingOff {
                        node: delete.node.clone(),
                        pod: delete.pod.clone(),
                        wait: left,
                    });
                    continue;
                }
                backoff.record(&delete.node, now);
            }
            DeleteReason::Succeeded => {
                terminal_nodes.insert(delete.node.as_str());
            }
            DeleteReason::Duplicate if surge && runs.contains_key(delete.node.as_str()) => {
                continue;
            }
            _ => {}
        }
        out.delete.push(PodDelete {
            pod: delete.pod.clone(),
            uid: uid_of(&delete.pod),
            node: delete.node.clone(),
            why: Why::Plan(delete.reason),
        });
    }

    if surge {
        for (node, outcome) in &runs {
            let (Outcome::Run { hash, .. }, Some(list)) = (outcome, live.get(node)) else {
                continue;
            };
            for pod in rollout::surge_duplicates(list, hash, min_ready) {
                let name = pod.metadata.name.clone().unwrap_or_default();
                if !expectations.deleting(&name) {
                    out.delete.push(PodDelete {
                        pod: name,
                        uid: pod.metadata.uid.clone(),
                        node: node.to_string(),
                        why: Why::Plan(DeleteReason::Duplicate),
                    });
                }
            }
        }
    }

    for create in &plan.create {
        let node = create.node.as_str();
        if !expectations.creating(node) && !terminal_nodes.contains(node) {
            out.create.push(create.clone());
        }
    }

    if rolling {
        roll(
            set,
            &runs,
            &live,
            expectations,
            budget,
            min_ready,
            wall,
            &mut out,
        );
    }
    Ok(out)
}

#[expect(
    clippy::too_many_arguments,
    reason = "one step of changes(), split out to read"
)]
fn roll(
    set: &WasmDaemonSet,
    runs: &HashMap<&str, &Outcome>,
    live: &HashMap<&str, Vec<&Pod>>,
    expectations: &Expectations,
    budget: rollout::Budget,
    min_ready: Duration,
    wall: Timestamp,
    out: &mut Changes,
) {
    let touched: HashSet<String> = out
        .delete
        .iter()
        .map(|d| d.node.clone())
        .chain(out.create.iter().map(|c| c.node.clone()))
        .collect();
    let mut nodes: Vec<NodeState> = runs
        .iter()
        .filter_map(|(node, outcome)| match outcome {
            Outcome::Run { hash, .. } => Some(NodeState {
                node,
                want_hash: hash,
                pods: live.get(node).cloned().unwrap_or_default(),
                busy: expectations.busy(node) || touched.contains(*node),
            }),
            Outcome::Skip { .. } => None,
        })
        .collect();
    nodes.sort_by_key(|n| n.node);

    let step = rollout::step(&nodes, budget, min_ready, wall);
    if let Some(left) = step.recheck_in {
        out.recheck_in = Some(out.recheck_in.map_or(left, |w| w.min(left)));
    }
    for name in step.delete {
        let Some(pod) = nodes
            .iter()
            .flat_map(|n| n.pods.iter())
            .find(|p| p.metadata.name.as_deref() == Some(name.as_str()))
        else {
            continue;
        };
        out.delete.push(PodDelete {
            node: pod_node(pod).unwrap_or_default().to_string(),
            uid: pod.metadata.uid.clone(),
            pod: name,
            why: Why::Outdated,
        });
    }
    for node in step.surge_on {
        if let Some(Outcome::Run {
            variant,
            template,
            hash,
        }) = runs.get(node.as_str())
        {
            let pod = render::pod_for_node(set, template, variant.as_deref(), hash, &node);
            out.create.push(Create { node, pod });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::planner::{self, Delete};
    use k8s_openapi::api::core::v1::Node;
    use serde_json::json;

    fn set(strategy: serde_json::Value) -> WasmDaemonSet {
        serde_json::from_value(json!({
            "apiVersion": "wasmdaemon.io/v1alpha1", "kind": "WasmDaemonSet",
            "metadata": {"name": "agent", "namespace": "ns", "uid": "u", "generation": 1},
            "spec": {
                "selector": {"matchLabels": {"app": "agent"}},
                "template": {"metadata": {"labels": {"app": "agent"}},
                             "spec": {"containers": [{"name": "a", "image": "a:1"}]}},
                "updateStrategy": strategy
            }
        }))
        .unwrap()
    }

    fn node(name: &str) -> Node {
        serde_json::from_value(json!({"metadata": {"name": name}, "status": {
            "conditions": [{"type": "Ready", "status": "True"}]}}))
        .unwrap()
    }

    fn pod(name: &str, node: &str, hash: &str, phase: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "uid": format!("{name}-uid"),
                         "labels": {"app": "agent", render::HASH_LABEL: hash},
                         "ownerReferences": [{"apiVersion": "wasmdaemon.io/v1alpha1",
                            "kind": "WasmDaemonSet", "name": "agent", "uid": "u", "controller": true}]},
            "spec": {"nodeName": node, "containers": []},
            "status": {"phase": phase, "conditions": [{"type": "Ready", "status": "True"}]}
        }))
        .unwrap()
    }

    fn time(s: &str) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Time {
        serde_json::from_value(json!(s)).unwrap()
    }

    fn current_hash(set: &WasmDaemonSet) -> String {
        let plan = planner::plan(set, &[node("x")], &[], None).unwrap();
        match &plan.nodes[0].outcome {
            Outcome::Run { hash, .. } => hash.clone(),
            Outcome::Skip { .. } => panic!("node x should run the set"),
        }
    }

    #[test]
    fn a_pending_create_is_not_repeated() {
        let set = set(json!({"type": "RollingUpdate"}));
        let plan = planner::plan(&set, &[node("n1")], &[], None).unwrap();
        let mut expectations = Expectations::default();
        let mut backoff = FailedPodBackoff::default();
        let now = Instant::now();
        let first = changes(
            &set,
            &plan,
            &[],
            &expectations,
            &mut backoff,
            now,
            Timestamp::now(),
        );
        assert_eq!(first.unwrap().create.len(), 1);
        expectations.expect_create("n1", "agent-abc", now);
        let again = changes(
            &set,
            &plan,
            &[],
            &expectations,
            &mut backoff,
            now,
            Timestamp::now(),
        );
        assert!(again.unwrap().create.is_empty());
    }

    #[test]
    fn a_failed_pod_is_deleted_then_left_alone_during_backoff_and_nothing_is_created_beside_it() {
        let set = set(json!({"type": "RollingUpdate"}));
        let hash = current_hash(&set);
        let pods = [pod("p1", "n1", &hash, "Failed")];
        let plan = planner::plan(&set, &[node("n1")], &pods, None).unwrap();
        let expectations = Expectations::default();
        let mut backoff = FailedPodBackoff::default();
        let now = Instant::now();
        let first = changes(
            &set,
            &plan,
            &pods,
            &expectations,
            &mut backoff,
            now,
            Timestamp::now(),
        )
        .unwrap();
        assert_eq!(first.delete.len(), 1);
        assert!(first.create.is_empty());
        let second = changes(
            &set,
            &plan,
            &pods,
            &expectations,
            &mut backoff,
            now,
            Timestamp::now(),
        )
        .unwrap();
        assert!(second.delete.is_empty() && second.create.is_empty());
        assert_eq!(second.backing_off.len(), 1);
        assert_eq!(second.recheck_in, Some(Duration::from_secs(1)));
    }

    #[test]
    fn on_delete_never_replaces_outdated_pods() {
        let set = set(json!({"type": "OnDelete"}));
        let pods = [pod("p1", "n1", "old", "Running")];
        let plan = planner::plan(&set, &[node("n1")], &pods, None).unwrap();
        assert_eq!(plan.outdated.len(), 1);
        let out = changes(
            &set,
            &plan,
            &pods,
            &Expectations::default(),
            &mut FailedPodBackoff::default(),
            Instant::now(),
            Timestamp::now(),
        )
        .unwrap();
        assert!(out.delete.is_empty() && out.create.is_empty());
    }

    #[test]
    fn surging_keeps_the_new_pod_the_planner_calls_a_duplicate() {
        let set = set(json!({"type": "RollingUpdate",
                              "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}));
        let hash = current_hash(&set);
        let mut old = pod("old", "n1", "old", "Running");
        old.metadata.creation_timestamp = Some(time("2024-01-01T00:00:00Z"));
        let mut new = pod("new", "n1", &hash, "Running");
        new.metadata.creation_timestamp = Some(time("2024-01-02T00:00:00Z"));
        new.status = None;
        let pods = [old, new];
        let plan = planner::plan(&set, &[node("n1")], &pods, None).unwrap();
        assert!(plan.delete.contains(&Delete {
            pod: "new".into(),
            node: "n1".into(),
            reason: DeleteReason::Duplicate
        }));
        let out = changes(
            &set,
            &plan,
            &pods,
            &Expectations::default(),
            &mut FailedPodBackoff::default(),
            Instant::now(),
            Timestamp::now(),
        )
        .unwrap();
        assert!(out.delete.is_empty(), "{:?}", out.delete);
        assert!(out.create.is_empty());
    }
}
