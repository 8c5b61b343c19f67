//! Rolling-update arithmetic: pod availability, update budgets, and which pods to replace.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;

use crate::crd::{UpdateStrategyType, WasmDaemonSet};
use crate::render::HASH_LABEL;

/// How many pods a rolling update may take down or add at once, already scaled to the number
/// of nodes that should run the set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub max_unavailable: usize,
    pub max_surge: usize,
}

/// Scales the set's rolling-update bounds the way upstream does: percentages of `desired`
/// rounded up, defaults 1 unavailable and 0 surge, and never both zero.
pub fn budget(set: &WasmDaemonSet, desired: usize) -> Result<Budget, String> {
    let rolling = set
        .spec
        .update_strategy
        .as_ref()
        .and_then(|s| s.rolling_update.as_ref());
    let unavailable = rolling.and_then(|r| r.max_unavailable.as_ref());
    let surge = rolling.and_then(|r| r.max_surge.as_ref());
    let max_surge = scaled(surge, desired, 0).map_err(|e| format!("maxSurge: {e}"))?;
    let mut max_unavailable =
        scaled(unavailable, desired, 1).map_err(|e| format!("maxUnavailable: {e}"))?;
    if max_surge == 0 && max_unavailable == 0 {
        max_unavailable = 1;
    }
    Ok(Budget {
        max_unavailable,
        max_surge,
    })
}

/// An int, or a percentage of `total` rounded up.
fn scaled(value: Option<&IntOrString>, total: usize, default: usize) -> Result<usize, String> {
    match value {
        None => Ok(default),
        Some(IntOrString::Int(n)) => usize::try_from(*n).map_err(|_| format!("{n} is negative")),
        Some(IntOrString::String(s)) => {
            let percent: usize = s
                .strip_suffix('%')
                .and_then(|p| p.parse().ok())
                .ok_or_else(|| format!("{s:?} is neither an integer nor a percentage"))?;
            Ok((total.saturating_mul(percent)).div_ceil(100))
        }
    }
}

/// Whether the set replaces outdated pods by itself.
pub fn is_rolling(set: &WasmDaemonSet) -> bool {
    set.spec
        .update_strategy
        .as_ref()
        .is_none_or(|s| s.type_ == UpdateStrategyType::RollingUpdate)
}

/// The set's `minReadySeconds` as a duration.
pub fn min_ready(set: &WasmDaemonSet) -> Duration {
    let seconds = set.spec.min_ready_seconds.unwrap_or(0).max(0);
    Duration::from_secs(u64::try_from(seconds).unwrap_or(0))
}

/// Whether the pod reports the Ready condition as True.
pub fn is_ready(pod: &Pod) -> bool {
    ready_since(pod).is_some()
}

/// When the pod last became Ready, if it is Ready now. A Ready condition without a transition
/// time counts as ready since forever.
fn ready_since(pod: &Pod) -> Option<Timestamp> {
    let condition = pod
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready" && c.status == "True")?;
    Some(
        condition
            .last_transition_time
            .as_ref()
            .map_or(Timestamp::UNIX_EPOCH, |t| t.0),
    )
}

/// How long until the pod counts as available: `None` while it is not Ready, zero once it has
/// been Ready for `min_ready`.
pub fn available_in(pod: &Pod, min_ready: Duration, now: Timestamp) -> Option<Duration> {
    let since = ready_since(pod)?;
    if min_ready.is_zero() {
        return Some(Duration::ZERO);
    }
    let ready_for = Duration::try_from(now.duration_since(since)).unwrap_or(Duration::ZERO);
    Some(min_ready.saturating_sub(ready_for))
}

/// Whether the pod has been Ready for `min_ready`.
pub fn is_available(pod: &Pod, min_ready: Duration, now: Timestamp) -> bool {
    available_in(pod, min_ready, now) == Some(Duration::ZERO)
}

