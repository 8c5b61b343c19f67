//! Host-native DaemonSet placement predicates, identical to the upstream DaemonSet controller's.

// Plugins may narrow placement further, but a node these predicates reject never receives a daemon
// pod: the answers here must equal what the Kubernetes DaemonSet controller decides for the same
// node and pod template, or a `WasmDaemonSet` would drift from the DaemonSet it stands in for.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Node, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, PodSpec, Taint, Toleration,
};

/// Taint the node lifecycle controller sets while a node's Ready condition is False.
pub const TAINT_NODE_NOT_READY: &str = "node.kubernetes.io/not-ready";
/// Taint the node lifecycle controller sets while a node's Ready condition is Unknown.
pub const TAINT_NODE_UNREACHABLE: &str = "node.kubernetes.io/unreachable";
/// Taint set while the node reports DiskPressure.
pub const TAINT_NODE_DISK_PRESSURE: &str = "node.kubernetes.io/disk-pressure";
/// Taint set while the node reports MemoryPressure.
pub const TAINT_NODE_MEMORY_PRESSURE: &str = "node.kubernetes.io/memory-pressure";
/// Taint set while the node reports PIDPressure.
pub const TAINT_NODE_PID_PRESSURE: &str = "node.kubernetes.io/pid-pressure";
/// Taint set while the node is cordoned (`spec.unschedulable: true`).
pub const TAINT_NODE_UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";
/// Taint set while the node's network is not configured.
pub const TAINT_NODE_NETWORK_UNAVAILABLE: &str = "node.kubernetes.io/network-unavailable";

/// Taint effect that keeps new pods off a node but leaves running ones alone.
pub const EFFECT_NO_SCHEDULE: &str = "NoSchedule";
/// Taint effect that keeps new pods off a node and evicts running ones.
pub const EFFECT_NO_EXECUTE: &str = "NoExecute";
/// Taint effect that only steers the scheduler; placement predicates ignore it.
pub const EFFECT_PREFER_NO_SCHEDULE: &str = "PreferNoSchedule";

/// The only field a `matchFields` requirement can read from a node.
const FIELD_METADATA_NAME: &str = "metadata.name";

/// Longest name part of a label key and longest label value, as the API server enforces them.
const QUALIFIED_NAME_MAX_LEN: usize = 63;
/// Longest label key prefix (a DNS-1123 subdomain).
const DNS1123_SUBDOMAIN_MAX_LEN: usize = 253;

/// Tolerations every daemon pod receives regardless of `hostNetwork`, in the order upstream adds
/// them: node problems must not evict a daemon pod, and condition taints must not block one.
const DAEMON_TOLERATIONS: [(&str, &str); 6] = [
    (TAINT_NODE_NOT_READY, EFFECT_NO_EXECUTE),
    (TAINT_NODE_UNREACHABLE, EFFECT_NO_EXECUTE),
    (TAINT_NODE_DISK_PRESSURE, EFFECT_NO_SCHEDULE),
    (TAINT_NODE_MEMORY_PRESSURE, EFFECT_NO_SCHEDULE),
    (TAINT_NODE_PID_PRESSURE, EFFECT_NO_SCHEDULE),
    (TAINT_NODE_UNSCHEDULABLE, EFFECT_NO_SCHEDULE),
];

/// Whether a daemon pod belongs on one node, as two answers for the two questions a controller
/// asks.
///
/// Invariant: `should_run` implies `should_continue_running`, and `reason` is `None` exactly when
/// both are true.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// A new daemon pod may be created on the node (no daemon pod is there yet).
    pub should_run: bool,
    /// A daemon pod already on the node may stay; false means it must be deleted.
    pub should_continue_running: bool,
    /// What failed, for events and status; `None` when both answers are true.
    pub reason: Option<String>,
}

impl Placement {
    fn runs() -> Self {
        Self {
            should_run: true,
            should_continue_running: true,
            reason: None,
        }
    }

    fn excluded(reason: String) -> Self {
        Self {
            should_run: false,
            should_continue_running: false,
            reason: Some(reason),
        }
    }

    /// The answer that applies to a node given whether a daemon pod is already on it:
    /// `should_continue_running` for an existing pod, `should_run` for placing a new one.
    ///
    /// The two differ only on nodes with an untolerated `NoSchedule` taint and no untolerated
    /// `NoExecute` taint, where an existing pod stays but no new one is created.
    pub fn wants_pod(&self, pod_already_on_node: bool) -> bool {
        if pod_already_on_node {
            self.should_continue_running
        } else {
            self.should_run
        }
    }
}

/// The tolerations a daemon pod created from `spec` carries: the template's own, then the ones
/// upstream adds to every daemon pod.
///
/// Added with add-or-update semantics: a template toleration with the same key, operator, value
/// and effect as an added one is replaced in place by the added one (so a `tolerationSeconds`
/// on it is dropped), unless one such toleration already equals the added one including
/// `tolerationSeconds`, in which case the list is left as it is. Otherwise the added toleration
/// is appended. `node.kubernetes.io/network-unavailable` is tolerated only with `hostNetwork`,
/// because only such pods can work before the node's network is configured.
pub fn daemon_pod_tolerations(spec: &PodSpec) -> Vec<Toleration> {
    let mut tolerations = spec.tolerations.clone().unwrap_or_default();
    for (key, effect) in DAEMON_TOLERATIONS {
        add_or_update_toleration(&mut tolerations, forever_exists(key, effect));
    }
    if spec.host_network == Some(true) {
        add_or_update_toleration(
            &mut tolerations,
            forever_exists(TAINT_NODE_NETWORK_UNAVAILABLE, EFFECT_NO_SCHEDULE),
        );
    }
    tolerations
}

/// Decides whether a daemon pod from `template` should run on `node`, with the same answers as
/// upstream's `NodeShouldRunDaemonPod`.
///
/// In order: a non-empty `spec.nodeName` other than the node's name, an unmatched `nodeSelector`,
/// or unmatched required node affinity exclude the node outright (neither answer holds). Then the
/// node's `NoSchedule` and `NoExecute` taints are checked against [`daemon_pod_tolerations`]:
/// any untolerated one blocks new pods, and an existing pod stays only while every `NoExecute`
/// taint is tolerated. `PreferNoSchedule` taints and `spec.unschedulable` are ignored; a cordoned
/// node carries the `node.kubernetes.io/unschedulable` taint, which every daemon pod tolerates.
pub fn node_should_run_daemon_pod(node: &Node, template: &PodSpec) -> Placement {
    let node_name = node.metadata.name.as_deref().unwrap_or_default();
    if let Some(wanted) = template
        .node_name
        .as_deref()
        .filter(|name| !name.is_empty())
        && wanted != node_name
    {
        return Placement::excluded(format!("node name does not match spec.nodeName {wanted:?}"));
    }
    if let Err(reason) = node_matches_selector_and_affinity(node, template) {
        return Placement::excluded(reason);
    }

    let taints = node
        .spec
        .as_ref()
        .and_then(|spec| spec.taints.as_deref())
        .unwrap_or_default();
    let blocking =
        |taint: &&Taint| taint.effect == EFFECT_NO_SCHEDULE || taint.effect == EFFECT_NO_EXECUTE;
    // Most nodes carry no blocking taint; they need no toleration list at all.
    if !taints.iter().any(|taint| blocking(&taint)) {
        return Placement::runs();
    }
    let tolerations = daemon_pod_tolerations(template);
    let untolerated: Vec<&Taint> = taints
        .iter()
        .filter(blocking)
        .filter(|taint| !tolerations_tolerate_taint(&tolerations, taint))
        .collect();
    if untolerated.is_empty() {
        return Placement::runs();
    }
    let reason = untolerated
        .iter()
        .map(|taint| format!("taint {} not tolerated", describe_taint(taint)))
        .collect::<Vec<_>>()
        .join("; ");
    Placement {
        should_run: false,
        should_continue_running: untolerated
            .iter()
            .all(|taint| taint.effect != EFFECT_NO_EXECUTE),
        reason: Some(reason),
    }
}

/// Checks the template's `nodeSelector` and required node affinity against `node`; `Err` names
/// the first of the two that fails.
///
/// Both must hold. `nodeSelector` needs every listed label present with exactly that value.
/// Required node affinity needs at least one `nodeSelectorTerms` entry to match (an empty list
/// matches no node); see [`node_selector_matches`]. Preferred affinity never affects placement.
pub fn node_matches_selector_and_affinity(node: &Node, template: &PodSpec) -> Result<(), String> {
    let empty = BTreeMap::new();
    let labels = node.metadata.labels.as_ref().unwrap_or(&empty);
    if let Some(selector) = &template.node_selector {
        let missed: Vec<String> = selector
            .iter()
            .filter(|(key, value)| labels.get(*key) != Some(*value))
            .map(|(key, value)| match labels.get(key) {
                Some(found) => format!("label {key}={value} not matched (node has {found:?})"),
                None => format!("label {key}={value} not matched (label absent)"),
            })
            .collect();
        if !missed.is_empty() {
            return Err(format!("node selector: {}", missed.join(", ")));
        }
    }
    let required = template
        .affinity
        .as_ref()
        .and_then(|affinity| affinity.node_affinity.as_ref())
        .and_then(|affinity| {
            affinity
                .required_during_scheduling_ignored_during_execution
                .as_ref()
        });
    if let Some(required) = required {
        node_selector_matches(node, required).map_err(|why| format!("node affinity: {why}"))?;
    }
    Ok(())
}

