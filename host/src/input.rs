//! Reads Node dumps and `WasmDaemonSet` files as kubectl and users write them, and validates
//! sets; every error names the file and the field.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Deserialize;
use serde_json::Value;

use crate::crd::{self, UpdateStrategyType, WasmDaemonSet};
use crate::{render, selector};

/// A problem with an input file, printable on one line.
#[derive(Debug)]
pub struct InputError {
    pub file: PathBuf,
    /// Where in the file: document number, list item, field path. Empty when the whole file is
    /// at fault.
    pub at: String,
    pub message: String,
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Keep the error on one line whatever the underlying parser printed.
        let message = self.message.replace('\n', " ");
        if self.at.is_empty() {
            write!(f, "{}: {message}", self.file.display())
        } else {
            write!(f, "{}: {}: {message}", self.file.display(), self.at)
        }
    }
}

impl std::error::Error for InputError {}

fn error(file: &Path, at: impl Into<String>, message: impl Into<String>) -> InputError {
    InputError {
        file: file.to_path_buf(),
        at: at.into(),
        message: message.into(),
    }
}

/// The YAML or JSON documents of a file, in order, with their positions for messages.
fn documents(file: &Path) -> Result<Vec<(String, Value)>, InputError> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| error(file, "", format!("failed to read: {e}")))?;
    let is_json = file.extension().is_some_and(|e| e == "json");
    if is_json {
        let value: Value = serde_json::from_str(&text)
            .map_err(|e| error(file, "", format!("invalid JSON: {e}")))?;
        return Ok(vec![(String::new(), value)]);
    }

    let mut docs = Vec::new();
    for (i, doc) in serde_yaml::Deserializer::from_str(&text).enumerate() {
        let at = format!("document {}", i + 1);
        let value = Value::deserialize(doc)
            .map_err(|e| error(file, at.clone(), format!("invalid YAML: {e}")))?;
        if !value.is_null() {
            docs.push((at, value));
        }
    }
    Ok(docs)
}

fn join(at: &str, more: &str) -> String {
    match (at.is_empty(), more.is_empty()) {
        (true, _) => more.to_string(),
        (_, true) => at.to_string(),
        _ => format!("{at}: {more}"),
    }
}

fn parse_node(file: &Path, at: &str, value: Value) -> Result<Node, InputError> {
    match value.get("kind").and_then(Value::as_str) {
        Some("Node") | None => {}
        Some(other) => {
            return Err(error(
                file,
                at,
                format!("expected kind Node, found {other}"),
            ));
        }
    }
    let node: Node = serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        error(file, join(at, &path), e.into_inner().to_string())
    })?;
    if node.metadata.name.as_deref().is_none_or(str::is_empty) {
        return Err(error(
            file,
            join(at, "metadata.name"),
            "missing; every Node needs a name",
        ));
    }
    Ok(node)
}

/// Reads nodes from a file or from every `.yaml`, `.yml` and `.json` file of a directory (in
/// name order). Accepts what `kubectl get nodes -o yaml|json` prints (a `List`), single Node
/// objects, and multi-document YAML. Node names must be unique across all files.
pub fn load_nodes(path: &Path) -> Result<Vec<Node>, InputError> {
    let files = if path.is_dir() {
        let entries = std::fs::read_dir(path)
            .map_err(|e| error(path, "", format!("failed to read directory: {e}")))?;
        let mut files: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                p.is_file()
                    && p.extension()
                        .is_some_and(|e| e == "yaml" || e == "yml" || e == "json")
            })
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(error(
                path,
                "",
                "no .yaml, .yml or .json files in directory",
            ));
        }
        files
    } else {
        vec![path.to_path_buf()]
    };

    let mut nodes = Vec::new();
    let mut seen = HashSet::new();
    for file in &files {
        for (at, doc) in documents(file)? {
            let kind = doc.get("kind").and_then(Value::as_str).unwrap_or("");
            let items = if kind == "List" || kind == "NodeList" {
                let Some(Value::Array(items)) = doc.get("items").cloned() else {
                    return Err(error(file, join(&at, "items"), "missing or not a list"));
                };
                items
                    .into_iter()
                    .enumerate()
                    .map(|(i, item)| (join(&at, &format!("items[{i}]")), item))
                    .collect()
            } else {
                vec![(at, doc)]
            };
            for (at, item) in items {
                let node = parse_node(file, &at, item)?;
                let name = node.metadata.name.clone().unwrap_or_default();
                if !seen.insert(name.clone()) {
                    return Err(error(
                        file,
                        at,
                        format!("node {name:?} appears more than once"),
                    ));
                }
                nodes.push(node);
            }
        }
    }
    if nodes.is_empty() {
        return Err(error(path, "", "no Node objects found"));
    }
    Ok(nodes)
}

