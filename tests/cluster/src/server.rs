//! The HTTP front of the test API server: routing, request decoding, watches and fault hooks.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State as AxumState};
use axum::response::{IntoResponse, Response};
use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

use crate::faults::{Fault, Faults};
use crate::patch;
use crate::resources::ResourceDef;
use crate::selectors::{FieldSelector, LabelSelector};
use crate::status::ApiError;
use crate::store::{
    DeleteOpts, Event, EventType, GcWork, State, Stored, Sub, now, present_raw, present_value,
};

/// Tunables of one test API server.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// How many change events are kept for resuming watches (older resourceVersions get 410).
    pub history_limit: usize,
    /// How often watches that asked for bookmarks receive one.
    pub bookmark_interval: Duration,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            history_limit: 50_000,
            bookmark_interval: Duration::from_secs(1),
        }
    }
}

/// State shared by every connection of one test API server.
pub(crate) struct Shared {
    state: Mutex<State>,
    pub faults: Mutex<Faults>,
    pub cut: watch::Sender<u64>,
    gc_tx: mpsc::UnboundedSender<GcWork>,
    pub options: ServerOptions,
}

impl Shared {
    pub fn new(options: ServerOptions) -> Arc<Self> {
        let (gc_tx, gc_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Self {
            state: Mutex::new(State::new(options.history_limit, gc_tx.clone())),
            faults: Mutex::new(Faults::default()),
            cut: watch::channel(0).0,
            gc_tx,
            options,
        });
        tokio::spawn(gc_loop(Arc::downgrade(&shared), gc_rx));
        shared
    }

