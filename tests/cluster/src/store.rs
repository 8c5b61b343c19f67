//! The generic object store: one resourceVersion, bounded watch history, write semantics.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use serde_json::{Map, Value, json};
use tokio::sync::{broadcast, mpsc};

use crate::resources::{CRD_STORAGE, NAMESPACES, PODS, Registry, ResourceDef, View};
use crate::selectors::{FieldSelector, LabelSelector};
use crate::status::ApiError;

/// One stored object and its serialized form.
#[derive(Debug)]
pub(crate) struct Stored {
    pub value: Value,
    pub raw: Bytes,
}

impl Stored {
    fn new(value: Value) -> Self {
        let raw = Bytes::from(serde_json::to_vec(&value).unwrap_or_default());
        Self { value, raw }
    }

    fn meta(&self, field: &str) -> &str {
        self.value["metadata"][field].as_str().unwrap_or_default()
    }
}

/// (namespace, name); namespace is empty for cluster-scoped resources.
pub(crate) type Key = (String, String);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// A change, as kept in history and sent to watchers.
#[derive(Debug)]
pub(crate) struct Event {
    pub kind: EventType,
    pub storage: Arc<str>,
    pub rv: u64,
    pub object: Arc<Stored>,
    pub prev: Option<Arc<Stored>>,
}

impl Event {
    pub fn namespace(&self) -> &str {
        self.object.meta("namespace")
    }
}

/// Background work for the garbage collector and namespace controller.
#[derive(Debug)]
pub(crate) enum GcWork {
    /// The object with this uid is gone; its dependents must be collected.
    OwnerGone(String),
    /// The object with this uid carries an `orphan` or `foregroundDeletion` finalizer.
    Process(String),
    /// The namespace is terminating; delete its content and then the namespace.
    Namespace(String),
    /// The node is gone; force-delete the pods bound to it, as the pod garbage collector does.
    NodeGone(String),
}

/// Which part of an object a write addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sub {
    Main,
    Status,
}

/// Options of a delete request.
#[derive(Debug, Clone, Default)]
pub(crate) struct DeleteOpts {
    pub grace: Option<i64>,
    pub propagation: Option<String>,
    pub uid: Option<String>,
    pub resource_version: Option<String>,
}

/// The result of a list.
pub(crate) struct ListResult {
    pub items: Vec<Arc<Stored>>,
    pub rv: u64,
    pub cont: Option<String>,
}

/// What a new watch starts with.
pub(crate) struct WatchStart {
    pub initial: Vec<Arc<Event>>,
    pub rx: broadcast::Receiver<Arc<Event>>,
    pub rv: u64,
}

