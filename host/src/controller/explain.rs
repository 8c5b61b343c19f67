//! `wasmdaemon explain`: why one node does or does not run a set, with which variant, and, read
//! from a cluster, which of the set's pods are on the node now.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod};
use kube::api::{ListParams, ObjectList};
use kube::runtime::watcher;
use kube::{Api, Client};
use thiserror::Error;

use super::claim::controller_of;
use super::rollout::pod_hash;
use crate::crd::{Policy, WasmDaemonSet};
use crate::planner::{NodePlan, Outcome, pod_node};
use crate::plugin::{LoadedPlugin, PluginEngine};
use crate::registry::configmap::{self, ConfigMapSync};
use crate::registry::dir::DirScanner;
use crate::registry::{PluginStore, Registry, RegistryError, SwapFailure, sets};
use crate::render::VARIANT_LABEL;
use crate::simulate::{self, SimulateError};

/// Objects listed per request.
const PAGE: u32 = 500;

/// Why there is nothing to explain.
#[derive(Debug, Error)]
pub enum ExplainError {
    #[error("node {0:?} is not among the given nodes")]
    UnknownNode(String),

    #[error("invalid {what} name {name:?}: {rule}")]
    InvalidName {
        what: &'static str,
        name: String,
        rule: &'static str,
    },

    #[error("set {name:?} not found in namespace {namespace:?}")]
    SetNotFound { namespace: String, name: String },

    #[error("node {0:?} not found in the cluster")]
    NodeNotFound(String),

