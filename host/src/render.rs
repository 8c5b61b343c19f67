//! Renders a node's pod: template, then the variant's overlay, then the plugin's overrides.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, Container, EnvVar, NodeAffinity, NodeSelector, NodeSelectorRequirement,
    NodeSelectorTerm, Pod, PodTemplateSpec, ResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::crd::{ContainerOverlay, Overlay, WasmDaemonSet};
use crate::plugin::bindings;
use crate::predicates::daemon_pod_tolerations;
use crate::quantity::parse_milli;

/// Label naming the set a pod belongs to.
pub const SET_LABEL: &str = "wasmdaemon.io/set";
/// Label naming the variant a pod was rendered with; absent for the plain template.
pub const VARIANT_LABEL: &str = "wasmdaemon.io/variant";
/// Label carrying the hash of the rendered pod template, to detect drift.
pub const HASH_LABEL: &str = "wasmdaemon.io/spec-hash";

/// An overlay that cannot be applied to the template.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum RenderError {
    #[error("{source_name}: container {container:?} is not in the pod template")]
    UnknownContainer {
        source_name: String,
        container: String,
    },

    #[error("{source_name}: container {container:?}: {field} {resource}: {message}")]
    InvalidQuantity {
        source_name: String,
        container: String,
        field: &'static str,
        resource: String,
        message: String,
    },
}

/// Applies overlays in order to a copy of the template. `source_name` of each layer names it
/// in errors (`variant "gpu"`, `plugin overrides`).
pub fn render(
    template: &PodTemplateSpec,
    layers: &[(&str, &Overlay)],
) -> Result<PodTemplateSpec, RenderError> {
    let mut rendered = template.clone();
    for (source_name, overlay) in layers {
        apply(&mut rendered, source_name, overlay)?;
    }
    Ok(rendered)
}

/// Checks an overlay against the template without rendering.
pub fn check_overlay(
    template: &PodTemplateSpec,
    source_name: &str,
    overlay: &Overlay,
) -> Result<(), RenderError> {
    render(template, &[(source_name, overlay)]).map(|_| ())
}

