//! A set's node decisions kept between passes, so a pass decides again only the nodes that
//! changed since the last one.

use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;

use super::{Decider, Decision, Interner, NodePlan, Plan, PlanError, decide_nodes, diff};
use crate::crd::WasmDaemonSet;
use crate::node_table::{Cursor, Delta};

/// Everything about a set that a node's decision depends on besides the node. While it stays
/// the same, a decision only needs redoing when its node changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanKey {
    uid: Option<String>,
    /// The API server moves `metadata.generation` on every spec change.
    generation: Option<i64>,
    /// Without a generation (a set read from a file), a hash of the spec stands in.
    spec: Option<u64>,
    /// The digest of the plugin version deciding.
    plugin: Option<String>,
}

impl PlanKey {
    pub fn of(set: &WasmDaemonSet, plugin_digest: Option<&str>) -> Self {
        let spec = match set.metadata.generation {
            Some(_) => None,
            None => {
                let mut hasher = DefaultHasher::new();
                serde_json::to_string(&set.spec)
                    .unwrap_or_default()
                    .hash(&mut hasher);
                Some(hasher.finish())
            }
        };
        Self {
            uid: set.metadata.uid.clone(),
            generation: set.metadata.generation,
            spec,
            plugin: plugin_digest.map(str::to_string),
        }
    }
}

/// A shorter-lived handle on the same decider, so it can be used more than once.
fn reborrow<'a>(decider: &'a mut Option<&mut dyn Decider>) -> Option<&'a mut dyn Decider> {
    match decider {
        Some(d) => Some(&mut **d),
        None => None,
    }
}

/// What one [`SetPlanner::apply`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    /// Nodes decided.
    pub decided: usize,
    /// Whether any node's decision differs from before (a node added or removed counts).
    pub changed: bool,
}

/// One set's decisions for every node, and the point in the node table they reflect.
#[derive(Debug, Default)]
pub struct SetPlanner {
    key: Option<PlanKey>,
    cursor: Option<Cursor>,
    /// Keyed by the node table's own name strings; equal decisions are one shared value.
    decided: BTreeMap<Arc<str>, Arc<Decision>>,
    interner: Interner,
}

impl SetPlanner {
    /// The cursor to ask the node table for changes since: `None` (everything) when nothing is
    /// decided yet or the set or its plugin changed.
    pub fn since(&self, key: &PlanKey) -> Option<Cursor> {
        match self.key.as_ref() == Some(key) {
            true => self.cursor,
            false => None,
        }
    }

    /// Decides the nodes in `delta` and forgets the removed ones. `delta` must come from
    /// [`NodeTable::delta`](crate::node_table::NodeTable::delta) called with
    /// [`since`](Self::since) of the same key. On error nothing is changed, so the next pass
    /// sees the same changes again.
    pub fn apply(
        &mut self,
        set: &WasmDaemonSet,
        key: PlanKey,
        delta: &Delta,
        mut decider: Option<&mut dyn Decider>,
    ) -> Result<Applied, PlanError> {
        if !delta.full && (self.key.as_ref() != Some(&key) || self.cursor != Some(delta.from)) {
            return Err(PlanError::StaleDelta);
        }
        if let Some(decider) = reborrow(&mut decider) {
            decider.at(delta.cursor);
        }
        let fresh = decide_nodes(set, &delta.nodes, reborrow(&mut decider))?;

        // After a full delta (a new plugin version, a changed set) the earlier answers are
        // still what the new ones are compared with: a version that answers the same changes
        // nothing.
        let earlier = match delta.full {
            true => std::mem::take(&mut self.decided),
            false => BTreeMap::new(),
        };
        let mut changed = !delta.removed.is_empty();
        if delta.full {
            self.interner.clear();
            if let Some(decider) = reborrow(&mut decider) {
                let names: std::collections::HashSet<&str> =
                    delta.names.iter().map(|n| &**n).collect();
                decider.retain(&|node| names.contains(node));
            }
        }
        for name in &delta.removed {
            self.decided.remove(name);
            if let Some(decider) = reborrow(&mut decider) {
                decider.forget(name);
            }
        }
        let decided = fresh.len();
        for (name, plan) in delta.names.iter().zip(fresh) {
            let before = match delta.full {
                true => earlier.get(name),
                false => self.decided.get(name),
            };
            let same = before.filter(|old| old.same_as(&plan.decision)).cloned();
            changed |= same.is_none();
            let shared = match same.filter(|_| !delta.full) {
                Some(old) => old,
                None => self.interner.intern(Arc::unwrap_or_clone(plan.decision)),
            };
            self.decided.insert(name.clone(), shared);
        }
        changed |= delta.full && earlier.len() != self.decided.len();
        self.key = Some(key);
        self.cursor = Some(delta.cursor);
        Ok(Applied { decided, changed })
    }

