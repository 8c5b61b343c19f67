//! Strategic merge patch and the field bookkeeping behind server-side apply.

// Only the parts of the built-in schemas a controller typically touches are modelled: lists
// merged by key (containers by name, owner references by uid, conditions by type, ...) and
// finalizers merged as a set. Any other list is replaced, as for an atomic list.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

/// The merge key of a list field, or `None` when the list is replaced as a whole.
fn merge_key(field: &str) -> Option<&'static str> {
    Some(match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "env"
        | "imagePullSecrets"
        | "resourceClaims"
        | "containerStatuses"
        | "initContainerStatuses" => "name",
        "ports" => "containerPort",
        "volumeMounts" => "mountPath",
        "volumeDevices" => "devicePath",
        "ownerReferences" => "uid",
        "conditions" => "type",
        "hostAliases" => "ip",
        "topologySpreadConstraints" => "topologyKey",
        "addresses" => "type",
        _ => return None,
    })
}

/// Lists of scalars merged as sets.
fn is_set_list(field: &str) -> bool {
    field == "finalizers"
}

/// Applies a strategic merge patch to `target`.
pub(crate) fn strategic_merge(target: &mut Value, patch: &Value) {
    let Some(patch_map) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    if patch_map.get("$patch").and_then(Value::as_str) == Some("replace") {
        let mut replaced = patch_map.clone();
        replaced.remove("$patch");
        *target = Value::Object(replaced);
        return;
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Some(target_map) = target.as_object_mut() else {
        return;
    };
    if let Some(Value::Array(keep)) = patch_map.get("$retainKeys") {
        let keep: BTreeSet<&str> = keep.iter().filter_map(Value::as_str).collect();
        target_map.retain(|k, _| keep.contains(k.as_str()));
    }
    for (key, value) in patch_map {
        if let Some(field) = key.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(list)), Value::Array(remove)) =
                (target_map.get_mut(field), value)
            {
                list.retain(|v| !remove.contains(v));
            }
            continue;
        }
        if key.starts_with('$') {
            continue;
        }
        if value.is_null() {
            target_map.remove(key);
            continue;
        }
        if value.get("$patch").and_then(Value::as_str) == Some("delete") {
            target_map.remove(key);
            continue;
        }
        match value {
            Value::Object(_) => {
                let slot = target_map.entry(key.clone()).or_insert(Value::Null);
                strategic_merge(slot, value);
            }
            Value::Array(items) => {
                let slot = target_map
                    .entry(key.clone())
                    .or_insert(Value::Array(Vec::new()));
                if let Some(mk) = merge_key(key) {
                    merge_keyed_list(slot, items, mk);
                } else if is_set_list(key) {
                    let Value::Array(existing) = slot else {
                        *slot = value.clone();
                        continue;
                    };
                    for item in items {
                        if !existing.contains(item) {
                            existing.push(item.clone());
                        }
                    }
                } else {
                    *slot = value.clone();
                }
            }
            _ => {
                target_map.insert(key.clone(), value.clone());
            }
        }
    }
}

fn merge_keyed_list(slot: &mut Value, items: &[Value], mk: &str) {
    if items
        .iter()
        .any(|i| i.get("$patch").and_then(Value::as_str) == Some("replace"))
    {
        let kept: Vec<Value> = items
            .iter()
            .filter(|i| i.get("$patch").is_none())
            .cloned()
            .collect();
        *slot = Value::Array(kept);
        return;
    }
    if !slot.is_array() {
        *slot = Value::Array(Vec::new());
    }
    let Value::Array(existing) = slot else { return };
    for item in items {
        let key = item.get(mk);
        let pos = key.and_then(|k| existing.iter().position(|e| e.get(mk) == Some(k)));
        let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
        match (pos, delete) {
            (Some(i), true) => {
                existing.remove(i);
            }
            (None, true) => {}
            (Some(i), false) => strategic_merge(&mut existing[i], item),
            (None, false) => {
                let mut fresh = Value::Object(Map::new());
                strategic_merge(&mut fresh, item);
                existing.push(fresh);
            }
        }
    }
}

