//! Which pods a set owns: its controlled pods that still match its selector, plus orphans it
//! adopts; controlled pods that stopped matching are released.

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use serde_json::{Value, json};

use crate::crd::{GROUP, VERSION, WasmDaemonSet};
use crate::selector;

/// The set's claim on the pods of its namespace.
#[derive(Debug, Default)]
pub struct Claim<'a> {
    /// Controlled by the set and matching its selector.
    pub owned: Vec<&'a Pod>,
    /// No controller, matching the selector: to adopt.
    pub adopt: Vec<&'a Pod>,
    /// Controlled by the set but no longer matching: to release.
    pub release: Vec<&'a Pod>,
}

/// The controller reference of a pod, if any.
pub fn controller_of(pod: &Pod) -> Option<&OwnerReference> {
    pod.metadata
        .owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true))
}

/// Sorts `pods` (all pods of the set's namespace) by the set's claim. Pods already being
/// deleted are never adopted; a set being deleted adopts nothing.
pub fn claim<'a>(
    set: &WasmDaemonSet,
    pods: impl IntoIterator<Item = &'a Pod>,
) -> Result<Claim<'a>, String> {
    let uid = set.metadata.uid.as_deref().unwrap_or_default();
    let can_adopt = set.metadata.deletion_timestamp.is_none() && !uid.is_empty();
    let mut claim = Claim::default();
    for pod in pods {
        let matches = !selector::is_empty(&set.spec.selector)
            && selector::matches(&set.spec.selector, pod.metadata.labels.as_ref())?;
        match controller_of(pod) {
            Some(owner) if owner.uid == uid && !uid.is_empty() => {
                if matches {
                    claim.owned.push(pod);
                } else if pod.metadata.deletion_timestamp.is_none() {
                    claim.release.push(pod);
                }
            }
            Some(_) => {}
            None if matches && can_adopt && pod.metadata.deletion_timestamp.is_none() => {
                claim.adopt.push(pod)
            }
            None => {}
        }
    }
    Ok(claim)
}

/// The owner reference that makes `set` a pod's controller.
pub fn owner_reference(set: &WasmDaemonSet) -> OwnerReference {
    OwnerReference {
        api_version: format!("{GROUP}/{VERSION}"),
        kind: "WasmDaemonSet".to_string(),
        name: set.metadata.name.clone().unwrap_or_default(),
        uid: set.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// A merge patch that adds `set` as controller. It carries the pod's uid and resourceVersion,
/// so it fails if the pod was replaced or changed since it was read.
pub fn adopt_patch(set: &WasmDaemonSet, pod: &Pod) -> Value {
    let mut owners = pod.metadata.owner_references.clone().unwrap_or_default();
    owners.push(owner_reference(set));
    owners_patch(pod, &owners)
}

/// A merge patch that removes `set` from a pod's owners, with the same guards as adoption.
pub fn release_patch(set: &WasmDaemonSet, pod: &Pod) -> Value {
    let uid = set.metadata.uid.as_deref().unwrap_or_default();
    let owners = pod.metadata.owner_references.clone().unwrap_or_default();
    let kept: Vec<OwnerReference> = owners.into_iter().filter(|r| r.uid != uid).collect();
    owners_patch(pod, &kept)
}

fn owners_patch(pod: &Pod, owners: &[OwnerReference]) -> Value {
    json!({"metadata": {
        "uid": pod.metadata.uid,
        "resourceVersion": pod.metadata.resource_version,
        "ownerReferences": owners,
    }})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set() -> WasmDaemonSet {
        serde_json::from_value(json!({
            "apiVersion": "wasmdaemon.io/v1alpha1", "kind": "WasmDaemonSet",
            "metadata": {"name": "agent", "namespace": "ns", "uid": "set-uid"},
            "spec": {"selector": {"matchLabels": {"app": "agent"}}, "template": {}}
        }))
        .unwrap()
    }

    fn pod(name: &str, app: &str, controller: Option<&str>) -> Pod {
        let owners = controller.map(|uid| {
            json!([{"apiVersion": "x/v1", "kind": "X", "name": "o", "uid": uid, "controller": true}])
        });
        serde_json::from_value(json!({
            "metadata": {"name": name, "uid": format!("{name}-uid"), "labels": {"app": app},
                         "ownerReferences": owners}
        }))
        .unwrap()
    }

    fn names(pods: &[&Pod]) -> Vec<String> {
        pods.iter()
            .filter_map(|p| p.metadata.name.clone())
            .collect()
    }

    #[test]
    fn orphans_are_adopted_strays_released_and_foreign_pods_left_alone() {
        let pods = [
            pod("mine", "agent", Some("set-uid")),
            pod("orphan", "agent", None),
            pod("stray", "other", Some("set-uid")),
            pod("foreign", "agent", Some("other-uid")),
            pod("unrelated", "other", None),
        ];
        let claim = claim(&set(), &pods).unwrap();
        assert_eq!(names(&claim.owned), ["mine"]);
        assert_eq!(names(&claim.adopt), ["orphan"]);
        assert_eq!(names(&claim.release), ["stray"]);
    }

    #[test]
    fn adoption_patch_is_guarded_by_uid_and_resource_version() {
        let mut orphan = pod("orphan", "agent", None);
        orphan.metadata.resource_version = Some("7".into());
        let patch = adopt_patch(&set(), &orphan);
        assert_eq!(patch["metadata"]["uid"], "orphan-uid");
        assert_eq!(patch["metadata"]["resourceVersion"], "7");
        assert_eq!(patch["metadata"]["ownerReferences"][0]["uid"], "set-uid");

        let stray = pod("stray", "other", Some("set-uid"));
        let patch = release_patch(&set(), &stray);
        assert_eq!(patch["metadata"]["ownerReferences"], json!([]));
    }
}