/// Whether the template's placement can read label `key`: it is in `nodeSelector` or in a
/// `matchExpressions` entry of the required node affinity. A change to any other label leaves
/// [`node_should_run_daemon_pod`]'s answer as it was.
pub fn reads_label(template: &PodSpec, key: &str) -> bool {
    let in_selector = template
        .node_selector
        .as_ref()
        .is_some_and(|s| s.contains_key(key));
    let in_affinity = template
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .is_some_and(|required| {
            required
                .node_selector_terms
                .iter()
                .flat_map(|t| t.match_expressions.iter().flatten())
                .any(|e| e.key == key)
        });
    in_selector || in_affinity
}

/// Matches a `NodeSelector` (the required node affinity) against `node`; `Err` says why no term
/// matched.
///
/// Terms are ORed; within a term all `matchExpressions` (on labels) and `matchFields` (on
/// `metadata.name`) are ANDed. A term with neither matches nothing, and a term that does not
/// parse (unknown operator, invalid label key or value, wrong number of values, a non-integer
/// `Gt`/`Lt` value, `matchFields` other than `In`/`NotIn` with one value) matches nothing while
/// the other terms still count, exactly as upstream ignores such parse errors for daemon pods.
pub fn node_selector_matches(node: &Node, selector: &NodeSelector) -> Result<(), String> {
    if selector.node_selector_terms.is_empty() {
        return Err(
            "no term of requiredDuringScheduling matched (nodeSelectorTerms is empty)".to_owned(),
        );
    }
    let empty = BTreeMap::new();
    let labels = node.metadata.labels.as_ref().unwrap_or(&empty);
    let name = node.metadata.name.as_deref().unwrap_or_default();
    let mut misses = Vec::with_capacity(selector.node_selector_terms.len());
    for (index, term) in selector.node_selector_terms.iter().enumerate() {
        match term_mismatch(term, labels, name) {
            None => return Ok(()),
            Some(why) => misses.push(format!("term {index}: {why}")),
        }
    }
    Err(format!(
        "no term of requiredDuringScheduling matched ({})",
        misses.join("; ")
    ))
}

/// Whether any of `tolerations` tolerates `taint`.
pub fn tolerations_tolerate_taint(tolerations: &[Toleration], taint: &Taint) -> bool {
    tolerations
        .iter()
        .any(|toleration| toleration_tolerates_taint(toleration, taint))
}

/// Whether one toleration tolerates one taint, by upstream's rules.
///
/// An empty effect matches every effect; an empty key matches every key; operator `Exists`
/// matches any value; operator `Equal` (also when empty) needs equal values, an absent value
/// being the empty string; any other operator tolerates nothing. An empty key with `Equal` is
/// rejected by API validation but, as upstream, matches every taint with an equal value.
pub fn toleration_tolerates_taint(toleration: &Toleration, taint: &Taint) -> bool {
    let effect = text(&toleration.effect);
    if !effect.is_empty() && effect != taint.effect {
        return false;
    }
    let key = text(&toleration.key);
    if !key.is_empty() && key != taint.key {
        return false;
    }
    match text(&toleration.operator) {
        "" | "Equal" => text(&toleration.value) == text(&taint.value),
        "Exists" => true,
        _ => false,
    }
}

/// The Go zero value of an optional API string: absent and empty mean the same upstream.
fn text(value: &Option<String>) -> &str {
    value.as_deref().unwrap_or_default()
}

/// An `Exists` toleration without `tolerationSeconds`, i.e. tolerated forever.
fn forever_exists(key: &str, effect: &str) -> Toleration {
    Toleration {
        key: Some(key.to_owned()),
        operator: Some("Exists".to_owned()),
        effect: Some(effect.to_owned()),
        ..Toleration::default()
    }
}

/// Same key, operator, value and effect: the identity add-or-update replaces by.
fn same_toleration(a: &Toleration, b: &Toleration) -> bool {
    text(&a.key) == text(&b.key)
        && text(&a.operator) == text(&b.operator)
        && text(&a.value) == text(&b.value)
        && text(&a.effect) == text(&b.effect)
}

/// Adds `wanted` to `tolerations`, replacing every toleration with its identity, unless one of
/// them already equals it including `tolerationSeconds` (then nothing changes at all).
fn add_or_update_toleration(tolerations: &mut Vec<Toleration>, wanted: Toleration) {
    let mut next = Vec::with_capacity(tolerations.len() + 1);
    let mut replaced = false;
    for existing in tolerations.iter() {
        if same_toleration(&wanted, existing) {
            if wanted.toleration_seconds == existing.toleration_seconds {
                return;
            }
            next.push(wanted.clone());
            replaced = true;
        } else {
            next.push(existing.clone());
        }
    }
    if !replaced {
        next.push(wanted);
    }
    *tolerations = next;
}

/// A taint as `kubectl taint` spells it: `key=value:Effect`, or `key:Effect` without a value.
fn describe_taint(taint: &Taint) -> String {
    match text(&taint.value) {
        "" => format!("{}:{}", taint.key, taint.effect),
        value => format!("{}={}:{}", taint.key, value, taint.effect),
    }
}

/// Why one node selector term does not match, or `None` when it does.
fn term_mismatch(
    term: &NodeSelectorTerm,
    labels: &BTreeMap<String, String>,
    node_name: &str,
) -> Option<String> {
    let expressions = term.match_expressions.as_deref().unwrap_or_default();
    let fields = term.match_fields.as_deref().unwrap_or_default();
    if expressions.is_empty() && fields.is_empty() {
        return Some("empty term matches nothing".to_owned());
    }

    // Upstream parses the whole term before matching, so one invalid requirement disables the
    // term even when an earlier requirement would already have failed.
    let mut invalid = Vec::new();
    for (index, requirement) in expressions.iter().enumerate() {
        if let Err(why) = validate_label_requirement(requirement) {
            invalid.push(format!("matchExpressions[{index}] {why}"));
        }
    }
    for (index, requirement) in fields.iter().enumerate() {
        if let Err(why) = validate_field_requirement(requirement) {
            invalid.push(format!("matchFields[{index}] {why}"));
        }
    }
    if !invalid.is_empty() {
        return Some(format!("invalid, matches nothing: {}", invalid.join(", ")));
    }

    for requirement in expressions {
        if !label_requirement_matches(requirement, labels) {
            let found = match labels.get(&requirement.key) {
                Some(value) => format!("node has {value:?}"),
                None => "label absent".to_owned(),
            };
            return Some(format!(
                "{} not satisfied ({found})",
                describe_requirement(requirement)
            ));
        }
    }
    // Upstream only consults matchFields when the node has a name to match against.
    if !node_name.is_empty() {
        for requirement in fields {
            if !field_requirement_matches(requirement, node_name) {
                return Some(format!(
                    "field {} not satisfied (node name is {node_name:?})",
                    describe_requirement(requirement)
                ));
            }
        }
    }
    None
}

/// A requirement's values; absent and empty are the same upstream.
fn values(requirement: &NodeSelectorRequirement) -> &[String] {
    requirement.values.as_deref().unwrap_or_default()
}

/// `key gpu In [a,b]`, for reasons.
fn describe_requirement(requirement: &NodeSelectorRequirement) -> String {
    let values = values(requirement);
    if values.is_empty() {
        format!("key {} {}", requirement.key, requirement.operator)
    } else {
        format!(
            "key {} {} [{}]",
            requirement.key,
            requirement.operator,
            values.join(",")
        )
    }
}

/// Rejects a `matchExpressions` requirement upstream's label selector would not build.
fn validate_label_requirement(requirement: &NodeSelectorRequirement) -> Result<(), String> {
    let key = &requirement.key;
    validate_label_key(key).map_err(|why| format!("key {key:?} {why}"))?;
    let values = values(requirement);
    match requirement.operator.as_str() {
        "In" | "NotIn" if values.is_empty() => {
            return Err(format!("{} needs at least one value", requirement.operator));
        }
        "In" | "NotIn" => {}
        "Exists" | "DoesNotExist" if !values.is_empty() => {
            return Err(format!("{} takes no values", requirement.operator));
        }
        "Exists" | "DoesNotExist" => {}
        "Gt" | "Lt" => {
            if values.len() != 1 {
                return Err(format!("{} needs exactly one value", requirement.operator));
            }
            if let Some(bad) = values.iter().find(|value| parse_go_int(value).is_none()) {
                return Err(format!(
                    "{} value {bad:?} is not an integer",
                    requirement.operator
                ));
            }
        }
        other => return Err(format!("operator {other:?} is not supported")),
    }
    if let Some(bad) = values.iter().find(|value| !is_label_value(value)) {
        return Err(format!("value {bad:?} is not a valid label value"));
    }
    Ok(())
}

