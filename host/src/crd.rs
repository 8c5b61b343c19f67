//! The `WasmDaemonSet` custom resource, its spec, status and overlay types.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// API group of the resource.
pub const GROUP: &str = "wasmdaemon.io";
/// API version of the resource.
pub const VERSION: &str = "v1alpha1";

/// A DaemonSet whose eligible nodes and per-node pod variants are also decided by a plugin.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "wasmdaemon.io",
    version = "v1alpha1",
    kind = "WasmDaemonSet",
    namespaced,
    shortname = "wds",
    status = "WasmDaemonSetStatus",
    printcolumn = r#"{"name":"Desired","type":"integer","jsonPath":".status.desiredNumberScheduled"}"#,
    printcolumn = r#"{"name":"Current","type":"integer","jsonPath":".status.currentNumberScheduled"}"#,
    printcolumn = r#"{"name":"Ready","type":"integer","jsonPath":".status.numberReady"}"#,
    printcolumn = r#"{"name":"Up-to-date","type":"integer","jsonPath":".status.updatedNumberScheduled"}"#,
    printcolumn = r#"{"name":"Available","type":"integer","jsonPath":".status.numberAvailable"}"#,
    printcolumn = r#"{"name":"Plugin","type":"string","jsonPath":".spec.policy.plugin"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct WasmDaemonSetSpec {
    /// Selects the pods the set owns; must match the template's labels.
    pub selector: LabelSelector,

    /// The pod every eligible node runs, before the variant overlay and plugin overrides.
    pub template: PodTemplateSpec,

    /// Named overlays a plugin picks per node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub variants: Vec<Variant>,

    /// The plugin that decides eligibility and variants; without one the set is placed exactly
    /// as an upstream DaemonSet with the same template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<Policy>,

    /// How pods are replaced when their rendering changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_strategy: Option<UpdateStrategy>,

    /// Seconds a new pod must be ready before it counts as available.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub min_ready_seconds: Option<i32>,

    /// How many old revisions to keep.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub revision_history_limit: Option<i32>,
}

/// A named overlay on the pod template.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Variant {
    /// Unique within the set; a DNS label so it can be a label value.
    #[schemars(length(min = 1, max = 63))]
    pub name: String,

    /// What this variant changes.
    #[serde(default)]
    pub overlay: Overlay,
}

/// Changes applied to the pod template. Variants and plugin overrides share this shape.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Overlay {
    /// Per-container changes, matched by container name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub containers: Vec<ContainerOverlay>,

    /// Pod labels to add or replace.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,

    /// Pod annotations to add or replace.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// Changes to one container (or init container) of the template.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContainerOverlay {
    /// Name of a container or init container in the template.
    pub name: String,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,

    /// Replaces the container's args.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,

    /// Environment variables set or replaced by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,

    /// Requests set or replaced by resource name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub requests: BTreeMap<String, Quantity>,

    /// Limits set or replaced by resource name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub limits: BTreeMap<String, Quantity>,
}

/// Which plugin decides for the set, and with what configuration.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Policy {
    /// A stock plugin (`hardware`, `label-rules`) or one loaded from the plugin directory.
    #[schemars(length(min = 1))]
    pub plugin: String,

    /// Plugin configuration, handed to the plugin as JSON text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "any_json")]
    pub config: Option<serde_json::Value>,

    /// When set, only the plugin version with this sha256 digest (`sha256:<hex>`) may be used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^sha256:[0-9a-f]{64}$"))]
    pub digest: Option<String>,
}

/// How pods are replaced when their rendering changes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpdateStrategy {
    /// `RollingUpdate` (the default) or `OnDelete`.
    #[serde(default, rename = "type")]
    pub type_: UpdateStrategyType,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolling_update: Option<RollingUpdate>,
}

/// The kind of update strategy.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum UpdateStrategyType {
    #[default]
    RollingUpdate,
    OnDelete,
}

/// Bounds of a rolling update; either may be an absolute number or a percentage of the nodes
/// that should run the set.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RollingUpdate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<IntOrString>,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_surge: Option<IntOrString>,
}

/// What the controller last observed of the set.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WasmDaemonSetStatus {
    pub desired_number_scheduled: i32,
    pub current_number_scheduled: i32,
    pub number_misscheduled: i32,
    pub number_ready: i32,
    #[serde(default)]
    pub number_available: i32,
    #[serde(default)]
    pub number_unavailable: i32,
    #[serde(default)]
    pub updated_number_scheduled: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Pods per variant; the plain template counts under `""`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub variants: BTreeMap<String, i32>,

    /// The plugin in use, as `<name>@sha256:<hex>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin: Option<String>,

    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

fn any_json(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({ "x-kubernetes-preserve-unknown-fields": true })
}
