//! The pure placement planner: nodes, a set and its pods in; decisions and pod changes out.
//!
//! The controller and the simulator both call [`plan`]. Nothing here talks to the API server;
//! the only call out is to the set's plugin, through [`Decider`].

mod incremental;

pub use incremental::{Applied, PlanKey, SetPlanner};

use std::borrow::Borrow;
use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod, PodTemplateSpec};
use thiserror::Error;

use crate::crd::WasmDaemonSet;
use crate::node_table::Cursor;
use crate::plugin::bindings::{self, SetInfo};
use crate::plugin::{LoadedPlugin, PluginDecision, PluginError, key_of};
use crate::predicates::{Placement, node_should_run_daemon_pod};
use crate::render::{self, HASH_LABEL, RenderError};

/// Largest batch handed to a plugin in one call.
pub const MAX_BATCH: usize = 4096;

/// Something that decides for nodes the predicates allow: a plugin, or a test double.
pub trait Decider {
    /// One decision per node, in order.
    fn decide(
        &mut self,
        set: &SetInfo,
        nodes: &[&Node],
    ) -> Result<Vec<PluginDecision>, PluginError>;

    /// Says the nodes of the next call are as the node table holds them at `cursor`, so what is
    /// derived from them may be shared with other sets deciding at the same cursor.
    fn at(&mut self, _cursor: Cursor) {}

    /// Drops anything remembered about `node`, which is gone.
    fn forget(&mut self, _node: &str) {}

    /// Drops anything remembered about nodes for which `keep` says false.
    fn retain(&mut self, _keep: &dyn Fn(&str) -> bool) {}
}

/// Calls a loaded plugin, sending each node only as the plugin asked to see it, and not sending
/// a node again while the parts the plugin reads and the set's plugin input stay the same.
///
/// The first call after the set's plugin input changes sends every node without fingerprinting
/// any: nothing is remembered to compare against, and at 10,000 nodes the fingerprints would
/// cost more than the call. Such answers are kept without a fingerprint, so the next time that
/// node is offered it is sent again and fingerprinted then.
pub struct PluginDecider {
    plugin: Arc<LoadedPlugin>,
    /// Per node name: the fingerprint of what the plugin saw (when taken), and its answer.
    memo: HashMap<Arc<str>, (Option<u64>, PluginDecision)>,
    memo_key: Option<SetInfo>,
    /// Set by [`Decider::at`] for the next call only.
    cursor: Option<Cursor>,
}

impl PluginDecider {
    pub fn new(plugin: Arc<LoadedPlugin>) -> Self {
        Self {
            plugin,
            memo: HashMap::new(),
            memo_key: None,
            cursor: None,
        }
    }

    /// The plugin version this decider calls.
    pub fn plugin(&self) -> &Arc<LoadedPlugin> {
        &self.plugin
    }
}

impl Decider for PluginDecider {
    fn at(&mut self, cursor: Cursor) {
        self.cursor = Some(cursor);
    }

    fn forget(&mut self, node: &str) {
        self.memo.remove(node);
    }

    fn retain(&mut self, keep: &dyn Fn(&str) -> bool) {
        self.memo.retain(|name, _| keep(name));
    }