    pub fn state(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn faults(&self) -> MutexGuard<'_, Faults> {
        self.faults
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn cut_watches(&self) {
        self.cut.send_modify(|generation| *generation += 1);
    }

    /// Replaces the whole store with an empty one.
    pub fn wipe(&self) {
        *self.state() = State::new(self.options.history_limit, self.gc_tx.clone());
        self.cut_watches();
    }
}

async fn gc_loop(shared: Weak<Shared>, mut rx: mpsc::UnboundedReceiver<GcWork>) {
    while let Some(work) = rx.recv().await {
        let Some(shared) = shared.upgrade() else {
            break;
        };
        shared.state().collect(work);
    }
}

/// The router serving the Kubernetes API for `shared`.
pub(crate) fn router(shared: Arc<Shared>) -> axum::Router {
    axum::Router::new().fallback(handle).with_state(shared)
}

fn json_response(code: u16, body: Bytes) -> Response {
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::OK);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

fn value_response(code: u16, value: &Value) -> Response {
    json_response(
        code,
        Bytes::from(serde_json::to_vec(value).unwrap_or_default()),
    )
}

fn error_response(err: &ApiError) -> Response {
    let mut resp = value_response(err.code, &err.to_status());
    if err.code == 429 {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    resp
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_query(query: Option<&str>) -> HashMap<String, String> {
    query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (percent_decode(k), percent_decode(v)),
            None => (percent_decode(p), String::new()),
        })
        .collect()
}

/// A request path, decoded.
enum Route {
    Version,
    CoreVersions,
    Groups,
    Group(String),
    ResourceList(String, String),
    Resource {
        group: String,
        version: String,
        plural: String,
        ns: String,
        name: Option<String>,
        sub: Option<String>,
    },
    NotFound,
}

fn route(path: &str) -> Route {
    let segs: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let (group, version, rest) = match segs.as_slice() {
        ["version"] => return Route::Version,
        ["api"] => return Route::CoreVersions,
        ["apis"] => return Route::Groups,
        ["apis", g] => return Route::Group(g.to_string()),
        ["api", v] => return Route::ResourceList(String::new(), v.to_string()),
        ["apis", g, v] => return Route::ResourceList(g.to_string(), v.to_string()),
        ["api", v, rest @ ..] => (String::new(), v.to_string(), rest),
        ["apis", g, v, rest @ ..] => (g.to_string(), v.to_string(), rest),
        _ => return Route::NotFound,
    };
    let (ns, rest) = match rest {
        ["namespaces", ns, plural, tail @ ..] if !matches!(*plural, "status" | "finalize") => (
            ns.to_string(),
            std::iter::once(*plural)
                .chain(tail.iter().copied())
                .collect::<Vec<_>>(),
        ),
        other => (String::new(), other.to_vec()),
    };
    match rest.as_slice() {
        [plural] => Route::Resource {
            group,
            version,
            plural: plural.to_string(),
            ns,
            name: None,
            sub: None,
        },
        [plural, name] => Route::Resource {
            group,
            version,
            plural: plural.to_string(),
            ns,
            name: Some(name.to_string()),
            sub: None,
        },
        [plural, name, sub] => Route::Resource {
            group,
            version,
            plural: plural.to_string(),
            ns,
            name: Some(name.to_string()),
            sub: Some(sub.to_string()),
        },
        _ => Route::NotFound,
    }
}

async fn handle(AxumState(shared): AxumState<Arc<Shared>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let query = parse_query(parts.uri.query());
    let path = parts.uri.path().to_string();
    let route = route(&path);
    if let Route::Resource { plural, sub, .. } = &route {
        let (fault, delay) = shared.faults().check(&parts.method, plural, sub.as_deref());
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if let Some(fault) = fault {
            let err = match fault {
                Fault::Conflict => ApiError::new(409, "Conflict", "injected conflict"),
                Fault::TooManyRequests => {
                    ApiError::new(429, "TooManyRequests", "injected throttling")
                }
                Fault::InternalError => ApiError::internal("injected internal error"),
            };
            return error_response(&err);
        }
    }
    let body = match axum::body::to_bytes(body, 64 << 20).await {
        Ok(b) => b,
        Err(e) => return error_response(&ApiError::bad_request(format!("reading body: {e}"))),
    };
    match dispatch(&shared, &parts.method, &parts.headers, route, &query, body).await {
        Ok(resp) => resp,
        Err(err) => error_response(&err),
    }
}

fn version_doc() -> Value {
    json!({
        "major": "1",
        "minor": "28",
        "gitVersion": "v1.28.0-testcluster",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2024-01-01T00:00:00Z",
        "goVersion": "go1.20",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

async fn dispatch(
    shared: &Arc<Shared>,
    method: &Method,
    headers: &HeaderMap,
    route: Route,
    query: &HashMap<String, String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let not_found = || {
        ApiError::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
    };
    let (group, version, plural, ns, name, sub) = match route {
        Route::Version => return Ok(value_response(200, &version_doc())),
        Route::CoreVersions => {
            return Ok(value_response(
                200,
                &json!({
                    "kind": "APIVersions",
                    "versions": ["v1"],
                    "serverAddressByClientCIDRs": [
                        {"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1:0"}
                    ],
                }),
            ));
        }
        Route::Groups => {
            return Ok(value_response(
                200,
                &shared.state().registry.api_group_list(),
            ));
        }
        Route::Group(g) => {
            let doc = shared
                .state()
                .registry
                .api_group(&g)
                .ok_or_else(not_found)?;
            return Ok(value_response(200, &doc));
        }
        Route::ResourceList(g, v) => {
            let doc = shared
                .state()
                .registry
                .resource_list(&g, &v)
                .ok_or_else(not_found)?;
            return Ok(value_response(200, &doc));
        }
        Route::NotFound => return Err(not_found()),
        Route::Resource {
            group,
            version,
            plural,
            ns,
            name,
            sub,
        } => (group, version, plural, ns, name, sub),
    };
    let def = shared
        .state()
        .registry
        .get(&group, &version, &plural)
        .ok_or_else(not_found)?;
    let scope_ok = if def.namespaced {
        !ns.is_empty() || name.is_none()
    } else {
        ns.is_empty()
    };
    if !scope_ok {
        return Err(not_found());
    }
    let sub = match sub.as_deref() {
        None => None,
        Some("status") if def.status => Some("status"),
        Some("binding") if def.binding => Some("binding"),
        Some(_) => return Err(not_found()),
    };
    if method != Method::GET && query.contains_key("dryRun") {
        // Dry runs would need every write path to work on a copy; callers get a clear refusal
        // instead of a silent real write.
        return Err(ApiError::bad_request(
            "dryRun is not supported by the test API server",
        ));
    }
    let table = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("as=Table"));
    match (method.clone(), name, sub) {
        (Method::GET, None, None) => {
            let watching = query.get("watch").is_some_and(|w| w == "true" || w == "1");
            if watching {
                watch(shared, &def, &ns, query)
            } else {
                list(shared, &def, &ns, query, table)
            }
        }
        (Method::GET, Some(name), _) => {
            let obj = shared.state().get(&def, &ns, &name)?;
            if table {
                return Ok(value_response(
                    200,
                    &table_of(&def, std::slice::from_ref(&obj), None, 0),
                ));
            }
            Ok(json_response(200, present_raw(&def, &obj)))
        }
        (Method::POST, None, None) => {
            let body = parse_body(&body)?;
            let obj = shared.state().create(&def, &ns, body)?;
            Ok(json_response(201, present_raw(&def, &obj)))
        }
        (Method::POST, Some(name), Some("binding")) => {
            let binding = parse_body(&body)?;
            let node = binding["target"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            shared.state().bind(&def, &ns, &name, &node)?;
            Ok(value_response(
                201,
                &json!({
                    "kind": "Status",
                    "apiVersion": "v1",
                    "metadata": {},
                    "status": "Success",
                    "code": 201
                }),
            ))
        }
        (Method::PUT, Some(name), sub) if sub != Some("binding") => {
            let new = parse_body(&body)?;
            let sub = if sub == Some("status") {
                Sub::Status
            } else {
                Sub::Main
            };
            let obj = shared.state().update(&def, &ns, &name, sub, new)?;
            Ok(json_response(200, present_raw(&def, &obj)))
        }
        (Method::PATCH, Some(name), sub) if sub != Some("binding") => {
            let sub = if sub == Some("status") {
                Sub::Status
            } else {
                Sub::Main
            };
            let ct = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            let ct = ct.split(';').next().unwrap_or_default().trim().to_string();
            let (code, obj) = patch_object(shared, &def, &ns, &name, sub, &ct, query, &body)?;
            Ok(json_response(code, present_raw(&def, &obj)))
        }
        (Method::DELETE, Some(name), None) => {
            let opts = delete_opts(query, &body)?;
            let obj = shared.state().delete(&def, &ns, &name, &opts)?;
            Ok(json_response(200, present_raw(&def, &obj)))
        }
        (Method::DELETE, None, None) => {
            let opts = delete_opts(query, &body)?;
            let labels =
                LabelSelector::parse(query.get("labelSelector").map_or("", String::as_str))?;
            let fields = FieldSelector::parse(
                query.get("fieldSelector").map_or("", String::as_str),
                &def.storage,
            )?;
            let mut state = shared.state();
            let listed = state.list(&def, &ns, &labels, &fields, None, None)?;
            for obj in listed.items {
                let meta = &obj.value["metadata"];
                let (ons, oname) = (
                    meta["namespace"].as_str().unwrap_or_default(),
                    meta["name"].as_str().unwrap_or_default(),
                );
                let _ = state.delete(&def, ons, oname, &opts);
            }
            Ok(value_response(
                200,
                &json!({
                    "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"
                }),
            ))
        }
        _ => Err(ApiError::method_not_allowed()),
    }
}

fn parse_body(body: &[u8]) -> Result<Value, ApiError> {
    if body.is_empty() {
        return Err(ApiError::bad_request("the request body is empty"));
    }
    match serde_json::from_slice(body) {
        Ok(v) => Ok(v),
        Err(json_err) => serde_yaml::from_slice(body).map_err(|_| {
            ApiError::bad_request(format!("the request body is not valid JSON: {json_err}"))
        }),
    }
}

fn delete_opts(query: &HashMap<String, String>, body: &[u8]) -> Result<DeleteOpts, ApiError> {
    let mut opts = DeleteOpts::default();
    if !body.is_empty() {
        let v: Value = serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("invalid DeleteOptions: {e}")))?;
        opts.grace = v["gracePeriodSeconds"].as_i64();
        opts.propagation = v["propagationPolicy"].as_str().map(str::to_string);
        if v["orphanDependents"] == true && opts.propagation.is_none() {
            opts.propagation = Some("Orphan".into());
        }
        opts.uid = v["preconditions"]["uid"].as_str().map(str::to_string);
        opts.resource_version = v["preconditions"]["resourceVersion"]
            .as_str()
            .map(str::to_string);
    }
    if let Some(g) = query.get("gracePeriodSeconds") {
        opts.grace = Some(
            g.parse()
                .map_err(|_| ApiError::bad_request(format!("invalid gracePeriodSeconds: {g}")))?,
        );
    }
    if let Some(p) = query.get("propagationPolicy") {
        opts.propagation = Some(p.clone());
    }
    if query.get("orphanDependents").is_some_and(|o| o == "true") && opts.propagation.is_none() {
        opts.propagation = Some("Orphan".into());
    }
    Ok(opts)
}

fn list(
    shared: &Arc<Shared>,
    def: &Arc<ResourceDef>,
    ns: &str,
    query: &HashMap<String, String>,
    table: bool,
) -> Result<Response, ApiError> {
    let labels = LabelSelector::parse(query.get("labelSelector").map_or("", String::as_str))?;
    let fields = FieldSelector::parse(
        query.get("fieldSelector").map_or("", String::as_str),
        &def.storage,
    )?;
    let limit = match query.get("limit").map(String::as_str) {
        None | Some("") | Some("0") => None,
        Some(l) => Some(
            l.parse::<usize>()
                .map_err(|_| ApiError::bad_request(format!("invalid limit: {l}")))?,
        ),
    };
    let cont = query
        .get("continue")
        .map(String::as_str)
        .filter(|c| !c.is_empty());
    let result = shared
        .state()
        .list(def, ns, &labels, &fields, limit, cont)?;
    if table {
        return Ok(value_response(
            200,
            &table_of(def, &result.items, result.cont.as_deref(), result.rv),
        ));
    }
    let mut out =
        BytesMut::with_capacity(128 + result.items.iter().map(|i| i.raw.len() + 1).sum::<usize>());
    let mut meta = json!({"resourceVersion": result.rv.to_string()});
    if let Some(c) = &result.cont {
        meta["continue"] = json!(c);
    }
    out.put_slice(
        format!(
            "{{\"kind\":\"{}List\",\"apiVersion\":\"{}\",\"metadata\":{},\"items\":[",
            def.kind,
            def.api_version(),
            meta
        )
        .as_bytes(),
    );
    for (i, item) in result.items.iter().enumerate() {
        if i > 0 {
            out.put_u8(b',');
        }
        out.put_slice(&present_raw(def, item));
    }
    out.put_slice(b"]}");
    Ok(json_response(200, out.freeze()))
}

/// An age the way kubectl prints it (`45s`, `3m20s`, `5h`, `2d`).
fn human_age(secs: i64) -> String {
    let secs = secs.max(0);
    match secs {
        0..120 => format!("{secs}s"),
        120..600 => format!("{}m{}s", secs / 60, secs % 60),
        600..10_800 => format!("{}m", secs / 60),
        10_800..172_800 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86_400),
    }
}

fn table_of(def: &ResourceDef, items: &[Arc<Stored>], cont: Option<&str>, rv: u64) -> Value {
    let now = k8s_openapi::jiff::Timestamp::now();
    let rows: Vec<Value> = items
        .iter()
        .map(|o| {
            let meta = &o.value["metadata"];
            let age = meta["creationTimestamp"]
                .as_str()
                .and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok())
                .map(|t| human_age(now.duration_since(t).as_secs()))
                .unwrap_or_default();
            let mut partial = json!({
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": meta,
            });
            if let Some(m) = partial["metadata"].as_object_mut() {
                m.remove("managedFields");
            }
            json!({"cells": [meta["name"], age], "object": partial})
        })
        .collect();
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if let Some(c) = cont {
        meta["continue"] = json!(c);
    }
    let _ = def;
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": meta,
        "columnDefinitions": [
            {
                "name": "Name", "type": "string", "format": "name", "description": "Name",
                "priority": 0
            },
            {"name": "Age", "type": "string", "format": "", "description": "Age", "priority": 0},
        ],
        "rows": rows,
    })
}