    #[error(
        "the cluster does not serve {0} (is the WasmDaemonSet CRD installed? `wasmdaemon crd` \
         prints it)"
    )]
    NotServed(&'static str),

    #[error("failed to reach the cluster at {url}: {message}")]
    Unreachable { url: String, message: String },

    #[error("failed to read {what}: {message}")]
    Read { what: String, message: String },

    #[error("plugin {plugin:?} has no usable version: {failure}")]
    Refused {
        plugin: String,
        failure: Box<SwapFailure>,
    },

    #[error(transparent)]
    Simulate(#[from] SimulateError),
}

/// Plans `set` over `nodes` the way the controller does and describes the answer for `node`
/// in a few lines: the upstream predicates, the plugin's answer, the variant and pod hash.
pub fn explain(
    set: &WasmDaemonSet,
    nodes: &[Node],
    node: &str,
    registry: &Registry,
) -> Result<String, ExplainError> {
    let node = nodes
        .iter()
        .find(|n| n.metadata.name.as_deref() == Some(node))
        .ok_or_else(|| ExplainError::UnknownNode(node.to_string()))?;
    Ok(decide(set, node, registry)?.text)
}

/// The planner's answer for one node, described, with what the live report compares pods to.
struct Answer {
    text: String,
    outcome: Outcome,
    /// `<plugin>@<digest>` as the controller writes it to the set's status.
    plugin: Option<String>,
}

fn decide(set: &WasmDaemonSet, node: &Node, registry: &Registry) -> Result<Answer, ExplainError> {
    // Only this node is planned: the answer does not depend on the others.
    let simulation = simulate::simulate(set, std::slice::from_ref(node), registry)?;
    let Some(plan) = simulation.plan.nodes.first() else {
        let name = node.metadata.name.as_deref().unwrap_or_default();
        return Err(ExplainError::UnknownNode(name.to_string()));
    };
    // Named as the set names it, which is how the controller reports it in the set's status.
    let plugin = set.spec.policy.as_ref().zip(simulation.plugin.as_deref());
    Ok(Answer {
        text: describe(set, plan, plugin),
        outcome: plan.outcome.clone(),
        plugin: plugin.map(|(policy, loaded)| format!("{}@{}", policy.plugin, loaded.digest)),
    })
}

/// The lines of an answer: set, node, predicates, plugin, decision and its details.
fn describe(
    set: &WasmDaemonSet,
    plan: &NodePlan,
    plugin: Option<(&Policy, &LoadedPlugin)>,
) -> String {
    let placement = &plan.placement;
    let predicates = match (&placement.reason, placement.should_run) {
        (None, _) => "pass".to_string(),
        (Some(reason), true) => format!("pass ({reason})"),
        (Some(reason), false) if placement.should_continue_running => {
            format!("no new pod, an existing one may stay: {reason}")
        }
        (Some(reason), false) => format!("fail: {reason}"),
    };
    let set_name = match (&set.metadata.namespace, &set.metadata.name) {
        (Some(namespace), Some(name)) if !namespace.is_empty() => format!("{namespace}/{name}"),
        (_, name) => name.clone().unwrap_or_default(),
    };
    let mut out = String::new();
    let _ = writeln!(out, "set:        {set_name}");
    let _ = writeln!(out, "node:       {}", plan.node);
    let _ = writeln!(out, "predicates: {predicates}");
    match plugin {
        Some((policy, loaded)) if loaded.name() == policy.plugin => {
            let _ = writeln!(out, "plugin:     {}@{}", policy.plugin, loaded.digest);
        }
        Some((policy, loaded)) => {
            let _ = writeln!(
                out,
                "plugin:     {}@{} (describes itself as {} {})",
                policy.plugin,
                loaded.digest,
                loaded.name(),
                loaded.info.version
            );
        }
        None => {
            let _ = writeln!(out, "plugin:     none (placed as an upstream DaemonSet)");
        }
    }
    match &plan.outcome {
        Outcome::Run { variant, hash, .. } => {
            let variant = variant.as_deref().unwrap_or("(plain template)");
            let _ = writeln!(out, "decision:   run");
            let _ = writeln!(out, "variant:    {variant}");
            let _ = writeln!(out, "pod hash:   {hash}");
        }
        Outcome::Skip {
            reason,
            keep_existing,
        } => {
            let _ = writeln!(out, "decision:   skip");
            let _ = writeln!(out, "reason:     {reason}");
            if *keep_existing {
                let _ = writeln!(out, "existing:   a pod already on the node keeps running");
            }
        }
    }
    out
}

/// What to read from a cluster.
#[derive(Debug, Clone)]
pub struct Query {
    pub namespace: String,
    pub set: String,
    pub node: String,
    /// Where plugin ConfigMaps are read from; none are read without it.
    pub plugin_namespace: Option<String>,
}

/// What explain read from a cluster.
#[derive(Debug, Clone)]
pub struct ClusterView {
    pub set: WasmDaemonSet,
    pub node: Node,
    /// The pods of the set's namespace the set controls, on any node.
    pub pods: Vec<Pod>,
    /// The namespace of the plugin ConfigMaps and those labelled [`configmap::LABEL`] in it.
    pub plugin_configmaps: Option<(String, Vec<ConfigMap>)>,
}

/// Reads the set, the node, the set's pods and the plugin ConfigMaps, in that order, so a
/// missing set is reported before a missing node. `url` names the cluster in errors.
pub async fn read_cluster(
    client: &Client,
    url: &str,
    query: &Query,
) -> Result<ClusterView, ExplainError> {
    check_name("namespace", &query.namespace, 63)?;
    check_name("set", &query.set, 253)?;
    check_name("node", &query.node, 253)?;
    if let Some(namespace) = &query.plugin_namespace {
        check_name("plugin namespace", namespace, 63)?;
    }
    let failed = |what: String| move |error: kube::Error| cluster_error(url, what, error);

    let sets: Api<WasmDaemonSet> = Api::namespaced(client.clone(), &query.namespace);
    let set = match sets.get(&query.set).await {
        Err(error) if is_missing(&error) => {
            return Err(ExplainError::SetNotFound {
                namespace: query.namespace.clone(),
                name: query.set.clone(),
            });
        }
        Err(error) if is_not_found(&error) => {
            return Err(ExplainError::NotServed("WasmDaemonSets"));
        }
        read => read.map_err(failed(format!("set {}/{}", query.namespace, query.set)))?,
    };

    let nodes: Api<Node> = Api::all(client.clone());
    let node = match nodes.get(&query.node).await {
        Err(error) if is_missing(&error) => {
            return Err(ExplainError::NodeNotFound(query.node.clone()));
        }
        read => read.map_err(failed(format!("node {}", query.node)))?,
    };

    let uid = set.metadata.uid.clone().unwrap_or_default();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &query.namespace);
    let pods = list_all(&pods, ListParams::default())
        .await
        .map_err(failed(format!("the pods of namespace {}", query.namespace)))?
        .into_iter()
        .filter(|pod| !uid.is_empty() && controller_of(pod).is_some_and(|o| o.uid == uid))
        .collect();

    let plugin_configmaps = match &query.plugin_namespace {
        Some(namespace) => {
            let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
            let labelled = ListParams::default().labels(configmap::LABEL);
            let found = list_all(&api, labelled).await.map_err(failed(format!(
                "the plugin ConfigMaps of namespace {namespace}"
            )))?;
            Some((namespace.clone(), found))
        }
        None => None,
    };
    Ok(ClusterView {
        set,
        node,
        pods,
        plugin_configmaps,
    })
}

