//! A controller restarted in the middle of a rollout picks up where the last one stopped and
//! never puts a second pod on a node.

mod controller_common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use controller_common::{Env, WAIT, is_ready, wait_for};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_mid_rollout_creates_no_duplicate_pod() {
    let env = Env::start("restart").await;
    let mut nodes = Vec::new();
    for name in ["a", "b", "c", "d"] {
        nodes.push(env.add_node(name, &[], "amd64").await);
    }
    let set = env.set("agent", "", "agent:1", json!({"minReadySeconds": 1}));
    env.create_set(&set).await;
    let first = env.start_controller(None);
    wait_for("four pods", WAIT, || async {
        (env.pods_of("agent").await.len() == 4).then_some(())
    })
    .await;

    let crowded = Arc::new(Mutex::new(Vec::<String>::new()));
    let (reader, writer) = reflector::store::<Pod>();
    let events = watcher(env.pods_api(), watcher::Config::default())
        .default_backoff()
        .reflect(writer);
    let seen = crowded.clone();
    let watch = tokio::spawn(async move {
        let mut events = std::pin::pin!(events);
        while let Some(event) = events.next().await {
            if !matches!(
                event,
                Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_))
            ) {
                continue;
            }
            let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
            for pod in reader.state() {
                if pod.metadata.deletion_timestamp.is_none() {
                    *per_node
                        .entry(pod_node(&pod).unwrap_or_default().into())
                        .or_default() += 1;
                }
            }
            if per_node.values().any(|&n| n > 1)
                && let Ok(mut crowded) = seen.lock()
            {
                crowded.push(format!("{per_node:?}"));
            }
        }
    });

    let template = json!({"metadata": {"labels": {"app": "agent"}},
        "spec": {"containers": [{"name": "main", "image": "agent:2"}],
                 "terminationGracePeriodSeconds": 0}});
    env.patch_set("agent", json!({"template": template})).await;
    wait_for("the first new pod", WAIT, || async {
        let pods = env.pods_of("agent").await;
        pods.values()
            .flatten()
            .any(|p| image(p) == "agent:2")
            .then_some(())
    })
    .await;
    // A crash rather than a clean stop: nothing the first host knew survives.
    drop(first);

    let second = env.start_controller(None);
    wait_for("every node to run a ready agent:2", WAIT, || async {
        let pods = env.pods_of("agent").await;
        let done = nodes.iter().all(|n| {
            pods.get(n)
                .is_some_and(|l| l.len() == 1 && image(&l[0]) == "agent:2" && is_ready(&l[0]))
        });
        done.then_some(())
    })
    .await;
    watch.abort();
    let crowded = crowded.lock().map(|c| c.clone()).unwrap_or_default();
    assert!(crowded.is_empty(), "a node ran two pods at: {crowded:#?}");
    second.stop().await;
}
