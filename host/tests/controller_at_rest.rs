//! A cluster at rest sees no writes from the controller, even while kubelets heartbeat.

mod controller_common;

use std::time::Duration;

use controller_common::{Env, WAIT, wait_for};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settled_set_causes_zero_writes_while_nodes_heartbeat() {
    let env = Env::start("at-rest").await;
    let a = env.add_node("a", &[], "amd64").await;
    let b = env.add_node("b", &[], "amd64").await;
    env.create_set(&env.set("agent", "", "agent:1", json!({})))
        .await;
    let controller = env.start_controller(None);
    wait_for("the set to report two available pods", WAIT, || async {
        let status = env.sets().get("agent").await.ok()?.status?;
        (status.number_available == 2 && status.desired_number_scheduled == 2).then_some(())
    })
    .await;

    // Let the last status write and its echo settle: the resourceVersion stops moving.
    let Some(cluster) = env.cluster() else {
        println!("external cluster: write counting needs the in-process server; skipped");
        return;
    };
    let mut last = cluster.resource_version();
    wait_for("the cluster to settle", WAIT, || {
        let now = cluster.resource_version();
        let settled = now == last;
        last = now;
        async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            settled.then_some(())
        }
    })
    .await;

    let settled = cluster.resource_version();
    for _ in 0..3 {
        env.heartbeat(&a).await;
        env.heartbeat(&b).await;
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    let after_heartbeats = cluster.resource_version();
    assert!(after_heartbeats > settled, "the heartbeats were written");
    // A quiet period long enough for any reconcile they triggered to have written.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let writes = cluster.resource_version() - after_heartbeats;
    assert_eq!(
        writes, 0,
        "the controller wrote {writes} times while nothing changed"
    );
    controller.stop().await;
}
