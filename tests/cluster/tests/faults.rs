//! Fault injection on the in-process cluster, and clients recovering from it.

use std::time::Duration;

use anyhow::Result;
use futures::StreamExt;
use http::Method;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::{reflector, watcher};
use serde_json::json;
use wasmdaemon_testcluster::{Fault, RequestMatch, TestCluster, wait_until};

const WAIT: Duration = Duration::from_secs(20);

fn cm(name: &str) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name}})).expect("valid ConfigMap")
}

fn code(r: kube::Result<ConfigMap>) -> Option<u16> {
    match r {
        Ok(_) => None,
        Err(kube::Error::Api(s)) => Some(s.code),
        Err(e) => panic!("unexpected error {e}"),
    }
}

#[tokio::test]
async fn the_nth_matching_request_fails_with_the_chosen_status() -> Result<()> {
    let cluster = TestCluster::start().await?;
    let cms: Api<ConfigMap> = Api::default_namespaced(cluster.client());
    let creates = RequestMatch::any()
        .method(Method::POST)
        .resource("configmaps");
    cluster.fail_nth_request(creates.clone(), 2, Fault::InternalError);
    cluster.fail_nth_request(
        RequestMatch::any()
            .method(Method::PUT)
            .resource("configmaps"),
        1,
        Fault::Conflict,
    );
    assert_eq!(
        code(cms.create(&PostParams::default(), &cm("a")).await),
        None
    );
    assert_eq!(
        code(cms.create(&PostParams::default(), &cm("b")).await),
        Some(500)
    );
    assert_eq!(
        code(cms.create(&PostParams::default(), &cm("c")).await),
        None
    );
    let a = cms.get("a").await?;
    assert_eq!(
        code(cms.replace("a", &PostParams::default(), &a).await),
        Some(409)
    );
    assert_eq!(
        code(cms.replace("a", &PostParams::default(), &a).await),
        None
    );
    Ok(())
}

#[tokio::test]
async fn throttled_requests_answer_429_unless_the_client_retries() -> Result<()> {
    let cluster = TestCluster::start().await?;
    let mut config = cluster.config();
    config.default_retry = false;
    let plain: Api<ConfigMap> = Api::default_namespaced(kube::Client::try_from(config)?);
    let gets = RequestMatch::any()
        .method(Method::GET)
        .resource("configmaps");
    cluster.fail_nth_request(gets.clone(), 1, Fault::TooManyRequests);
    let err = plain.get("missing").await.expect_err("throttled");
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 429),
        "{err}"
    );
    cluster.fail_nth_request(gets, 1, Fault::TooManyRequests);
    let retrying: Api<ConfigMap> = Api::default_namespaced(cluster.client());
    let err = retrying
        .get("missing")
        .await
        .expect_err("not found after a retry");
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 404),
        "{err}"
    );
    Ok(())
}

#[tokio::test]
async fn delayed_responses_arrive_late() -> Result<()> {
    let cluster = TestCluster::start().await?;
    let cms: Api<ConfigMap> = Api::default_namespaced(cluster.client());
    cluster.delay_responses(
        RequestMatch::any().resource("configmaps"),
        Duration::from_secs(30),
    );
    let late =
        tokio::time::timeout(Duration::from_millis(200), cms.list(&ListParams::default())).await;
    assert!(late.is_err(), "the response is held back");
    cluster.clear_faults();
    cms.list(&ListParams::default()).await?;
    Ok(())
}

