//! A `kube::runtime::Controller` using `kube::runtime::finalizer`, run against the cluster.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::finalizer::{Event, finalizer};
use serde_json::json;
use wasmdaemon_testcluster::TestEnv;

const WAIT: Duration = Duration::from_secs(30);
const FINALIZER: &str = "test.wasmdaemon.io/cleanup";

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Failed(String);

async fn reconcile(cm: Arc<ConfigMap>, api: Arc<Api<ConfigMap>>) -> Result<Action, Failed> {
    let outcome = finalizer(&api, FINALIZER, cm, |event| async {
        match event {
            Event::Apply(cm) => {
                let name = cm.metadata.name.clone().unwrap_or_default();
                let patch = json!({"metadata": {"annotations": {"reconciled": "yes"}}});
                api.patch(&name, &PatchParams::default(), &Patch::Merge(patch))
                    .await
                    .map_err(|e| Failed(e.to_string()))?;
                Ok::<_, Failed>(Action::await_change())
            }
            Event::Cleanup(_) => Ok(Action::await_change()),
        }
    })
    .await;
    outcome.map_err(|e| Failed(e.to_string()))
}

#[tokio::test]
async fn a_runtime_controller_adds_and_releases_its_finalizer() -> Result<()> {
    let env = TestEnv::new().await?;
    let api: Api<ConfigMap> = env.api();
    let shared = Arc::new(api.clone());
    let controller = Controller::new(api.clone(), Default::default())
        .run(
            reconcile,
            |_, _, _| Action::requeue(Duration::from_millis(100)),
            shared,
        )
        .for_each(|_| async {});
    let task = tokio::spawn(controller);
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "watched"}}))?;
    api.create(&PostParams::default(), &cm).await?;
    env.wait_until(
        "the controller reconciled and added its finalizer",
        WAIT,
        || async {
            match api.get("watched").await {
                Ok(c) => {
                    let fins = c.metadata.finalizers.clone().unwrap_or_default();
                    let done = c
                        .metadata
                        .annotations
                        .unwrap_or_default()
                        .contains_key("reconciled");
                    if done && fins == [FINALIZER] {
                        Ok(())
                    } else {
                        Err(format!("finalizers {fins:?}"))
                    }
                }
                Err(e) => Err(e.to_string()),
            }
        },
    )
    .await?;
    api.delete("watched", &DeleteParams::default()).await?;
    env.wait_until("the controller released the object", WAIT, || async {
        matches!(api.get_opt("watched").await, Ok(None))
    })
    .await?;
    task.abort();
    env.teardown().await?;
    Ok(())
}
