//! Label and field selectors as accepted by list and watch requests.

use serde_json::Value;

use crate::status::ApiError;

#[derive(Debug, Clone, PartialEq)]
enum LabelOp {
    Eq(String),
    NotEq(String),
    In(Vec<String>),
    NotIn(Vec<String>),
    Exists,
    NotExists,
}

/// A parsed label selector; all requirements must hold.
#[derive(Debug, Clone, Default)]
pub(crate) struct LabelSelector {
    reqs: Vec<(String, LabelOp)>,
}

/// Splits on commas that are not inside parentheses.
fn split_top_level(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

pub(crate) fn valid_label_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 316
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
}

pub(crate) fn valid_label_value(v: &str) -> bool {
    v.is_empty()
        || (v.len() <= 63
            && v.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            && v.starts_with(|c: char| c.is_ascii_alphanumeric())
            && v.ends_with(|c: char| c.is_ascii_alphanumeric()))
}

fn parse_set(rest: &str, raw: &str) -> Result<Vec<String>, ApiError> {
    let rest = rest.trim();
    let inner = rest
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| parse_error(raw, "expected a parenthesised set of values"))?;
    let values: Vec<String> = inner.split(',').map(|v| v.trim().to_string()).collect();
    if values.iter().any(|v| !valid_label_value(v)) {
        return Err(parse_error(raw, "invalid label value"));
    }
    Ok(values)
}

fn parse_error(raw: &str, why: &str) -> ApiError {
    ApiError::bad_request(format!("unable to parse requirement: {raw}: {why}"))
}

impl LabelSelector {
    pub fn parse(s: &str) -> Result<Self, ApiError> {
        let mut reqs = Vec::new();
        if s.trim().is_empty() {
            return Ok(Self { reqs });
        }
        for raw in split_top_level(s) {
            let part = raw.trim();
            if part.is_empty() {
                return Err(parse_error(raw, "empty requirement"));
            }
            let (key, op) = if let Some(key) = part.strip_prefix('!') {
                (key.trim().to_string(), LabelOp::NotExists)
            } else if let Some((k, v)) = part.split_once("!=") {
                (k.trim().to_string(), LabelOp::NotEq(v.trim().to_string()))
            } else if let Some((k, v)) = part.split_once("==") {
                (k.trim().to_string(), LabelOp::Eq(v.trim().to_string()))
            } else if let Some((k, v)) = part.split_once('=') {
                (k.trim().to_string(), LabelOp::Eq(v.trim().to_string()))
            } else if let Some((k, rest)) = part.split_once(" notin ") {
                (k.trim().to_string(), LabelOp::NotIn(parse_set(rest, raw)?))
            } else if let Some((k, rest)) = part.split_once(" in ") {
                (k.trim().to_string(), LabelOp::In(parse_set(rest, raw)?))
            } else {
                (part.to_string(), LabelOp::Exists)
            };
            if !valid_label_key(&key) {
                return Err(parse_error(raw, "invalid label key"));
            }
            if let LabelOp::Eq(v) | LabelOp::NotEq(v) = &op
                && !valid_label_value(v)
            {
                return Err(parse_error(raw, "invalid label value"));
            }
            reqs.push((key, op));
        }
        Ok(Self { reqs })
    }

    pub fn is_empty(&self) -> bool {
        self.reqs.is_empty()
    }

    pub fn matches(&self, obj: &Value) -> bool {
        let labels = obj["metadata"]["labels"].as_object();
        self.reqs.iter().all(|(key, op)| {
            let value = labels.and_then(|l| l.get(key)).and_then(Value::as_str);
            match op {
                LabelOp::Eq(v) => value == Some(v.as_str()),
                LabelOp::NotEq(v) => value != Some(v.as_str()),
                LabelOp::In(vs) => value.is_some_and(|x| vs.iter().any(|v| v == x)),
                LabelOp::NotIn(vs) => value.is_none_or(|x| vs.iter().all(|v| v != x)),
                LabelOp::Exists => value.is_some(),
                LabelOp::NotExists => value.is_none(),
            }
        })
    }
}