/// The rendering hash a pod was created with.
pub fn pod_hash(pod: &Pod) -> Option<&str> {
    pod.metadata
        .labels
        .as_ref()?
        .get(HASH_LABEL)
        .map(String::as_str)
}

/// One node that should run the set, with its live pods, oldest first.
#[derive(Debug)]
pub struct NodeState<'a> {
    pub node: &'a str,
    pub want_hash: &'a str,
    pub pods: Vec<&'a Pod>,
    /// A create or delete on this node is still in flight; its pods count as unavailable and
    /// it is not touched.
    pub busy: bool,
}

impl<'a> NodeState<'a> {
    /// The oldest up-to-date pod and the oldest outdated pod, or `None` when the node holds
    /// more than one of either (the duplicate pass cleans that up first).
    fn split(&self) -> Option<(Option<&'a Pod>, Option<&'a Pod>)> {
        let (new, old): (Vec<&Pod>, Vec<&Pod>) = self
            .pods
            .iter()
            .partition(|p| pod_hash(p) == Some(self.want_hash));
        if new.len() > 1 || old.len() > 1 {
            return None;
        }
        Some((new.first().copied(), old.first().copied()))
    }
}

/// What one rolling-update step does.
#[derive(Debug, Default, PartialEq)]
pub struct Step {
    /// Outdated pods to delete, by name.
    pub delete: Vec<String>,
    /// Nodes that get an up-to-date pod next to their outdated one.
    pub surge_on: Vec<String>,
    /// When a pod becomes available and the step should be taken again.
    pub recheck_in: Option<Duration>,
}

