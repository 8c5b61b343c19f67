//! The resource types the test API server serves, and the discovery documents describing them.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Value, json};

/// How objects of a resource are presented relative to how they are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum View {
    /// Stored as served.
    Plain,
    /// `events.k8s.io/v1` events, stored as `core/v1` events.
    EventsV1,
}

/// One resource served at one group/version.
#[derive(Debug, Clone)]
pub(crate) struct ResourceDef {
    pub group: String,
    pub version: String,
    pub plural: String,
    pub singular: String,
    pub kind: String,
    pub namespaced: bool,
    pub status: bool,
    pub binding: bool,
    pub short_names: Vec<String>,
    /// Storage key shared by every version and view of the same resource.
    pub storage: String,
    pub view: View,
    /// Defined by a CustomResourceDefinition.
    pub custom: bool,
    /// Supports strategic merge patch (built-in types only).
    pub strategic: bool,
}

impl ResourceDef {
    fn builtin(group: &str, version: &str, plural: &str, kind: &str, namespaced: bool) -> Self {
        Self {
            group: group.into(),
            version: version.into(),
            plural: plural.into(),
            singular: kind.to_lowercase(),
            kind: kind.into(),
            namespaced,
            status: false,
            binding: false,
            short_names: Vec::new(),
            storage: format!("{group}/{plural}"),
            view: View::Plain,
            custom: false,
            strategic: true,
        }
    }

    fn with_status(mut self) -> Self {
        self.status = true;
        self
    }

    fn short(mut self, names: &[&str]) -> Self {
        self.short_names = names.iter().map(|s| s.to_string()).collect();
        self
    }

    /// `apiVersion` of objects served through this definition.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// Whether the object's metadata.generation is maintained.
    pub fn tracks_generation(&self) -> bool {
        self.custom || self.storage == "apiextensions.k8s.io/customresourcedefinitions"
    }

    fn discovery_entries(&self) -> Vec<Value> {
        let verbs = json!([
            "create",
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "update",
            "watch"
        ]);
        let mut out = vec![json!({
            "name": self.plural,
            "singularName": self.singular,
            "namespaced": self.namespaced,
            "kind": self.kind,
            "verbs": verbs,
            "shortNames": self.short_names,
        })];
        if self.status {
            out.push(json!({
                "name": format!("{}/status", self.plural),
                "singularName": "",
                "namespaced": self.namespaced,
                "kind": self.kind,
                "verbs": ["get", "patch", "update"],
            }));
        }
        if self.binding {
            out.push(json!({
                "name": format!("{}/binding", self.plural),
                "singularName": "",
                "namespaced": self.namespaced,
                "kind": "Binding",
                "verbs": ["create"],
            }));
        }
        out
    }
}

/// All resources currently served: the built-in ones plus those defined by CRDs.
#[derive(Debug, Clone)]
pub(crate) struct Registry {
    /// (group, version, plural) -> definition.
    defs: BTreeMap<(String, String, String), Arc<ResourceDef>>,
}

pub(crate) const CRD_STORAGE: &str = "apiextensions.k8s.io/customresourcedefinitions";
pub(crate) const NAMESPACES: &str = "/namespaces";
pub(crate) const PODS: &str = "/pods";
pub(crate) const NODES: &str = "/nodes";

impl Registry {
    pub fn new() -> Self {
        let mut events_v1 = ResourceDef::builtin("events.k8s.io", "v1", "events", "Event", true);
        events_v1.storage = "/events".into();
        events_v1.view = View::EventsV1;
        events_v1.short_names = vec!["ev".into()];
        let mut pods = ResourceDef::builtin("", "v1", "pods", "Pod", true)
            .with_status()
            .short(&["po"]);
        pods.binding = true;
        let crd = ResourceDef::builtin(
            "apiextensions.k8s.io",
            "v1",
            "customresourcedefinitions",
            "CustomResourceDefinition",
            false,
        )
        .with_status()
        .short(&["crd", "crds"]);
        let all = [
            ResourceDef::builtin("", "v1", "namespaces", "Namespace", false)
                .with_status()
                .short(&["ns"]),
            ResourceDef::builtin("", "v1", "nodes", "Node", false)
                .with_status()
                .short(&["no"]),
            pods,
            ResourceDef::builtin("", "v1", "events", "Event", true).short(&["ev"]),
            ResourceDef::builtin("", "v1", "configmaps", "ConfigMap", true).short(&["cm"]),
            events_v1,
            ResourceDef::builtin("coordination.k8s.io", "v1", "leases", "Lease", true),
            ResourceDef::builtin(
                "apps",
                "v1",
                "controllerrevisions",
                "ControllerRevision",
                true,
            ),
            crd,
        ];
        let mut defs = BTreeMap::new();
        for def in all {
            defs.insert(
                (def.group.clone(), def.version.clone(), def.plural.clone()),
                Arc::new(def),
            );
        }
        Self { defs }
    }

