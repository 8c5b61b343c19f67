//! The controller with a live plugin store: a swapped plugin re-plans the sets using it and
//! their pods roll to the new decisions; a refused version leaves them running and says so.

mod controller_common;

use std::sync::Arc;
use std::time::Duration;

use controller_common::{Env, WAIT, wait_for};
use k8s_openapi::api::events::v1::Event;
use kube::api::ListParams;
use kube::{Api, ResourceExt};
use serde_json::json;
use wasmdaemon::controller::{self, Options, PLUGIN_READY};
use wasmdaemon::plugin::{Limits, PluginEngine, digest_of};
use wasmdaemon::registry::dir::DirWatch;
use wasmdaemon::registry::{PluginStore, Registry};
use wasmdaemon::render::VARIANT_LABEL;

/// A controller for the test's namespace over a live plugin store fed from `dir`.
struct Live {
    store: Arc<PluginStore>,
    watch: DirWatch,
    stop: tokio::sync::oneshot::Sender<()>,
    controller: tokio::task::JoinHandle<()>,
}

impl Live {
    fn start(
        env: &Env,
        dir: &std::path::Path,
        metrics: Arc<wasmdaemon::telemetry::ControllerMetrics>,
    ) -> Live {
        let limits = Limits {
            deadline: Duration::from_secs(5),
            ..Limits::default()
        };
        let engine = PluginEngine::new(limits).expect("engine");
        let store = Arc::new(PluginStore::new(engine, false));
        let watch = DirWatch::start(store.clone(), dir.to_path_buf(), Duration::from_millis(50))
            .expect("directory watch");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let options = Options {
            namespace: Some(env.ns.clone()),
            metrics,
            ..Options::default()
        };
        let controller = tokio::spawn(controller::run(
            env.client.clone(),
            Registry::live(store.clone()),
            options,
            async {
                let _ = stopped.await;
            },
        ));
        Live {
            store,
            watch,
            stop,
            controller,
        }
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(WAIT, self.controller)
            .await
            .expect("controller stops in time")
            .expect("controller task ends cleanly");
        drop(self.watch);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swapped_plugin_rolls_the_pods_of_the_sets_that_use_it() {
    let plugins = tempfile::tempdir().expect("plugin dir");
    let path = plugins.path().join("probe.wasm");
    let echo = std::fs::read(env!("WASMDAEMON_TEST_PLUGIN_ECHO")).expect("echo plugin");
    let stdio = std::fs::read(env!("WASMDAEMON_TEST_PLUGIN_STDIO")).expect("stdio plugin");
    std::fs::write(&path, &echo).expect("plugin written");

    let env = Env::start("hot-swap").await;
    let big = env
        .add_node("big", &[("wasmdaemon.test/variant", "big")], "amd64")
        .await;
    let plain = env.add_node("plain", &[], "amd64").await;
    let set = env.set(
        "agent",
        "",
        "agent:1",
        json!({
            "variants": [{"name": "big", "overlay": {
                "containers": [{"name": "main", "image": "agent-big:1"}]}}],
            "policy": {"plugin": "probe"}
        }),
    );
    env.create_set(&set).await;

    let live = Live::start(&env, plugins.path(), Arc::default());
    let store = live.store.clone();

    let variant_on = |node: String| {
        let env = &env;
        async move {
            let pods = env.pods_of("agent").await;
            let pod = pods.get(&node)?.first()?;
            Some(pod.labels().get(VARIANT_LABEL).cloned().unwrap_or_default())
        }
    };
    let first = wait_for("the big node runs the big variant", WAIT, || async {
        variant_on(big.clone())
            .await
            .filter(|v| v == "big")
            .and(variant_on(plain.clone()).await)
    })
    .await;
    assert_eq!(first, "");

    std::fs::write(&path, &stdio).expect("plugin swapped");
    wait_for(
        "the big node's pod rolls to the plain template",
        WAIT,
        || async { variant_on(big.clone()).await.filter(|v| v.is_empty()) },
    )
    .await;
    let want = format!("probe@{}", digest_of(&stdio));
    wait_for("the status names the new digest", WAIT, || async {
        let status = env.sets().get("agent").await.ok()?.status?;
        (status.plugin.as_deref() == Some(want.as_str())).then_some(())
    })
    .await;

    std::fs::write(&path, b"not a component").expect("broken plugin written");
    let condition = wait_for("PluginReady reports the refused version", WAIT, || async {
        let status = env.sets().get("agent").await.ok()?.status?;
        status
            .conditions
            .into_iter()
            .find(|c| c.type_ == PLUGIN_READY && c.reason == "PluginCompileFailed")
    })
    .await;
    assert_eq!(
        condition.status, "True",
        "the set still runs the last good version"
    );
    assert!(
        condition.message.contains(&digest_of(&stdio)),
        "{}",
        condition.message
    );
    assert_eq!(store.metrics().swap_failures_total.get("compile"), Some(&1));
    let events: Api<Event> = Api::namespaced(env.client.clone(), &env.ns);
    wait_for("a PluginCompileFailed event", WAIT, || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items
            .iter()
            .any(|e| e.reason.as_deref() == Some("PluginCompileFailed"))
            .then_some(())
    })
    .await;

    live.stop().await;
}

/// `component` with a custom section appended: another digest, the same behaviour.
fn retagged(component: &[u8], tag: &str) -> Vec<u8> {
    let payload = [b"\x08wd-tests".as_slice(), tag.as_bytes()].concat();
    let mut out = component.to_vec();
    out.push(0);
    out.push(payload.len() as u8);
    out.extend_from_slice(&payload);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_version_that_answers_the_same_is_recorded_without_touching_a_pod() {
    let plugins = tempfile::tempdir().expect("plugin dir");
    let path = plugins.path().join("probe.wasm");
    let echo = std::fs::read(env!("WASMDAEMON_TEST_PLUGIN_ECHO")).expect("echo plugin");
    let same = retagged(&echo, "v2");
    std::fs::write(&path, &echo).expect("plugin written");

    let env = Env::start("hot-swap-same").await;
    let nodes = [
        env.add_node("big", &[("wasmdaemon.test/variant", "big")], "amd64")
            .await,
        env.add_node("plain", &[], "amd64").await,
    ];
    let set = env.set(
        "agent",
        "",
        "agent:1",
        json!({"variants": [{"name": "big"}], "policy": {"plugin": "probe"}}),
    );
    env.create_set(&set).await;

    let metrics = Arc::new(wasmdaemon::telemetry::ControllerMetrics::default());
    let live = Live::start(&env, plugins.path(), metrics.clone());
    let first = format!("probe@{}", digest_of(&echo));
    wait_for(
        "a pod per node and the first version in the status",
        WAIT,
        || async {
            let status = env.sets().get("agent").await.ok()?.status?;
            let running = env.pods_of("agent").await.len() == nodes.len();
            (running && status.plugin.as_deref() == Some(first.as_str())).then_some(())
        },
    )
    .await;
    let pods_before: Vec<String> = env
        .pods_of("agent")
        .await
        .values()
        .flatten()
        .map(|p| p.name_any())
        .collect();
    let writes = metrics.pods_created.get() + metrics.pods_deleted.get();

    std::fs::write(&path, &same).expect("same behaviour, new digest");
    let second = format!("probe@{}", digest_of(&same));
    wait_for("the status names the new version", WAIT, || async {
        let status = env.sets().get("agent").await.ok()?.status?;
        (status.plugin.as_deref() == Some(second.as_str())).then_some(())
    })
    .await;
    let pods_after: Vec<String> = env
        .pods_of("agent")
        .await
        .values()
        .flatten()
        .map(|p| p.name_any())
        .collect();
    assert_eq!(pods_after, pods_before, "no pod was replaced");
    assert_eq!(
        metrics.pods_created.get() + metrics.pods_deleted.get(),
        writes
    );

    live.stop().await;
}