async fn converges(
    cluster: &TestCluster,
    what: &str,
    disrupt: impl AsyncFnOnce(&TestCluster),
) -> Result<()> {
    let cms: Api<ConfigMap> = Api::default_namespaced(cluster.client());
    cms.create(&PostParams::default(), &cm("before")).await?;
    let (reader, writer) = reflector::store::<ConfigMap>();
    let config = watcher::Config::default().timeout(290);
    let stream = reflector(writer, watcher(cms.clone(), config));
    // Errors (such as the 410) are reported in the stream; the watcher recovers by itself.
    let task = tokio::spawn(stream.for_each(|_| async {}));
    wait_until("the reflector sees the first object", WAIT, || async {
        reader.state().len() == 1
    })
    .await?;
    disrupt(cluster).await;
    for i in 0..5 {
        let created = cms
            .create(&PostParams::default(), &cm(&format!("after-{i}")))
            .await;
        if created.is_err() {
            wait_until("the server answers again", WAIT, || async {
                cms.list(&ListParams::default()).await.is_ok()
            })
            .await?;
            cms.create(&PostParams::default(), &cm(&format!("after-{i}")))
                .await?;
        }
    }
    cms.delete("before", &Default::default()).await?;
    wait_until(what, WAIT, || async {
        let mut names: Vec<String> = reader
            .state()
            .iter()
            .filter_map(|c| c.metadata.name.clone())
            .collect();
        names.sort();
        if names == ["after-0", "after-1", "after-2", "after-3", "after-4"] {
            Ok(())
        } else {
            Err(format!("{names:?}"))
        }
    })
    .await?;
    task.abort();
    Ok(())
}

#[tokio::test]
async fn the_runtime_watcher_converges_after_watch_streams_are_cut() -> Result<()> {
    let cluster = TestCluster::start().await?;
    converges(&cluster, "the reflector converges after a cut", async |c| {
        c.cut_watches()
    })
    .await
}

#[tokio::test]
async fn the_runtime_watcher_converges_after_a_forced_410() -> Result<()> {
    let cluster = TestCluster::start().await?;
    converges(
        &cluster,
        "the reflector converges after a relist",
        async |c| c.compact_history(),
    )
    .await
}

#[tokio::test]
async fn the_runtime_watcher_converges_after_a_restart() -> Result<()> {
    let cluster = TestCluster::start().await?;
    converges(
        &cluster,
        "the reflector converges after a restart",
        async |c| {
            c.restart().await.expect("restart");
        },
    )
    .await
}

#[tokio::test]
async fn a_restart_keeps_state_and_a_restart_losing_state_empties_the_store() -> Result<()> {
    let cluster = TestCluster::start().await?;
    let cms: Api<ConfigMap> = Api::default_namespaced(cluster.client());
    cms.create(&PostParams::default(), &cm("kept")).await?;
    let url = cluster.url();
    cluster.restart().await?;
    assert_eq!(cluster.url(), url);
    wait_until(
        "the kept object is served after a restart",
        WAIT,
        || async { matches!(cms.get_opt("kept").await, Ok(Some(_))) },
    )
    .await?;
    cluster.restart_empty().await?;
    wait_until("the object is gone after losing state", WAIT, || async {
        matches!(cms.get_opt("kept").await, Ok(None))
    })
    .await?;
    let namespaces: Api<Namespace> = Api::all(cluster.client());
    assert!(namespaces.get_opt("default").await?.is_some());
    Ok(())
}

#[tokio::test]
async fn many_clusters_run_side_by_side() -> Result<()> {
    let clusters = futures::future::try_join_all((0..8).map(|_| TestCluster::start())).await?;
    for (i, c) in clusters.iter().enumerate() {
        let cms: Api<ConfigMap> = Api::default_namespaced(c.client());
        cms.create(&PostParams::default(), &cm(&format!("only-{i}")))
            .await?;
    }
    for (i, c) in clusters.iter().enumerate() {
        let cms: Api<ConfigMap> = Api::default_namespaced(c.client());
        let names: Vec<String> = cms
            .list(&ListParams::default())
            .await?
            .items
            .into_iter()
            .filter_map(|c| c.metadata.name)
            .collect();
        assert_eq!(names, [format!("only-{i}")]);
    }
    Ok(())
}