/// Reads one `WasmDaemonSet` and validates it.
pub fn load_set(file: &Path) -> Result<WasmDaemonSet, InputError> {
    let mut docs = documents(file)?;
    if docs.len() != 1 {
        return Err(error(
            file,
            "",
            format!(
                "expected exactly one WasmDaemonSet document, found {}",
                docs.len()
            ),
        ));
    }
    let (at, value) = docs.remove(0);
    let api_version = value
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("");
    let kind = value.get("kind").and_then(Value::as_str).unwrap_or("");
    let want_version = format!("{}/{}", crd::GROUP, crd::VERSION);
    if kind != "WasmDaemonSet" || api_version != want_version {
        return Err(error(
            file,
            at,
            format!(
                "expected apiVersion {want_version} and kind WasmDaemonSet, found {} {}",
                if api_version.is_empty() {
                    "(no apiVersion)"
                } else {
                    api_version
                },
                if kind.is_empty() { "(no kind)" } else { kind }
            ),
        ));
    }
    // A misspelt field (`request:` for `requests:`) would otherwise vanish without a trace and
    // change what the set renders, so fields the types do not know are errors, as with
    // kubectl's strict field validation. `status` is the controller's and is not checked;
    // `apiVersion` and `kind` were checked above.
    let mut unknown = Vec::new();
    let mut note = |path: serde_ignored::Path<'_>| unknown.push(path.to_string());
    let tracked = serde_ignored::Deserializer::new(value, &mut note);
    let mut set: WasmDaemonSet = serde_path_to_error::deserialize(tracked).map_err(|e| {
        let path = e.path().to_string();
        error(file, join(&at, &path), e.into_inner().to_string())
    })?;
    let checked = |p: &&String| !(p.starts_with("status") || *p == "apiVersion" || *p == "kind");
    if let Some(path) = unknown.iter().find(checked) {
        return Err(error(file, join(&at, &field_path(path)), "unknown field"));
    }
    if set.metadata.namespace.is_none() {
        set.metadata.namespace = Some("default".to_string());
    }
    validate(&set).map_err(|(field, message)| error(file, join(&at, &field), message))?;
    Ok(set)
}

/// What the API server rejects in a daemon pod template: a restart policy other than `Always`,
/// two containers of one name, a request or limit that is not a non-negative quantity.
fn check_pod_template(pod: &k8s_openapi::api::core::v1::PodSpec) -> Result<(), (String, String)> {
    if let Some(policy) = pod.restart_policy.as_deref()
        && policy != "Always"
    {
        return Err((
            "restartPolicy".into(),
            format!("{policy:?} is not supported; a daemon pod restarts Always"),
        ));
    }
    let mut seen = HashSet::new();
    let lists = [
        ("containers", Some(&pod.containers)),
        ("initContainers", pod.init_containers.as_ref()),
    ];
    for (list, containers) in lists {
        for (i, container) in containers.into_iter().flatten().enumerate() {
            let at = format!("{list}[{i}]");
            if !seen.insert(container.name.as_str()) {
                return Err((
                    format!("{at}.name"),
                    format!("duplicate container {:?}", container.name),
                ));
            }
            let resources = container.resources.as_ref();
            for (kind, map) in [
                ("requests", resources.and_then(|r| r.requests.as_ref())),
                ("limits", resources.and_then(|r| r.limits.as_ref())),
            ] {
                for (name, quantity) in map.into_iter().flatten() {
                    let field = format!("{at}.resources.{kind}.{name}");
                    match crate::quantity::parse_milli(&quantity.0) {
                        Ok(milli) if milli >= 0 => {}
                        Ok(_) => return Err((field, format!("{:?} is negative", quantity.0))),
                        Err(e) => return Err((field, e.to_string())),
                    }
                }
            }
        }
    }
    Ok(())
}