    fn decide(
        &mut self,
        set: &SetInfo,
        nodes: &[&Node],
    ) -> Result<Vec<PluginDecision>, PluginError> {
        if self.memo_key.as_ref() != Some(set) {
            self.memo.clear();
            self.memo_key = Some(set.clone());
        }

        let projection = &self.plugin.projection;
        let name = |n: &Node| Arc::<str>::from(n.metadata.name.as_deref().unwrap_or_default());
        let cursor = self.cursor.take();
        let cold = self.memo.is_empty();
        let stale: Vec<(usize, Option<u64>)> = if cold {
            (0..nodes.len()).map(|i| (i, None)).collect()
        } else {
            (0..nodes.len())
                .filter_map(|i| {
                    let print = projection.fingerprint(nodes[i]);
                    let known = nodes[i]
                        .metadata
                        .name
                        .as_deref()
                        .and_then(|n| self.memo.get(n));
                    let fresh = known.is_some_and(|(seen, _)| *seen == Some(print));
                    (!fresh).then_some((i, Some(print)))
                })
                .collect()
        };

        for chunk in stale.chunks(MAX_BATCH) {
            let build = || projection.batch(chunk.iter().map(|&(i, _)| nodes[i]));
            // Only a cold call covers a whole list that other sets may send too; fingerprinted
            // leftovers are small and particular to this set.
            let batch = match cursor.filter(|_| cold) {
                Some(cursor) => {
                    let names = chunk
                        .iter()
                        .map(|&(i, _)| nodes[i].metadata.name.as_deref());
                    let key = key_of((cursor, names.collect::<Vec<_>>()));
                    self.plugin.batches.get_or_build(key, build)
                }
                None => Arc::new(build()),
            };
            let fresh = self.plugin.decide(set, &batch)?;
            for (&(i, print), decision) in chunk.iter().zip(fresh) {
                self.memo.insert(name(nodes[i]), (print, decision));
            }
        }

        Ok(nodes
            .iter()
            .map(|n| {
                let known = n.metadata.name.as_deref().and_then(|n| self.memo.get(n));
                known
                    .map(|(_, d)| d.clone())
                    .unwrap_or_else(|| PluginDecision::Skip(Arc::from("no decision")))
            })
            .collect())
    }
}

/// A set that cannot be planned at all.
#[derive(Debug, Error)]
pub enum PlanError {
    #[error(transparent)]
    Plugin(#[from] PluginError),

    #[error("failed to render the pod for node {node}: {source}")]
    Render {
        node: String,
        source: Box<RenderError>,
    },

    #[error("spec.policy names plugin {0:?} but no plugin was supplied")]
    MissingPlugin(String),

    #[error("the node changes handed to the planner do not follow its last pass")]
    StaleDelta,
}

/// What happens on one node: its name and its decision. Nodes with the same answer share one
/// [`Decision`], which keeps a set's decisions for 10,000 nodes to a few distinct values.
#[derive(Debug, Clone, PartialEq)]
pub struct NodePlan {
    pub node: Arc<str>,
    pub decision: Arc<Decision>,
}

impl std::ops::Deref for NodePlan {
    type Target = Decision;

    fn deref(&self) -> &Decision {
        &self.decision
    }
}

/// The answer for a node, apart from which node it is.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The upstream predicates' two answers.
    pub placement: Placement,
    pub outcome: Outcome,
}

impl Decision {
    /// What tells two decisions apart. A rendering is told by its spec hash, so templates are
    /// never compared field by field.
    fn identity(&self) -> impl std::hash::Hash + PartialEq + '_ {
        let outcome = match &self.outcome {
            Outcome::Run { variant, hash, .. } => (true, variant.as_deref(), hash.as_str(), false),
            Outcome::Skip {
                reason,
                keep_existing,
            } => (false, None, reason.as_str(), *keep_existing),
        };
        let p = &self.placement;
        (
            p.should_run,
            p.should_continue_running,
            p.reason.as_deref(),
            outcome,
        )
    }
}

impl Decision {
    /// Whether two decisions give the same answer; renderings are compared by spec hash.
    pub fn same_as(&self, other: &Decision) -> bool {
        self.identity() == other.identity()
    }
}

/// Hands out one shared [`Decision`] per distinct answer.
#[derive(Debug, Default)]
pub struct Interner {
    by_key: HashMap<u64, Vec<Arc<Decision>>>,
    held: usize,
}

impl Interner {
    /// Past this many distinct decisions the interner starts afresh: node-specific reasons
    /// (a label value quoted in a skip reason) would otherwise grow it without bound. Sharing
    /// is only a saving; starting afresh changes no answer.
    const MAX: usize = 4096;