/// A name the API server could hold: lower-case letters, digits, '-' (and '.' beyond a
/// label), starting and ending with a letter or digit. Checked before any request so a stray
/// `/` cannot reach a URL path.
pub fn check_name(what: &'static str, name: &str, max: usize) -> Result<(), ExplainError> {
    let dots = max > 63;
    let allowed =
        |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || (dots && c == '.');
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if name.len() <= max
        && name.chars().all(allowed)
        && edge(name.chars().next())
        && edge(name.chars().last())
    {
        return Ok(());
    }
    let rule = if dots {
        "use at most 253 lower-case letters, digits, '-' and '.', starting and ending with a \
         letter or digit"
    } else {
        "use at most 63 lower-case letters, digits and '-', starting and ending with a letter \
         or digit"
    };
    Err(ExplainError::InvalidName {
        what,
        name: name.to_string(),
        rule,
    })
}

/// Every object `params` selects, a page at a time.
async fn list_all<K>(api: &Api<K>, params: ListParams) -> Result<Vec<K>, kube::Error>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let mut params = params.limit(PAGE);
    let mut items = Vec::new();
    loop {
        let page: ObjectList<K> = api.list(&params).await?;
        items.extend(page.items);
        match page.metadata.continue_.filter(|token| !token.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => return Ok(items),
        }
    }
}

fn is_not_found(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 404)
}

/// A 404 about the named object, as opposed to one about the resource not being served.
fn is_missing(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status)
        if status.code == 404 && status.details.as_ref().is_some_and(|d| !d.name.is_empty()))
}

fn cluster_error(url: &str, what: String, error: kube::Error) -> ExplainError {
    match error {
        kube::Error::Api(status) => {
            let message = match (status.message.is_empty(), status.reason.is_empty()) {
                (false, _) => format!("{} ({})", status.message, status.code),
                (true, false) => format!("{} ({})", status.reason, status.code),
                (true, true) => format!("the server answered {}", status.code),
            };
            ExplainError::Read { what, message }
        }
        kube::Error::HyperError(_) | kube::Error::Service(_) => ExplainError::Unreachable {
            url: url.to_string(),
            message: causes(&error),
        },
        other => ExplainError::Read {
            what,
            message: other.to_string(),
        },
    }
}

/// The causes under a client error's own wrapper (`ServiceError: ...`), each once.
fn causes(error: &kube::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cause = std::error::Error::source(error);
    while let Some(current) = cause {
        let text = current.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cause = current.source();
    }
    if parts.is_empty() {
        return error.to_string();
    }
    parts.join(": ")
}

/// A registry that resolves plugin names as the controller does: user plugins from `dir` and
/// from the plugin ConfigMaps in `view`, then the stock plugins. Each user version is checked
/// against the set's config before it is used, as the controller checks it against the sets
/// that use it.
///
/// Compiles plugins: call it outside async code.
pub fn live_registry(
    view: &ClusterView,
    engine: PluginEngine,
    allow_stock_override: bool,
    dir: Option<PathBuf>,
) -> Registry {
    let store = Arc::new(PluginStore::new(engine, allow_stock_override));
    if let Some((plugin, user)) = sets::set_use(&view.set) {
        store.set_users(move |name| {
            if name == plugin {
                vec![user.clone()]
            } else {
                Vec::new()
            }
        });
    }
    if let Some(dir) = dir {
        DirScanner::new(dir).scan(&store);
    }
    if let Some((namespace, configmaps)) = &view.plugin_configmaps {
        let mut sync = ConfigMapSync::new(store.clone(), namespace);
        sync.apply(watcher::Event::Init);
        for cm in configmaps {
            sync.apply(watcher::Event::InitApply(cm.clone()));
        }
        sync.apply(watcher::Event::InitDone);
    }
    Registry::live(store)
}