fn apply(
    rendered: &mut PodTemplateSpec,
    source_name: &str,
    overlay: &Overlay,
) -> Result<(), RenderError> {
    let meta = rendered.metadata.get_or_insert_with(ObjectMeta::default);
    if !overlay.labels.is_empty() {
        let labels = meta.labels.get_or_insert_with(BTreeMap::new);
        labels.extend(overlay.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    if !overlay.annotations.is_empty() {
        let annotations = meta.annotations.get_or_insert_with(BTreeMap::new);
        annotations.extend(
            overlay
                .annotations
                .iter()
                .map(|(k, v)| (k.clone(), v.clone())),
        );
    }

    let spec = rendered.spec.get_or_insert_with(Default::default);
    for change in &overlay.containers {
        let target = spec
            .containers
            .iter_mut()
            .chain(spec.init_containers.iter_mut().flatten())
            .find(|c| c.name == change.name)
            .ok_or_else(|| RenderError::UnknownContainer {
                source_name: source_name.to_string(),
                container: change.name.clone(),
            })?;
        apply_container(target, source_name, change)?;
    }
    Ok(())
}

fn apply_container(
    container: &mut Container,
    source_name: &str,
    change: &ContainerOverlay,
) -> Result<(), RenderError> {
    if let Some(image) = &change.image {
        container.image = Some(image.clone());
    }
    if let Some(args) = &change.args {
        container.args = Some(args.clone());
    }
    if !change.env.is_empty() {
        let env = container.env.get_or_insert_with(Vec::new);
        for (name, value) in &change.env {
            let var = EnvVar {
                name: name.clone(),
                value: Some(value.clone()),
                value_from: None,
            };
            match env.iter_mut().find(|e| &e.name == name) {
                Some(existing) => *existing = var,
                None => env.push(var),
            }
        }
    }
    for (field, wanted) in [("requests", &change.requests), ("limits", &change.limits)] {
        if wanted.is_empty() {
            continue;
        }
        for (resource, quantity) in wanted {
            let invalid = |message: String| RenderError::InvalidQuantity {
                source_name: source_name.to_string(),
                container: change.name.clone(),
                field,
                resource: resource.clone(),
                message,
            };
            match parse_milli(&quantity.0) {
                Ok(milli) if milli >= 0 => {}
                Ok(_) => return Err(invalid(format!("{:?} is negative", quantity.0))),
                Err(e) => return Err(invalid(e.to_string())),
            }
        }
        let resources = container
            .resources
            .get_or_insert_with(ResourceRequirements::default);
        let map = match field {
            "requests" => resources.requests.get_or_insert_with(BTreeMap::new),
            _ => resources.limits.get_or_insert_with(BTreeMap::new),
        };
        map.extend(wanted.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    Ok(())
}

/// Converts the plugin's WIT overrides into an overlay.
pub fn overlay_from_plugin(overrides: &bindings::Overrides) -> Overlay {
    let map = |pairs: &[bindings::KeyValue]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|p| (p.key.clone(), p.value.clone()))
            .collect()
    };
    let quantities = |pairs: &[bindings::KeyValue]| -> BTreeMap<String, Quantity> {
        pairs
            .iter()
            .map(|p| (p.key.clone(), Quantity(p.value.clone())))
            .collect()
    };
    Overlay {
        containers: overrides
            .containers
            .iter()
            .map(|c| ContainerOverlay {
                name: c.name.clone(),
                image: c.image.clone(),
                args: c.args.clone(),
                env: map(&c.env),
                requests: quantities(&c.requests),
                limits: quantities(&c.limits),
            })
            .collect(),
        labels: map(&overrides.labels),
        annotations: map(&overrides.annotations),
    }
}

/// A stable hash of a rendered template: the same rendering always hashes the same, on every
/// host version that serializes the template the same way.
pub fn spec_hash(template: &PodTemplateSpec) -> String {
    // Serializing a k8s-openapi struct is deterministic: fields in declaration order, maps as
    // sorted BTreeMaps.
    let bytes = serde_json::to_vec(template).unwrap_or_default();
    let digest = Sha256::digest(&bytes);
    hex::encode(&digest[..8])
}

/// The pod the controller creates for `node`, pinned to it the way upstream pins daemon pods:
/// a required node affinity on `metadata.name` (replacing any required terms) and the
/// tolerations every daemon pod gets.
pub fn pod_for_node(
    set: &WasmDaemonSet,
    rendered: &PodTemplateSpec,
    variant: Option<&str>,
    hash: &str,
    node: &str,
) -> Pod {
    let set_name = set.metadata.name.clone().unwrap_or_default();
    let mut meta = rendered.metadata.clone().unwrap_or_default();
    meta.name = None;
    meta.generate_name = Some(format!("{set_name}-"));
    meta.namespace = set.metadata.namespace.clone();
    let labels = meta.labels.get_or_insert_with(BTreeMap::new);
    labels.insert(SET_LABEL.to_string(), set_name.clone());
    labels.insert(HASH_LABEL.to_string(), hash.to_string());
    match variant {
        Some(v) => labels.insert(VARIANT_LABEL.to_string(), v.to_string()),
        None => labels.remove(VARIANT_LABEL),
    };
    if let Some(uid) = &set.metadata.uid {
        meta.owner_references = Some(vec![OwnerReference {
            api_version: format!("{}/{}", crate::crd::GROUP, crate::crd::VERSION),
            kind: "WasmDaemonSet".to_string(),
            name: set_name,
            uid: uid.clone(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }]);
    }

    let mut spec = rendered.spec.clone().unwrap_or_default();
    spec.tolerations = Some(daemon_pod_tolerations(&spec));
    pin_to_node(&mut spec, node);
    Pod {
        metadata: meta,
        spec: Some(spec),
        status: None,
    }
}

fn pin_to_node(spec: &mut k8s_openapi::api::core::v1::PodSpec, node: &str) {
    let term = NodeSelectorTerm {
        match_fields: Some(vec![NodeSelectorRequirement {
            key: "metadata.name".to_string(),
            operator: "In".to_string(),
            values: Some(vec![node.to_string()]),
        }]),
        match_expressions: None,
    };
    let affinity = spec.affinity.get_or_insert_with(Affinity::default);
    let node_affinity = affinity
        .node_affinity
        .get_or_insert_with(NodeAffinity::default);
    node_affinity.required_during_scheduling_ignored_during_execution = Some(NodeSelector {
        node_selector_terms: vec![term],
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template() -> PodTemplateSpec {
        serde_json::from_value(serde_json::json!({
            "metadata": {"labels": {"app": "agent"}},
            "spec": {
                "containers": [{
                    "name": "agent", "image": "agent:1",
                    "env": [{"name": "MODE", "value": "cpu"}],
                    "resources": {"requests": {"memory": "100Mi"}}
                }],
                "initContainers": [{"name": "setup", "image": "setup:1"}]
            }
        }))
        .unwrap()
    }

    fn overlay(json: serde_json::Value) -> Overlay {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn layers_apply_in_order_and_later_layers_win() {
        let variant = overlay(serde_json::json!({
            "containers": [{"name": "agent", "image": "agent-gpu:1", "env": {"MODE": "gpu"},
                            "requests": {"memory": "1Gi"}}],
            "labels": {"tier": "gpu"}
        }));
        let plugin = overlay(serde_json::json!({
            "containers": [{"name": "agent", "env": {"EXTRA": "1"}, "limits": {"cpu": "2"}},
                           {"name": "setup", "args": ["--fast"]}],
            "labels": {"tier": "gpu-large"}
        }));
        let rendered = render(
            &template(),
            &[("variant \"gpu\"", &variant), ("plugin", &plugin)],
        )
        .unwrap();
        let spec = rendered.spec.as_ref().unwrap();
        let agent = &spec.containers[0];
        assert_eq!(agent.image.as_deref(), Some("agent-gpu:1"));
        let env: Vec<_> = agent
            .env
            .as_ref()
            .unwrap()
            .iter()
            .map(|e| (e.name.as_str(), e.value.as_deref()))
            .collect();
        assert_eq!(env, [("MODE", Some("gpu")), ("EXTRA", Some("1"))]);
        let resources = agent.resources.as_ref().unwrap();
        assert_eq!(resources.requests.as_ref().unwrap()["memory"].0, "1Gi");
        assert_eq!(resources.limits.as_ref().unwrap()["cpu"].0, "2");
        let init = &spec.init_containers.as_ref().unwrap()[0];
        assert_eq!(init.args.as_deref(), Some(&["--fast".to_string()][..]));
        let labels = rendered.metadata.as_ref().unwrap().labels.as_ref().unwrap();
        assert_eq!(labels["tier"], "gpu-large");
        assert_eq!(labels["app"], "agent");
    }

    #[test]
    fn overlay_naming_a_missing_container_is_an_error() {
        let bad = overlay(serde_json::json!({"containers": [{"name": "nope", "image": "x"}]}));
        let err = render(&template(), &[("variant \"x\"", &bad)]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "variant \"x\": container \"nope\" is not in the pod template"
        );
    }

    #[test]
    fn overlay_with_a_bad_quantity_is_an_error() {
        let bad = overlay(
            serde_json::json!({"containers": [{"name": "agent", "requests": {"cpu": "lots"}}]}),
        );
        assert!(matches!(
            render(&template(), &[("plugin", &bad)]),
            Err(RenderError::InvalidQuantity { .. })
        ));
    }

    #[test]
    fn hash_is_stable_and_follows_content() {
        let a = spec_hash(&template());
        assert_eq!(a, spec_hash(&template()));
        assert_eq!(a.len(), 16);
        let changed = render(
            &template(),
            &[(
                "v",
                &overlay(serde_json::json!({"containers": [{"name": "agent", "image": "b"}]})),
            )],
        )
        .unwrap();
        assert_ne!(a, spec_hash(&changed));
    }
}