    pub fn intern(&mut self, decision: Decision) -> Arc<Decision> {
        let key = key_of(decision.identity());
        if let Some(same) = self
            .by_key
            .get(&key)
            .and_then(|list| list.iter().find(|d| d.identity() == decision.identity()))
        {
            return same.clone();
        }
        if self.held >= Self::MAX {
            self.clear();
        }
        let shared = Arc::new(decision);
        self.by_key.entry(key).or_default().push(shared.clone());
        self.held += 1;
        shared
    }

    pub fn clear(&mut self) {
        self.by_key.clear();
        self.held = 0;
    }
}

/// The decision for one node.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The node runs the set's pod, rendered as given.
    Run {
        variant: Option<String>,
        template: Arc<PodTemplateSpec>,
        hash: String,
    },
    /// The node gets no new pod. `keep_existing` is true when a pod already there may keep
    /// running (a NoSchedule taint it does not tolerate does not evict it).
    Skip { reason: String, keep_existing: bool },
}

impl Outcome {
    pub fn runs(&self) -> bool {
        matches!(self, Outcome::Run { .. })
    }
}

/// Why an existing pod is to be deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteReason {
    /// Its node is gone.
    NodeGone,
    /// Its node should not run the set any more.
    NotEligible,
    /// Another pod of the set on the same node is older.
    Duplicate,
    /// It ran to completion; a daemon pod should not.
    Succeeded,
    /// It failed; the controller replaces it (with backoff).
    Failed,
}

/// A pod to create.
#[derive(Debug, Clone, PartialEq)]
pub struct Create {
    pub node: String,
    pub pod: Pod,
}

/// A pod to delete.
#[derive(Debug, Clone, PartialEq)]
pub struct Delete {
    pub pod: String,
    pub node: String,
    pub reason: DeleteReason,
}

/// A pod running a rendering that differs from what its node should run now.
#[derive(Debug, Clone, PartialEq)]
pub struct Outdated {
    pub pod: String,
    pub node: String,
    pub want_hash: String,
}

/// The whole answer for a set.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// One entry per input node, in input order.
    pub nodes: Vec<NodePlan>,
    pub create: Vec<Create>,
    pub delete: Vec<Delete>,
    pub outdated: Vec<Outdated>,
}

/// The plugin input for a set.
pub fn set_info(set: &WasmDaemonSet) -> SetInfo {
    let config = set
        .spec
        .policy
        .as_ref()
        .and_then(|p| p.config.as_ref())
        .map(|c| c.to_string())
        .unwrap_or_else(|| "null".to_string());
    SetInfo {
        namespace: set.metadata.namespace.clone().unwrap_or_default(),
        name: set.metadata.name.clone().unwrap_or_default(),
        config,
        variants: set.spec.variants.iter().map(|v| v.name.clone()).collect(),
    }
}

