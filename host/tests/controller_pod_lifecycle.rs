//! Pods that fail, finish, are duplicated or orphaned are dealt with.

mod controller_common;

use std::collections::BTreeSet;

use controller_common::{Env, Fate, WAIT, wait_for};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event;
use kube::api::{ListParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;
use wasmdaemon::planner::pod_node;

fn names(pods: &[Pod]) -> BTreeSet<String> {
    pods.iter().map(ResourceExt::name_any).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_pod_is_replaced_with_backoff_and_an_event() {
    let env = Env::start("failed-backoff").await;
    let node = env.add_node("a", &[], "amd64").await;
    env.set_fate(|_| Fate::Failed);
    env.create_set(&env.set("agent", "", "agent:1", json!({})))
        .await;
    let controller = env.start_controller(None);

    let seen = &std::sync::Mutex::new(BTreeSet::new());
    let (env_ref, node_ref) = (&env, &node);
    wait_for("three failed pods in turn", WAIT, || async move {
        let pods = env_ref.pods_of("agent").await;
        let mut seen = seen.lock().ok()?;
        if let Some(list) = pods.get(node_ref) {
            seen.extend(names(list));
        }
        (seen.len() >= 3).then_some(())
    })
    .await;
    let seen = seen.lock().map(|s| s.clone()).unwrap_or_default();
    let events: Api<Event> = Api::namespaced(env.client.clone(), &env.ns);
    wait_for("a FailedPodBackoff event", WAIT, || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items
            .iter()
            .any(|e| e.reason.as_deref() == Some("FailedPodBackoff"))
            .then_some(())
    })
    .await;
    // With 1 s, 2 s, 4 s ... between replacements, a handful of seconds sees only a few pods.
    assert!(
        seen.len() <= 5,
        "pods were replaced without backoff: {seen:?}"
    );

    env.set_fate(|_| Fate::Ready);
    wait_for(
        "a healthy pod once the node stops failing them",
        WAIT,
        || async {
            let pods = env.pods_of("agent").await;
            pods.get(&node)
                .is_some_and(|l| l.len() == 1 && controller_common::is_ready(&l[0]))
                .then_some(())
        },
    )
    .await;
    controller.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_succeeded_pod_is_replaced() {
    let env = Env::start("succeeded").await;
    let node = env.add_node("a", &[], "amd64").await;
    env.set_fate(|_| Fate::Succeeded);
    env.create_set(&env.set("agent", "", "agent:1", json!({})))
        .await;
    let controller = env.start_controller(None);
    let first = wait_for("a pod that ran to completion", WAIT, || async {
        let pods = env.pods_of("agent").await;
        let pod = pods.get(&node)?.first()?.clone();
        let done = pod.status.as_ref()?.phase.as_deref() == Some("Succeeded");
        done.then(|| pod.name_any())
    })
    .await;
    env.set_fate(|_| Fate::Ready);
    wait_for("a new pod in its place", WAIT, || async {
        let pods = env.pods_of("agent").await;
        let list = pods.get(&node)?;
        (list.len() == 1 && list[0].name_any() != first).then_some(())
    })
    .await;
    controller.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_pod_is_pruned_and_the_oldest_kept() {
    let env = Env::start("duplicate").await;
    let node = env.add_node("a", &[], "amd64").await;
    let set = env
        .create_set(&env.set("agent", "", "agent:1", json!({})))
        .await;
    let controller = env.start_controller(None);
    let original = wait_for("the first pod", WAIT, || async {
        env.pods_of("agent")
            .await
            .get(&node)?
            .first()
            .map(ResourceExt::name_any)
    })
    .await;

    let mut twin = env.pods_of("agent").await[&node][0].clone();
    twin.metadata = kube::api::ObjectMeta {
        generate_name: Some("agent-twin-".into()),
        labels: twin.metadata.labels.clone(),
        owner_references: Some(vec![json_owner(&set)]),
        ..Default::default()
    };
    twin.status = None;
    env.pods_api()
        .create(&PostParams::default(), &twin)
        .await
        .expect("duplicate is created");
    wait_for("the duplicate to be pruned", WAIT, || async {
        let pods = env.pods_of("agent").await;
        let list = pods.get(&node)?;
        (list.len() == 1 && list[0].name_any() == original).then_some(())
    })
    .await;
    controller.stop().await;
}

fn json_owner(
    set: &wasmdaemon::crd::WasmDaemonSet,
) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
    serde_json::from_value(json!({
        "apiVersion": "wasmdaemon.io/v1alpha1", "kind": "WasmDaemonSet",
        "name": set.name_any(), "uid": set.uid().unwrap_or_default(),
        "controller": true, "blockOwnerDeletion": true
    }))
    .expect("owner reference")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_orphan_matching_the_selector_is_adopted_instead_of_duplicated() {
    let env = Env::start("orphan").await;
    let node = env.add_node("a", &[], "amd64").await;
    let orphan: Pod = serde_json::from_value(json!({
        "metadata": {"name": "orphan", "labels": {"app": "agent"}},
        "spec": {"nodeName": node, "containers": [{"name": "main", "image": "agent:1"}]}
    }))
    .expect("pod");
    env.pods_api()
        .create(&PostParams::default(), &orphan)
        .await
        .expect("orphan is created");
    // OnDelete: the adopted pod's rendering differs from the set's (it has no spec-hash label),
    // and a rolling update would rightly replace it; this test is about adoption alone.
    let on_delete = json!({"updateStrategy": {"type": "OnDelete"}});
    let set = env
        .create_set(&env.set("agent", "", "agent:1", on_delete))
        .await;
    let controller = env.start_controller(None);

    let adopted = wait_for("the orphan to be adopted", WAIT, || async {
        let pod = env.pods_api().get("orphan").await.ok()?;
        let owner = pod
            .owner_references()
            .iter()
            .find(|r| r.controller == Some(true))?;
        (Some(owner.uid.as_str()) == set.uid().as_deref()).then_some(pod)
    })
    .await;
    assert_eq!(pod_node(&adopted), Some(node.as_str()));
    let all = env
        .pods_api()
        .list(&ListParams::default())
        .await
        .expect("pods");
    let on_node = all
        .items
        .iter()
        .filter(|p| pod_node(p) == Some(node.as_str()))
        .count();
    assert_eq!(
        on_node, 1,
        "the adopted pod counts; no second pod is created"
    );
    controller.stop().await;
}