#[expect(
    clippy::too_many_arguments,
    reason = "a patch request has this many independent inputs"
)]
fn patch_object(
    shared: &Arc<Shared>,
    def: &Arc<ResourceDef>,
    ns: &str,
    name: &str,
    sub: Sub,
    content_type: &str,
    query: &HashMap<String, String>,
    body: &[u8],
) -> Result<(u16, Arc<Stored>), ApiError> {
    if content_type == "application/apply-patch+yaml" {
        let manager = query
            .get("fieldManager")
            .filter(|m| !m.is_empty())
            .ok_or_else(|| {
                ApiError::bad_request(
                    "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is \
                 required for apply patch",
                )
            })?;
        let force = query.get("force").is_some_and(|f| f == "true");
        let applied = parse_body(body)?;
        return apply(shared, def, ns, name, sub, applied, manager, force);
    }
    let mut state = shared.state();
    let old = state.get(def, ns, name)?;
    let mut doc = present_value(def, &old.value);
    match content_type {
        "application/merge-patch+json" => {
            let p: Value = serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("invalid merge patch: {e}")))?;
            json_patch::merge(&mut doc, &p);
        }
        "application/json-patch+json" => {
            let p: json_patch::Patch = serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?;
            apply_json_patch(&mut doc, p)?;
        }
        "application/strategic-merge-patch+json" if def.strategic => {
            let p: Value = serde_json::from_slice(body).map_err(|e| {
                ApiError::bad_request(format!("invalid strategic merge patch: {e}"))
            })?;
            patch::strategic_merge(&mut doc, &p);
        }
        other => return Err(ApiError::unsupported_media(other)),
    }
    Ok((200, state.update(def, ns, name, sub, doc)?))
}

