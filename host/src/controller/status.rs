//! The set's status as observed on one pass, its conditions, and the patch that writes it.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use serde_json::{Map, Value};

use crate::crd::{WasmDaemonSet, WasmDaemonSetStatus};
use crate::planner::{Outcome, Plan};
use crate::render::VARIANT_LABEL;

use super::rollout::{available_in, is_ready, pod_hash};

/// Condition type: the set's plugin loaded and answered.
pub const PLUGIN_READY: &str = "PluginReady";
/// Condition type: every node that should run the set runs an up-to-date, available pod.
pub const ROLLOUT_COMPLETE: &str = "RolloutComplete";

/// Counts what `plan` found, with `pods` the set's pods (oldest first per node is not
/// required), in the shape of upstream DaemonSet status. Also returns how long until the next
/// counted pod that is Ready but not yet available becomes available, so the count is redone
/// then even if nothing else happens.
pub fn observe(
    set: &WasmDaemonSet,
    plan: &Plan,
    pods: &[Pod],
    min_ready: Duration,
    now: Timestamp,
) -> (WasmDaemonSetStatus, Option<Duration>) {
    let by_node = crate::planner::pods_by_node(pods, |p| p.metadata.deletion_timestamp.is_none());

    let mut status = WasmDaemonSetStatus {
        observed_generation: set.metadata.generation,
        ..Default::default()
    };
    let mut soonest = None;
    for node in &plan.nodes {
        let oldest = by_node.get(&*node.node).and_then(|l| l.first().copied());
        let Outcome::Run { hash, .. } = &node.outcome else {
            if oldest.is_some() {
                status.number_misscheduled += 1;
            }
            continue;
        };
        status.desired_number_scheduled += 1;
        let Some(pod) = oldest else { continue };
        status.current_number_scheduled += 1;
        if is_ready(pod) {
            status.number_ready += 1;
            match available_in(pod, min_ready, now) {
                Some(Duration::ZERO) => status.number_available += 1,
                Some(wait) => soonest = Some(soonest.map_or(wait, |s: Duration| s.min(wait))),
                None => {}
            }
        }
        if pod_hash(pod) == Some(hash.as_str()) {
            status.updated_number_scheduled += 1;
        }
        let variant = pod
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(VARIANT_LABEL))
            .cloned()
            .unwrap_or_default();
        *status.variants.entry(variant).or_default() += 1;
    }
    status.number_unavailable = (status.desired_number_scheduled - status.number_available).max(0);
    (status, soonest)
}

/// Whether the rollout is done, as a condition.
pub fn rollout_condition(status: &WasmDaemonSetStatus) -> Condition {
    let complete = status.updated_number_scheduled == status.desired_number_scheduled
        && status.number_available == status.desired_number_scheduled
        && status.number_misscheduled == 0;
    let (state, reason, message) = if complete {
        (
            "True",
            "RolloutComplete",
            "every node runs an up-to-date, available pod".to_string(),
        )
    } else {
        (
            "False",
            "Progressing",
            format!(
                "{} of {} pods up to date, {} available, {} misscheduled",
                status.updated_number_scheduled,
                status.desired_number_scheduled,
                status.number_available,
                status.number_misscheduled
            ),
        )
    };
    condition(
        ROLLOUT_COMPLETE,
        state,
        reason,
        message,
        status.observed_generation,
    )
}

/// A condition stamped now; [`merge_conditions`] keeps the old time when nothing flipped.
pub fn condition(
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
    generation: Option<i64>,
) -> Condition {
    Condition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: reason.to_string(),
        message,
        observed_generation: generation,
        last_transition_time: Time(Timestamp::now()),
    }
}

/// Sets `update` in `conditions`, keeping the previous transition time unless the status
/// flipped, so rewriting an unchanged condition changes nothing.
pub fn merge_conditions(conditions: &mut Vec<Condition>, update: Condition) {
    match conditions.iter_mut().find(|c| c.type_ == update.type_) {
        Some(existing) => {
            let time = existing.last_transition_time.clone();
            let flipped = existing.status != update.status;
            *existing = update;
            if !flipped {
                existing.last_transition_time = time;
            }
        }
        None => conditions.push(update),
    }
    conditions.sort_by(|a, b| a.type_.cmp(&b.type_));
}

/// A JSON merge patch that turns `old` into `new`: changed fields, and `null` for removed
/// keys so maps such as `variants` shrink too.
pub fn merge_patch(old: &Value, new: &Value) -> Value {
    match (old, new) {
        (Value::Object(old), Value::Object(new)) => {
            let mut patch = Map::new();
            for (key, value) in new {
                match old.get(key) {
                    Some(before) if before == value => {}
                    Some(before) => {
                        patch.insert(key.clone(), merge_patch(before, value));
                    }
                    None => {
                        patch.insert(key.clone(), value.clone());
                    }
                }
            }
            for key in old.keys().filter(|k| !new.contains_key(*k)) {
                patch.insert(key.clone(), Value::Null);
            }
            Value::Object(patch)
        }
        _ => new.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_unchanged_condition_keeps_its_transition_time() {
        let mut conditions = Vec::new();
        let first = condition(PLUGIN_READY, "True", "Loaded", "ok".into(), Some(1));
        let stamp = first.last_transition_time.clone();
        merge_conditions(&mut conditions, first);
        let mut again = condition(PLUGIN_READY, "True", "Loaded", "still ok".into(), Some(2));
        again.last_transition_time = Time(Timestamp::UNIX_EPOCH);
        merge_conditions(&mut conditions, again);
        assert_eq!(conditions.len(), 1);
        assert_eq!(conditions[0].last_transition_time, stamp);
        assert_eq!(conditions[0].message, "still ok");

        let mut flipped = condition(PLUGIN_READY, "False", "PluginTrapped", "x".into(), Some(2));
        flipped.last_transition_time = Time(Timestamp::UNIX_EPOCH);
        merge_conditions(&mut conditions, flipped);
        assert_eq!(
            conditions[0].last_transition_time,
            Time(Timestamp::UNIX_EPOCH)
        );
    }

    #[test]
    fn merge_patch_nulls_removed_keys_and_skips_equal_ones() {
        let old = json!({"a": 1, "variants": {"gpu": 2, "cpu": 1}, "keep": [1]});
        let new = json!({"a": 2, "variants": {"cpu": 1}, "keep": [1]});
        assert_eq!(
            merge_patch(&old, &new),
            json!({"a": 2, "variants": {"gpu": null}})
        );
    }
}
