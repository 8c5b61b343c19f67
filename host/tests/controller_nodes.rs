//! The controller follows nodes: added, removed, relabelled.

mod controller_common;

use std::time::Instant;

use controller_common::{Env, WAIT, wait_for};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_is_created_on_a_new_node_and_removed_with_it() {
    let env = Env::start("nodes-add-remove").await;
    let first = env.add_node("a", &[], "amd64").await;
    env.create_set(&env.set("agent", "", "agent:1", json!({})))
        .await;
    let controller = env.start_controller(None);

    wait_for("a pod on the first node", WAIT, || async {
        env.pods_of("agent")
            .await
            .contains_key(&first)
            .then_some(())
    })
    .await;

    let second = env.add_node("b", &[], "amd64").await;
    let start = Instant::now();
    wait_for("a pod on the added node", WAIT, || async {
        env.pods_of("agent")
            .await
            .contains_key(&second)
            .then_some(())
    })
    .await;
    println!("pod on added node after {:?}", start.elapsed());

    env.remove_node(&second).await;
    let start = Instant::now();
    wait_for("the removed node's pod to go", WAIT, || async {
        let pods = env.pods_of("agent").await;
        (!pods.contains_key(&second) && pods.contains_key(&first)).then_some(())
    })
    .await;
    println!("pod of removed node gone after {:?}", start.elapsed());
    for (node, pods) in env.pods_of("agent").await {
        assert_eq!(pods.len(), 1, "node {node} runs exactly one pod");
    }
    controller.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_follow_node_labels_in_both_directions() {
    let env = Env::start("nodes-labels").await;
    let web = env.add_node("web", &[("role", "web")], "amd64").await;
    let db = env.add_node("db", &[("role", "db")], "amd64").await;
    env.create_set(&env.set("web-agent", "web", "agent:1", json!({})))
        .await;
    let controller = env.start_controller(None);

    wait_for("a pod on the web node only", WAIT, || async {
        let pods = env.pods_of("web-agent").await;
        (pods.contains_key(&web) && !pods.contains_key(&db)).then_some(())
    })
    .await;

    env.label_node(&db, "role", Some("web")).await;
    env.label_node(&web, "role", Some("db")).await;
    let start = Instant::now();
    wait_for("the pod to move with the label", WAIT, || async {
        let pods = env.pods_of("web-agent").await;
        (pods.contains_key(&db) && !pods.contains_key(&web)).then_some(())
    })
    .await;
    println!("pods followed relabelling after {:?}", start.elapsed());
    controller.stop().await;
}