/// Decides every node for `set`: upstream predicates first, then the plugin for the nodes the
/// predicates leave in play. `decider` must be given when the set names a plugin.
pub fn decide_nodes<N: Borrow<Node>>(
    set: &WasmDaemonSet,
    nodes: &[N],
    decider: Option<&mut dyn Decider>,
) -> Result<Vec<NodePlan>, PlanError> {
    let empty = Default::default();
    let template_spec = set.spec.template.spec.as_ref().unwrap_or(&empty);
    let placements: Vec<Placement> = nodes
        .iter()
        .map(|n| node_should_run_daemon_pod(n.borrow(), template_spec))
        .collect();

    let in_play: Vec<usize> = placements
        .iter()
        .enumerate()
        .filter(|(_, p)| p.should_run || p.should_continue_running)
        .map(|(i, _)| i)
        .collect();

    let mut plugin_answers: HashMap<usize, PluginDecision> = HashMap::new();
    if let Some(policy) = &set.spec.policy {
        let decider = decider.ok_or_else(|| PlanError::MissingPlugin(policy.plugin.clone()))?;
        let batch: Vec<&Node> = in_play.iter().map(|&i| nodes[i].borrow()).collect();
        let answers = decider.decide(&set_info(set), &batch)?;
        plugin_answers.extend(in_play.iter().copied().zip(answers));
    }

    let mut rendered_cache: HashMap<String, (Arc<PodTemplateSpec>, String)> = HashMap::new();
    let mut interner = Interner::default();
    let mut plans = Vec::with_capacity(nodes.len());
    for (i, (node, placement)) in nodes.iter().zip(placements).enumerate() {
        let name = node.borrow().metadata.name.clone().unwrap_or_default();
        let outcome = match plugin_answers.remove(&i) {
            _ if !placement.should_run && !placement.should_continue_running => Outcome::Skip {
                reason: placement.reason.clone().unwrap_or_default(),
                keep_existing: false,
            },
            Some(PluginDecision::Skip(reason)) => Outcome::Skip {
                reason: format!("plugin: {reason}"),
                keep_existing: false,
            },
            _ if !placement.should_run => Outcome::Skip {
                reason: placement.reason.clone().unwrap_or_default(),
                keep_existing: true,
            },
            None => run_outcome(set, None, None, &mut rendered_cache).map_err(|source| {
                PlanError::Render {
                    node: name.clone(),
                    source: Box::new(source),
                }
            })?,
            Some(PluginDecision::Run { variant, overrides }) => run_outcome(
                set,
                variant.as_deref(),
                overrides.as_deref(),
                &mut rendered_cache,
            )
            .map_err(|source| PlanError::Render {
                node: name.clone(),
                source: Box::new(source),
            })?,
        };
        plans.push(NodePlan {
            node: Arc::from(name),
            decision: interner.intern(Decision { placement, outcome }),
        });
    }
    Ok(plans)
}

/// Renders (memoized for runs without per-node overrides, which is the common case).
fn run_outcome(
    set: &WasmDaemonSet,
    variant: Option<&str>,
    overrides: Option<&bindings::Overrides>,
    cache: &mut HashMap<String, (Arc<PodTemplateSpec>, String)>,
) -> Result<Outcome, RenderError> {
    let cache_key = variant.unwrap_or("").to_string();
    if overrides.is_none()
        && let Some((template, hash)) = cache.get(&cache_key)
    {
        return Ok(Outcome::Run {
            variant: variant.map(str::to_string),
            template: template.clone(),
            hash: hash.clone(),
        });
    }

    let variant_overlay = variant
        .and_then(|v| set.spec.variants.iter().find(|d| d.name == v))
        .map(|d| &d.overlay);
    let variant_source = format!("variant {:?}", variant.unwrap_or(""));
    let plugin_overlay = overrides.map(render::overlay_from_plugin);
    let mut layers = Vec::new();
    if let Some(overlay) = variant_overlay {
        layers.push((variant_source.as_str(), overlay));
    }
    if let Some(overlay) = &plugin_overlay {
        layers.push(("plugin overrides", overlay));
    }
    let template = Arc::new(render::render(&set.spec.template, &layers)?);
    let hash = render::spec_hash(&template);
    if overrides.is_none() {
        cache.insert(cache_key, (template.clone(), hash.clone()));
    }
    Ok(Outcome::Run {
        variant: variant.map(str::to_string),
        template,
        hash,
    })
}