/// Rejects a `matchFields` requirement upstream's field selector would not build.
fn validate_field_requirement(requirement: &NodeSelectorRequirement) -> Result<(), String> {
    match requirement.operator.as_str() {
        "In" | "NotIn" if values(requirement).len() == 1 => Ok(()),
        "In" | "NotIn" => Err(format!("{} needs exactly one value", requirement.operator)),
        other => Err(format!(
            "operator {other:?} is not supported (only In, NotIn)"
        )),
    }
}

/// Matches a validated `matchExpressions` requirement against node labels.
fn label_requirement_matches(
    requirement: &NodeSelectorRequirement,
    labels: &BTreeMap<String, String>,
) -> bool {
    let values = values(requirement);
    let found = labels.get(&requirement.key);
    match requirement.operator.as_str() {
        "In" => found.is_some_and(|value| values.contains(value)),
        "NotIn" => found.is_none_or(|value| !values.contains(value)),
        "Exists" => found.is_some(),
        "DoesNotExist" => found.is_none(),
        operator @ ("Gt" | "Lt") => {
            let (Some(label), [wanted]) = (found.and_then(|value| parse_go_int(value)), values)
            else {
                return false;
            };
            let Some(wanted) = parse_go_int(wanted) else {
                return false;
            };
            if operator == "Gt" {
                label > wanted
            } else {
                label < wanted
            }
        }
        _ => false,
    }
}

/// Matches a validated `matchFields` requirement. Only `metadata.name` exists on the node side;
/// upstream reads any other field as the empty string.
fn field_requirement_matches(requirement: &NodeSelectorRequirement, node_name: &str) -> bool {
    let field = if requirement.key == FIELD_METADATA_NAME {
        node_name
    } else {
        ""
    };
    let Some(value) = values(requirement).first() else {
        return false;
    };
    match requirement.operator.as_str() {
        "In" => field == value,
        "NotIn" => field != value,
        _ => false,
    }
}