    /// Every node's decision, in node name order.
    pub fn decisions(&self) -> Vec<NodePlan> {
        self.decided
            .iter()
            .map(|(node, decision)| NodePlan {
                node: node.clone(),
                decision: decision.clone(),
            })
            .collect()
    }

    pub fn decision(&self, node: &str) -> Option<&Arc<Decision>> {
        self.decided.get(node)
    }

    /// The plan for the set's current `pods` from the kept decisions.
    pub fn plan(&self, set: &WasmDaemonSet, pods: &[Pod]) -> Plan {
        diff(set, self.decisions(), pods)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node_table::NodeTable;
    use crate::plugin::bindings::SetInfo;
    use crate::plugin::{PluginDecision, PluginError};
    use k8s_openapi::api::core::v1::Node;

    /// Runs nodes labelled `tier=gpu` as variant `gpu`, skips `tier=none`, runs the rest plain;
    /// counts the nodes it is asked about.
    #[derive(Default)]
    struct ByTier {
        asked: usize,
    }

    impl Decider for ByTier {
        fn decide(
            &mut self,
            _set: &SetInfo,
            nodes: &[&Node],
        ) -> Result<Vec<PluginDecision>, PluginError> {
            self.asked += nodes.len();
            Ok(nodes
                .iter()
                .map(|n| {
                    let tier = n.metadata.labels.as_ref().and_then(|l| l.get("tier"));
                    match tier.map(String::as_str) {
                        Some("gpu") => PluginDecision::Run {
                            variant: Some("gpu".into()),
                            overrides: None,
                        },
                        Some("none") => PluginDecision::Skip("tier none".into()),
                        _ => PluginDecision::Run {
                            variant: None,
                            overrides: None,
                        },
                    }
                })
                .collect())
        }
    }

    fn set(generation: i64) -> WasmDaemonSet {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "wasmdaemon.io/v1alpha1", "kind": "WasmDaemonSet",
            "metadata": {"name": "s", "namespace": "ns", "uid": "u", "generation": generation},
            "spec": {
                "selector": {"matchLabels": {"app": "s"}},
                "template": {
                    "metadata": {"labels": {"app": "s"}},
                    "spec": {"containers": [{"name": "c", "image": "i"}],
                             "nodeSelector": {"os": "linux"}}
                },
                "variants": [{"name": "gpu"}],
                "policy": {"plugin": "by-tier"}
            }
        }))
        .unwrap()
    }

    fn node(name: &str, os: &str, tier: &str, tainted: bool) -> Node {
        let mut node = serde_json::json!({
            "metadata": {"name": name, "labels": {"os": os, "tier": tier}},
        });
        if tainted {
            node["spec"] = serde_json::json!({"taints": [{"key": "k", "effect": "NoExecute"}]});
        }
        serde_json::from_value(node).unwrap()
    }

    fn step(
        planner: &mut SetPlanner,
        set: &WasmDaemonSet,
        table: &NodeTable,
        d: &mut ByTier,
    ) -> Applied {
        let key = PlanKey::of(set, Some("digest"));
        let delta = table.delta(planner.since(&key));
        planner.apply(set, key, &delta, Some(d)).unwrap()
    }

    fn everything_decided_again(set: &WasmDaemonSet, table: &NodeTable) -> Vec<NodePlan> {
        let mut nodes: Vec<Arc<Node>> = table.nodes().cloned().collect();
        nodes.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        decide_nodes(set, &nodes, Some(&mut ByTier::default())).unwrap()
    }

    #[test]
    fn after_any_sequence_of_node_changes_the_kept_decisions_equal_deciding_everything_again() {
        let set = set(1);
        let mut table = NodeTable::default();
        let mut planner = SetPlanner::default();
        let mut decider = ByTier::default();
        // A fixed pseudo-random walk over adds, relabels, taints and removals of 40 nodes.
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        for round in 0..400_u32 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let name = format!("n{}", seed % 40);
            let os = ["linux", "windows"][(seed >> 8) as usize % 2];
            let tier = ["gpu", "none", "cpu"][(seed >> 16) as usize % 3];
            match (seed >> 24) % 5 {
                0 => {
                    table.remove(&name);
                }
                _ => {
                    table.apply(node(&name, os, tier, (seed >> 32).is_multiple_of(4)));
                }
            }
            if round.is_multiple_of(3) {
                step(&mut planner, &set, &table, &mut decider);
                let kept: Vec<NodePlan> = planner.decisions();
                assert_eq!(
                    kept,
                    everything_decided_again(&set, &table),
                    "round {round}"
                );
            }
        }
    }

    #[test]
    fn a_pass_decides_only_changed_nodes_until_the_set_changes() {
        let mut table =
            NodeTable::from_nodes((0..100).map(|i| node(&format!("n{i}"), "linux", "cpu", false)));
        let mut planner = SetPlanner::default();
        let mut decider = ByTier::default();
        step(&mut planner, &set(1), &table, &mut decider);
        assert_eq!(decider.asked, 100);

        let (n1, n2) = (
            planner.decision("n1").unwrap(),
            planner.decision("n2").unwrap(),
        );
        assert!(
            Arc::ptr_eq(n1, n2),
            "nodes with the same answer share one decision"
        );

        table.apply(node("n7", "linux", "gpu", false));
        step(&mut planner, &set(1), &table, &mut decider);
        assert_eq!(decider.asked, 101, "only the changed node is decided");
        let plan = planner.decision("n7").unwrap();
        assert!(
            matches!(&plan.outcome, super::super::Outcome::Run { variant: Some(v), .. } if v == "gpu")
        );

        let quiet = step(&mut planner, &set(1), &table, &mut decider);
        assert_eq!(decider.asked, 101, "nothing changed, nothing decided");
        assert_eq!(
            quiet,
            Applied {
                decided: 0,
                changed: false
            }
        );

        table.apply(node("n8", "linux", "cpu-large", false));
        let same = step(&mut planner, &set(1), &table, &mut decider);
        assert_eq!(
            (same.decided, same.changed),
            (1, false),
            "n8 still runs plainly"
        );
        table.remove("n9");
        assert!(step(&mut planner, &set(1), &table, &mut decider).changed);

        let again = step(&mut planner, &set(2), &table, &mut decider);
        assert_eq!(decider.asked, 201, "a new generation decides every node");
        assert!(!again.changed, "and finds every answer as it was");
    }

    #[test]
    fn a_failed_pass_changes_nothing_and_the_next_one_sees_the_same_changes() {
        struct Failing;
        impl Decider for Failing {
            fn decide(
                &mut self,
                _: &SetInfo,
                _: &[&Node],
            ) -> Result<Vec<PluginDecision>, PluginError> {
                Err(PluginError::Reported {
                    plugin: "failing".into(),
                    message: "no".into(),
                })
            }
        }
        let set = set(1);
        let mut table = NodeTable::from_nodes([node("a", "linux", "cpu", false)]);
        let mut planner = SetPlanner::default();
        step(&mut planner, &set, &table, &mut ByTier::default());
        table.apply(node("a", "linux", "gpu", false));

        let key = PlanKey::of(&set, Some("digest"));
        let delta = table.delta(planner.since(&key));
        assert!(
            planner
                .apply(&set, key, &delta, Some(&mut Failing))
                .is_err()
        );
        let kept = planner.decision("a").unwrap();
        assert!(matches!(
            &kept.outcome,
            super::super::Outcome::Run { variant: None, .. }
        ));

        let mut decider = ByTier::default();
        step(&mut planner, &set, &table, &mut decider);
        assert_eq!(decider.asked, 1);
        let kept = planner.decision("a").unwrap();
        assert!(matches!(
            &kept.outcome,
            super::super::Outcome::Run {
                variant: Some(_),
                ..
            }
        ));
    }

    #[test]
    fn a_delta_that_does_not_follow_the_last_pass_is_refused() {
        let set = set(1);
        let mut table = NodeTable::from_nodes([node("a", "linux", "cpu", false)]);
        let mut planner = SetPlanner::default();
        step(&mut planner, &set, &table, &mut ByTier::default());
        table.apply(node("b", "linux", "cpu", false));
        let later = table.cursor();
        table.apply(node("c", "linux", "cpu", false));
        let skipped = table.delta(Some(later));
        let key = PlanKey::of(&set, Some("digest"));
        assert!(matches!(
            planner.apply(&set, key, &skipped, Some(&mut ByTier::default())),
            Err(PlanError::StaleDelta)
        ));
    }
}