/// `spec.template.?.containers.0.image` as `spec.template.containers[0].image`: the optional
/// markers dropped and list positions in brackets.
fn field_path(path: &str) -> String {
    let mut out = String::new();
    for part in path.split('.').filter(|p| *p != "?") {
        if part.bytes().all(|b| b.is_ascii_digit()) && !out.is_empty() {
            out.push_str(&format!("[{part}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(part);
        }
    }
    out
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Checks what the CRD schema cannot say. Returns the offending field path and a message.
pub fn validate(set: &WasmDaemonSet) -> Result<(), (String, String)> {
    let fail = |field: &str, message: String| Err((field.to_string(), message));
    if set.metadata.name.as_deref().is_none_or(str::is_empty) {
        return fail("metadata.name", "missing".into());
    }
    let spec = &set.spec;
    if selector::is_empty(&spec.selector) {
        return fail(
            "spec.selector",
            "must select something; an empty selector is invalid".into(),
        );
    }
    let template_labels = spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.as_ref());
    match selector::matches(&spec.selector, template_labels) {
        Err(message) => return fail("spec.selector", message),
        Ok(false) => {
            return fail(
                "spec.template.metadata.labels",
                "do not match spec.selector; the set would never find its own pods".into(),
            );
        }
        Ok(true) => {}
    }
    let containers = spec
        .template
        .spec
        .as_ref()
        .map(|s| s.containers.len())
        .unwrap_or(0);
    if containers == 0 {
        return fail(
            "spec.template.spec.containers",
            "at least one container is required".into(),
        );
    }

    if let Some(pod) = &spec.template.spec {
        check_pod_template(pod)
            .map_err(|(field, message)| (format!("spec.template.spec.{field}"), message))?;
    }

    let mut names = HashSet::new();
    for (i, variant) in spec.variants.iter().enumerate() {
        let field = format!("spec.variants[{i}]");
        if !is_dns_label(&variant.name) {
            return fail(
                &format!("{field}.name"),
                format!(
                    "{:?} is not a DNS label (lower-case a-z, 0-9, '-')",
                    variant.name
                ),
            );
        }
        if !names.insert(variant.name.as_str()) {
            return fail(
                &format!("{field}.name"),
                format!("duplicate variant {:?}", variant.name),
            );
        }
        render::check_overlay(
            &spec.template,
            &format!("variant {:?}", variant.name),
            &variant.overlay,
        )
        .map_err(|e| (format!("{field}.overlay"), e.to_string()))?;
    }

    if let Some(policy) = &spec.policy {
        if !is_dns_label(&policy.plugin) {
            return fail(
                "spec.policy.plugin",
                format!("{:?} is not a valid plugin name", policy.plugin),
            );
        }
        if let Some(digest) = &policy.digest {
            let hex = digest.strip_prefix("sha256:").unwrap_or("");
            if hex.len() != 64
                || !hex
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            {
                return fail(
                    "spec.policy.digest",
                    format!("{digest:?} is not sha256:<64 hex>"),
                );
            }
        }
    }

    if let Some(strategy) = &spec.update_strategy {
        let rolling = strategy.rolling_update.as_ref();
        if strategy.type_ == UpdateStrategyType::OnDelete && rolling.is_some() {
            return fail(
                "spec.updateStrategy.rollingUpdate",
                "not allowed with OnDelete".into(),
            );
        }
        if let Some(rolling) = rolling {
            let check = |field: &str,
                         value: &Option<IntOrString>|
             -> Result<i64, (String, String)> {
                let path = format!("spec.updateStrategy.rollingUpdate.{field}");
                match value {
                    None => Ok(0),
                    Some(IntOrString::Int(n)) if *n >= 0 => Ok(i64::from(*n)),
                    Some(IntOrString::String(s)) => {
                        match s.strip_suffix('%').map(str::parse::<u32>) {
                            Some(Ok(p)) if p <= 100 => Ok(i64::from(p)),
                            _ => Err((path, format!("{s:?} is not a percentage from 0% to 100%"))),
                        }
                    }
                    Some(IntOrString::Int(n)) => Err((path, format!("{n} is negative"))),
                }
            };
            let unavailable = check("maxUnavailable", &rolling.max_unavailable)?;
            let surge = check("maxSurge", &rolling.max_surge)?;
            if unavailable == 0 && surge == 0 && rolling.max_unavailable.is_some() {
                return fail(
                    "spec.updateStrategy.rollingUpdate",
                    "maxUnavailable and maxSurge cannot both be 0".into(),
                );
            }
        }
    }
    Ok(())
}