/// Applies an RFC 6902 patch with kube-apiserver's reading of `test`: a test for `null` passes
/// when the tested member is absent (`kube::runtime::finalizer` relies on this).
fn apply_json_patch(doc: &mut Value, patch: json_patch::Patch) -> Result<(), ApiError> {
    let invalid = |e: &dyn std::fmt::Display| {
        ApiError::new(
            422,
            "Invalid",
            format!("the server rejected our request due to an error in our request: {e}"),
        )
    };
    for op in patch.0 {
        if let json_patch::PatchOperation::Test(test) = &op
            && test.value.is_null()
            && doc.pointer(test.path.as_str()).is_none()
        {
            let parent = test
                .path
                .parent()
                .map(|p| p.as_str().to_string())
                .unwrap_or_default();
            if doc.pointer(&parent).is_some() {
                continue;
            }
        }
        json_patch::patch(doc, std::slice::from_ref(&op)).map_err(|e| invalid(&e))?;
    }
    Ok(())
}

/// Server-side apply, approximated.
///
/// Unlike kube-apiserver this tracks ownership only for fields set through apply: conflicts are
/// detected between appliers, not against managers of plain updates, and ownership of fields
/// written by updates is not recorded. Applying merges the configuration into the live object
/// (lists with merge keys merged by key, other lists replaced) and removes the fields this
/// manager applied before but no longer applies, unless another applier also owns them.
#[expect(
    clippy::too_many_arguments,
    reason = "an apply request has this many independent inputs"
)]
fn apply(
    shared: &Arc<Shared>,
    def: &Arc<ResourceDef>,
    ns: &str,
    name: &str,
    sub: Sub,
    applied: Value,
    manager: &str,
    force: bool,
) -> Result<(u16, Arc<Stored>), ApiError> {
    if !applied.is_object() || !matches!(applied["metadata"], Value::Null | Value::Object(_)) {
        return Err(ApiError::bad_request(
            "the applied configuration must be an object",
        ));
    }
    if let Some(body_name) = applied["metadata"]["name"].as_str()
        && body_name != name
    {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({body_name}) does not match the name on the URL ({name})"
        )));
    }
    let status_only = sub == Sub::Status;
    let paths: std::collections::BTreeSet<patch::FieldPath> =
        patch::field_paths(&applied, def.strategic)
            .into_iter()
            .filter(|p| (p.first().map(String::as_str) == Some("f:status")) == status_only)
            .collect();
    let entry = |paths: &std::collections::BTreeSet<patch::FieldPath>| {
        let mut e = json!({
            "manager": manager,
            "operation": "Apply",
            "apiVersion": def.api_version(),
            "time": now(),
            "fieldsType": "FieldsV1",
            "fieldsV1": patch::to_fields_v1(paths),
        });
        if status_only {
            e["subresource"] = json!("status");
        }
        e
    };
    let mut state = shared.state();
    let old = match state.get(def, ns, name) {
        Ok(old) => old,
        Err(e) if e.code == 404 && !status_only => {
            let mut obj = applied.clone();
            obj["metadata"]["managedFields"] = json!([entry(&paths)]);
            return Ok((201, state.create(def, ns, obj)?));
        }
        Err(e) => return Err(e),
    };
    let current = present_value(def, &old.value);
    let subresource = if status_only {
        json!("status")
    } else {
        Value::Null
    };
    let mut entries: Vec<Value> = current["metadata"]["managedFields"]
        .as_array()
        .map(|a| a.iter().filter(|e| e.is_object()).cloned().collect())
        .unwrap_or_default();
    let is_mine = |e: &Value| {
        e["manager"] == manager
            && e["operation"] == "Apply"
            && e.get("subresource").cloned().unwrap_or(Value::Null) == subresource
    };
    let previous = entries
        .iter()
        .find(|e| is_mine(e))
        .map(|e| patch::from_fields_v1(&e["fieldsV1"]))
        .unwrap_or_default();
    let mut conflicts = Vec::new();
    let mut took_ownership = false;
    for e in entries
        .iter_mut()
        .filter(|e| !is_mine(e) && e["operation"] == "Apply")
    {
        let mut owned = patch::from_fields_v1(&e["fieldsV1"]);
        let clashing: Vec<patch::FieldPath> = owned
            .intersection(&paths)
            .filter(|p| patch::value_at(&current, p) != patch::value_at(&applied, p))
            .cloned()
            .collect();
        if clashing.is_empty() {
            continue;
        }
        if force {
            took_ownership = true;
            for p in &clashing {
                owned.remove(p);
            }
            e["fieldsV1"] = patch::to_fields_v1(&owned);
        } else {
            let who = e["manager"].as_str().unwrap_or_default().to_string();
            conflicts.extend(
                clashing
                    .iter()
                    .map(|p| format!("conflict with \"{who}\": {}", patch::display_path(p))),
            );
        }
    }
    if !conflicts.is_empty() {
        let n = conflicts.len();
        return Err(ApiError::new(
            409,
            "Conflict",
            format!(
                "Apply failed with {n} conflict{}: {}",
                if n == 1 { "" } else { "s" },
                conflicts.join(", ")
            ),
        ));
    }
    let others: std::collections::BTreeSet<patch::FieldPath> = entries
        .iter()
        .filter(|e| !is_mine(e))
        .flat_map(|e| patch::from_fields_v1(&e["fieldsV1"]))
        .collect();
    let mut merged = current.clone();
    let mut config = applied.clone();
    if let Some(m) = config["metadata"].as_object_mut() {
        m.remove("managedFields");
    }
    patch::apply_merge(&mut merged, &config, def.strategic);
    for p in previous.difference(&paths) {
        if !others.contains(p) {
            patch::remove_at(&mut merged, p);
        }
    }
    let stale = |e: &Value| {
        e["operation"] == "Apply" && e["fieldsV1"].as_object().is_some_and(|m| m.is_empty())
    };
    // Re-applying an unchanged configuration changes nothing, as in kube-apiserver: no new
    // resourceVersion, no watch event.
    let comparable = |v: &Value| {
        let mut v = v.clone();
        if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.remove("managedFields");
            meta.remove("resourceVersion");
        }
        if status_only {
            return v.get("status").cloned().unwrap_or(Value::Null);
        }
        if let Some(obj) = v.as_object_mut() {
            obj.remove("status");
        }
        v
    };
    let had_entry = entries.iter().any(&is_mine);
    if had_entry
        && !took_ownership
        && previous == paths
        && comparable(&merged) == comparable(&current)
    {
        return Ok((200, old));
    }
    entries.retain(|e| !is_mine(e) && !stale(e));
    entries.push(entry(&paths));
    merged["metadata"]["managedFields"] = json!(entries);
    Ok((200, state.update(def, ns, name, sub, merged)?))
}

