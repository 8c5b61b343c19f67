//! Malformed requests get `Status` errors from the in-process server, never a dropped connection.

use anyhow::Result;
use http::{Method, Request};
use kube::api::{Api, PostParams};
use serde_json::json;
use wasmdaemon_testcluster::TestCluster;

async fn send(
    client: &kube::Client,
    method: Method,
    path: &str,
    ct: &str,
    body: &str,
) -> Result<u16> {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", ct)
        .body(kube::client::Body::from(body.as_bytes().to_vec()))?;
    let response = client.send(request).await?;
    Ok(response.status().as_u16())
}

#[tokio::test]
async fn malformed_requests_are_answered_with_client_errors() -> Result<()> {
    let cluster = TestCluster::start().await?;
    let client = cluster.client();
    let cms: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::default_namespaced(client.clone());
    cms.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "x"}}))?,
    )
    .await?;
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::default_namespaced(client.clone());
    let pod =
        json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i:1"}]}});
    pods.create(&PostParams::default(), &serde_json::from_value(pod)?)
        .await?;
    let json = "application/json";
    let merge = "application/merge-patch+json";
    let smp = "application/strategic-merge-patch+json";
    let apply = "application/apply-patch+yaml";
    let cases: Vec<(Method, &str, &str, &str)> = vec![
        (
            Method::POST,
            "/api/v1/namespaces/default/configmaps",
            json,
            "not json",
        ),
        (
            Method::POST,
            "/api/v1/namespaces/default/configmaps",
            json,
            "[1,2]",
        ),
        (
            Method::POST,
            "/api/v1/namespaces/default/configmaps",
            json,
            r#"{"metadata": "x"}"#,
        ),
        (
            Method::POST,
            "/api/v1/namespaces/default/configmaps",
            json,
            r#"{"metadata": {"name": "y", "labels": [1]}}"#,
        ),
        (
            Method::POST,
            "/api/v1/namespaces/default/configmaps",
            json,
            r#"{"metadata": {"name": "y", "finalizers": "f"}}"#,
        ),
        (
            Method::POST,
            "/api/v1/namespaces/default/pods",
            json,
            r#"{"metadata": {"name": "q"}, "spec": "x"}"#,
        ),
        (
            Method::POST,
            "/api/v1/namespaces/default/pods",
            json,
            r#"{"metadata": {"name": "q"}, "spec": {"containers": [1], "initContainers": [2]}}"#,
        ),
        (
            Method::POST,
            "/api/v1/nodes",
            json,
            r#"{"metadata": {"name": "n"}, "spec": {"taints": {}}}"#,
        ),
        (
            Method::POST,
            "/api/v1/namespaces/default/pods/p/binding",
            json,
            "{}",
        ),
        (
            Method::POST,
            "/api/v1/namespaces/default/pods/p/binding",
            json,
            r#"{"target": 5}"#,
        ),
        (
            Method::PUT,
            "/api/v1/namespaces/default/configmaps/x",
            json,
            r#"{"metadata": {"name": "other"}}"#,
        ),
        (
            Method::PUT,
            "/api/v1/namespaces/default/configmaps/x",
            json,
            r#"{"metadata": {"resourceVersion": "abc"}}"#,
        ),
        (
            Method::PUT,
            "/api/v1/namespaces/default/pods/p/status",
            json,
            r#"{"status": {"conditions": 3}}"#,
        ),
        (
            Method::PATCH,
            "/api/v1/namespaces/default/configmaps/x",
            merge,
            r#"{"metadata": 7}"#,
        ),
        (
            Method::PATCH,
            "/api/v1/namespaces/default/configmaps/x",
            smp,
            r#"{"metadata": {"$patch": 3, "finalizers": [{"$patch": "delete"}]}}"#,
        ),
        (
            Method::PATCH,
            "/api/v1/namespaces/default/configmaps/x",
            "application/json-patch+json",
            r#"[{"op": "nope"}]"#,
        ),
        (
            Method::PATCH,
            "/api/v1/namespaces/default/configmaps/x",
            "application/json-patch+json",
            r#"[{"op": "replace", "path": "/metadata", "value": 1}]"#,
        ),
        (
            Method::PATCH,
            "/api/v1/namespaces/default/configmaps/x",
            "text/plain",
            "{}",
        ),
        (
            Method::PATCH,
            "/api/v1/namespaces/default/configmaps/x?fieldManager=m",
            apply,
            "- a\n- b",
        ),
        (
            Method::PATCH,
            "/api/v1/namespaces/default/configmaps/x?fieldManager=m",
            apply,
            "metadata: [1]",
        ),
        (
            Method::PATCH,
            "/api/v1/namespaces/default/configmaps/x",
            apply,
            "data: {a: b}",
        ),
        (
            Method::PATCH,
            "/api/v1/namespaces/default/pods/p?fieldManager=m",
            apply,
            "spec: {containers: [{name: c, image: 5}], tolerations: 3}",
        ),
        (
            Method::DELETE,
            "/api/v1/namespaces/default/configmaps/x?gracePeriodSeconds=abc",
            json,
            "",
        ),
        (
            Method::DELETE,
            "/api/v1/namespaces/default/configmaps/x",
            json,
            "{{{",
        ),
        (
            Method::DELETE,
            "/api/v1/namespaces/default/configmaps/x?propagationPolicy=Sideways",
            json,
            "",
        ),
        (
            Method::GET,
            "/api/v1/namespaces/default/configmaps?labelSelector=a%20in%20b",
            json,
            "",
        ),
        (
            Method::GET,
            "/api/v1/namespaces/default/configmaps?fieldSelector=spec.x%3D1",
            json,
            "",
        ),
        (
            Method::GET,
            "/api/v1/namespaces/default/configmaps?limit=-1",
            json,
            "",
        ),
        (
            Method::GET,
            "/api/v1/namespaces/default/configmaps?limit=1&continue=zz",
            json,
            "",
        ),
        (
            Method::GET,
            "/api/v1/namespaces/default/configmaps?watch=1&resourceVersion=x",
            json,
            "",
        ),
        (
            Method::GET,
            "/api/v1/namespaces/default/configmaps?watch=1&timeoutSeconds=-3",
            json,
            "",
        ),
        (Method::GET, "/api/v1/namespaces/default/widgets", json, ""),
        (Method::GET, "/apis/nope/v1", json, ""),
        (Method::GET, "/api/v1/configmaps/x", json, ""),
        (Method::GET, "/api/v1/namespaces/default/nodes/n", json, ""),
        (
            Method::POST,
            "/api/v1/namespaces/default/configmaps/x/status",
            json,
            "{}",
        ),
    ];
    for (method, path, ct, body) in cases {
        let code = send(&client, method.clone(), path, ct, body).await?;
        assert!(
            (400..500).contains(&code),
            "{method} {path} {body:?} answered {code}"
        );
    }
    assert!(
        cms.get_opt("x").await?.is_some(),
        "the server still answers"
    );
    Ok(())
}
