//! Rolling updates stay within maxUnavailable and maxSurge at every observed moment; OnDelete
//! replaces only the pods a user deletes.

mod controller_common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use controller_common::{Env, WAIT, is_ready, wait_for};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::DeleteParams;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use serde_json::json;
use wasmdaemon::planner::pod_node;

fn image(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .and_then(|c| c.image.as_deref())
        .unwrap_or_default()
}

async fn all_run(env: &Env, set: &str, nodes: &[String], want: &str) -> Option<()> {
    let pods = env.pods_of(set).await;
    let done = nodes.iter().all(|n| {
        pods.get(n)
            .is_some_and(|list| list.len() == 1 && image(&list[0]) == want && is_ready(&list[0]))
    });
    done.then_some(())
}

/// Watches the namespace's pods and records every moment that breaks the budget.
fn watch_budget(
    env: &Env,
    nodes: Vec<String>,
    max_unavailable: usize,
    max_surge: usize,
) -> (
    Arc<Mutex<Vec<String>>>,
    tokio::task::JoinHandle<()>,
    reflector::Store<Pod>,
) {
    let violations = Arc::new(Mutex::new(Vec::new()));
    let seen = violations.clone();
    let (reader, writer) = reflector::store::<Pod>();
    let events = watcher(env.pods_api(), watcher::Config::default())
        .default_backoff()
        .reflect(writer);
    let ready = reader.clone();
    let task = tokio::spawn(async move {
        let mut events = std::pin::pin!(events);
        while let Some(event) = events.next().await {
            let settled = matches!(
                event,
                Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_) | watcher::Event::InitDone)
            );
            if !settled {
                continue;
            }
            let mut by_node: BTreeMap<String, Vec<Arc<Pod>>> = BTreeMap::new();
            for pod in reader.state() {
                if pod.metadata.deletion_timestamp.is_none() {
                    let node = pod_node(&pod).unwrap_or_default().to_string();
                    by_node.entry(node).or_default().push(pod);
                }
            }
            let unavailable = nodes
                .iter()
                .filter(|n| {
                    !by_node
                        .get(*n)
                        .is_some_and(|l| l.iter().any(|p| is_ready(p)))
                })
                .count();
            let total: usize = by_node.values().map(Vec::len).sum();
            if unavailable > max_unavailable || total > nodes.len() + max_surge {
                let moment = format!("{unavailable} unavailable, {total} pods on {by_node:?}");
                if let Ok(mut v) = seen.lock() {
                    v.push(moment);
                }
            }
        }
    });
    (violations, task, ready)
}

async fn roll(strategy: serde_json::Value, max_unavailable: usize, max_surge: usize, test: &str) {
    let env = Env::start(test).await;
    let mut nodes = Vec::new();
    for name in ["a", "b", "c", "d"] {
        nodes.push(env.add_node(name, &[], "amd64").await);
    }
    let set = env.set("agent", "", "agent:1", json!({"updateStrategy": strategy}));
    env.create_set(&set).await;
    let controller = env.start_controller(None);
    wait_for("every node to run a ready agent:1", WAIT, || {
        all_run(&env, "agent", &nodes, "agent:1")
    })
    .await;

    let (violations, watch, synced) = watch_budget(&env, nodes.clone(), max_unavailable, max_surge);
    tokio::time::timeout(WAIT, synced.wait_until_ready())
        .await
        .expect("the pod watch syncs in time")
        .expect("the pod watch runs");
    let template = json!({"metadata": {"labels": {"app": "agent"}},
        "spec": {"containers": [{"name": "main", "image": "agent:2"}],
                 "terminationGracePeriodSeconds": 0}});
    env.patch_set("agent", json!({"template": template})).await;
    let start = std::time::Instant::now();
    wait_for("every node to run a ready agent:2", WAIT, || {
        all_run(&env, "agent", &nodes, "agent:2")
    })
    .await;
    println!("rolled 4 nodes in {:?}", start.elapsed());
    watch.abort();
    let violations = violations.lock().map(|v| v.clone()).unwrap_or_default();
    assert!(violations.is_empty(), "budget broken at: {violations:#?}");
    controller.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_update_never_has_more_than_max_unavailable_nodes_down() {
    let strategy = json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "50%"}});
    roll(strategy, 2, 0, "roll-unavailable").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_surging_update_starts_new_pods_first_and_never_takes_a_node_down() {
    let strategy = json!({"type": "RollingUpdate",
                          "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}});
    roll(strategy, 0, 1, "roll-surge").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_delete_replaces_only_the_pods_a_user_deletes() {
    let env = Env::start("on-delete").await;
    let a = env.add_node("a", &[], "amd64").await;
    let b = env.add_node("b", &[], "amd64").await;
    let nodes = [a.clone(), b.clone()];
    let set = env.set(
        "agent",
        "",
        "agent:1",
        json!({"updateStrategy": {"type": "OnDelete"}}),
    );
    env.create_set(&set).await;
    let controller = env.start_controller(None);
    wait_for("both nodes to run agent:1", WAIT, || {
        all_run(&env, "agent", &nodes, "agent:1")
    })
    .await;

    let template = json!({"metadata": {"labels": {"app": "agent"}},
        "spec": {"containers": [{"name": "main", "image": "agent:2"}]}});
    env.patch_set("agent", json!({"template": template})).await;
    let generation = env
        .sets()
        .get("agent")
        .await
        .ok()
        .and_then(|s| s.metadata.generation);
    wait_for(
        "the controller to observe the new template",
        WAIT,
        || async {
            let set = env.sets().get("agent").await.ok()?;
            let observed = set.status?.observed_generation;
            (observed == generation).then_some(())
        },
    )
    .await;
    let pods = env.pods_of("agent").await;
    assert!(
        pods.values().flatten().all(|p| image(p) == "agent:1"),
        "no pod was replaced yet"
    );

    let victim = pods[&a][0].metadata.name.clone().unwrap_or_default();
    env.pods_api()
        .delete(&victim, &DeleteParams::default())
        .await
        .expect("pod is deleted");
    wait_for("the deleted pod to come back as agent:2", WAIT, || async {
        let pods = env.pods_of("agent").await;
        let a_new = pods
            .get(&a)
            .is_some_and(|l| l.len() == 1 && image(&l[0]) == "agent:2");
        let b_old = pods
            .get(&b)
            .is_some_and(|l| l.len() == 1 && image(&l[0]) == "agent:1");
        (a_new && b_old).then_some(())
    })
    .await;
    controller.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_are_counted_available_once_min_ready_seconds_pass_with_surge_too() {
    let env = Env::start("rolling-min-ready").await;
    let nodes = [
        env.add_node("a", &[], "amd64").await,
        env.add_node("b", &[], "amd64").await,
    ];
    for (name, surge) in [("surging", 1), ("plain", 0)] {
        let extra = json!({
            "minReadySeconds": 2,
            "updateStrategy": {"type": "RollingUpdate",
                               "rollingUpdate": {"maxSurge": surge, "maxUnavailable": 1 - surge}}
        });
        env.create_set(&env.set(name, "", "agent:1", extra)).await;
    }
    let controller = env.start_controller(None);

    for name in ["surging", "plain"] {
        wait_for("every pod counted available", WAIT, || async {
            let set = env.sets().get(name).await.ok()?;
            let status = set.status?;
            (status.number_available == nodes.len() as i32).then_some(())
        })
        .await;
    }
    controller.stop().await;
}