/// Serialized watch event lines.
fn event_line(kind: &str, object: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(object.len() + 32);
    out.put_slice(b"{\"type\":\"");
    out.put_slice(kind.as_bytes());
    out.put_slice(b"\",\"object\":");
    out.put_slice(object);
    out.put_slice(b"}\n");
    out.freeze()
}

struct WatchFilter {
    def: Arc<ResourceDef>,
    ns: String,
    labels: LabelSelector,
    fields: FieldSelector,
}

impl WatchFilter {
    fn selects(&self, obj: &Stored) -> bool {
        (self.labels.is_empty() || self.labels.matches(&obj.value))
            && (self.fields.is_empty() || self.fields.matches(&obj.value))
    }

    /// The line to send for an event, if the watcher sees it.
    fn render(&self, event: &Event) -> Option<Bytes> {
        if &*event.storage != self.def.storage.as_str() {
            return None;
        }
        if self.def.namespaced && !self.ns.is_empty() && event.namespace() != self.ns {
            return None;
        }
        let now = self.selects(&event.object);
        let before = event.prev.as_deref().is_some_and(|p| self.selects(p));
        let kind = match event.kind {
            EventType::Added if now => EventType::Added,
            EventType::Modified if now && before => EventType::Modified,
            EventType::Modified if now => EventType::Added,
            EventType::Modified if before => EventType::Deleted,
            EventType::Deleted if before || now => EventType::Deleted,
            _ => return None,
        };
        Some(event_line(
            kind.as_str(),
            &present_raw(&self.def, &event.object),
        ))
    }
}

