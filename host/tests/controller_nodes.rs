//! The controller follows nodes: added, removed, relabelled.

mod controller_common;

use std::sync::Arc;
use std::time::Instant;

use controller_common::{Env, WAIT, wait_for};
use serde_json::json;
use wasmdaemon::telemetry::ControllerMetrics;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_change_reaches_only_the_sets_that_read_what_changed() {
    let env = Env::start("nodes-scoped").await;
    let mut nodes = Vec::new();
    for i in 0..12 {
        nodes.push(
            env.add_node(&format!("n{i}"), &[("role", "web")], "amd64")
                .await,
        );
    }
    let hardware = json!({
        "variants": [{"name": "arm"}],
        "policy": {"plugin": "hardware", "config": {
            "rules": [{"when": {"arch": ["arm64"]}, "variant": "arm"}]}}
    });
    for (name, role, extra) in [
        ("web-agent", "web", json!({})),
        ("edge-agent", "edge", json!({})),
        ("everywhere", "", json!({})),
        ("by-hardware", "", hardware),
    ] {
        env.create_set(&env.set(name, role, "agent:1", extra)).await;
    }
    let metrics = Arc::new(ControllerMetrics::default());
    let controller = env.start_controller_counting(None, metrics.clone());

    wait_for(
        "a pod per node for the three sets that run",
        WAIT,
        || async {
            for set in ["web-agent", "everywhere", "by-hardware"] {
                if env.pods_of(set).await.len() != nodes.len() {
                    return None;
                }
            }
            Some(())
        },
    )
    .await;
    wait_until_quiet(&metrics).await;

    let (triggered, decided) = (metrics.node_triggers.get(), metrics.nodes_decided.get());
    env.label_node(&nodes[3], "team", Some("storage")).await;
    env.label_node(&nodes[7], "role", Some("edge")).await;
    wait_for("the pod to move to the edge set", WAIT, || async {
        let moved = env.pods_of("edge-agent").await.contains_key(&nodes[7])
            && !env.pods_of("web-agent").await.contains_key(&nodes[7]);
        moved.then_some(())
    })
    .await;
    wait_until_quiet(&metrics).await;

    // The `team` label is read by no set, so it triggers nothing; `role` is read by the two
    // sets selecting on it. Each of those decides the two changed nodes, the others nothing.
    assert_eq!(metrics.node_triggers.get() - triggered, 2);
    assert_eq!(metrics.nodes_decided.get() - decided, 4);
    assert_eq!(env.pods_of("everywhere").await.len(), nodes.len());
    controller.stop().await;
}

/// Waits until no reconcile has finished for a second.
async fn wait_until_quiet(metrics: &ControllerMetrics) {
    let mut last = metrics.reconciles.get();
    let start = Instant::now();
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        let now = metrics.reconciles.get();
        if now == last {
            return;
        }
        assert!(start.elapsed() < WAIT, "the controller never went quiet");
        last = now;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taint_that_changes_no_decision_costs_each_set_one_node_and_no_write() {
    let env = Env::start("nodes-quiet-taint").await;
    let mut nodes = Vec::new();
    for i in 0..6 {
        nodes.push(env.add_node(&format!("n{i}"), &[], "amd64").await);
    }
    for name in ["first", "second", "third"] {
        env.create_set(&env.set(name, "", "agent:1", json!({})))
            .await;
    }
    let metrics = Arc::new(ControllerMetrics::default());
    let controller = env.start_controller_counting(None, metrics.clone());
    wait_for("a pod per node for every set", WAIT, || async {
        for set in ["first", "second", "third"] {
            if env.pods_of(set).await.len() != nodes.len() {
                return None;
            }
        }
        Some(())
    })
    .await;
    wait_until_quiet(&metrics).await;
    let before = (
        metrics.quiet_passes.get(),
        metrics.nodes_decided.get(),
        metrics.pods_created.get() + metrics.pods_deleted.get(),
    );

    // A PreferNoSchedule taint never blocks a daemon pod: every set looks, none changes.
    let taint = json!({"spec": {"taints": [{"key": "soon", "effect": "PreferNoSchedule"}]}});
    let api: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(env.client.clone());
    api.patch(
        &nodes[2],
        &Default::default(),
        &kube::api::Patch::Merge(&taint),
    )
    .await
    .expect("node is tainted");
    wait_for("every set to look at the tainted node", WAIT, || async {
        (metrics.quiet_passes.get() >= before.0 + 3).then_some(())
    })
    .await;
    wait_until_quiet(&metrics).await;
    assert_eq!(metrics.quiet_passes.get() - before.0, 3);
    assert_eq!(metrics.nodes_decided.get() - before.1, 3);
    assert_eq!(
        metrics.pods_created.get() + metrics.pods_deleted.get(),
        before.2,
        "no pod was written"
    );

    // A NoExecute taint no set tolerates changes the decision: its pods go.
    let taint = json!({"spec": {"taints": [{"key": "gone", "effect": "NoExecute"}]}});
    api.patch(
        &nodes[2],
        &Default::default(),
        &kube::api::Patch::Merge(&taint),
    )
    .await
    .expect("node is tainted");
    wait_for(
        "the evicting taint to remove every set's pod there",
        WAIT,
        || async {
            for set in ["first", "second", "third"] {
                if env.pods_of(set).await.contains_key(&nodes[2]) {
                    return None;
                }
            }
            Some(())
        },
    )
    .await;
    controller.stop().await;
}