/// Merges an applied configuration into `target` like a strategic merge without directives,
/// replacing every list that has no merge key (which is how custom resources treat lists).
pub(crate) fn apply_merge(target: &mut Value, applied: &Value, strategic: bool) {
    match (target.as_object_mut(), applied.as_object()) {
        (Some(t), Some(a)) => {
            for (key, value) in a {
                match value {
                    Value::Object(_) => {
                        let slot = t.entry(key.clone()).or_insert(Value::Object(Map::new()));
                        apply_merge(slot, value, strategic);
                    }
                    Value::Array(items) if strategic && merge_key(key).is_some() => {
                        let slot = t.entry(key.clone()).or_insert(Value::Array(Vec::new()));
                        let mk = merge_key(key).unwrap_or("name");
                        if let Value::Array(existing) = slot {
                            for item in items {
                                let k = item.get(mk);
                                match k.and_then(|k| {
                                    existing.iter().position(|e| e.get(mk) == Some(k))
                                }) {
                                    Some(i) => apply_merge(&mut existing[i], item, strategic),
                                    None => existing.push(item.clone()),
                                }
                            }
                        } else {
                            *slot = value.clone();
                        }
                    }
                    Value::Array(items) if key == "finalizers" => {
                        let slot = t.entry(key.clone()).or_insert(Value::Array(Vec::new()));
                        if let Value::Array(existing) = slot {
                            for item in items {
                                if !existing.contains(item) {
                                    existing.push(item.clone());
                                }
                            }
                        }
                    }
                    _ => {
                        t.insert(key.clone(), value.clone());
                    }
                }
            }
        }
        _ => *target = applied.clone(),
    }
}

/// A field path as used in `managedFields`: `f:<name>` for map keys, `k:<json>` for keyed list
/// items and `v:<json>` for set members.
pub(crate) type FieldPath = Vec<String>;

/// The leaf field paths set by an applied configuration.
pub(crate) fn field_paths(applied: &Value, strategic: bool) -> BTreeSet<FieldPath> {
    let mut out = BTreeSet::new();
    let Some(map) = applied.as_object() else {
        return out;
    };
    for (key, value) in map {
        match key.as_str() {
            "apiVersion" | "kind" | "status" => continue,
            "metadata" => {
                for field in ["labels", "annotations"] {
                    if let Some(m) = value[field].as_object() {
                        for k in m.keys() {
                            out.insert(vec![
                                "f:metadata".into(),
                                format!("f:{field}"),
                                format!("f:{k}"),
                            ]);
                        }
                    }
                }
                if let Some(list) = value["finalizers"].as_array() {
                    for item in list {
                        out.insert(vec![
                            "f:metadata".into(),
                            "f:finalizers".into(),
                            format!("v:{item}"),
                        ]);
                    }
                }
                if let Some(list) = value["ownerReferences"].as_array() {
                    for item in list {
                        let k = serde_json::json!({"uid": item["uid"]});
                        out.insert(vec![
                            "f:metadata".into(),
                            "f:ownerReferences".into(),
                            format!("k:{k}"),
                        ]);
                    }
                }
            }
            _ => collect_paths(value, key, vec![], strategic, &mut out),
        }
    }
    out
}

fn collect_paths(
    value: &Value,
    key: &str,
    mut prefix: FieldPath,
    strategic: bool,
    out: &mut BTreeSet<FieldPath>,
) {
    prefix.push(format!("f:{key}"));
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (k, v) in map {
                collect_paths(v, k, prefix.clone(), strategic, out);
            }
        }
        Value::Array(items) if strategic && merge_key(key).is_some() => {
            let mk = merge_key(key).unwrap_or("name");
            for item in items {
                let mut p = prefix.clone();
                let k = serde_json::json!({ mk: item.get(mk).cloned().unwrap_or(Value::Null) });
                p.push(format!("k:{k}"));
                match item.as_object() {
                    Some(m) => {
                        for (ik, iv) in m {
                            collect_paths(iv, ik, p.clone(), strategic, out);
                        }
                    }
                    None => {
                        out.insert(p);
                    }
                }
            }
        }
        _ => {
            out.insert(prefix);
        }
    }
}

/// Renders paths in the nested `fieldsV1` format.
pub(crate) fn to_fields_v1(paths: &BTreeSet<FieldPath>) -> Value {
    let mut root = Map::new();
    for path in paths {
        let mut cur = &mut root;
        for seg in path {
            let entry = cur
                .entry(seg.clone())
                .or_insert_with(|| Value::Object(Map::new()));
            let Value::Object(next) = entry else { break };
            cur = next;
        }
    }
    Value::Object(root)
}