fn watch(
    shared: &Arc<Shared>,
    def: &Arc<ResourceDef>,
    ns: &str,
    query: &HashMap<String, String>,
) -> Result<Response, ApiError> {
    let filter = WatchFilter {
        def: def.clone(),
        ns: ns.to_string(),
        labels: LabelSelector::parse(query.get("labelSelector").map_or("", String::as_str))?,
        fields: FieldSelector::parse(
            query.get("fieldSelector").map_or("", String::as_str),
            &def.storage,
        )?,
    };
    let from = match query.get("resourceVersion").map(String::as_str) {
        None | Some("") => None,
        Some(rv) => Some(
            rv.parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("invalid resource version: {rv}")))?,
        ),
    };
    let bookmarks = query
        .get("allowWatchBookmarks")
        .is_some_and(|b| b == "true" || b == "1");
    let timeout = match query.get("timeoutSeconds") {
        Some(t) => Duration::from_secs(
            t.parse()
                .map_err(|_| ApiError::bad_request(format!("invalid timeoutSeconds: {t}")))?,
        ),
        None => Duration::from_secs(1800),
    };
    let (tx, rx) = mpsc::channel::<Bytes>(1024);
    let start = shared.state().watch(def, ns, from);
    let cut = shared.cut.subscribe();
    let interval = shared.options.bookmark_interval;
    match start {
        Err(err) => {
            let line = event_line(
                "ERROR",
                &serde_json::to_vec(&err.to_status()).unwrap_or_default(),
            );
            let _ = tx.try_send(line);
        }
        Ok(start) => {
            tokio::spawn(stream_watch(
                filter, start, tx, cut, bookmarks, timeout, interval,
            ));
        }
    }
    let mut rx = rx;
    let stream = futures::stream::poll_fn(move |cx| {
        rx.poll_recv(cx).map(|o| o.map(Ok::<_, std::io::Error>))
    });
    let mut resp = Body::from_stream(stream).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}