/// The node a pod is on, or is pinned to while still unscheduled.
pub fn pod_node(pod: &Pod) -> Option<&str> {
    let spec = pod.spec.as_ref()?;
    if let Some(node) = spec.node_name.as_deref() {
        return Some(node);
    }
    let terms = &spec
        .affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms;
    terms
        .iter()
        .flat_map(|t| t.match_fields.iter().flatten())
        .find(|r| r.key == "metadata.name" && r.operator == "In")
        .and_then(|r| r.values.as_ref()?.first().map(String::as_str))
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

/// Plans `set` over `nodes`, given the pods it owns now.
pub fn plan(
    set: &WasmDaemonSet,
    nodes: &[Node],
    pods: &[Pod],
    decider: Option<&mut dyn Decider>,
) -> Result<Plan, PlanError> {
    let decided = decide_nodes(set, nodes, decider)?;
    Ok(diff(set, decided, pods))
}

/// The pods `keep` accepts, by the node they are on or pinned to, each node's oldest first.
///
/// Keyed by hash rather than in a B-tree: node names share long prefixes, which makes ordered
/// lookups compare many bytes, and at 10,000 pods that dominated a pass.
pub fn pods_by_node(pods: &[Pod], keep: impl Fn(&Pod) -> bool) -> HashMap<&str, Vec<&Pod>> {
    let mut by_node: HashMap<&str, Vec<&Pod>> = HashMap::with_capacity(pods.len());
    for pod in pods.iter().filter(|p| keep(p)) {
        if let Some(node) = pod_node(pod) {
            by_node.entry(node).or_default().push(pod);
        }
    }
    for list in by_node.values_mut().filter(|l| l.len() > 1) {
        list.sort_by(|a, b| age_order(a).cmp(&age_order(b)));
    }
    by_node
}

/// Oldest first, then by name.
fn age_order(pod: &Pod) -> (Option<k8s_openapi::jiff::Timestamp>, Option<&str>) {
    (
        pod.metadata.creation_timestamp.as_ref().map(|t| t.0),
        pod.metadata.name.as_deref(),
    )
}

/// Compares what each node should run with the pods there: what to create, what to delete and
/// which pods run an outdated rendering. `decided` is one entry per node that exists.
///
/// Pods already marked for deletion are ignored: they are on their way out.
pub fn diff(set: &WasmDaemonSet, decided: Vec<NodePlan>, pods: &[Pod]) -> Plan {
    let mut by_node = pods_by_node(pods, |p| p.metadata.deletion_timestamp.is_none());

    let mut result = Plan::default();
    let delete = |pod: &Pod, node: &str, reason| Delete {
        pod: pod.metadata.name.clone().unwrap_or_default(),
        node: node.to_string(),
        reason,
    };
    for node_plan in &decided {
        let node: &str = &node_plan.node;
        let existing = by_node.remove(node).unwrap_or_default();
        match &node_plan.outcome {
            Outcome::Run {
                variant,
                template,
                hash,
            } => {
                let mut live = Vec::new();
                for pod in existing {
                    match phase(pod) {
                        "Succeeded" => {
                            result
                                .delete
                                .push(delete(pod, node, DeleteReason::Succeeded))
                        }
                        "Failed" => result.delete.push(delete(pod, node, DeleteReason::Failed)),
                        _ => live.push(pod),
                    }
                }
                match live.split_first() {
                    None => result.create.push(Create {
                        node: node.to_string(),
                        pod: render::pod_for_node(set, template, variant.as_deref(), hash, node),
                    }),
                    Some((keep, extra)) => {
                        for pod in extra {
                            result
                                .delete
                                .push(delete(pod, node, DeleteReason::Duplicate));
                        }
                        let have = keep
                            .metadata
                            .labels
                            .as_ref()
                            .and_then(|l| l.get(HASH_LABEL));
                        if have != Some(hash) {
                            result.outdated.push(Outdated {
                                pod: keep.metadata.name.clone().unwrap_or_default(),
                                node: node.to_string(),
                                want_hash: hash.clone(),
                            });
                        }
                    }
                }
            }
            Outcome::Skip {
                keep_existing: true,
                ..
            } => {
                for pod in existing.iter().skip(1) {
                    result
                        .delete
                        .push(delete(pod, node, DeleteReason::Duplicate));
                }
            }
            Outcome::Skip {
                keep_existing: false,
                ..
            } => {
                for pod in existing {
                    result
                        .delete
                        .push(delete(pod, node, DeleteReason::NotEligible));
                }
            }
        }
    }
    let mut gone: Vec<(&str, Vec<&Pod>)> = by_node.into_iter().collect();
    gone.sort_unstable_by_key(|(node, _)| *node);
    for (node, pods) in gone {
        for pod in pods {
            result
                .delete
                .push(delete(pod, node, DeleteReason::NodeGone));
        }
    }
    result.nodes = decided;
    result
}
