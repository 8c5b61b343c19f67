//! The controller converges through cut watches, expired resourceVersions and failed writes.

mod controller_common;

use controller_common::{Env, WAIT, wait_for};
use http::Method;
use serde_json::json;
use wasmdaemon_testcluster::{Fault, RequestMatch};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_watches_and_expired_history_still_converge() {
    let env = Env::start("watch-cut").await;
    env.add_node("a", &[], "amd64").await;
    env.create_set(&env.set("agent", "", "agent:1", json!({})))
        .await;
    let controller = env.start_controller(None);
    wait_for("a pod", WAIT, || async {
        (env.pods_of("agent").await.len() == 1).then_some(())
    })
    .await;
    let Some(cluster) = env.cluster() else {
        println!("external cluster: cannot cut watches; skipped");
        return;
    };

    cluster.cut_watches();
    let b = env.add_node("b", &[], "amd64").await;
    wait_for("a pod on the node added after the cut", WAIT, || async {
        env.pods_of("agent").await.contains_key(&b).then_some(())
    })
    .await;

    cluster.compact_history();
    let c = env.add_node("c", &[], "amd64").await;
    wait_for("a pod on the node added after the 410", WAIT, || async {
        env.pods_of("agent").await.contains_key(&c).then_some(())
    })
    .await;
    for (node, pods) in env.pods_of("agent").await {
        assert_eq!(pods.len(), 1, "node {node} runs exactly one pod");
    }
    controller.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicts_and_server_errors_on_writes_still_converge() {
    let env = Env::start("write-faults").await;
    env.add_node("a", &[], "amd64").await;
    let Some(cluster) = env.cluster() else {
        println!("external cluster: cannot inject faults; skipped");
        return;
    };
    let creates = RequestMatch::any().method(Method::POST).resource("pods");
    cluster.fail_requests(creates.clone(), 1, 2, Fault::InternalError);
    cluster.fail_requests(creates, 3, 1, Fault::Conflict);
    let status = RequestMatch::any()
        .method(Method::PATCH)
        .resource("wasmdaemonsets/status");
    cluster.fail_requests(status, 1, 2, Fault::Conflict);

    env.create_set(&env.set("agent", "", "agent:1", json!({})))
        .await;
    let controller = env.start_controller(None);
    let b = env.add_node("b", &[], "amd64").await;
    wait_for(
        "a pod on every node despite failed writes",
        WAIT,
        || async {
            let pods = env.pods_of("agent").await;
            (pods.len() == 2 && pods.contains_key(&b)).then_some(())
        },
    )
    .await;
    wait_for("the status to be written", WAIT, || async {
        let status = env.sets().get("agent").await.ok()?.status?;
        (status.current_number_scheduled == 2).then_some(())
    })
    .await;
    for (node, pods) in env.pods_of("agent").await {
        assert_eq!(pods.len(), 1, "node {node} runs exactly one pod");
    }
    controller.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_is_prompt_while_the_api_server_cannot_be_reached() {
    // Nothing listens on port 1 of the loopback address: every request is refused.
    let config = kube::Config::new("http://127.0.0.1:1".parse().expect("url"));
    let client = kube::Client::try_from(config).expect("client");
    let engine = wasmdaemon::plugin::PluginEngine::new(Default::default()).expect("engine");
    let registry = wasmdaemon::registry::Registry::new(engine, None);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let controller = tokio::spawn(wasmdaemon::controller::run(
        client,
        registry,
        wasmdaemon::controller::Options::default(),
        async {
            let _ = stopped.await;
        },
    ));
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;

    let asked = std::time::Instant::now();
    let _ = stop.send(());
    tokio::time::timeout(std::time::Duration::from_secs(3), controller)
        .await
        .expect("stops well inside the drain limit")
        .expect("controller task ends cleanly");
    println!("stopped {:?} after shutdown was requested", asked.elapsed());
}