/// The next step of a rolling update over `nodes` (every node that should run the set).
///
/// Without surge, outdated pods are deleted (the create follows once the deletion is seen) as
/// long as fewer than `max_unavailable` nodes lack an available pod; outdated pods that are
/// unavailable anyway are replaced at once. With surge, a new pod is started beside an old one
/// on up to `max_surge` nodes, and the old one is deleted once the new one is available.
pub fn step(nodes: &[NodeState<'_>], budget: Budget, min_ready: Duration, now: Timestamp) -> Step {
    let mut step = Step::default();
    let mut note_wait = |pod: &Pod| {
        if let Some(wait) = available_in(pod, min_ready, now).filter(|w| !w.is_zero()) {
            step_wait(&mut step.recheck_in, wait);
        }
    };
    if budget.max_surge == 0 {
        let mut replace_now = Vec::new();
        let mut candidates = Vec::new();
        let mut unavailable = 0;
        for node in nodes {
            let split = node.split().filter(|_| !node.busy);
            match split {
                Some((Some(new), None)) => {
                    if !is_available(new, min_ready, now) {
                        note_wait(new);
                        unavailable += 1;
                    }
                }
                Some((None, Some(old))) if !is_available(old, min_ready, now) => {
                    unavailable += 1;
                    replace_now.push(old);
                }
                Some((None, Some(old))) => candidates.push(old),
                _ => unavailable += 1,
            }
        }
        let room = budget.max_unavailable.saturating_sub(unavailable);
        step.delete = replace_now
            .into_iter()
            .chain(candidates.into_iter().take(room))
            .filter_map(|p| p.metadata.name.clone())
            .collect();
        return step;
    }

    let mut replace_now = Vec::new();
    let mut candidates = Vec::new();
    let mut surging = 0;
    for node in nodes {
        let split = node.split().filter(|_| !node.busy);
        match split {
            None => surging += 1,
            Some((_, None)) => {}
            Some((None, Some(old))) if !is_available(old, min_ready, now) => {
                replace_now.push(node.node)
            }
            Some((None, Some(_))) => candidates.push(node.node),
            Some((Some(new), Some(old))) => {
                if is_available(new, min_ready, now) {
                    step.delete.extend(old.metadata.name.clone());
                } else {
                    note_wait(new);
                    surging += 1;
                }
            }
        }
    }
    let room = budget.max_surge.saturating_sub(surging);
    step.surge_on = replace_now
        .into_iter()
        .chain(candidates.into_iter().take(room))
        .map(str::to_string)
        .collect();
    step
}

fn step_wait(slot: &mut Option<Duration>, wait: Duration) {
    *slot = Some(slot.map_or(wait, |w| w.min(wait)));
}

/// Which of a node's live pods (oldest first) to delete while surging: the oldest new and the
/// oldest old pod may both stay while the new one is not yet ready and the old one is; every
/// other pod goes.
pub fn surge_duplicates<'a>(
    pods: &[&'a Pod],
    want_hash: &str,
    min_ready: Duration,
) -> Vec<&'a Pod> {
    let mut oldest_new = None;
    let mut oldest_old = None;
    let mut delete = Vec::new();
    for &pod in pods {
        let slot = if pod_hash(pod) == Some(want_hash) {
            &mut oldest_new
        } else {
            &mut oldest_old
        };
        match slot {
            None => *slot = Some(pod),
            Some(_) => delete.push(pod),
        }
    }
    if let (Some(new), Some(old)) = (oldest_new, oldest_old)
        && (!is_ready(old) || (is_ready(new) && min_ready.is_zero()))
    {
        delete.push(old);
    }
    delete
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{RollingUpdate, UpdateStrategy};

    fn set_with(unavailable: Option<IntOrString>, surge: Option<IntOrString>) -> WasmDaemonSet {
        let mut set: WasmDaemonSet = serde_json::from_value(serde_json::json!({
            "apiVersion": "wasmdaemon.io/v1alpha1", "kind": "WasmDaemonSet",
            "metadata": {"name": "s", "namespace": "ns"},
            "spec": {"selector": {}, "template": {}}
        }))
        .unwrap();
        set.spec.update_strategy = Some(UpdateStrategy {
            type_: UpdateStrategyType::RollingUpdate,
            rolling_update: Some(RollingUpdate {
                max_unavailable: unavailable,
                max_surge: surge,
            }),
        });
        set
    }

    fn pod(name: &str, hash: &str, ready_secs_ago: Option<i64>, now: Timestamp) -> Pod {
        let conditions = ready_secs_ago.map(|ago| {
            serde_json::json!([{"type": "Ready", "status": "True",
                "lastTransitionTime": (now - k8s_openapi::jiff::SignedDuration::from_secs(ago)).to_string()}])
        });
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "labels": {HASH_LABEL: hash}},
            "status": {"conditions": conditions.unwrap_or(serde_json::json!([]))}
        }))
        .unwrap()
    }

    #[test]
    fn percentages_round_up_and_both_zero_means_one_unavailable() {
        let pct = |s: &str| Some(IntOrString::String(s.to_string()));
        let b = budget(&set_with(pct("10%"), None), 15).unwrap();
        assert_eq!((b.max_unavailable, b.max_surge), (2, 0));
        let b = budget(&set_with(Some(IntOrString::Int(0)), pct("25%")), 5).unwrap();
        assert_eq!((b.max_unavailable, b.max_surge), (0, 2));
        let b = budget(
            &set_with(Some(IntOrString::Int(0)), Some(IntOrString::Int(0))),
            5,
        );
        assert_eq!(b.unwrap().max_unavailable, 1);
        let b = budget(&set_with(None, None), 3).unwrap();
        assert_eq!((b.max_unavailable, b.max_surge), (1, 0));
        assert!(budget(&set_with(pct("lots"), None), 3).is_err());
    }

    #[test]
    fn pods_are_available_only_after_min_ready_seconds() {
        let now = Timestamp::now();
        let fresh = pod("a", "h", Some(2), now);
        assert!(is_available(&fresh, Duration::ZERO, now));
        assert!(!is_available(&fresh, Duration::from_secs(10), now));
        let wait = available_in(&fresh, Duration::from_secs(10), now).unwrap();
        assert!(wait > Duration::from_secs(7) && wait <= Duration::from_secs(8));
        assert_eq!(
            available_in(&pod("b", "h", None, now), Duration::ZERO, now),
            None
        );
    }

    #[test]
    fn without_surge_only_max_unavailable_old_pods_are_deleted() {
        let now = Timestamp::now();
        let pods: Vec<Pod> = (0..4)
            .map(|i| pod(&format!("p{i}"), "old", Some(60), now))
            .collect();
        let names = ["n0", "n1", "n2", "n3"];
        let nodes: Vec<NodeState> = pods
            .iter()
            .zip(names)
            .map(|(p, n)| NodeState {
                node: n,
                want_hash: "new",
                pods: vec![p],
                busy: false,
            })
            .collect();
        let budget = Budget {
            max_unavailable: 2,
            max_surge: 0,
        };
        assert_eq!(
            step(&nodes, budget, Duration::ZERO, now).delete,
            ["p0", "p1"]
        );

        let mut busy = nodes;
        busy[0].busy = true;
        assert_eq!(step(&busy, budget, Duration::ZERO, now).delete, ["p1"]);
    }

    #[test]
    fn unavailable_old_pods_are_replaced_without_waiting_for_budget() {
        let now = Timestamp::now();
        let broken = pod("broken", "old", None, now);
        let fine = pod("fine", "old", Some(60), now);
        let nodes = [
            NodeState {
                node: "a",
                want_hash: "new",
                pods: vec![&broken],
                busy: false,
            },
            NodeState {
                node: "b",
                want_hash: "new",
                pods: vec![&fine],
                busy: false,
            },
        ];
        let budget = Budget {
            max_unavailable: 1,
            max_surge: 0,
        };
        assert_eq!(step(&nodes, budget, Duration::ZERO, now).delete, ["broken"]);
    }

    #[test]
    fn with_surge_new_pods_start_first_and_old_ones_go_when_new_ones_are_available() {
        let now = Timestamp::now();
        let old_a = pod("old-a", "old", Some(60), now);
        let new_a = pod("new-a", "new", Some(3), now);
        let old_b = pod("old-b", "old", Some(60), now);
        let old_c = pod("old-c", "old", Some(60), now);
        let nodes = [
            NodeState {
                node: "a",
                want_hash: "new",
                pods: vec![&old_a, &new_a],
                busy: false,
            },
            NodeState {
                node: "b",
                want_hash: "new",
                pods: vec![&old_b],
                busy: false,
            },
            NodeState {
                node: "c",
                want_hash: "new",
                pods: vec![&old_c],
                busy: false,
            },
        ];
        let budget = Budget {
            max_unavailable: 0,
            max_surge: 1,
        };
        let waiting = step(&nodes, budget, Duration::from_secs(10), now);
        assert!(waiting.delete.is_empty() && waiting.surge_on.is_empty());
        assert!(waiting.recheck_in.is_some());

        let done = step(&nodes, budget, Duration::ZERO, now);
        assert_eq!(done.delete, ["old-a"]);
        assert_eq!(done.surge_on, ["b"]);
    }

    #[test]
    fn surging_keeps_a_ready_old_pod_only_while_the_new_one_is_not_ready() {
        let now = Timestamp::now();
        let old = pod("old", "old", Some(60), now);
        let new_unready = pod("new", "new", None, now);
        let new_ready = pod("new", "new", Some(1), now);
        assert!(surge_duplicates(&[&old, &new_unready], "new", Duration::ZERO).is_empty());
        let gone = surge_duplicates(&[&old, &new_ready], "new", Duration::ZERO);
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].metadata.name.as_deref(), Some("old"));
        let extra = pod("extra", "new", None, now);
        let gone = surge_duplicates(&[&old, &new_unready, &extra], "new", Duration::ZERO);
        assert_eq!(gone[0].metadata.name.as_deref(), Some("extra"));
    }
}
