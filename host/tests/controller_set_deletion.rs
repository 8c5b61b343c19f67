//! Deleting a set removes its pods through garbage collection, unless the pods are orphaned.

mod controller_common;

use controller_common::{Env, WAIT, wait_for};
use kube::api::DeleteParams;
use kube::{ResourceExt, api::ListParams};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_set_removes_its_pods() {
    let env = Env::start("delete-set").await;
    env.add_node("a", &[], "amd64").await;
    env.add_node("b", &[], "amd64").await;
    env.create_set(&env.set("agent", "", "agent:1", json!({})))
        .await;
    let controller = env.start_controller(None);
    wait_for("two pods", WAIT, || async {
        (env.pods_of("agent").await.len() == 2).then_some(())
    })
    .await;

    env.sets()
        .delete("agent", &DeleteParams::background())
        .await
        .expect("set is deleted");
    wait_for("the pods to be collected", WAIT, || async {
        env.pods_of("agent").await.is_empty().then_some(())
    })
    .await;
    controller.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_set_with_orphan_propagation_leaves_its_pods() {
    let env = Env::start("orphan-set").await;
    env.add_node("a", &[], "amd64").await;
    env.create_set(&env.set("agent", "", "agent:1", json!({})))
        .await;
    let controller = env.start_controller(None);
    wait_for("a pod", WAIT, || async {
        (env.pods_of("agent").await.len() == 1).then_some(())
    })
    .await;

    env.sets()
        .delete("agent", &DeleteParams::orphan())
        .await
        .expect("set is deleted");
    wait_for("the set to be gone", WAIT, || async {
        env.sets()
            .get_opt("agent")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    wait_for("the pod to lose its owner", WAIT, || async {
        let pods = env.pods_api().list(&ListParams::default()).await.ok()?;
        let all_free = pods.items.iter().all(|p| p.owner_references().is_empty());
        (pods.items.len() == 1 && all_free).then_some(())
    })
    .await;
    controller.stop().await;
}