/// Explains the node of `view` as [`explain`] does, then lists the set's pods on it (phase,
/// variant, whether they match what the node should run), any plugin notice the controller
/// would raise, and whether the set's status names another plugin version than the one used.
pub fn explain_live(view: &ClusterView, registry: &Registry) -> Result<String, ExplainError> {
    let answer = decide(&view.set, &view.node, registry).map_err(|e| with_refusal(e, registry))?;
    let mut out = answer.text;

    let node = view.node.metadata.name.as_deref().unwrap_or_default();
    let mut here: Vec<&Pod> = view
        .pods
        .iter()
        .filter(|pod| pod_node(pod) == Some(node))
        .collect();
    here.sort_by_key(|pod| {
        (
            pod.metadata.creation_timestamp.clone(),
            pod.metadata.name.clone(),
        )
    });
    if here.is_empty() {
        let _ = writeln!(out, "pods:       none of the set's pods is on this node");
    }
    for pod in here {
        let _ = writeln!(out, "pod:        {}", describe_pod(pod, &answer.outcome));
    }

    if let Some(policy) = &view.set.spec.policy
        && let Some((_, message)) = sets::notice(registry, &policy.plugin, policy.digest.is_some())
    {
        let _ = writeln!(out, "notice:     {message}");
    }
    if let Some(line) = status_note(&view.set, answer.plugin.as_deref()) {
        let _ = writeln!(out, "status:     {line}");
    }
    Ok(out)
}

/// A user plugin that was refused and has no earlier good version is reported as such, not
/// as an unknown name.
fn with_refusal(error: ExplainError, registry: &Registry) -> ExplainError {
    let ExplainError::Simulate(SimulateError::Registry(RegistryError::Unknown { name, .. })) =
        &error
    else {
        return error;
    };
    match registry
        .store()
        .and_then(|s| s.failure_without_version(name))
    {
        Some(failure) => ExplainError::Refused {
            plugin: name.clone(),
            failure: Box::new(failure),
        },
        None => error,
    }
}

/// `<name> (<phase>, <variant>): <state>` for one of the set's pods on the node.
fn describe_pod(pod: &Pod, outcome: &Outcome) -> String {
    let name = pod.metadata.name.as_deref().unwrap_or("(unnamed)");
    let phase = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("no phase yet");
    let variant = match pod
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(VARIANT_LABEL))
    {
        Some(variant) => format!("variant {variant}"),
        None => "plain template".to_string(),
    };
    let terminating = if pod.metadata.deletion_timestamp.is_some() {
        ", terminating"
    } else {
        ""
    };
    let state = match outcome {
        Outcome::Run { hash, .. } if pod_hash(pod) == Some(hash.as_str()) => {
            "up to date".to_string()
        }
        Outcome::Run { hash, .. } => format!(
            "outdated (spec-hash {}, the node should run {hash})",
            pod_hash(pod).unwrap_or("missing")
        ),
        Outcome::Skip {
            keep_existing: true,
            ..
        } => "may stay: no new pod would be placed here, but this one is not evicted".to_string(),
        Outcome::Skip { .. } => "should not run here".to_string(),
    };
    format!("{name} ({phase}{terminating}, {variant}): {state}")
}

