//! Label selector matching with Kubernetes semantics (`metav1.LabelSelector`).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// Whether `labels` satisfy `selector`: every `matchLabels` pair and every expression.
///
/// An empty selector matches everything, as in the API. An expression with an unknown operator,
/// or with values where none are allowed (or none where some are required), is an error, as it
/// is a validation error in the API server.
pub fn matches(
    selector: &LabelSelector,
    labels: Option<&BTreeMap<String, String>>,
) -> Result<bool, String> {
    let get = |key: &str| labels.and_then(|l| l.get(key));
    for (key, value) in selector.match_labels.iter().flatten() {
        if get(key) != Some(value) {
            return Ok(false);
        }
    }
    for (i, expr) in selector.match_expressions.iter().flatten().enumerate() {
        let values = expr.values.as_deref().unwrap_or(&[]);
        let at = |message: &str| format!("matchExpressions[{i}]: {message}");
        let ok = match expr.operator.as_str() {
            "In" | "NotIn" if values.is_empty() => {
                return Err(at("operator In and NotIn need values"));
            }
            "Exists" | "DoesNotExist" if !values.is_empty() => {
                return Err(at("operator Exists and DoesNotExist take no values"));
            }
            "In" => get(&expr.key).is_some_and(|v| values.contains(v)),
            "NotIn" => get(&expr.key).is_none_or(|v| !values.contains(v)),
            "Exists" => get(&expr.key).is_some(),
            "DoesNotExist" => get(&expr.key).is_none(),
            other => return Err(at(&format!("unknown operator {other:?}"))),
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Whether the selector selects nothing in particular (no labels, no expressions).
pub fn is_empty(selector: &LabelSelector) -> bool {
    selector
        .match_labels
        .as_ref()
        .is_none_or(BTreeMap::is_empty)
        && selector
            .match_expressions
            .as_ref()
            .is_none_or(Vec::is_empty)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn selector(json: serde_json::Value) -> LabelSelector {
        serde_json::from_value(json).unwrap()
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn every_operator_matches_as_the_api_does() {
        let l = labels(&[("app", "agent"), ("tier", "gpu")]);
        let cases = [
            (serde_json::json!({"matchLabels": {"app": "agent"}}), true),
            (serde_json::json!({"matchLabels": {"app": "other"}}), false),
            (
                serde_json::json!({"matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["gpu", "cpu"]}]}),
                true,
            ),
            (
                serde_json::json!({"matchExpressions": [
                {"key": "tier", "operator": "NotIn", "values": ["gpu"]}]}),
                false,
            ),
            // NotIn matches when the label is absent.
            (
                serde_json::json!({"matchExpressions": [
                {"key": "zone", "operator": "NotIn", "values": ["a"]}]}),
                true,
            ),
            (
                serde_json::json!({"matchExpressions": [
                {"key": "tier", "operator": "Exists"}]}),
                true,
            ),
            (
                serde_json::json!({"matchExpressions": [
                {"key": "tier", "operator": "DoesNotExist"}]}),
                false,
            ),
            (serde_json::json!({}), true),
        ];
        for (json, want) in cases {
            assert_eq!(
                matches(&selector(json.clone()), Some(&l)),
                Ok(want),
                "{json}"
            );
        }
    }

    #[test]
    fn malformed_expressions_are_errors() {
        let bad = selector(serde_json::json!({"matchExpressions": [
            {"key": "a", "operator": "In", "values": []}]}));
        assert!(matches(&bad, None).is_err());
        let bad = selector(serde_json::json!({"matchExpressions": [
            {"key": "a", "operator": "Near"}]}));
        assert!(matches(&bad, None).is_err());
    }
}