/// A base-10 signed 64-bit integer as Go's `strconv.ParseInt(s, 10, 64)` reads it: optional `+`
/// or `-`, then ASCII digits only (no spaces, underscores, prefixes or fractions), in range.
fn parse_go_int(text: &str) -> Option<i64> {
    let digits = text.strip_prefix(['+', '-']).unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// A label key: an optional DNS-1123 subdomain prefix and `/`, then a qualified name part.
fn validate_label_key(key: &str) -> Result<(), String> {
    let mut parts = key.split('/');
    let (prefix, name) = match (parts.next(), parts.next(), parts.next()) {
        (Some(name), None, _) => (None, name),
        (Some(prefix), Some(name), None) => (Some(prefix), name),
        _ => return Err("has more than one '/'".to_owned()),
    };
    if let Some(prefix) = prefix {
        if prefix.is_empty() {
            return Err("has an empty prefix".to_owned());
        }
        if !is_dns1123_subdomain(prefix) {
            return Err("has a prefix that is not a DNS-1123 subdomain".to_owned());
        }
    }
    if name.is_empty() {
        return Err("has an empty name part".to_owned());
    }
    if name.len() > QUALIFIED_NAME_MAX_LEN {
        return Err(format!(
            "has a name part longer than {QUALIFIED_NAME_MAX_LEN} characters"
        ));
    }
    if !is_qualified_name_part(name) {
        return Err(
            "has a name part with characters other than alphanumerics, '-', '_', '.' \
                    or not starting and ending alphanumeric"
                .to_owned(),
        );
    }
    Ok(())
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`.
fn is_qualified_name_part(name: &str) -> bool {
    let bytes = name.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) => {
            first.is_ascii_alphanumeric()
                && last.is_ascii_alphanumeric()
                && bytes
                    .iter()
                    .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.'))
        }
        _ => false,
    }
}

/// A label value: empty, or a qualified name part of at most 63 characters.
fn is_label_value(value: &str) -> bool {
    value.len() <= QUALIFIED_NAME_MAX_LEN && (value.is_empty() || is_qualified_name_part(value))
}

/// Dot-separated DNS-1123 labels (`[a-z0-9]([-a-z0-9]*[a-z0-9])?`), at most 253 characters.
fn is_dns1123_subdomain(value: &str) -> bool {
    value.len() <= DNS1123_SUBDOMAIN_MAX_LEN
        && value.split('.').all(|label| {
            let bytes = label.as_bytes();
            match (bytes.first(), bytes.last()) {
                (Some(first), Some(last)) => {
                    let edge = |byte: &u8| byte.is_ascii_lowercase() || byte.is_ascii_digit();
                    edge(first)
                        && edge(last)
                        && bytes.iter().all(|byte| edge(byte) || *byte == b'-')
                }
                _ => false,
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Affinity, NodeAffinity, NodeSpec, PreferredSchedulingTerm};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    const DAEMON_CONTROLLER: &str = "pkg/controller/daemon/daemon_controller.go";

    fn opt(value: &str) -> Option<String> {
        (!value.is_empty()).then(|| value.to_owned())
    }

    fn node(name: &str, labels: &[(&str, &str)], taints: Vec<Taint>) -> Node {
        Node {
            metadata: ObjectMeta {
                name: opt(name),
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                        .collect(),
                ),
                ..ObjectMeta::default()
            },
            spec: Some(NodeSpec {
                taints: Some(taints),
                ..NodeSpec::default()
            }),
            status: None,
        }
    }

    fn taint(key: &str, value: &str, effect: &str) -> Taint {
        Taint {
            key: key.to_owned(),
            value: opt(value),
            effect: effect.to_owned(),
            time_added: None,
        }
    }

    fn toleration(key: &str, operator: &str, value: &str, effect: &str) -> Toleration {
        Toleration {
            key: opt(key),
            operator: opt(operator),
            value: opt(value),
            effect: opt(effect),
            toleration_seconds: None,
        }
    }

    fn requirement(key: &str, operator: &str, values: &[&str]) -> NodeSelectorRequirement {
        NodeSelectorRequirement {
            key: key.to_owned(),
            operator: operator.to_owned(),
            values: Some(values.iter().map(|v| (*v).to_owned()).collect()),
        }
    }

    fn expressions(requirements: Vec<NodeSelectorRequirement>) -> NodeSelectorTerm {
        NodeSelectorTerm {
            match_expressions: Some(requirements),
            match_fields: None,
        }
    }

    fn fields(requirements: Vec<NodeSelectorRequirement>) -> NodeSelectorTerm {
        NodeSelectorTerm {
            match_expressions: None,
            match_fields: Some(requirements),
        }
    }

    fn with_tolerations(tolerations: Vec<Toleration>) -> PodSpec {
        PodSpec {
            tolerations: Some(tolerations),
            ..PodSpec::default()
        }
    }

    fn with_required_affinity(terms: Vec<NodeSelectorTerm>) -> PodSpec {
        PodSpec {
            affinity: Some(Affinity {
                node_affinity: Some(NodeAffinity {
                    required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                        node_selector_terms: terms,
                    }),
                    ..NodeAffinity::default()
                }),
                ..Affinity::default()
            }),
            ..PodSpec::default()
        }
    }

    fn with_node_selector(labels: &[(&str, &str)]) -> PodSpec {
        PodSpec {
            node_selector: Some(
                labels
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            ),
            ..PodSpec::default()
        }
    }

    fn answers(placement: &Placement) -> (bool, bool) {
        (placement.should_run, placement.should_continue_running)
    }

    struct TaintCase {
        /// The upstream statement this case pins.
        pins: &'static str,
        taints: Vec<Taint>,
        tolerations: Vec<Toleration>,
        host_network: bool,
        want: (bool, bool),
    }

    fn taint_case(
        pins: &'static str,
        taints: Vec<Taint>,
        tolerations: Vec<Toleration>,
        want: (bool, bool),
    ) -> TaintCase {
        TaintCase {
            pins,
            taints,
            tolerations,
            host_network: false,
            want,
        }
    }

    #[test]
    fn every_taint_effect_and_toleration_form_gives_the_upstream_answers() {
        let ns = EFFECT_NO_SCHEDULE;
        let ne = EFFECT_NO_EXECUTE;
        let cases = vec![
            // daemon_controller.go NodeShouldRunDaemonPod: all predicates fit -> (true, true).
            taint_case("no taints: the pod runs", vec![], vec![], (true, true)),
            // daemon_controller.go NodeShouldRunDaemonPod: when taints do not fit, existing
            // pods continue only if FindMatchingUntoleratedTaint finds no NoExecute taint.
            taint_case(
                "untolerated NoSchedule: no new pod, an existing pod stays",
                vec![taint("dedicated", "infra", ns)],
                vec![],
                (false, true),
            ),
            taint_case(
                "untolerated NoExecute: no new pod and an existing pod is removed",
                vec![taint("dedicated", "infra", ne)],
                vec![],
                (false, false),
            ),
            taint_case(
                "untolerated NoSchedule and NoExecute together: neither",
                vec![taint("a", "", ns), taint("b", "", ne)],
                vec![],
                (false, false),
            ),
            // daemon_controller.go predicates(): the taint filter keeps only NoExecute and
            // NoSchedule, so PreferNoSchedule (and any unknown effect) never blocks.
            taint_case(
                "PreferNoSchedule is ignored",
                vec![taint("dedicated", "infra", EFFECT_PREFER_NO_SCHEDULE)],
                vec![],
                (true, true),
            ),
            taint_case(
                "an unknown effect is ignored",
                vec![taint("dedicated", "infra", "NoScheduleSometimes")],
                vec![],
                (true, true),
            ),
            // component-helpers/scheduling/corev1/helpers.go TolerationsTolerateTaint and
            // k8s.io/api core/v1 Toleration.ToleratesTaint: Equal compares values.
            taint_case(
                "Equal with the same value tolerates",
                vec![taint("dedicated", "infra", ns)],
                vec![toleration("dedicated", "Equal", "infra", ns)],
                (true, true),
            ),
            taint_case(
                "Equal with another value does not tolerate",
                vec![taint("dedicated", "infra", ns)],
                vec![toleration("dedicated", "Equal", "batch", ns)],
                (false, true),
            ),
            // Toleration.ToleratesTaint: an empty operator means Equal.
            taint_case(
                "an empty operator compares values like Equal (same value)",
                vec![taint("dedicated", "infra", ne)],
                vec![toleration("dedicated", "", "infra", ne)],
                (true, true),
            ),
            taint_case(
                "an empty operator compares values like Equal (other value)",
                vec![taint("dedicated", "infra", ne)],
                vec![toleration("dedicated", "", "batch", ne)],
                (false, false),
            ),
            // Toleration.ToleratesTaint: an absent value is the empty string on both sides.
            taint_case(
                "Equal with no value tolerates a taint with no value",
                vec![taint("dedicated", "", ns)],
                vec![toleration("dedicated", "Equal", "", ns)],
                (true, true),
            ),
            // Toleration.ToleratesTaint rule (2): Exists matches all values.
            taint_case(
                "Exists ignores the value",
                vec![taint("dedicated", "infra", ne)],
                vec![toleration("dedicated", "Exists", "", ne)],
                (true, true),
            ),
            // Toleration.ToleratesTaint rule (3): empty key with Exists matches every taint.
            taint_case(
                "an empty key with Exists tolerates every taint",
                vec![taint("a", "1", ns), taint("b", "", ne), taint("c", "x", ns)],
                vec![toleration("", "Exists", "", "")],
                (true, true),
            ),
            // Toleration.ToleratesTaint rule (1): an empty effect matches all effects.
            taint_case(
                "an empty effect tolerates both NoSchedule and NoExecute",
                vec![
                    taint("dedicated", "infra", ns),
                    taint("dedicated", "infra", ne),
                ],
                vec![toleration("dedicated", "Exists", "", "")],
                (true, true),
            ),
            taint_case(
                "a NoSchedule toleration does not tolerate the NoExecute taint of the same key",
                vec![taint("dedicated", "infra", ne)],
                vec![toleration("dedicated", "Exists", "", ns)],
                (false, false),
            ),
            taint_case(
                "a toleration for another key does not tolerate",
                vec![taint("dedicated", "infra", ns)],
                vec![toleration("team", "Exists", "", ns)],
                (false, true),
            ),
            // Toleration.ToleratesTaint: the key check is skipped when the key is empty, so an
            // empty key with Equal (rejected by validation) matches by value alone.
            taint_case(
                "an empty key with Equal tolerates any key with an equal value",
                vec![taint("a", "", ns), taint("b", "", ne)],
                vec![toleration("", "Equal", "", "")],
                (true, true),
            ),
            taint_case(
                "an empty key with Equal does not tolerate another value",
                vec![taint("a", "x", ns)],
                vec![toleration("", "Equal", "", "")],
                (false, true),
            ),
            // Toleration.ToleratesTaint: any operator other than Equal/Exists tolerates nothing
            // (Lt/Gt tolerations are not part of the v1.33 API).
            taint_case(
                "an unknown operator tolerates nothing",
                vec![taint("dedicated", "infra", ns)],
                vec![toleration("dedicated", "Gt", "1", ns)],
                (false, true),
            ),
            // Toleration.ToleratesTaint never looks at tolerationSeconds, and the controller
            // does not either: a bounded NoExecute toleration still counts as tolerating.
            taint_case(
                "tolerationSeconds does not matter for placement",
                vec![taint("dedicated", "infra", ne)],
                vec![Toleration {
                    toleration_seconds: Some(60),
                    ..toleration("dedicated", "Exists", "", ne)
                }],
                (true, true),
            ),
            // util/daemonset_util.go AddOrUpdateDaemonPodTolerations: not-ready and
            // unreachable NoExecute are tolerated forever by every daemon pod.
            taint_case(
                "not-ready NoExecute is tolerated automatically",
                vec![taint(TAINT_NODE_NOT_READY, "", ne)],
                vec![],
                (true, true),
            ),
            taint_case(
                "unreachable NoExecute is tolerated automatically",
                vec![taint(TAINT_NODE_UNREACHABLE, "", ne)],
                vec![],
                (true, true),
            ),
            // AddOrUpdateDaemonPodTolerations adds the NoExecute forms only; the NoSchedule
            // forms the node lifecycle controller also sets stay untolerated.
            taint_case(
                "not-ready NoSchedule is not tolerated automatically",
                vec![taint(TAINT_NODE_NOT_READY, "", ns)],
                vec![],
                (false, true),
            ),
            taint_case(
                "unreachable NoSchedule is not tolerated automatically",
                vec![taint(TAINT_NODE_UNREACHABLE, "", ns)],
                vec![],
                (false, true),
            ),
            // AddOrUpdateDaemonPodTolerations: disk, memory and PID pressure and unschedulable
            // NoSchedule are tolerated by every daemon pod.
            taint_case(
                "disk-pressure NoSchedule is tolerated automatically",
                vec![taint(TAINT_NODE_DISK_PRESSURE, "", ns)],
                vec![],
                (true, true),
            ),
            taint_case(
                "memory-pressure NoSchedule is tolerated automatically",
                vec![taint(TAINT_NODE_MEMORY_PRESSURE, "", ns)],
                vec![],
                (true, true),
            ),
            taint_case(
                "pid-pressure NoSchedule is tolerated automatically",
                vec![taint(TAINT_NODE_PID_PRESSURE, "", ns)],
                vec![],
                (true, true),
            ),
            taint_case(
                "unschedulable NoSchedule is tolerated automatically",
                vec![taint(TAINT_NODE_UNSCHEDULABLE, "", ns)],
                vec![],
                (true, true),
            ),
            taint_case(
                "an automatic toleration covers only its own effect",
                vec![taint(TAINT_NODE_DISK_PRESSURE, "", ne)],
                vec![],
                (false, false),
            ),
            // AddOrUpdateDaemonPodTolerations: network-unavailable only when spec.hostNetwork.
            taint_case(
                "network-unavailable is not tolerated without hostNetwork",
                vec![taint(TAINT_NODE_NETWORK_UNAVAILABLE, "", ns)],
                vec![],
                (false, true),
            ),
            TaintCase {
                pins: "network-unavailable is tolerated with hostNetwork",
                taints: vec![taint(TAINT_NODE_NETWORK_UNAVAILABLE, "", ns)],
                tolerations: vec![],
                host_network: true,
                want: (true, true),
            },
        ];
        for case in cases {
            let node = node("node-1", &[], case.taints);
            let spec = PodSpec {
                host_network: Some(case.host_network),
                ..with_tolerations(case.tolerations)
            };
            let placement = node_should_run_daemon_pod(&node, &spec);
            assert_eq!(
                answers(&placement),
                case.want,
                "{} ({DAEMON_CONTROLLER})",
                case.pins
            );
            assert_eq!(
                placement.reason.is_none(),
                case.want == (true, true),
                "{}",
                case.pins
            );
        }
    }

    struct AffinityCase {
        /// The upstream statement this case pins.
        pins: &'static str,
        terms: Vec<NodeSelectorTerm>,
        matches: bool,
    }

    fn affinity_case(
        pins: &'static str,
        terms: Vec<NodeSelectorTerm>,
        matches: bool,
    ) -> AffinityCase {
        AffinityCase {
            pins,
            terms,
            matches,
        }
    }

    fn one(key: &str, operator: &str, values: &[&str]) -> Vec<NodeSelectorTerm> {
        vec![expressions(vec![requirement(key, operator, values)])]
    }

    #[test]
    fn every_node_affinity_operator_matches_as_upstream() {
        let labelled = node(
            "ip-10-0-1-23.ec2.internal",
            &[
                ("gpu", "a100"),
                ("disktype", "ssd"),
                ("cores", "64"),
                ("offset", "-5"),
                ("huge", "9223372036854775808"),
                ("blank", ""),
            ],
            vec![],
        );
        let cases = vec![
            // apimachinery labels/selector.go Requirement.Matches, reached through
            // component-helpers nodeaffinity.go nodeSelectorRequirementsAsSelector.
            affinity_case(
                "In: value listed",
                one("gpu", "In", &["h100", "a100"]),
                true,
            ),
            affinity_case("In: value not listed", one("gpu", "In", &["h100"]), false),
            affinity_case("In: label absent", one("zone", "In", &["a"]), false),
            affinity_case(
                "In: empty label value listed",
                one("blank", "In", &[""]),
                true,
            ),
            affinity_case(
                "NotIn: value not listed",
                one("gpu", "NotIn", &["h100"]),
                true,
            ),
            affinity_case("NotIn: value listed", one("gpu", "NotIn", &["a100"]), false),
            affinity_case(
                "NotIn: label absent matches",
                one("zone", "NotIn", &["a"]),
                true,
            ),
            affinity_case("Exists: label present", one("gpu", "Exists", &[]), true),
            affinity_case(
                "Exists: label with empty value",
                one("blank", "Exists", &[]),
                true,
            ),
            affinity_case("Exists: label absent", one("zone", "Exists", &[]), false),
            affinity_case(
                "DoesNotExist: label absent",
                one("zone", "DoesNotExist", &[]),
                true,
            ),
            affinity_case(
                "DoesNotExist: label present",
                one("gpu", "DoesNotExist", &[]),
                false,
            ),
            affinity_case("Gt: greater", one("cores", "Gt", &["32"]), true),
            affinity_case(
                "Gt: equal is not greater",
                one("cores", "Gt", &["64"]),
                false,
            ),
            affinity_case("Lt: less", one("cores", "Lt", &["128"]), true),
            affinity_case("Lt: equal is not less", one("cores", "Lt", &["64"]), false),
            affinity_case(
                "Lt: a negative label compares",
                one("offset", "Lt", &["0"]),
                true,
            ),
            // labels.NewRequirement also validates every value as a label value, so a signed
            // Gt/Lt value never parses even though strconv.ParseInt alone would accept it.
            affinity_case(
                "Gt: a negative value is invalid",
                one("offset", "Gt", &["-10"]),
                false,
            ),
            affinity_case(
                "Gt: a plus-signed value is invalid",
                one("cores", "Gt", &["+32"]),
                false,
            ),
            // strconv.ParseInt(s, 10, 64) accepts leading zeros.
            affinity_case(
                "Lt: leading zeros parse",
                one("cores", "Lt", &["0100"]),
                true,
            ),
            // Requirement.Matches: a label that does not parse as int64 does not match.
            affinity_case("Gt: non-integer label", one("gpu", "Gt", &["1"]), false),
            affinity_case("Lt: non-integer label", one("gpu", "Lt", &["1"]), false),
            affinity_case(
                "Gt: label out of int64 range",
                one("huge", "Gt", &["0"]),
                false,
            ),
            affinity_case("Gt: empty label", one("blank", "Lt", &["1"]), false),
            affinity_case("Gt: label absent", one("zone", "Gt", &["1"]), false),
            // labels.NewRequirement: a Gt/Lt value that is not an int64 is a parse error, and
            // nodeaffinity.go turns a term with parse errors into a term matching nothing.
            affinity_case("Gt: non-integer value", one("cores", "Gt", &["1.5"]), false),
            affinity_case("Lt: non-integer value", one("cores", "Lt", &["1e3"]), false),
            affinity_case(
                "Lt: underscore value",
                one("cores", "Lt", &["1_000"]),
                false,
            ),
            affinity_case("Lt: hex value", one("cores", "Lt", &["0x100"]), false),
            affinity_case("Lt: padded value", one("cores", "Lt", &[" 100"]), false),
            affinity_case("Gt: two values", one("cores", "Gt", &["1", "2"]), false),
            affinity_case("Gt: no value", one("cores", "Gt", &[]), false),
            // labels.NewRequirement: In/NotIn need values, Exists/DoesNotExist take none.
            affinity_case("In: no values", one("gpu", "In", &[]), false),
            affinity_case(
                "NotIn: no values is invalid",
                one("zone", "NotIn", &[]),
                false,
            ),
            affinity_case(
                "Exists: with values is invalid",
                one("gpu", "Exists", &["a100"]),
                false,
            ),
            affinity_case(
                "DoesNotExist: with values",
                one("zone", "DoesNotExist", &["a"]),
                false,
            ),
            // nodeaffinity.go: an operator outside the six is NotSupported.
            affinity_case("unknown operator", one("gpu", "Equals", &["a100"]), false),
            // labels.NewRequirement validates the key and every value as label syntax.
            affinity_case("invalid key", one("bad key", "DoesNotExist", &[]), false),
            affinity_case(
                "key with two slashes",
                one("a/b/c", "DoesNotExist", &[]),
                false,
            ),
            affinity_case(
                "key with empty prefix",
                one("/gpu", "DoesNotExist", &[]),
                false,
            ),
            affinity_case(
                "key with upper-case prefix",
                one("Example.com/x", "Exists", &[]),
                false,
            ),
            affinity_case(
                "prefixed key",
                one("example.com/x", "DoesNotExist", &[]),
                true,
            ),
            affinity_case("invalid value", one("zone", "NotIn", &["not valid"]), false),
            affinity_case(
                "value too long",
                one("zone", "NotIn", &[&"v".repeat(64)]),
                false,
            ),
            // nodeaffinity.go: requirements of one term are ANDed.
            affinity_case(
                "expressions in a term are ANDed (one fails)",
                vec![expressions(vec![
                    requirement("gpu", "In", &["a100"]),
                    requirement("disktype", "In", &["hdd"]),
                ])],
                false,
            ),
            affinity_case(
                "expressions in a term are ANDed (all hold)",
                vec![expressions(vec![
                    requirement("gpu", "In", &["a100"]),
                    requirement("disktype", "In", &["ssd"]),
                    requirement("cores", "Gt", &["8"]),
                ])],
                true,
            ),
            affinity_case(
                "an invalid requirement disables its term even after a failing one",
                vec![expressions(vec![
                    requirement("gpu", "In", &["h100"]),
                    requirement("cores", "Gt", &["many"]),
                ])],
                false,
            ),
            // nodeaffinity.go LazyErrorNodeSelector.Match: terms are ORed.
            affinity_case(
                "terms are ORed",
                vec![
                    expressions(vec![requirement("gpu", "In", &["h100"])]),
                    expressions(vec![requirement("disktype", "In", &["ssd"])]),
                ],
                true,
            ),
            affinity_case(
                "no term matching means no match",
                vec![
                    expressions(vec![requirement("gpu", "In", &["h100"])]),
                    expressions(vec![requirement("disktype", "In", &["hdd"])]),
                ],
                false,
            ),
            // LazyErrorNodeSelector: a term's parse errors only disable that term.
            affinity_case(
                "an invalid term does not stop a later term from matching",
                vec![
                    expressions(vec![requirement("cores", "Gt", &["many"])]),
                    expressions(vec![requirement("gpu", "Exists", &[])]),
                ],
                true,
            ),
            // NewLazyErrorNodeSelector: a nil or empty term selects no objects.
            affinity_case(
                "an empty term matches nothing",
                vec![NodeSelectorTerm::default()],
                false,
            ),
            affinity_case(
                "a term with empty lists matches nothing",
                vec![NodeSelectorTerm {
                    match_expressions: Some(vec![]),
                    match_fields: Some(vec![]),
                }],
                false,
            ),
            affinity_case(
                "an empty term does not stop another term from matching",
                vec![
                    NodeSelectorTerm::default(),
                    expressions(vec![requirement("gpu", "Exists", &[])]),
                ],
                true,
            ),
            // LazyErrorNodeSelector.Match over zero terms returns false.
            affinity_case("an empty term list matches nothing", vec![], false),
            // nodeaffinity.go nodeSelectorRequirementsAsFieldSelector and extractNodeFields:
            // metadata.name with In/NotIn and exactly one value.
            affinity_case(
                "matchFields metadata.name In the node's name",
                vec![fields(vec![requirement(
                    "metadata.name",
                    "In",
                    &["ip-10-0-1-23.ec2.internal"],
                )])],
                true,
            ),
            affinity_case(
                "matchFields metadata.name In another name",
                vec![fields(vec![requirement("metadata.name", "In", &["other"])])],
                false,
            ),
            affinity_case(
                "matchFields metadata.name NotIn another name",
                vec![fields(vec![requirement(
                    "metadata.name",
                    "NotIn",
                    &["other"],
                )])],
                true,
            ),
            affinity_case(
                "matchFields metadata.name NotIn the node's name",
                vec![fields(vec![requirement(
                    "metadata.name",
                    "NotIn",
                    &["ip-10-0-1-23.ec2.internal"],
                )])],
                false,
            ),
            affinity_case(
                "matchFields In with two values is invalid",
                vec![fields(vec![requirement(
                    "metadata.name",
                    "In",
                    &["ip-10-0-1-23.ec2.internal", "other"],
                )])],
                false,
            ),
            affinity_case(
                "matchFields Exists is invalid",
                vec![fields(vec![requirement("metadata.name", "Exists", &[])])],
                false,
            ),
            // fields.Set.Get returns "" for a field the node does not expose.
            affinity_case(
                "matchFields on another field reads the empty string",
                vec![fields(vec![requirement("metadata.uid", "NotIn", &["x"])])],
                true,
            ),
            affinity_case(
                "matchFields and matchExpressions in one term are ANDed",
                vec![NodeSelectorTerm {
                    match_expressions: Some(vec![requirement("gpu", "In", &["h100"])]),
                    match_fields: Some(vec![requirement(
                        "metadata.name",
                        "In",
                        &["ip-10-0-1-23.ec2.internal"],
                    )]),
                }],
                false,
            ),
        ];
        for case in cases {
            let placement =
                node_should_run_daemon_pod(&labelled, &with_required_affinity(case.terms));
            let want = if case.matches {
                (true, true)
            } else {
                (false, false)
            };
            assert_eq!(answers(&placement), want, "{}", case.pins);
        }
    }

    #[test]
    fn go_integer_parsing_is_reproduced() {
        // strconv.ParseInt(s, 10, 64), as labels/selector.go uses it for Gt and Lt.
        let cases: [(&str, Option<i64>); 14] = [
            ("0", Some(0)),
            ("42", Some(42)),
            ("-42", Some(-42)),
            ("+42", Some(42)),
            ("007", Some(7)),
            ("9223372036854775807", Some(i64::MAX)),
            ("-9223372036854775808", Some(i64::MIN)),
            ("9223372036854775808", None),
            ("", None),
            ("+", None),
            ("-", None),
            ("1_000", None),
            ("4.0", None),
            ("٣", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_go_int(text), want, "{text:?}");
        }
    }

    #[test]
    fn a_node_name_mismatch_excludes_the_node_outright() {
        // daemon_controller.go NodeShouldRunDaemonPod: a template nodeName other than the
        // node's name returns (false, false) before any other check.
        let node = node("node-1", &[], vec![]);
        let spec = PodSpec {
            node_name: Some("node-2".to_owned()),
            tolerations: Some(vec![toleration("", "Exists", "", "")]),
            ..PodSpec::default()
        };
        let placement = node_should_run_daemon_pod(&node, &spec);
        assert_eq!(answers(&placement), (false, false));
        assert_eq!(
            placement.reason.as_deref(),
            Some("node name does not match spec.nodeName \"node-2\"")
        );

        let named = PodSpec {
            node_name: Some("node-1".to_owned()),
            ..PodSpec::default()
        };
        assert_eq!(node_should_run_daemon_pod(&node, &named), Placement::runs());
        let blank = PodSpec {
            node_name: Some(String::new()),
            ..PodSpec::default()
        };
        assert_eq!(node_should_run_daemon_pod(&node, &blank), Placement::runs());
    }

    #[test]
    fn node_selector_labels_are_anded_and_compared_exactly() {
        // nodeaffinity.go GetRequiredNodeAffinity: labels.SelectorFromSet(nodeSelector), an
        // AND of key=value equalities; no validation, so an empty value must be present as such.
        let node = node(
            "node-1",
            &[("disktype", "ssd"), ("zone", "a"), ("blank", "")],
            vec![],
        );
        let both = with_node_selector(&[("disktype", "ssd"), ("zone", "a")]);
        assert_eq!(node_should_run_daemon_pod(&node, &both), Placement::runs());

        let one_wrong = with_node_selector(&[("disktype", "ssd"), ("zone", "b")]);
        assert_eq!(
            answers(&node_should_run_daemon_pod(&node, &one_wrong)),
            (false, false)
        );

        let one_missing = with_node_selector(&[("disktype", "ssd"), ("gpu", "a100")]);
        assert_eq!(
            answers(&node_should_run_daemon_pod(&node, &one_missing)),
            (false, false)
        );

        let empty_value = with_node_selector(&[("blank", "")]);
        assert_eq!(
            node_should_run_daemon_pod(&node, &empty_value),
            Placement::runs()
        );
        let absent_empty_value = with_node_selector(&[("other", "")]);
        assert_eq!(
            answers(&node_should_run_daemon_pod(&node, &absent_empty_value)),
            (false, false)
        );

        let empty = with_node_selector(&[]);
        assert_eq!(node_should_run_daemon_pod(&node, &empty), Placement::runs());
    }

    #[test]
    fn node_selector_and_required_affinity_must_both_hold() {
        // nodeaffinity.go RequiredNodeAffinity.Match checks nodeSelector, then the affinity.
        let node = node("node-1", &[("disktype", "ssd")], vec![]);
        let spec = PodSpec {
            node_selector: with_node_selector(&[("disktype", "ssd")]).node_selector,
            ..with_required_affinity(one("gpu", "Exists", &[]))
        };
        assert_eq!(
            answers(&node_should_run_daemon_pod(&node, &spec)),
            (false, false)
        );
    }

    #[test]
    fn selector_mismatch_wins_over_taints_that_would_keep_a_pod() {
        // daemon_controller.go NodeShouldRunDaemonPod: !fitsNodeAffinity returns (false, false)
        // before taints are looked at.
        let node = node(
            "node-1",
            &[("disktype", "hdd")],
            vec![taint("a", "", EFFECT_NO_SCHEDULE)],
        );
        let spec = with_node_selector(&[("disktype", "ssd")]);
        assert_eq!(
            answers(&node_should_run_daemon_pod(&node, &spec)),
            (false, false)
        );
    }

    #[test]
    fn preferred_affinity_and_absent_required_affinity_do_not_restrict() {
        // nodeaffinity.go GetRequiredNodeAffinity reads only requiredDuringScheduling.
        let node = node("node-1", &[], vec![]);
        let spec = PodSpec {
            affinity: Some(Affinity {
                node_affinity: Some(NodeAffinity {
                    preferred_during_scheduling_ignored_during_execution: Some(vec![
                        PreferredSchedulingTerm {
                            weight: 100,
                            preference: expressions(vec![requirement("gpu", "Exists", &[])]),
                        },
                    ]),
                    required_during_scheduling_ignored_during_execution: None,
                }),
                ..Affinity::default()
            }),
            ..PodSpec::default()
        };
        assert_eq!(node_should_run_daemon_pod(&node, &spec), Placement::runs());
    }

    #[test]
    fn match_fields_are_skipped_for_a_node_without_a_name() {
        // nodeaffinity.go nodeSelectorTerm.match consults matchFields only when
        // extractNodeFields found a name.
        let nameless = node("", &[], vec![]);
        let required = NodeSelector {
            node_selector_terms: vec![fields(vec![requirement("metadata.name", "In", &["x"])])],
        };
        assert_eq!(node_selector_matches(&nameless, &required), Ok(()));
    }

    #[test]
    fn a_cordoned_node_still_runs_the_daemon_pod() {
        // DaemonSet docs: daemon pods tolerate node.kubernetes.io/unschedulable:NoSchedule and
        // the controller never reads spec.unschedulable (daemon_controller.go predicates()).
        let mut cordoned = node(
            "node-1",
            &[],
            vec![taint(TAINT_NODE_UNSCHEDULABLE, "", EFFECT_NO_SCHEDULE)],
        );
        if let Some(spec) = cordoned.spec.as_mut() {
            spec.unschedulable = Some(true);
        }
        assert_eq!(
            node_should_run_daemon_pod(&cordoned, &PodSpec::default()),
            Placement::runs()
        );
    }

    #[test]
    fn reasons_name_what_failed() {
        let tainted = node(
            "node-1",
            &[("gpu", "h100")],
            vec![taint("dedicated", "infra", EFFECT_NO_SCHEDULE)],
        );
        let by_taint = node_should_run_daemon_pod(&tainted, &PodSpec::default());
        assert_eq!(
            by_taint.reason.as_deref(),
            Some("taint dedicated=infra:NoSchedule not tolerated")
        );

        let by_selector =
            node_should_run_daemon_pod(&tainted, &with_node_selector(&[("disktype", "ssd")]));
        assert_eq!(
            by_selector.reason.as_deref(),
            Some("node selector: label disktype=ssd not matched (label absent)")
        );

        let by_affinity = node_should_run_daemon_pod(
            &tainted,
            &with_required_affinity(vec![
                expressions(vec![requirement("gpu", "In", &["a", "b"])]),
                NodeSelectorTerm::default(),
            ]),
        );
        assert_eq!(
            by_affinity.reason.as_deref(),
            Some(
                "node affinity: no term of requiredDuringScheduling matched (term 0: key gpu In \
                 [a,b] not satisfied (node has \"h100\"); term 1: empty term matches nothing)"
            )
        );

        let both = node(
            "node-1",
            &[],
            vec![
                taint("a", "", EFFECT_NO_SCHEDULE),
                taint("b", "1", EFFECT_NO_EXECUTE),
            ],
        );
        assert_eq!(
            node_should_run_daemon_pod(&both, &PodSpec::default())
                .reason
                .as_deref(),
            Some("taint a:NoSchedule not tolerated; taint b=1:NoExecute not tolerated")
        );
    }

    #[test]
    fn wants_pod_picks_the_answer_for_new_or_existing_pods() {
        // daemon_controller.go podsShouldBeOnNode: shouldRun decides creation,
        // shouldContinueRunning decides whether existing daemon pods are deleted.
        let keep_only = Placement {
            should_run: false,
            should_continue_running: true,
            reason: None,
        };
        assert!(!keep_only.wants_pod(false));
        assert!(keep_only.wants_pod(true));
        assert!(Placement::runs().wants_pod(false));
        assert!(!Placement::excluded(String::new()).wants_pod(true));
    }

    fn keys(tolerations: &[Toleration]) -> Vec<(String, String, Option<i64>)> {
        tolerations
            .iter()
            .map(|t| {
                (
                    text(&t.key).to_owned(),
                    text(&t.effect).to_owned(),
                    t.toleration_seconds,
                )
            })
            .collect()
    }

    #[test]
    fn daemon_tolerations_are_appended_in_upstream_order() {
        // util/daemonset_util.go AddOrUpdateDaemonPodTolerations adds these, in this order.
        let user = toleration("dedicated", "Exists", "", EFFECT_NO_SCHEDULE);
        let added = daemon_pod_tolerations(&with_tolerations(vec![user.clone()]));
        assert_eq!(added.first(), Some(&user));
        let want = [
            (TAINT_NODE_NOT_READY, EFFECT_NO_EXECUTE),
            (TAINT_NODE_UNREACHABLE, EFFECT_NO_EXECUTE),
            (TAINT_NODE_DISK_PRESSURE, EFFECT_NO_SCHEDULE),
            (TAINT_NODE_MEMORY_PRESSURE, EFFECT_NO_SCHEDULE),
            (TAINT_NODE_PID_PRESSURE, EFFECT_NO_SCHEDULE),
            (TAINT_NODE_UNSCHEDULABLE, EFFECT_NO_SCHEDULE),
        ];
        let tail: Vec<_> = want
            .iter()
            .map(|(k, e)| ((*k).to_owned(), (*e).to_owned(), None))
            .collect();
        assert_eq!(keys(&added[1..]), tail);
        assert!(
            added[1..]
                .iter()
                .all(|t| text(&t.operator) == "Exists" && t.value.is_none())
        );

        let host = PodSpec {
            host_network: Some(true),
            ..PodSpec::default()
        };
        let with_network = daemon_pod_tolerations(&host);
        assert_eq!(with_network.len(), 7);
        assert_eq!(
            with_network.last(),
            Some(&forever_exists(
                TAINT_NODE_NETWORK_UNAVAILABLE,
                EFFECT_NO_SCHEDULE
            ))
        );
    }

    #[test]
    fn a_bounded_default_toleration_is_replaced_in_place_by_the_unbounded_one() {
        // pkg/apis/core/v1/helper AddOrUpdateTolerationInPodSpec: a toleration matching
        // key/operator/value/effect but not semantically equal is replaced where it stands.
        let bounded = Toleration {
            toleration_seconds: Some(300),
            ..forever_exists(TAINT_NODE_NOT_READY, EFFECT_NO_EXECUTE)
        };
        let mine = toleration("dedicated", "Exists", "", "");
        let added = daemon_pod_tolerations(&with_tolerations(vec![bounded, mine.clone()]));
        assert_eq!(added.len(), 7);
        assert_eq!(
            added[0],
            forever_exists(TAINT_NODE_NOT_READY, EFFECT_NO_EXECUTE)
        );
        assert_eq!(added[1], mine);
    }

    #[test]
    fn an_equal_default_toleration_is_not_duplicated() {
        // AddOrUpdateTolerationInPodSpec returns early when an equal toleration is present;
        // an empty value and an absent value are the same Go string.
        let same = Toleration {
            value: Some(String::new()),
            ..forever_exists(TAINT_NODE_UNREACHABLE, EFFECT_NO_EXECUTE)
        };
        let added = daemon_pod_tolerations(&with_tolerations(vec![same.clone()]));
        assert_eq!(added.len(), 6);
        assert_eq!(added[0], same);
    }

    #[test]
    fn a_default_toleration_with_another_operator_is_kept_beside_the_added_one() {
        // MatchToleration compares the operator literally: Equal (or empty) is a different
        // toleration from Exists, so both remain.
        let equal = toleration(TAINT_NODE_NOT_READY, "Equal", "", EFFECT_NO_EXECUTE);
        let tolerate_all = toleration("", "Exists", "", "");
        let added =
            daemon_pod_tolerations(&with_tolerations(vec![equal.clone(), tolerate_all.clone()]));
        assert_eq!(added.len(), 8);
        assert_eq!(added[0], equal);
        assert_eq!(added[1], tolerate_all);
        assert_eq!(
            added[2],
            forever_exists(TAINT_NODE_NOT_READY, EFFECT_NO_EXECUTE)
        );
    }

    #[test]
    fn an_equal_duplicate_after_a_bounded_one_leaves_the_list_unchanged() {
        // AddOrUpdateTolerationInPodSpec returns false (no change at all) as soon as it meets a
        // semantically equal toleration, even after it began replacing an earlier one.
        let bounded = Toleration {
            toleration_seconds: Some(30),
            ..forever_exists(TAINT_NODE_NOT_READY, EFFECT_NO_EXECUTE)
        };
        let forever = forever_exists(TAINT_NODE_NOT_READY, EFFECT_NO_EXECUTE);
        let added =
            daemon_pod_tolerations(&with_tolerations(vec![bounded.clone(), forever.clone()]));
        assert_eq!(added[0], bounded);
        assert_eq!(added[1], forever);
        assert_eq!(added.len(), 7);
    }
}

#[cfg(test)]
mod example_node_tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Affinity, NodeAffinity};
    use serde::Deserialize;

    const CLUSTER_YAML: &str = include_str!("../../examples/nodes/cluster.yaml");
    const EXTRA_YAML: &str = include_str!("../../examples/nodes/extra.yaml");
    const GPU_NODE_JSON: &str = include_str!("../../examples/nodes/gpu-node.json");

    const CONTROL_PLANE: &str = "ip-10-0-32-17.ec2.internal";
    const SMALL_A: &str = "ip-10-0-45-101.ec2.internal";
    const SMALL_B: &str = "ip-10-0-77-58.ec2.internal";
    const ARM64: &str = "ip-10-0-96-200.ec2.internal";
    const NVIDIA_A100: &str = "ip-10-0-101-44.ec2.internal";
    const AMD_GPU: &str = "ip-10-0-118-9.ec2.internal";
    const LARGE_MEMORY: &str = "ip-10-0-64-212.ec2.internal";
    const KARPENTER_SPOT: &str = "ip-10-0-83-150.ec2.internal";
    const NOT_READY: &str = "ip-10-0-52-33.ec2.internal";
    const CORDONED: &str = "ip-10-0-71-140.ec2.internal";
    const GKE_SPOT: &str = "gke-ml-prod-spot-pool-5c1e2a7d-x8qv";
    const GKE_DEFAULT: &str = "gke-ml-prod-default-pool-8d3f0b21-k2mz";
    const NVIDIA_A100_80G: &str = "ip-10-0-102-87.ec2.internal";

    /// Every example node, read the way `kubectl apply -f` would accept each file: a `List`, a
    /// multi-document stream, and a single JSON object.
    fn example_nodes() -> Vec<Node> {
        let list: serde_yaml::Value = serde_yaml::from_str(CLUSTER_YAML).expect("cluster.yaml");
        assert_eq!(
            list.get("kind").and_then(|kind| kind.as_str()),
            Some("List")
        );
        let items = list
            .get("items")
            .and_then(|items| items.as_sequence())
            .expect("items");
        let mut nodes: Vec<Node> = items
            .iter()
            .map(|item| serde_yaml::from_value(item.clone()).expect("cluster.yaml item"))
            .collect();
        for document in serde_yaml::Deserializer::from_str(EXTRA_YAML) {
            nodes.push(Node::deserialize(document).expect("extra.yaml document"));
        }
        nodes.push(serde_json::from_str(GPU_NODE_JSON).expect("gpu-node.json"));
        nodes
    }

    fn name(node: &Node) -> &str {
        node.metadata.name.as_deref().unwrap_or_default()
    }

    fn label<'a>(node: &'a Node, key: &str) -> Option<&'a str> {
        node.metadata.labels.as_ref()?.get(key).map(String::as_str)
    }

    fn capacity<'a>(node: &'a Node, resource: &str) -> Option<&'a str> {
        let status = node.status.as_ref()?;
        status
            .capacity
            .as_ref()?
            .get(resource)
            .map(|quantity| quantity.0.as_str())
    }

    fn by_name<'a>(nodes: &'a [Node], wanted: &str) -> &'a Node {
        nodes
            .iter()
            .find(|node| name(node) == wanted)
            .expect("example node present")
    }

    /// Asserts `template`'s answers on every example node; nodes not listed must be excluded
    /// outright.
    fn assert_answers(template: &PodSpec, expected: &[(&str, (bool, bool))], others: (bool, bool)) {
        for node in example_nodes() {
            let want = expected
                .iter()
                .find(|(wanted, _)| *wanted == name(&node))
                .map_or(others, |e| e.1);
            let placement = node_should_run_daemon_pod(&node, template);
            assert_eq!(
                (placement.should_run, placement.should_continue_running),
                want,
                "{}: {:?}",
                name(&node),
                placement.reason
            );
        }
    }

    #[test]
    fn example_nodes_parse_as_kubernetes_nodes_with_their_distinguishing_features() {
        let nodes = example_nodes();
        let mut names: Vec<&str> = nodes.iter().map(name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), 13);
        for node in &nodes {
            assert_eq!(label(node, "kubernetes.io/hostname"), Some(name(node)));
            assert_eq!(label(node, "kubernetes.io/os"), Some("linux"));
            let info = node
                .status
                .as_ref()
                .and_then(|status| status.node_info.as_ref());
            assert!(info.is_some_and(|info| {
                info.container_runtime_version
                    .starts_with("containerd://1.7.")
            }));
        }

        let a100 = by_name(&nodes, NVIDIA_A100);
        assert_eq!(capacity(a100, "nvidia.com/gpu"), Some("8"));
        assert_eq!(
            label(a100, "nvidia.com/gpu.product"),
            Some("NVIDIA-A100-SXM4-40GB")
        );
        assert_eq!(
            label(a100, "feature.node.kubernetes.io/pci-10de.present"),
            Some("true")
        );
        assert_eq!(
            capacity(by_name(&nodes, NVIDIA_A100_80G), "nvidia.com/gpu"),
            Some("8")
        );
        assert_eq!(capacity(by_name(&nodes, AMD_GPU), "amd.com/gpu"), Some("4"));
        assert_eq!(
            label(by_name(&nodes, ARM64), "kubernetes.io/arch"),
            Some("arm64")
        );
        let memory = capacity(by_name(&nodes, LARGE_MEMORY), "memory")
            .and_then(|ki| ki.strip_suffix("Ki"))
            .and_then(|ki| ki.parse::<u64>().ok());
        assert!(
            memory.is_some_and(|ki| ki > 1024 * 1024 * 1024),
            "{memory:?}"
        );

        let not_ready = by_name(&nodes, NOT_READY);
        let ready = not_ready
            .status
            .as_ref()
            .and_then(|status| status.conditions.as_ref())
            .and_then(|conditions| conditions.iter().find(|c| c.type_ == "Ready"));
        assert_eq!(ready.map(|c| c.status.as_str()), Some("Unknown"));
        let cordoned = by_name(&nodes, CORDONED);
        assert_eq!(
            cordoned.spec.as_ref().and_then(|spec| spec.unschedulable),
            Some(true)
        );
    }

    #[test]
    fn a_template_without_tolerations_places_daemon_pods_as_upstream_on_the_example_nodes() {
        // Upstream answers for a bare template (daemon_controller.go NodeShouldRunDaemonPod):
        // - a custom or control-plane NoSchedule taint blocks new pods but keeps existing ones;
        // - the NotReady node carries unreachable:NoSchedule and unreachable:NoExecute; only the
        //   NoExecute form is tolerated automatically (util/daemonset_util.go), so an existing
        //   pod survives there but no new one is created until the node is reachable again;
        // - the cordoned node's unschedulable:NoSchedule is tolerated automatically.
        let keep_only = (false, true);
        let runs = (true, true);
        assert_answers(
            &PodSpec::default(),
            &[
                (CONTROL_PLANE, keep_only),
                (SMALL_A, runs),
                (SMALL_B, runs),
                (ARM64, runs),
                (NVIDIA_A100, keep_only),
                (AMD_GPU, runs),
                (LARGE_MEMORY, keep_only),
                (KARPENTER_SPOT, keep_only),
                (NOT_READY, keep_only),
                (CORDONED, runs),
                (GKE_SPOT, keep_only),
                (GKE_DEFAULT, runs),
                (NVIDIA_A100_80G, runs),
            ],
            (false, false),
        );
    }

    #[test]
    fn a_template_tolerating_every_taint_runs_on_every_example_node() {
        // Toleration.ToleratesTaint: an empty key with Exists tolerates every taint, including
        // unreachable:NoSchedule on the NotReady node.
        let everything = PodSpec {
            tolerations: Some(vec![Toleration {
                operator: Some("Exists".to_owned()),
                ..Toleration::default()
            }]),
            ..PodSpec::default()
        };
        assert_answers(&everything, &[], (true, true));
    }

    #[test]
    fn gpu_feature_discovery_labels_select_only_the_eight_gpu_nodes() {
        // nvidia.com/gpu.count Gt 4 compares integers (labels/selector.go Requirement.Matches);
        // the A100 node's nvidia.com/gpu=present:NoSchedule taint needs its own toleration.
        let template = PodSpec {
            affinity: Some(Affinity {
                node_affinity: Some(NodeAffinity {
                    required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                        node_selector_terms: vec![NodeSelectorTerm {
                            match_expressions: Some(vec![NodeSelectorRequirement {
                                key: "nvidia.com/gpu.count".to_owned(),
                                operator: "Gt".to_owned(),
                                values: Some(vec!["4".to_owned()]),
                            }]),
                            match_fields: None,
                        }],
                    }),
                    ..NodeAffinity::default()
                }),
                ..Affinity::default()
            }),
            tolerations: Some(vec![Toleration {
                key: Some("nvidia.com/gpu".to_owned()),
                operator: Some("Exists".to_owned()),
                effect: Some(EFFECT_NO_SCHEDULE.to_owned()),
                ..Toleration::default()
            }]),
            ..PodSpec::default()
        };
        assert_answers(
            &template,
            &[(NVIDIA_A100, (true, true)), (NVIDIA_A100_80G, (true, true))],
            (false, false),
        );
    }

    #[test]
    fn an_arch_node_selector_selects_only_the_arm64_node() {
        let template = PodSpec {
            node_selector: Some([("kubernetes.io/arch".to_owned(), "arm64".to_owned())].into()),
            ..PodSpec::default()
        };
        assert_answers(&template, &[(ARM64, (true, true))], (false, false));
    }

    #[test]
    fn match_fields_on_metadata_name_selects_only_that_example_node() {
        // util/daemonset_util.go ReplaceDaemonSetPodNodeNameNodeAffinity pins daemon pods this
        // way; nodeaffinity.go matches it against the node's name.
        let template = PodSpec {
            affinity: Some(Affinity {
                node_affinity: Some(NodeAffinity {
                    required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                        node_selector_terms: vec![NodeSelectorTerm {
                            match_expressions: None,
                            match_fields: Some(vec![NodeSelectorRequirement {
                                key: "metadata.name".to_owned(),
                                operator: "In".to_owned(),
                                values: Some(vec![CORDONED.to_owned()]),
                            }]),
                        }],
                    }),
                    ..NodeAffinity::default()
                }),
                ..Affinity::default()
            }),
            ..PodSpec::default()
        };
        assert_answers(&template, &[(CORDONED, (true, true))], (false, false));
    }
}