/// One line when the set's status names a plugin version other than the one `used`.
fn status_note(set: &WasmDaemonSet, used: Option<&str>) -> Option<String> {
    let reported = set.status.as_ref()?.plugin.as_deref()?;
    if used == Some(reported) {
        return None;
    }
    Some(match used {
        Some(used) => format!("the controller last planned with {reported}; this used {used}"),
        None => format!("the controller last planned with {reported}; this used no plugin"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::{Limits, PluginEngine};

    fn set() -> WasmDaemonSet {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "wasmdaemon.io/v1alpha1", "kind": "WasmDaemonSet",
            "metadata": {"name": "agent", "namespace": "ns", "uid": "set-uid"},
            "spec": {"selector": {"matchLabels": {"app": "agent"}},
                     "template": {"metadata": {"labels": {"app": "agent"}},
                                  "spec": {"nodeSelector": {"disk": "ssd"},
                                           "containers": [{"name": "a", "image": "a:1"}]}}}
        }))
        .unwrap()
    }

    fn node(name: &str, disk: &str) -> Node {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "labels": {"disk": disk}},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}
        }))
        .unwrap()
    }

    fn pod(name: &str, node: &str, hash: &str) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "labels": {"wasmdaemon.io/spec-hash": hash},
                         "ownerReferences": [{"apiVersion": "wasmdaemon.io/v1alpha1",
                             "kind": "WasmDaemonSet", "name": "agent", "uid": "set-uid",
                             "controller": true}]},
            "spec": {"nodeName": node, "containers": []},
            "status": {"phase": "Running"}
        }))
        .unwrap()
    }

    fn registry() -> Registry {
        Registry::new(PluginEngine::new(Limits::default()).unwrap(), None)
    }

    #[test]
    fn explains_a_node_that_runs_and_one_that_does_not() {
        let registry = registry();
        let nodes = [node("fast", "ssd"), node("slow", "hdd")];
        let yes = explain(&set(), &nodes, "fast", &registry).unwrap();
        assert!(yes.contains("decision:   run"), "{yes}");
        let no = explain(&set(), &nodes, "slow", &registry).unwrap();
        assert!(no.contains("decision:   skip"), "{no}");
        assert!(matches!(
            explain(&set(), &nodes, "gone", &registry),
            Err(ExplainError::UnknownNode(_))
        ));
    }

    #[test]
    fn pods_on_the_node_are_compared_with_what_it_should_run() {
        let registry = registry();
        let fast = node("fast", "ssd");
        let Outcome::Run { hash, .. } = decide(&set(), &fast, &registry).unwrap().outcome else {
            panic!("fast runs the set");
        };
        let view = ClusterView {
            set: set(),
            node: fast,
            pods: vec![
                pod("current", "fast", &hash),
                pod("old", "fast", "0123456789abcdef"),
                pod("elsewhere", "slow", &hash),
            ],
            plugin_configmaps: None,
        };
        let text = explain_live(&view, &registry).unwrap();
        assert!(
            text.contains("pod:        current (Running, plain template): up to date"),
            "{text}"
        );
        assert!(
            text.contains("pod:        old (Running, plain template): outdated (spec-hash "),
            "{text}"
        );
        assert!(!text.contains("elsewhere"), "{text}");
        assert!(!text.contains("status:"), "{text}");
    }

    #[test]
    fn a_pod_on_a_node_that_should_not_run_the_set_is_flagged() {
        let view = ClusterView {
            set: set(),
            node: node("slow", "hdd"),
            pods: vec![pod("stray", "slow", "0123456789abcdef")],
            plugin_configmaps: None,
        };
        let text = explain_live(&view, &registry()).unwrap();
        assert!(
            text.contains("stray (Running, plain template): should not run here"),
            "{text}"
        );
    }

    #[test]
    fn a_status_naming_another_plugin_version_is_one_line() {
        let mut set = set();
        set.status = Some(crate::crd::WasmDaemonSetStatus {
            plugin: Some("hardware@sha256:aa".into()),
            ..Default::default()
        });
        let line = status_note(&set, Some("hardware@sha256:bb")).unwrap();
        assert_eq!(
            line,
            "the controller last planned with hardware@sha256:aa; this used hardware@sha256:bb"
        );
        assert_eq!(status_note(&set, Some("hardware@sha256:aa")), None);
        assert!(
            status_note(&set, None)
                .unwrap()
                .ends_with("this used no plugin")
        );
    }

    #[test]
    fn names_that_cannot_be_objects_are_refused_before_any_request() {
        assert!(check_name("node", "ip-10-0-1-2.ec2.internal", 253).is_ok());
        for bad in ["", "a/b", "Upper", "-lead", "trail.", "ns.dotted"] {
            let max = if bad == "ns.dotted" { 63 } else { 253 };
            assert!(check_name("x", bad, max).is_err(), "{bad:?}");
        }
        assert!(check_name("node", &"a".repeat(254), 253).is_err());
    }
}