#[tokio::test]
async fn deleting_a_node_garbage_collects_its_pods() -> Result<()> {
    let cluster = TestCluster::start().await?;
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(cluster.client());
    let node = wasmdaemon_testcluster::NodeShape::new().to_node("doomed");
    nodes.create(&PostParams::default(), &node).await?;
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::default_namespaced(cluster.client());
    let pod = serde_json::from_value(json!({
        "metadata": {"name": "on-doomed"},
        "spec": {
            "nodeName": "doomed",
            "containers": [{"name": "c", "image": "registry.example/c:1"}]
        }
    }))?;
    pods.create(&PostParams::default(), &pod).await?;
    nodes.delete("doomed", &Default::default()).await?;
    wait_until("the pod of the deleted node is gone", WAIT, || async {
        matches!(pods.get_opt("on-doomed").await, Ok(None))
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn deleting_a_namespace_removes_its_content_then_the_namespace() -> Result<()> {
    let cluster = TestCluster::start().await?;
    let namespaces: Api<Namespace> = Api::all(cluster.client());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "scratch"}}))?;
    namespaces.create(&PostParams::default(), &ns).await?;
    let cms: Api<ConfigMap> = Api::namespaced(cluster.client(), "scratch");
    cms.create(&PostParams::default(), &cm("inside")).await?;
    namespaces.delete("scratch", &Default::default()).await?;
    let refused = cms.create(&PostParams::default(), &cm("late")).await;
    assert!(refused.is_err() || matches!(namespaces.get_opt("scratch").await, Ok(None)));
    wait_until("the namespace is gone", WAIT, || async {
        matches!(namespaces.get_opt("scratch").await, Ok(None))
    })
    .await?;
    assert!(matches!(cms.get_opt("inside").await, Ok(None)));
    Ok(())
}

#[tokio::test]
async fn watches_asking_for_bookmarks_receive_them() -> Result<()> {
    let options = wasmdaemon_testcluster::ServerOptions {
        bookmark_interval: Duration::from_millis(50),
        ..Default::default()
    };
    let cluster = TestCluster::start_with(options).await?;
    let cms: Api<ConfigMap> = Api::default_namespaced(cluster.client());
    let rv = cms
        .list(&ListParams::default())
        .await?
        .metadata
        .resource_version
        .unwrap_or_default();
    let wp = kube::api::WatchParams {
        bookmarks: true,
        ..Default::default()
    }
    .timeout(30);
    let mut stream = cms.watch(&wp, &rv).await?.boxed();
    let event = tokio::time::timeout(WAIT, stream.next()).await?;
    assert!(
        matches!(event, Some(Ok(kube::api::WatchEvent::Bookmark(_)))),
        "{event:?}"
    );
    Ok(())
}

#[tokio::test]
async fn listing_pods_by_node_name_pages_through_exactly_that_nodes_pods() -> Result<()> {
    let cluster = TestCluster::start().await?;
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::default_namespaced(cluster.client());
    for (name, node) in [
        ("p1", "n"),
        ("p2", "m"),
        ("p3", "n"),
        ("p4", "n"),
        ("p5", ""),
    ] {
        let mut spec = json!({"containers": [{"name": "c", "image": "registry.example/c:1"}]});
        if !node.is_empty() {
            spec["nodeName"] = json!(node);
        }
        let pod = serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec}))?;
        pods.create(&PostParams::default(), &pod).await?;
    }
    let force = kube::api::DeleteParams {
        grace_period_seconds: Some(0),
        ..Default::default()
    };
    pods.delete("p3", &force).await?;
    let mut names = Vec::new();
    let mut lp = ListParams::default().fields("spec.nodeName=n").limit(1);
    loop {
        let page = pods.list(&lp).await?;
        names.extend(page.items.into_iter().filter_map(|p| p.metadata.name));
        match page.metadata.continue_ {
            Some(c) if !c.is_empty() => lp = lp.continue_token(&c),
            _ => break,
        }
    }
    assert_eq!(names, ["p1", "p4"]);
    let unbound = pods
        .list(&ListParams::default().fields("spec.nodeName="))
        .await?;
    let unbound: Vec<String> = unbound
        .items
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect();
    assert_eq!(unbound, ["p5"]);
    Ok(())
}