pub(crate) struct State {
    pub rv: u64,
    pub registry: Registry,
    objects: HashMap<String, BTreeMap<Key, Arc<Stored>>>,
    history: VecDeque<Arc<Event>>,
    /// A watch can resume from any resourceVersion >= this.
    pub history_start: u64,
    history_limit: usize,
    by_uid: HashMap<String, (String, Key)>,
    dependents: HashMap<String, BTreeSet<(String, Key)>>,
    /// Pods by `spec.nodeName`, for the field selector kubelets use and for pod GC.
    pods_by_node: HashMap<String, BTreeSet<Key>>,
    tx: broadcast::Sender<Arc<Event>>,
    gc: mpsc::UnboundedSender<GcWork>,
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

fn random_u64() -> u64 {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    RandomState::new().hash_one(n)
}

pub(crate) fn new_uid() -> String {
    let a = random_u64();
    let b = random_u64();
    let hex = format!("{a:016x}{b:016x}");
    format!(
        "{}-{}-4{}-a{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[13..16],
        &hex[17..20],
        &hex[20..32]
    )
}

fn random_suffix() -> String {
    const CHARS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut n = random_u64();
    (0..5)
        .map(|_| {
            let c = CHARS[(n % CHARS.len() as u64) as usize] as char;
            n /= CHARS.len() as u64;
            c
        })
        .collect()
}

pub(crate) fn now() -> String {
    format_time(Timestamp::now())
}

fn format_time(ts: Timestamp) -> String {
    ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn now_plus(seconds: i64) -> String {
    let ts = Timestamp::now()
        .checked_add(SignedDuration::from_secs(seconds))
        .unwrap_or_else(|_| Timestamp::now());
    format_time(ts)
}

fn valid_dns_subdomain(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
}

fn valid_dns_label(name: &str) -> bool {
    valid_dns_subdomain(name) && name.len() <= 63 && !name.contains('.')
}

/// Rejects objects whose well-known sections are not objects (they are indexed into later).
fn check_shape(value: &Value) -> Result<(), ApiError> {
    for field in ["metadata", "spec", "status"] {
        match value.get(field) {
            None | Some(Value::Null) | Some(Value::Object(_)) => {}
            Some(_) => {
                return Err(ApiError::bad_request(format!("{field} must be an object")));
            }
        }
    }
    let lists = [
        ("metadata", "finalizers"),
        ("metadata", "ownerReferences"),
        ("spec", "taints"),
    ];
    for (section, list) in lists {
        match &value[section][list] {
            Value::Null | Value::Array(_) => {}
            _ => {
                return Err(ApiError::bad_request(format!(
                    "{section}.{list} must be a list"
                )));
            }
        }
    }
    if value["metadata"]["finalizers"]
        .as_array()
        .is_some_and(|f| f.iter().any(|x| !x.is_string()))
    {
        return Err(ApiError::bad_request(
            "metadata.finalizers must be a list of strings",
        ));
    }
    let refs = value["metadata"]["ownerReferences"].as_array();
    if refs.is_some_and(|r| r.iter().any(|x| !x.is_object())) {
        return Err(ApiError::bad_request(
            "metadata.ownerReferences must be a list of objects",
        ));
    }
    if let Some(Value::Array(conds)) = value["status"].get("conditions")
        && conds.iter().any(|c| !c.is_object())
    {
        return Err(ApiError::bad_request(
            "status.conditions must be a list of objects",
        ));
    }
    if !matches!(value["status"]["conditions"], Value::Null | Value::Array(_)) {
        return Err(ApiError::bad_request("status.conditions must be a list"));
    }
    Ok(())
}

/// Checks `metadata.labels` the way kube-apiserver validation does (keys and values).
fn validate_labels(def: &ResourceDef, value: &Value) -> Result<(), ApiError> {
    let name = value["metadata"]["name"].as_str().unwrap_or_default();
    let labels = match &value["metadata"]["labels"] {
        Value::Null => return Ok(()),
        Value::Object(m) => m,
        _ => {
            return Err(ApiError::bad_request(
                "metadata.labels must be a map of strings",
            ));
        }
    };
    for (k, v) in labels {
        let Some(v) = v.as_str() else {
            return Err(ApiError::bad_request(
                "metadata.labels must be a map of strings",
            ));
        };
        if !crate::selectors::valid_label_key(k) || !crate::selectors::valid_label_value(v) {
            let msg = format!(
                "metadata.labels: Invalid value: \"{v}\": a valid label must be 63 characters \
                 or less and consist of alphanumeric characters, '-', '_' or '.'"
            );
            return Err(ApiError::invalid(&def.group, &def.kind, name, &msg));
        }
    }
    Ok(())
}

fn owner_uids(value: &Value) -> Vec<String> {
    value["metadata"]["ownerReferences"]
        .as_array()
        .map(|refs| {
            refs.iter()
                .filter_map(|r| r["uid"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn finalizers(value: &Value) -> Vec<String> {
    value["metadata"]["finalizers"]
        .as_array()
        .map(|f| {
            f.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn meta_mut(value: &mut Value) -> &mut Map<String, Value> {
    if !value["metadata"].is_object() {
        value["metadata"] = json!({});
    }
    match value.get_mut("metadata").and_then(Value::as_object_mut) {
        Some(m) => m,
        None => unreachable!("metadata was just made an object"),
    }
}

/// Converts an object from its stored form to the form served by `def`.
pub(crate) fn present_value(def: &ResourceDef, stored: &Value) -> Value {
    let mut v = stored.clone();
    if def.view == View::EventsV1 {
        events_core_to_v1(&mut v);
    }
    v["apiVersion"] = json!(def.api_version());
    v
}

/// The serialized form of an object as served by `def`.
pub(crate) fn present_raw(def: &ResourceDef, stored: &Stored) -> Bytes {
    let matches = def.view == View::Plain
        && stored.value["apiVersion"].as_str() == Some(def.api_version().as_str());
    if matches {
        stored.raw.clone()
    } else {
        Bytes::from(serde_json::to_vec(&present_value(def, &stored.value)).unwrap_or_default())
    }
}

const EVENT_FIELDS: &[(&str, &str)] = &[
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("reportingController", "reportingComponent"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
];

fn rename_fields(v: &mut Value, from_v1: bool) {
    let Some(map) = v.as_object_mut() else { return };
    for (v1, core) in EVENT_FIELDS {
        let (from, to) = if from_v1 { (v1, core) } else { (core, v1) };
        if let Some(x) = map.remove(*from) {
            map.insert(to.to_string(), x);
        }
    }
}

fn events_core_to_v1(v: &mut Value) {
    rename_fields(v, false);
    v["kind"] = json!("Event");
}

fn events_v1_to_core(v: &mut Value) {
    rename_fields(v, true);
    v["apiVersion"] = json!("v1");
}

fn pod_qos(spec: &Value) -> &'static str {
    let containers = spec["containers"].as_array().cloned().unwrap_or_default();
    let mut any = false;
    let mut guaranteed = !containers.is_empty();
    for c in &containers {
        let req = &c["resources"]["requests"];
        let lim = &c["resources"]["limits"];
        for r in ["cpu", "memory"] {
            if !req[r].is_null() || !lim[r].is_null() {
                any = true;
            }
            let request = if req[r].is_null() { &lim[r] } else { &req[r] };
            if lim[r].is_null() || request != &lim[r] {
                guaranteed = false;
            }
        }
    }
    match (any, guaranteed) {
        (false, _) => "BestEffort",
        (true, true) => "Guaranteed",
        (true, false) => "Burstable",
    }
}

fn default_pod(pod: &mut Value) {
    let spec = &mut pod["spec"];
    for (field, default) in [
        ("restartPolicy", json!("Always")),
        ("terminationGracePeriodSeconds", json!(30)),
        ("dnsPolicy", json!("ClusterFirst")),
        ("schedulerName", json!("default-scheduler")),
        ("securityContext", json!({})),
        ("priority", json!(0)),
        ("enableServiceLinks", json!(true)),
        ("preemptionPolicy", json!("PreemptLowerPriority")),
    ] {
        if spec[field].is_null() {
            spec[field] = default;
        }
    }
    for list in ["containers", "initContainers"] {
        for c in spec[list]
            .as_array_mut()
            .into_iter()
            .flatten()
            .filter(|c| c.is_object())
        {
            let image = c["image"].as_str().unwrap_or_default();
            let latest = !image.rsplit('/').next().unwrap_or_default().contains(':')
                || image.ends_with(":latest");
            for (field, default) in [
                ("terminationMessagePath", json!("/dev/termination-log")),
                ("terminationMessagePolicy", json!("File")),
                (
                    "imagePullPolicy",
                    json!(if latest { "Always" } else { "IfNotPresent" }),
                ),
                ("resources", json!({})),
            ] {
                if c[field].is_null() {
                    c[field] = default;
                }
            }
        }
    }
    if !spec["tolerations"].is_array() {
        spec["tolerations"] = json!([]);
    }
    if let Some(tols) = spec["tolerations"].as_array_mut() {
        for key in [
            "node.kubernetes.io/not-ready",
            "node.kubernetes.io/unreachable",
        ] {
            let present = tols
                .iter()
                .any(|t| t["key"] == key && (t["effect"].is_null() || t["effect"] == "NoExecute"));
            if !present {
                tols.push(json!({
                    "key": key,
                    "operator": "Exists",
                    "effect": "NoExecute",
                    "tolerationSeconds": 300
                }));
            }
        }
    }
}

fn validate_pod(pod: &Value, name: &str) -> Result<(), ApiError> {
    let invalid = |msg: &str| ApiError::invalid("", "Pod", name, msg);
    let containers = pod["spec"]["containers"].as_array();
    let Some(containers) = containers.filter(|c| !c.is_empty()) else {
        return Err(invalid("spec.containers: Required value"));
    };
    for (i, c) in containers.iter().enumerate() {
        let cname = c["name"].as_str().unwrap_or_default();
        if !valid_dns_label(cname) {
            return Err(invalid(&format!(
                "spec.containers[{i}].name: Invalid value: \"{cname}\""
            )));
        }
        if c["image"].as_str().unwrap_or_default().is_empty() {
            return Err(invalid(&format!(
                "spec.containers[{i}].image: Required value"
            )));
        }
    }
    Ok(())
}

/// The pod spec with the fields an update may change blanked out.
fn immutable_pod_spec(spec: &Value) -> Value {
    let mut s = spec.clone();
    if let Some(map) = s.as_object_mut() {
        for f in ["activeDeadlineSeconds", "tolerations", "schedulingGates"] {
            map.remove(f);
        }
    }
    for list in ["containers", "initContainers"] {
        for c in s[list]
            .as_array_mut()
            .into_iter()
            .flatten()
            .filter(|c| c.is_object())
        {
            c["image"] = Value::Null;
        }
    }
    s
}

fn validate_crd(crd: &Value, name: &str) -> Result<(), ApiError> {
    let invalid = |msg: &str| {
        ApiError::invalid(
            "apiextensions.k8s.io",
            "CustomResourceDefinition",
            name,
            msg,
        )
    };
    let spec = &crd["spec"];
    let group = spec["group"].as_str().unwrap_or_default();
    let plural = spec["names"]["plural"].as_str().unwrap_or_default();
    if group.is_empty() {
        return Err(invalid("spec.group: Required value"));
    }
    if plural.is_empty()
        || spec["names"]["kind"]
            .as_str()
            .unwrap_or_default()
            .is_empty()
    {
        return Err(invalid("spec.names: Required value"));
    }
    if name != format!("{plural}.{group}") {
        return Err(invalid(&format!(
            "metadata.name: Invalid value: \"{name}\": must be spec.names.plural+\".\"+spec.group"
        )));
    }
    if !matches!(spec["scope"].as_str(), Some("Namespaced" | "Cluster")) {
        return Err(invalid("spec.scope: Unsupported value"));
    }
    let versions = spec["versions"].as_array().cloned().unwrap_or_default();
    if versions.is_empty() {
        return Err(invalid(
            "spec.versions: Invalid value: must have exactly one version marked as storage version",
        ));
    }
    if versions
        .iter()
        .filter(|v| v["storage"].as_bool() == Some(true))
        .count()
        != 1
    {
        return Err(invalid(
            "spec.versions: Invalid value: must have exactly one version marked as storage version",
        ));
    }
    Ok(())
}

fn crd_status(crd: &Value, old: Option<&Value>) -> Value {
    let storage = crd["spec"]["versions"]
        .as_array()
        .and_then(|vs| vs.iter().find(|v| v["storage"].as_bool() == Some(true)))
        .and_then(|v| v["name"].as_str())
        .unwrap_or_default()
        .to_string();
    let mut stored: Vec<Value> = old
        .and_then(|o| o["status"]["storedVersions"].as_array().cloned())
        .unwrap_or_default();
    if !stored.iter().any(|v| v == &json!(storage)) {
        stored.push(json!(storage));
    }
    let time = old
        .and_then(|o| o["status"]["conditions"][0]["lastTransitionTime"].as_str())
        .map(str::to_string)
        .unwrap_or_else(now);
    let cond = |t: &str, reason: &str, msg: &str| {
        json!({
            "type": t,
            "status": "True",
            "lastTransitionTime": time,
            "reason": reason,
            "message": msg,
        })
    };
    json!({
        "conditions": [
            cond("NamesAccepted", "NoConflicts", "no conflicts found"),
            cond("Established", "InitialNamesAccepted", "the initial names have been accepted"),
        ],
        "acceptedNames": crd["spec"]["names"],
        "storedVersions": stored,
    })
}

/// The object with the fields that do not make up its "spec" removed, for generation tracking.
fn generation_view(value: &Value, has_status: bool) -> Value {
    let mut v = value.clone();
    if let Some(map) = v.as_object_mut() {
        map.remove("metadata");
        if has_status {
            map.remove("status");
        }
    }
    v
}

impl State {
    pub fn new(history_limit: usize, gc: mpsc::UnboundedSender<GcWork>) -> Self {
        let (tx, _) = broadcast::channel(16384);
        let mut state = Self {
            rv: 0,
            registry: Registry::new(),
            objects: HashMap::new(),
            history: VecDeque::new(),
            history_start: 0,
            history_limit: history_limit.max(16),
            by_uid: HashMap::new(),
            dependents: HashMap::new(),
            pods_by_node: HashMap::new(),
            tx,
            gc,
        };
        let ns_def = state.def("", "v1", "namespaces");
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
            if let Some(def) = &ns_def {
                let _ = state.create(def, "", body);
            }
        }
        state
    }

    fn def(&self, group: &str, version: &str, plural: &str) -> Option<Arc<ResourceDef>> {
        self.registry.get(group, version, plural)
    }

    /// Makes every resourceVersion seen so far too old to resume a watch from.
    pub fn compact(&mut self) {
        self.rv += 1;
        self.history.clear();
        self.history_start = self.rv;
    }

    pub fn get(&self, def: &ResourceDef, ns: &str, name: &str) -> Result<Arc<Stored>, ApiError> {
        self.objects
            .get(&def.storage)
            .and_then(|m| m.get(&(ns.to_string(), name.to_string())))
            .cloned()
            .ok_or_else(|| ApiError::not_found(&def.group, &def.plural, name))
    }

    fn lookup(&self, storage: &str, key: &Key) -> Option<Arc<Stored>> {
        self.objects.get(storage).and_then(|m| m.get(key)).cloned()
    }

    /// Stores `value` under a new resourceVersion and announces the change.
    fn put(&mut self, storage: &str, key: Key, mut value: Value, kind: EventType) -> Arc<Stored> {
        self.rv += 1;
        meta_mut(&mut value).insert("resourceVersion".into(), json!(self.rv.to_string()));
        let stored = Arc::new(Stored::new(value));
        let prev = self
            .objects
            .entry(storage.to_string())
            .or_default()
            .insert(key.clone(), stored.clone());
        self.reindex(storage, &key, prev.as_deref(), Some(&stored));
        self.announce(kind, storage, stored.clone(), prev);
        stored
    }

    /// Removes an object whose deletion completes with its final state `last`.
    fn finish_deletion(
        &mut self,
        storage: &str,
        key: Key,
        last: Value,
    ) -> Result<Arc<Stored>, ApiError> {
        // Store the final state first so the DELETED event carries it.
        let last = Arc::new(Stored::new(last));
        let prev = self
            .objects
            .entry(storage.to_string())
            .or_default()
            .insert(key.clone(), last.clone());
        self.reindex(storage, &key, prev.as_deref(), Some(&last));
        self.remove(storage, &key)
            .ok_or_else(|| ApiError::internal("object vanished"))
    }

    /// Removes an object and announces its deletion.
    fn remove(&mut self, storage: &str, key: &Key) -> Option<Arc<Stored>> {
        let prev = self.objects.get_mut(storage)?.remove(key)?;
        self.rv += 1;
        let mut value = prev.value.clone();
        meta_mut(&mut value).insert("resourceVersion".into(), json!(self.rv.to_string()));
        let stored = Arc::new(Stored::new(value));
        self.reindex(storage, key, Some(&prev), None);
        self.announce(EventType::Deleted, storage, stored.clone(), Some(prev));
        let uid = stored.meta("uid").to_string();
        let _ = self.gc.send(GcWork::OwnerGone(uid));
        for owner in owner_uids(&stored.value) {
            let _ = self.gc.send(GcWork::Process(owner));
        }
        if !key.0.is_empty() {
            let ns = self.lookup(NAMESPACES, &(String::new(), key.0.clone()));
            if ns.is_some_and(|n| !n.value["metadata"]["deletionTimestamp"].is_null()) {
                let _ = self.gc.send(GcWork::Namespace(key.0.clone()));
            }
        }
        if storage == CRD_STORAGE {
            self.drop_crd(&key.1);
        }
        if storage == crate::resources::NODES {
            let _ = self.gc.send(GcWork::NodeGone(key.1.clone()));
        }
        Some(stored)
    }

    fn drop_crd(&mut self, crd_name: &str) {
        self.registry.set_crd(crd_name, None);
        let storage = format!("crd:{crd_name}");
        let keys: Vec<Key> = self
            .objects
            .get(&storage)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        for key in keys {
            self.remove(&storage, &key);
        }
    }

    fn reindex(&mut self, storage: &str, key: &Key, old: Option<&Stored>, new: Option<&Stored>) {
        let entry = (storage.to_string(), key.clone());
        let old_owners = old.map(|o| owner_uids(&o.value)).unwrap_or_default();
        let new_owners = new.map(|n| owner_uids(&n.value)).unwrap_or_default();
        if old_owners != new_owners {
            for uid in &old_owners {
                if let Some(set) = self.dependents.get_mut(uid) {
                    set.remove(&entry);
                    if set.is_empty() {
                        self.dependents.remove(uid);
                    }
                }
            }
            for uid in new_owners {
                self.dependents
                    .entry(uid)
                    .or_default()
                    .insert(entry.clone());
            }
        }
        if storage == PODS {
            let node_of = |o: Option<&Stored>| {
                o.and_then(|o| o.value["spec"]["nodeName"].as_str())
                    .filter(|n| !n.is_empty())
                    .map(str::to_string)
            };
            let (before, after) = (node_of(old), node_of(new));
            if before != after {
                if let Some(n) = before
                    && let Some(set) = self.pods_by_node.get_mut(&n)
                {
                    set.remove(key);
                    if set.is_empty() {
                        self.pods_by_node.remove(&n);
                    }
                }
                if let Some(n) = after {
                    self.pods_by_node.entry(n).or_default().insert(key.clone());
                }
            }
        }
        match (old, new) {
            (Some(o), None) => {
                self.by_uid.remove(o.meta("uid"));
            }
            (None, Some(n)) => {
                self.by_uid.insert(n.meta("uid").to_string(), entry);
            }
            _ => {}
        }
    }

    fn announce(
        &mut self,
        kind: EventType,
        storage: &str,
        object: Arc<Stored>,
        prev: Option<Arc<Stored>>,
    ) {
        let event = Arc::new(Event {
            kind,
            storage: storage.into(),
            rv: self.rv,
            object,
            prev,
        });
        self.history.push_back(event.clone());
        while self.history.len() > self.history_limit {
            if let Some(old) = self.history.pop_front() {
                self.history_start = old.rv;
            }
        }
        let _ = self.tx.send(event);
    }

    fn namespace_admission(&self, def: &ResourceDef, ns: &str) -> Result<(), ApiError> {
        if !def.namespaced {
            return Ok(());
        }
        if ns.is_empty() {
            return Err(ApiError::bad_request(
                "the namespace of the object must be set",
            ));
        }
        let nsobj = self
            .lookup(NAMESPACES, &(String::new(), ns.to_string()))
            .ok_or_else(|| ApiError::not_found("", "namespaces", ns))?;
        if !nsobj.value["metadata"]["deletionTimestamp"].is_null() {
            return Err(ApiError::forbidden(format!(
                "{} \"{}\" is forbidden: unable to create new content in namespace {ns} because \
                 it is being terminated",
                def.plural,
                nsobj.meta("name")
            )));
        }
        Ok(())
    }

    /// Creates an object; `body` is in the form served by `def`.
    pub fn create(
        &mut self,
        def: &ResourceDef,
        ns: &str,
        mut body: Value,
    ) -> Result<Arc<Stored>, ApiError> {
        if !body.is_object() {
            return Err(ApiError::bad_request(
                "the request body must be a JSON object",
            ));
        }
        check_shape(&body)?;
        if let Some(kind) = body["kind"].as_str()
            && kind != def.kind
        {
            return Err(ApiError::bad_request(format!(
                "the kind of the object ({kind}) does not match the resource ({})",
                def.kind
            )));
        }
        if def.view == View::EventsV1 {
            events_v1_to_core(&mut body);
        } else {
            body["apiVersion"] = json!(def.api_version());
        }
        body["kind"] = json!(def.kind);
        let meta = meta_mut(&mut body);
        if def.namespaced {
            match meta.get("namespace").and_then(Value::as_str) {
                Some(body_ns) if !body_ns.is_empty() && body_ns != ns => {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent \
                         on the request",
                    ));
                }
                _ => {
                    meta.insert("namespace".into(), json!(ns));
                }
            }
        } else {
            meta.remove("namespace");
        }
        let mut name = meta
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let generate = meta
            .get("generateName")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        if name.is_empty() {
            if generate.is_empty() {
                return Err(ApiError::invalid(
                    &def.group,
                    &def.kind,
                    "",
                    "metadata.name: Required value: name or generateName is required",
                ));
            }
            loop {
                name = format!("{generate}{}", random_suffix());
                if self
                    .lookup(&def.storage, &(ns.to_string(), name.clone()))
                    .is_none()
                {
                    break;
                }
            }
        }
        let name_ok = if def.storage == NAMESPACES {
            valid_dns_label(&name)
        } else {
            valid_dns_subdomain(&name)
        };
        if !name_ok {
            return Err(ApiError::invalid(
                &def.group,
                &def.kind,
                &name,
                &format!(
                    "metadata.name: Invalid value: \"{name}\": a lowercase RFC 1123 subdomain \
                     must consist of lower case alphanumeric characters, '-' or '.', and must \
                     start and end with an alphanumeric character"
                ),
            ));
        }
        let meta = meta_mut(&mut body);
        meta.insert("name".into(), json!(name));
        meta.insert("uid".into(), json!(new_uid()));
        meta.insert("creationTimestamp".into(), json!(now()));
        for f in [
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "resourceVersion",
            "selfLink",
        ] {
            meta.remove(f);
        }
        if def.tracks_generation() {
            meta.insert("generation".into(), json!(1));
        } else {
            meta.remove("generation");
        }
        validate_labels(def, &body)?;
        self.namespace_admission(def, ns)?;
        let key = (
            if def.namespaced {
                ns.to_string()
            } else {
                String::new()
            },
            name.clone(),
        );
        if self.lookup(&def.storage, &key).is_some() {
            return Err(ApiError::already_exists(&def.group, &def.plural, &name));
        }
        match def.storage.as_str() {
            PODS => {
                validate_pod(&body, &name)?;
                default_pod(&mut body);
                let qos = pod_qos(&body["spec"]);
                body["status"] = json!({"phase": "Pending", "qosClass": qos});
            }
            NAMESPACES => {
                body["spec"] = json!({"finalizers": ["kubernetes"]});
                body["status"] = json!({"phase": "Active"});
                let labels = meta_mut(&mut body)
                    .entry("labels")
                    .or_insert_with(|| json!({}));
                labels["kubernetes.io/metadata.name"] = json!(name);
            }
            crate::resources::NODES => {
                if !body["spec"]["taints"].is_array() {
                    body["spec"]["taints"] = json!([]);
                }
                if let Some(taints) = body["spec"]["taints"].as_array_mut()
                    && !taints.iter().any(|t| {
                        t["key"] == "node.kubernetes.io/not-ready" && t["effect"] == "NoSchedule"
                    })
                {
                    taints.push(
                        json!({"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"}),
                    );
                }
            }
            CRD_STORAGE => {
                validate_crd(&body, &name)?;
                body["status"] = crd_status(&body, None);
            }
            _ if def.custom && def.status => {
                if let Some(m) = body.as_object_mut() {
                    m.remove("status");
                }
            }
            _ => {}
        }
        let stored = self.put(&def.storage, key, body, EventType::Added);
        if def.storage == CRD_STORAGE {
            self.registry.set_crd(&name, Some(&stored.value));
        }
        Ok(stored)
    }

    /// Replaces an object with `new`, computed by the caller from the current object.
    pub fn update(
        &mut self,
        def: &ResourceDef,
        ns: &str,
        name: &str,
        sub: Sub,
        mut new: Value,
    ) -> Result<Arc<Stored>, ApiError> {
        let key = (
            if def.namespaced {
                ns.to_string()
            } else {
                String::new()
            },
            name.to_string(),
        );
        let old = self.get(def, &key.0, name)?;
        if !new.is_object() {
            return Err(ApiError::bad_request(
                "the request body must be a JSON object",
            ));
        }
        check_shape(&new)?;
        if def.view == View::EventsV1 {
            events_v1_to_core(&mut new);
        } else {
            new["apiVersion"] = old.value["apiVersion"].clone();
        }
        new["kind"] = json!(def.kind);
        let body_name = new["metadata"]["name"].as_str().unwrap_or_default();
        if !body_name.is_empty() && body_name != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        if let Some(rv) = new["metadata"]["resourceVersion"].as_str()
            && !rv.is_empty()
            && rv != old.meta("resourceVersion")
        {
            if rv.parse::<u64>().is_err() {
                return Err(ApiError::bad_request(format!(
                    "invalid resource version: {rv}"
                )));
            }
            return Err(ApiError::conflict(&def.group, &def.plural, name));
        }
        let mut next = if sub == Sub::Status {
            let mut v = old.value.clone();
            if let Some(mf) = new["metadata"]
                .get("managedFields")
                .filter(|m| m.is_array())
            {
                meta_mut(&mut v).insert("managedFields".into(), mf.clone());
            }
            match new.get("status") {
                Some(s) if !s.is_null() => v["status"] = s.clone(),
                _ => {
                    if let Some(m) = v.as_object_mut() {
                        m.remove("status");
                    }
                }
            }
            v
        } else {
            let mut v = new;
            if def.status {
                match old.value.get("status") {
                    Some(s) => v["status"] = s.clone(),
                    None => {
                        if let Some(m) = v.as_object_mut() {
                            m.remove("status");
                        }
                    }
                }
            }
            let old_meta = &old.value["metadata"];
            let meta = meta_mut(&mut v);
            for f in [
                "name",
                "namespace",
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
            ] {
                match old_meta.get(f) {
                    Some(x) => meta.insert(f.into(), x.clone()),
                    None => meta.remove(f),
                };
            }
            if meta.get("managedFields").is_none_or(Value::is_null)
                && let Some(mf) = old_meta.get("managedFields")
            {
                meta.insert("managedFields".into(), mf.clone());
            }
            v
        };
        check_shape(&next)?;
        validate_labels(def, &next)?;
        if !old.value["metadata"]["deletionTimestamp"].is_null() {
            let before = finalizers(&old.value);
            if finalizers(&next).iter().any(|f| !before.contains(f)) {
                return Err(ApiError::invalid(
                    &def.group,
                    &def.kind,
                    name,
                    "metadata.finalizers: Forbidden: no new finalizers can be added if the \
                     object is being deleted",
                ));
            }
        }
        if def.storage == PODS && sub == Sub::Main {
            validate_pod(&next, name)?;
            if immutable_pod_spec(&old.value["spec"]) != immutable_pod_spec(&next["spec"]) {
                return Err(ApiError::invalid(
                    "",
                    "Pod",
                    name,
                    "spec: Forbidden: pod updates may not change fields other than \
                     `spec.containers[*].image`, `spec.initContainers[*].image`, \
                     `spec.activeDeadlineSeconds`, `spec.tolerations` (only additions to \
                     existing tolerations) or `spec.terminationGracePeriodSeconds`",
                ));
            }
        }
        if def.storage == CRD_STORAGE {
            validate_crd(&next, name)?;
            next["status"] = crd_status(&next, Some(&old.value));
        }
        if def.tracks_generation()
            && generation_view(&old.value, def.status) != generation_view(&next, def.status)
        {
            let generation = old.value["metadata"]["generation"].as_i64().unwrap_or(0) + 1;
            meta_mut(&mut next).insert("generation".into(), json!(generation));
        }
        meta_mut(&mut next).insert(
            "resourceVersion".into(),
            old.value["metadata"]["resourceVersion"].clone(),
        );
        if next == old.value {
            return Ok(old);
        }
        let deleting = !next["metadata"]["deletionTimestamp"].is_null();
        let grace = next["metadata"]["deletionGracePeriodSeconds"]
            .as_i64()
            .unwrap_or(0);
        if deleting && finalizers(&next).is_empty() && grace == 0 {
            return self.finish_deletion(&def.storage, key, next);
        }
        let stored = self.put(&def.storage, key, next, EventType::Modified);
        if def.storage == CRD_STORAGE {
            self.registry.set_crd(name, Some(&stored.value));
        }
        Ok(stored)
    }

    /// Sets `spec.nodeName` through the `binding` subresource.
    pub fn bind(
        &mut self,
        def: &ResourceDef,
        ns: &str,
        name: &str,
        node: &str,
    ) -> Result<(), ApiError> {
        let old = self.get(def, ns, name)?;
        if !old.value["metadata"]["deletionTimestamp"].is_null() {
            return Err(ApiError::conflict_msg(
                "",
                "pods",
                name,
                "pod is being deleted, cannot be assigned to a host",
            ));
        }
        if let Some(current) = old.value["spec"]["nodeName"]
            .as_str()
            .filter(|n| !n.is_empty())
        {
            return Err(ApiError::conflict_msg(
                "",
                "pods",
                name,
                &format!("pod {name} is already assigned to node \"{current}\""),
            ));
        }
        if node.is_empty() {
            return Err(ApiError::invalid(
                "",
                "Binding",
                name,
                "target.name: Required value",
            ));
        }
        let mut next = old.value.clone();
        next["spec"]["nodeName"] = json!(node);
        let cond = json!({
            "type": "PodScheduled",
            "status": "True",
            "lastProbeTime": null,
            "lastTransitionTime": now(),
        });
        if !next["status"]["conditions"].is_array() {
            next["status"]["conditions"] = json!([]);
        }
        if let Some(conds) = next["status"]["conditions"].as_array_mut() {
            conds.retain(|c| c["type"] != "PodScheduled");
            conds.push(cond);
        }
        self.put(
            &def.storage,
            (ns.to_string(), name.to_string()),
            next,
            EventType::Modified,
        );
        Ok(())
    }

    /// Deletes an object following kube-apiserver's graceful deletion and finalizer rules.
    pub fn delete(
        &mut self,
        def: &ResourceDef,
        ns: &str,
        name: &str,
        opts: &DeleteOpts,
    ) -> Result<Arc<Stored>, ApiError> {
        let key = (
            if def.namespaced {
                ns.to_string()
            } else {
                String::new()
            },
            name.to_string(),
        );
        let old = self.get(def, &key.0, name)?;
        if let Some(uid) = &opts.uid
            && uid != old.meta("uid")
        {
            return Err(ApiError::conflict_msg(
                &def.group,
                &def.plural,
                name,
                &format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    old.meta("uid")
                ),
            ));
        }
        if let Some(rv) = &opts.resource_version
            && rv != old.meta("resourceVersion")
        {
            return Err(ApiError::conflict_msg(
                &def.group,
                &def.plural,
                name,
                &format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, \
                     ResourceVersion in object meta: {}",
                    old.meta("resourceVersion")
                ),
            ));
        }
        let mut next = old.value.clone();
        let deleting = !old.value["metadata"]["deletionTimestamp"].is_null();
        if def.storage == NAMESPACES {
            if !deleting {
                meta_mut(&mut next).insert("deletionTimestamp".into(), json!(now()));
                meta_mut(&mut next).insert("deletionGracePeriodSeconds".into(), json!(0));
                next["status"]["phase"] = json!("Terminating");
                let stored = self.put(&def.storage, key, next, EventType::Modified);
                let _ = self.gc.send(GcWork::Namespace(name.to_string()));
                return Ok(stored);
            }
            return Ok(old);
        }
        let mut grace = 0;
        if def.storage == PODS {
            let scheduled = old.value["spec"]["nodeName"]
                .as_str()
                .is_some_and(|n| !n.is_empty());
            let terminal = matches!(
                old.value["status"]["phase"].as_str(),
                Some("Succeeded" | "Failed")
            );
            grace = opts
                .grace
                .or(old.value["spec"]["terminationGracePeriodSeconds"].as_i64())
                .unwrap_or(30)
                .max(0);
            if !scheduled || terminal {
                grace = 0;
            }
        }
        let policy_finalizer = match opts.propagation.as_deref() {
            Some("Orphan") => Some("orphan"),
            Some("Foreground") => Some("foregroundDeletion"),
            Some("Background") | None => None,
            Some(other) => {
                return Err(ApiError::invalid(
                    &def.group,
                    &def.kind,
                    name,
                    &format!(
                        "propagationPolicy: Unsupported value: \"{other}\": supported values: \
                         \"Foreground\", \"Background\", \"Orphan\""
                    ),
                ));
            }
        };
        if deleting {
            let current = old.value["metadata"]["deletionGracePeriodSeconds"]
                .as_i64()
                .unwrap_or(0);
            if def.storage == PODS && grace < current {
                meta_mut(&mut next).insert("deletionGracePeriodSeconds".into(), json!(grace));
                meta_mut(&mut next).insert("deletionTimestamp".into(), json!(now_plus(grace)));
                if grace == 0 && finalizers(&next).is_empty() {
                    return self.finish_deletion(&def.storage, key, next);
                }
                return Ok(self.put(&def.storage, key, next, EventType::Modified));
            }
            return Ok(old);
        }
        let mut fins = finalizers(&next);
        if let Some(f) = policy_finalizer
            && !fins.iter().any(|x| x == f)
        {
            fins.push(f.to_string());
            meta_mut(&mut next).insert("finalizers".into(), json!(fins));
        }
        if grace > 0 || !fins.is_empty() {
            meta_mut(&mut next).insert("deletionTimestamp".into(), json!(now_plus(grace)));
            meta_mut(&mut next).insert("deletionGracePeriodSeconds".into(), json!(grace));
            let stored = self.put(&def.storage, key, next, EventType::Modified);
            if policy_finalizer.is_some() {
                let _ = self
                    .gc
                    .send(GcWork::Process(stored.meta("uid").to_string()));
            }
            return Ok(stored);
        }
        self.remove(&def.storage, &key)
            .ok_or_else(|| ApiError::internal("object vanished"))
    }

    /// Lists objects in key order, starting after the continue token.
    pub fn list(
        &self,
        def: &ResourceDef,
        ns: &str,
        labels: &LabelSelector,
        fields: &FieldSelector,
        limit: Option<usize>,
        cont: Option<&str>,
    ) -> Result<ListResult, ApiError> {
        let empty = BTreeMap::new();
        let map = self.objects.get(&def.storage).unwrap_or(&empty);
        let start: Key = match cont {
            Some(token) => decode_continue(token)?,
            None => (ns.to_string(), String::new()),
        };
        let mut items = Vec::new();
        let mut last = None;
        let mut more = false;
        let node = fields
            .exact("spec.nodeName")
            .filter(|n| !n.is_empty() && def.storage == PODS);
        let range: Box<dyn Iterator<Item = (&Key, &Arc<Stored>)>> = match node {
            Some(node) => {
                let from = start.clone();
                Box::new(
                    self.pods_by_node
                        .get(node)
                        .into_iter()
                        .flat_map(move |set| set.range(from.clone()..))
                        .filter_map(|k| map.get_key_value(k)),
                )
            }
            None => Box::new(map.range(start.clone()..)),
        };
        for (key, obj) in range {
            if cont.is_some() && *key == start {
                continue;
            }
            if def.namespaced && !ns.is_empty() && key.0 != ns {
                break;
            }
            if (!labels.is_empty() && !labels.matches(&obj.value))
                || (!fields.is_empty() && !fields.matches(&obj.value))
            {
                continue;
            }
            if limit.is_some_and(|l| items.len() >= l) {
                more = true;
                break;
            }
            last = Some(key.clone());
            items.push(obj.clone());
        }
        let cont = if more {
            last.map(|k| encode_continue(&k))
        } else {
            None
        };
        Ok(ListResult {
            items,
            rv: self.rv,
            cont,
        })
    }

    /// Starts a watch: the events to replay and a receiver for what follows.
    pub fn watch(
        &self,
        def: &ResourceDef,
        ns: &str,
        from: Option<u64>,
    ) -> Result<WatchStart, ApiError> {
        let rx = self.tx.subscribe();
        let initial = match from {
            None | Some(0) => {
                let map = self.objects.get(&def.storage);
                map.into_iter()
                    .flat_map(|m| m.values())
                    .filter(|o| !def.namespaced || ns.is_empty() || o.meta("namespace") == ns)
                    .map(|o| {
                        Arc::new(Event {
                            kind: EventType::Added,
                            storage: def.storage.as_str().into(),
                            rv: self.rv,
                            object: o.clone(),
                            prev: None,
                        })
                    })
                    .collect()
            }
            Some(rv) => {
                if rv < self.history_start || rv > self.rv {
                    return Err(ApiError::expired(format!(
                        "too old resource version: {rv} ({})",
                        self.history_start
                    )));
                }
                let first = self.history.partition_point(|e| e.rv <= rv);
                self.history
                    .range(first..)
                    .filter(|e| &*e.storage == def.storage.as_str())
                    .filter(|e| !def.namespaced || ns.is_empty() || e.namespace() == ns)
                    .cloned()
                    .collect()
            }
        };
        Ok(WatchStart {
            initial,
            rx,
            rv: self.rv,
        })
    }

    // ---- garbage collection ----

    fn def_for_storage(&self, storage: &str) -> Option<Arc<ResourceDef>> {
        self.registry.by_storage(storage)
    }

    /// Handles one unit of garbage collector work; returns follow-up work.
    pub fn collect(&mut self, work: GcWork) {
        match work {
            GcWork::OwnerGone(uid) => {
                let deps: Vec<(String, Key)> = self
                    .dependents
                    .get(&uid)
                    .map(|s| s.iter().cloned().collect())
                    .unwrap_or_default();
                for (storage, key) in deps {
                    let Some(obj) = self.lookup(&storage, &key) else {
                        continue;
                    };
                    let Some(def) = self.def_for_storage(&storage) else {
                        continue;
                    };
                    let others_alive = owner_uids(&obj.value)
                        .iter()
                        .any(|o| *o != uid && self.by_uid.contains_key(o));
                    if others_alive {
                        let _ = self.update(
                            &def,
                            &key.0,
                            &key.1,
                            Sub::Main,
                            without_owner(&obj.value, &uid),
                        );
                    } else {
                        let _ = self.delete(&def, &key.0, &key.1, &DeleteOpts::default());
                    }
                }
            }
            GcWork::Process(uid) => {
                let Some((storage, key)) = self.by_uid.get(&uid).cloned() else {
                    return;
                };
                let Some(obj) = self.lookup(&storage, &key) else {
                    return;
                };
                let Some(def) = self.def_for_storage(&storage) else {
                    return;
                };
                if obj.value["metadata"]["deletionTimestamp"].is_null() {
                    return;
                }
                let fins = finalizers(&obj.value);
                let deps: Vec<(String, Key)> = self
                    .dependents
                    .get(&uid)
                    .map(|s| s.iter().cloned().collect())
                    .unwrap_or_default();
                if fins.iter().any(|f| f == "orphan") {
                    for (dstorage, dkey) in &deps {
                        let (Some(dep), Some(ddef)) =
                            (self.lookup(dstorage, dkey), self.def_for_storage(dstorage))
                        else {
                            continue;
                        };
                        let _ = self.update(
                            &ddef,
                            &dkey.0,
                            &dkey.1,
                            Sub::Main,
                            without_owner(&dep.value, &uid),
                        );
                    }
                    self.drop_finalizer(&def, &key, "orphan");
                } else if fins.iter().any(|f| f == "foregroundDeletion") {
                    let mut blocking = false;
                    for (dstorage, dkey) in &deps {
                        let (Some(dep), Some(ddef)) =
                            (self.lookup(dstorage, dkey), self.def_for_storage(dstorage))
                        else {
                            continue;
                        };
                        if dep.value["metadata"]["deletionTimestamp"].is_null() {
                            let _ = self.delete(&ddef, &dkey.0, &dkey.1, &DeleteOpts::default());
                        }
                        let still_there = self.lookup(dstorage, dkey).is_some();
                        let blocks = dep.value["metadata"]["ownerReferences"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .any(|r| r["uid"] == uid.as_str() && r["blockOwnerDeletion"] == true);
                        blocking |= still_there && blocks;
                    }
                    if !blocking {
                        self.drop_finalizer(&def, &key, "foregroundDeletion");
                    }
                }
            }
            GcWork::NodeGone(node) => {
                let Some(def) = self.def_for_storage(PODS) else {
                    return;
                };
                let bound: Vec<Key> = self
                    .pods_by_node
                    .get(&node)
                    .map(|set| set.iter().cloned().collect())
                    .unwrap_or_default();
                let force = DeleteOpts {
                    grace: Some(0),
                    ..DeleteOpts::default()
                };
                for (ns, name) in bound {
                    let _ = self.delete(&def, &ns, &name, &force);
                }
            }
            GcWork::Namespace(ns) => {
                let key = (String::new(), ns.clone());
                let Some(nsobj) = self.lookup(NAMESPACES, &key) else {
                    return;
                };
                if nsobj.value["metadata"]["deletionTimestamp"].is_null() {
                    return;
                }
                let mut remaining = 0;
                let storages: Vec<String> = self.objects.keys().cloned().collect();
                for storage in storages {
                    let Some(def) = self.def_for_storage(&storage) else {
                        continue;
                    };
                    if !def.namespaced {
                        continue;
                    }
                    let keys: Vec<Key> = self.objects[&storage]
                        .range((ns.clone(), String::new())..)
                        .take_while(|(k, _)| k.0 == ns)
                        .map(|(k, _)| k.clone())
                        .collect();
                    for k in keys {
                        let obj = self.lookup(&storage, &k);
                        if obj.is_some_and(|o| o.value["metadata"]["deletionTimestamp"].is_null()) {
                            let _ = self.delete(&def, &k.0, &k.1, &DeleteOpts::default());
                        }
                        if self.lookup(&storage, &k).is_some() {
                            remaining += 1;
                        }
                    }
                }
                if remaining == 0 {
                    self.remove(NAMESPACES, &key);
                }
            }
        }
    }

    fn drop_finalizer(&mut self, def: &ResourceDef, key: &Key, finalizer: &str) {
        let Some(obj) = self.lookup(&def.storage, key) else {
            return;
        };
        let mut next = obj.value.clone();
        let fins: Vec<String> = finalizers(&next)
            .into_iter()
            .filter(|f| f != finalizer)
            .collect();
        meta_mut(&mut next).insert("finalizers".into(), json!(fins));
        let _ = self.update(def, &key.0, &key.1, Sub::Main, next);
    }
}

fn without_owner(value: &Value, uid: &str) -> Value {
    let mut next = value.clone();
    if let Some(refs) = next["metadata"]["ownerReferences"].as_array_mut() {
        refs.retain(|r| r["uid"] != uid);
        if refs.is_empty()
            && let Some(m) = next["metadata"].as_object_mut()
        {
            m.remove("ownerReferences");
        }
    }
    next
}

fn encode_continue(key: &Key) -> String {
    hex::encode(format!("{}\u{0}{}", key.0, key.1))
}

fn decode_continue(token: &str) -> Result<Key, ApiError> {
    let bad = || ApiError::bad_request(format!("continue key is not valid: {token}"));
    let bytes = hex::decode(token).map_err(|_| bad())?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    let (ns, name) = text.split_once('\u{0}').ok_or_else(bad)?;
    Ok((ns.to_string(), name.to_string()))
}