async fn stream_watch(
    filter: WatchFilter,
    start: crate::store::WatchStart,
    tx: mpsc::Sender<Bytes>,
    mut cut: watch::Receiver<u64>,
    bookmarks: bool,
    timeout: Duration,
    interval: Duration,
) {
    let mut rx = start.rx;
    let mut progress = start.rv;
    for event in &start.initial {
        if let Some(line) = filter.render(event)
            && tx.send(line).await.is_err()
        {
            return;
        }
    }
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let mut tick = tokio::time::interval(interval);
    tick.tick().await;
    let api_version = filter.def.api_version();
    loop {
        tokio::select! {
            _ = &mut deadline => break,
            _ = cut.changed() => break,
            _ = tx.closed() => break,
            _ = tick.tick() => {
                if bookmarks {
                    let object = json!({
                        "kind": filter.def.kind,
                        "apiVersion": api_version,
                        "metadata": {"resourceVersion": progress.to_string()},
                    });
                    let raw = serde_json::to_vec(&object).unwrap_or_default();
                    let line = event_line("BOOKMARK", &raw);
                    if tx.send(line).await.is_err() {
                        break;
                    }
                }
            }
            event = rx.recv() => match event {
                Ok(event) => {
                    progress = event.rv;
                    if let Some(line) = filter.render(&event)
                        && tx.send(line).await.is_err()
                    {
                        break;
                    }
                }
                // A watcher that fell behind is cut; it resumes from its last resourceVersion.
                Err(_) => break,
            },
        }
    }
}