/// A parsed field selector over the fields a resource supports.
#[derive(Debug, Clone, Default)]
pub(crate) struct FieldSelector {
    reqs: Vec<(Vec<String>, bool, String)>,
}

fn supported_fields(storage: &str) -> &'static [&'static str] {
    match storage {
        "/pods" => &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ],
        "/nodes" => &["spec.unschedulable"],
        "/namespaces" => &["status.phase"],
        "/events" => &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ],
        _ => &[],
    }
}

impl FieldSelector {
    pub fn parse(s: &str, storage: &str) -> Result<Self, ApiError> {
        let mut reqs = Vec::new();
        if s.trim().is_empty() {
            return Ok(Self { reqs });
        }
        for part in s.split(',') {
            let (field, negate, value) = if let Some((f, v)) = part.split_once("!=") {
                (f, true, v)
            } else if let Some((f, v)) = part.split_once("==") {
                (f, false, v)
            } else if let Some((f, v)) = part.split_once('=') {
                (f, false, v)
            } else {
                return Err(ApiError::bad_request(format!(
                    "invalid selector: '{s}'; can't understand '{part}'"
                )));
            };
            let field = field.trim();
            let generic = field == "metadata.name" || field == "metadata.namespace";
            if !generic && !supported_fields(storage).contains(&field) {
                return Err(ApiError::bad_request(format!(
                    "field label not supported: {field}"
                )));
            }
            let path = field.split('.').map(str::to_string).collect();
            reqs.push((path, negate, value.trim().to_string()));
        }
        Ok(Self { reqs })
    }

    pub fn is_empty(&self) -> bool {
        self.reqs.is_empty()
    }

    /// The value an equality requirement on `field` demands, if there is one.
    pub fn exact(&self, field: &str) -> Option<&str> {
        self.reqs
            .iter()
            .find(|(path, negate, _)| !negate && path.join(".") == field)
            .map(|(_, _, v)| v.as_str())
    }

    pub fn matches(&self, obj: &Value) -> bool {
        self.reqs.iter().all(|(path, negate, want)| {
            let mut cur = obj;
            for seg in path {
                cur = &cur[seg.as_str()];
            }
            let have = match cur {
                Value::String(s) => s.clone(),
                Value::Bool(b) => b.to_string(),
                Value::Number(n) => n.to_string(),
                Value::Null if path.last().is_some_and(|l| l == "unschedulable") => "false".into(),
                _ => String::new(),
            };
            (have == *want) != *negate
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(labels: Value) -> Value {
        json!({"metadata": {"labels": labels}})
    }

    #[test]
    fn set_based_requirements_match_like_kubernetes() {
        let sel = LabelSelector::parse("a in (x, y),b notin (z),!c,d").expect("parses");
        assert!(sel.matches(&pod(json!({"a": "x", "d": ""}))));
        assert!(!sel.matches(&pod(json!({"a": "x", "b": "z", "d": "1"}))));
        assert!(!sel.matches(&pod(json!({"a": "x", "c": "1", "d": "1"}))));
        assert!(!sel.matches(&pod(json!({"a": "q", "d": "1"}))));
    }

    #[test]
    fn inequality_matches_objects_without_the_label() {
        let sel = LabelSelector::parse("a!=x").expect("parses");
        assert!(sel.matches(&pod(json!({}))));
        assert!(!sel.matches(&pod(json!({"a": "x"}))));
    }

    #[test]
    fn malformed_selectors_are_rejected() {
        assert!(LabelSelector::parse("a in x").is_err());
        assert!(LabelSelector::parse("a=b=c").is_err());
        assert!(FieldSelector::parse("spec.foo=x", "/pods").is_err());
    }

    #[test]
    fn empty_node_name_selects_unscheduled_pods() {
        let sel = FieldSelector::parse("spec.nodeName=", "/pods").expect("parses");
        assert!(sel.matches(&json!({"spec": {}})));
        assert!(!sel.matches(&json!({"spec": {"nodeName": "n"}})));
    }
}
