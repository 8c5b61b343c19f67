//! Hot swap through ConfigMaps: a labelled ConfigMap's component becomes the plugin, updates
//! swap it, deletion keeps a plugin in use, and two hosts watching the same ConfigMap agree.

mod hot_swap_common;

use std::collections::BTreeMap;
use std::sync::Arc;

use hot_swap_common::*;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::{DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use wasmdaemon::plugin::digest_of;
use wasmdaemon::registry::configmap::{self, LABEL};
use wasmdaemon::registry::{FailureKind, PluginStore};
use wasmdaemon_testcluster::TestEnv;

fn plugin_configmap(name: &str, label: &str, data: &[(&str, &[u8])]) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            labels: Some(BTreeMap::from([(LABEL.to_string(), label.to_string())])),
            ..ObjectMeta::default()
        },
        binary_data: Some(
            data.iter()
                .map(|(k, v)| (k.to_string(), ByteString(v.to_vec())))
                .collect(),
        ),
        ..ConfigMap::default()
    }
}

/// A host: a store kept in step with the namespace's plugin ConfigMaps.
fn host(env: &TestEnv, sets: &Sets) -> (Arc<PluginStore>, tokio::task::JoinHandle<()>) {
    let store = store(engine(), sets, false);
    let task = tokio::spawn(configmap::watch(
        store.clone(),
        env.client(),
        env.namespace().to_string(),
    ));
    (store, task)
}

async fn wait_for(
    store: &Arc<PluginStore>,
    what: &str,
    done: impl Fn(&PluginStore) -> bool + Send + 'static,
) {
    let store = store.clone();
    let what = what.to_string();
    tokio::task::spawn_blocking(move || wait_until(&store, &what, || done(&store)))
        .await
        .expect("the wait panicked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hosts_watching_one_configmap_converge_on_the_same_digest() {
    let env = TestEnv::in_process().await.expect("test cluster");
    let api: Api<ConfigMap> = Api::namespaced(env.client(), env.namespace());
    let (v1, v2) = (echo_version("v1"), echo_version("v2"));
    api.create(
        &PostParams::default(),
        &plugin_configmap("probe-plugin", "probe", &[("probe.wasm", &v1)]),
    )
    .await
    .expect("create the ConfigMap");

    let sets = Sets::default();
    sets.add("probe", set_use("probe-users", "null", None));
    let (a, task_a) = host(&env, &sets);
    let (b, task_b) = host(&env, &sets);
    let d1 = digest_of(&v1);
    for store in [&a, &b] {
        let d1 = d1.clone();
        wait_for(store, "v1 loads from the ConfigMap", move |s| {
            current(s, "probe") == d1
        })
        .await;
    }

    let update = plugin_configmap("probe-plugin", "probe", &[("probe.wasm", &v2)]);
    api.patch(
        "probe-plugin",
        &PatchParams::default(),
        &Patch::Merge(&update),
    )
    .await
    .expect("update the ConfigMap");
    let d2 = digest_of(&v2);
    for store in [&a, &b] {
        let d2 = d2.clone();
        wait_for(store, "both hosts swap to v2", move |s| {
            current(s, "probe") == d2
        })
        .await;
    }
    assert_eq!(a.metrics().swaps_total, 2);
    assert_eq!(b.metrics().swaps_total, 2);

    api.delete("probe-plugin", &DeleteParams::default())
        .await
        .expect("delete the ConfigMap");
    for store in [&a, &b] {
        wait_for(store, "the deletion flags the plugin in use", |s| {
            s.status("probe").is_some_and(|st| st.removed)
        })
        .await;
        assert_eq!(
            current(store, "probe"),
            d2,
            "sets keep the last good version"
        );
    }

    task_a.abort();
    task_b.abort();
    env.teardown().await.expect("teardown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unlabelled_name_comes_from_each_key_and_a_bad_component_is_refused() {
    let env = TestEnv::in_process().await.expect("test cluster");
    let api: Api<ConfigMap> = Api::namespaced(env.client(), env.namespace());
    let (first, second) = (echo_version("first"), echo_version("second"));
    api.create(
        &PostParams::default(),
        &plugin_configmap("bundle", "", &[("first.wasm", &first), ("second", &second)]),
    )
    .await
    .expect("create the ConfigMap");

    let (store, task) = host(&env, &Sets::default());
    wait_for(&store, "both keys load", |s| {
        s.names() == ["first", "second"]
    })
    .await;
    assert_eq!(current(&store, "first"), digest_of(&first));
    assert_eq!(current(&store, "second"), digest_of(&second));

    let broken = plugin_configmap(
        "bundle",
        "",
        &[("first.wasm", b"not a component"), ("second", &second)],
    );
    api.patch("bundle", &PatchParams::default(), &Patch::Merge(&broken))
        .await
        .expect("update the ConfigMap");
    wait_for(&store, "the broken key is refused", |s| {
        s.status("first")
            .and_then(|st| st.last_failure)
            .is_some_and(|f| f.kind == FailureKind::Compile)
    })
    .await;
    assert_eq!(
        current(&store, "first"),
        digest_of(&first),
        "the old version stays"
    );

    task.abort();
    env.teardown().await.expect("teardown");
}