/// Parses the nested `fieldsV1` format back into leaf paths.
pub(crate) fn from_fields_v1(fields: &Value) -> BTreeSet<FieldPath> {
    fn walk(v: &Value, prefix: &mut FieldPath, out: &mut BTreeSet<FieldPath>) {
        match v.as_object() {
            Some(m) if !m.is_empty() => {
                for (k, child) in m {
                    if k == "." {
                        continue;
                    }
                    prefix.push(k.clone());
                    walk(child, prefix, out);
                    prefix.pop();
                }
            }
            _ => {
                if !prefix.is_empty() {
                    out.insert(prefix.clone());
                }
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(fields, &mut Vec::new(), &mut out);
    out
}

/// Finds the value at a field path, if present.
pub(crate) fn value_at<'a>(obj: &'a Value, path: &FieldPath) -> Option<&'a Value> {
    let mut cur = obj;
    for seg in path {
        if let Some(name) = seg.strip_prefix("f:") {
            cur = cur.get(name)?;
        } else if let Some(k) = seg.strip_prefix("k:") {
            let key: Value = serde_json::from_str(k).ok()?;
            let key = key.as_object()?;
            cur = cur
                .as_array()?
                .iter()
                .find(|item| key.iter().all(|(kk, kv)| item.get(kk) == Some(kv)))?;
        } else if let Some(v) = seg.strip_prefix("v:") {
            let want: Value = serde_json::from_str(v).ok()?;
            cur = cur.as_array()?.iter().find(|item| **item == want)?;
        } else {
            return None;
        }
    }
    Some(cur)
}

/// Removes the value at a field path, if present.
pub(crate) fn remove_at(obj: &mut Value, path: &FieldPath) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut cur = obj;
    for seg in parents {
        let next = if let Some(name) = seg.strip_prefix("f:") {
            cur.get_mut(name)
        } else if let Some(k) = seg.strip_prefix("k:") {
            let Ok(Value::Object(key)) = serde_json::from_str::<Value>(k) else {
                return;
            };
            cur.as_array_mut().and_then(|a| {
                a.iter_mut()
                    .find(|item| key.iter().all(|(kk, kv)| item.get(kk) == Some(kv)))
            })
        } else {
            None
        };
        match next {
            Some(n) => cur = n,
            None => return,
        }
    }
    if let Some(name) = last.strip_prefix("f:") {
        if let Some(m) = cur.as_object_mut() {
            m.remove(name);
        }
    } else if let Some(k) = last.strip_prefix("k:") {
        if let (Ok(Value::Object(key)), Some(a)) =
            (serde_json::from_str::<Value>(k), cur.as_array_mut())
        {
            a.retain(|item| !key.iter().all(|(kk, kv)| item.get(kk) == Some(kv)));
        }
    } else if let Some(v) = last.strip_prefix("v:")
        && let (Ok(want), Some(a)) = (serde_json::from_str::<Value>(v), cur.as_array_mut())
    {
        a.retain(|item| *item != want);
    }
}

/// Renders a field path for a conflict message, e.g. `.spec.replicas`.
pub(crate) fn display_path(path: &FieldPath) -> String {
    path.iter()
        .map(|seg| match seg.strip_prefix("f:") {
            Some(name) => format!(".{name}"),
            None => format!("[{}]", &seg[2..]),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn containers_are_merged_by_name() {
        let mut pod = json!({"spec": {"containers": [
            {"name": "a", "image": "a:1"}, {"name": "b", "image": "b:1"}
        ]}});
        strategic_merge(
            &mut pod,
            &json!({"spec": {"containers": [{"name": "b", "image": "b:2"}]}}),
        );
        assert_eq!(pod["spec"]["containers"][0]["image"], "a:1");
        assert_eq!(pod["spec"]["containers"][1]["image"], "b:2");
    }

    #[test]
    fn finalizers_merge_as_a_set_and_delete_directive_removes_members() {
        let mut obj = json!({"metadata": {"finalizers": ["a"]}});
        strategic_merge(&mut obj, &json!({"metadata": {"finalizers": ["b", "a"]}}));
        assert_eq!(obj["metadata"]["finalizers"], json!(["a", "b"]));
        strategic_merge(
            &mut obj,
            &json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}}),
        );
        assert_eq!(obj["metadata"]["finalizers"], json!(["b"]));
    }

    #[test]
    fn patch_delete_directive_removes_a_keyed_item() {
        let mut pod = json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}]}});
        strategic_merge(
            &mut pod,
            &json!({"spec": {"containers": [{"name": "a", "$patch": "delete"}]}}),
        );
        assert_eq!(pod["spec"]["containers"], json!([{"name": "b"}]));
    }

    #[test]
    fn field_paths_round_trip_through_fields_v1() {
        let applied = json!({
            "metadata": {"labels": {"x": "1"}},
            "spec": {"a": {"b": 1}, "containers": [{"name": "c", "image": "i"}]},
        });
        let paths = field_paths(&applied, true);
        assert_eq!(from_fields_v1(&to_fields_v1(&paths)), paths);
        for p in &paths {
            assert!(value_at(&applied, p).is_some(), "{p:?}");
        }
    }
}