    pub fn get(&self, group: &str, version: &str, plural: &str) -> Option<Arc<ResourceDef>> {
        self.defs
            .get(&(group.to_string(), version.to_string(), plural.to_string()))
            .cloned()
    }

    /// The primary (plainly viewed) definition for a storage key.
    pub fn by_storage(&self, storage: &str) -> Option<Arc<ResourceDef>> {
        self.defs
            .values()
            .find(|d| d.storage == storage && d.view == View::Plain)
            .cloned()
    }

    /// Replaces the resources defined by the CRD `crd_name` with those in `crd`.
    pub fn set_crd(&mut self, crd_name: &str, crd: Option<&Value>) {
        let storage_prefix = format!("crd:{crd_name}");
        self.defs.retain(|_, d| d.storage != storage_prefix);
        let Some(crd) = crd else { return };
        let spec = &crd["spec"];
        let group = spec["group"].as_str().unwrap_or_default();
        let names = &spec["names"];
        let plural = names["plural"].as_str().unwrap_or_default();
        let kind = names["kind"].as_str().unwrap_or_default();
        let singular = names["singular"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| kind.to_lowercase());
        let short_names: Vec<String> = names["shortNames"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let namespaced = spec["scope"].as_str() != Some("Cluster");
        for version in spec["versions"].as_array().into_iter().flatten() {
            if version["served"].as_bool() == Some(false) {
                continue;
            }
            let Some(name) = version["name"].as_str() else {
                continue;
            };
            let def = ResourceDef {
                group: group.into(),
                version: name.into(),
                plural: plural.into(),
                singular: singular.clone(),
                kind: kind.into(),
                namespaced,
                status: version["subresources"]["status"].is_object(),
                binding: false,
                short_names: short_names.clone(),
                storage: storage_prefix.clone(),
                view: View::Plain,
                custom: true,
                strategic: false,
            };
            self.defs
                .insert((group.into(), name.into(), plural.into()), Arc::new(def));
        }
    }

    /// Every served group (other than core) with its versions, in a stable order.
    fn groups(&self) -> BTreeMap<String, Vec<String>> {
        let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for def in self.defs.values().filter(|d| !d.group.is_empty()) {
            let versions = groups.entry(def.group.clone()).or_default();
            if !versions.contains(&def.version) {
                versions.push(def.version.clone());
            }
        }
        for versions in groups.values_mut() {
            versions.sort_by_key(|v| std::cmp::Reverse(version_priority(v)));
        }
        groups
    }

    fn group_doc(group: &str, versions: &[String]) -> Value {
        let entries: Vec<Value> = versions
            .iter()
            .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
            .collect();
        json!({
            "name": group,
            "versions": entries,
            "preferredVersion": entries.first().cloned().unwrap_or(Value::Null),
        })
    }

    /// `GET /apis`.
    pub fn api_group_list(&self) -> Value {
        let groups: Vec<Value> = self
            .groups()
            .iter()
            .map(|(g, vs)| Self::group_doc(g, vs))
            .collect();
        json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
    }

    /// `GET /apis/<group>`.
    pub fn api_group(&self, group: &str) -> Option<Value> {
        let groups = self.groups();
        let versions = groups.get(group)?;
        let mut doc = Self::group_doc(group, versions);
        doc["kind"] = json!("APIGroup");
        doc["apiVersion"] = json!("v1");
        Some(doc)
    }

    /// `GET /api/v1` or `GET /apis/<group>/<version>`.
    pub fn resource_list(&self, group: &str, version: &str) -> Option<Value> {
        let resources: Vec<Value> = self
            .defs
            .values()
            .filter(|d| d.group == group && d.version == version)
            .flat_map(|d| d.discovery_entries())
            .collect();
        if resources.is_empty() {
            return None;
        }
        let gv = if group.is_empty() {
            version.to_string()
        } else {
            format!("{group}/{version}")
        };
        Some(json!({
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": gv,
            "resources": resources,
        }))
    }
}

/// Orders Kubernetes version strings: GA > beta > alpha, then by numbers.
fn version_priority(v: &str) -> (u8, u32, u32) {
    let Some(rest) = v.strip_prefix('v') else {
        return (0, 0, 0);
    };
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let major = digits.parse().unwrap_or(0);
    let tail = &rest[digits.len()..];
    let (stage, minor) = if tail.is_empty() {
        (3, 0)
    } else if let Some(n) = tail.strip_prefix("beta") {
        (2, n.parse().unwrap_or(0))
    } else if let Some(n) = tail.strip_prefix("alpha") {
        (1, n.parse().unwrap_or(0))
    } else {
        (0, 0)
    };
    (stage, major, minor)
}
