//! Plugins pick per-node variants; a failing plugin changes nothing and other sets carry on.

mod controller_common;

use std::collections::BTreeMap;

use controller_common::{Env, WAIT, wait_for};
use k8s_openapi::api::events::v1::Event;
use kube::api::ListParams;
use kube::{Api, ResourceExt};
use serde_json::json;
use wasmdaemon::render::VARIANT_LABEL;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hardware_plugin_gives_arm_nodes_their_variant() {
    let env = Env::start("variants").await;
    let x86 = env.add_node("x86", &[], "amd64").await;
    let arm = env.add_node("arm", &[], "arm64").await;
    let set = env.set(
        "agent",
        "",
        "agent:1",
        json!({
            "variants": [{"name": "arm", "overlay": {
                "containers": [{"name": "main", "image": "agent-arm:1"}]}}],
            "policy": {"plugin": "hardware", "config": {
                "rules": [{"when": {"arch": ["arm64"]}, "variant": "arm"}]}}
        }),
    );
    env.create_set(&set).await;
    let controller = env.start_controller(None);

    let variants = wait_for("a pod on each node", WAIT, || async {
        let pods = env.pods_of("agent").await;
        let variant = |node: &str| {
            let pod = pods.get(node)?.first()?;
            Some(pod.labels().get(VARIANT_LABEL).cloned().unwrap_or_default())
        };
        Some((variant(&x86)?, variant(&arm)?))
    })
    .await;
    assert_eq!(variants, (String::new(), "arm".to_string()));

    let status = wait_for("per-variant counts in the status", WAIT, || async {
        let status = env.sets().get("agent").await.ok()?.status?;
        (status.variants.values().sum::<i32>() == 2).then_some(status)
    })
    .await;
    assert_eq!(
        status.variants,
        BTreeMap::from([("".into(), 1), ("arm".into(), 1)])
    );
    assert!(
        status
            .plugin
            .is_some_and(|p| p.starts_with("hardware@sha256:"))
    );
    controller.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trapping_plugin_leaves_pods_alone_and_other_sets_carry_on() {
    let Some(panic_plugin) = option_env!("WASMDAEMON_TEST_PLUGIN_PANIC") else {
        println!("the test-panic plugin was not built; skipped");
        return;
    };
    let plugins = tempfile::tempdir().expect("plugin dir");
    std::fs::copy(panic_plugin, plugins.path().join("boom.wasm")).expect("plugin copied");

    let env = Env::start("plugin-failure").await;
    let a = env.add_node("a", &[], "amd64").await;
    env.add_node("b", &[], "amd64").await;
    env.create_set(&env.set("agent", "", "agent:1", json!({})))
        .await;
    env.create_set(&env.set("other", "", "other:1", json!({})))
        .await;
    let controller = env.start_controller(Some(plugins.path().to_path_buf()));
    let before = wait_for("two pods of the set", WAIT, || async {
        let pods = env.pods_of("agent").await;
        let names: Vec<String> = pods.values().flatten().map(ResourceExt::name_any).collect();
        (names.len() == 2).then_some(names)
    })
    .await;

    env.patch_set("agent", json!({"policy": {"plugin": "boom"}}))
        .await;
    let condition = wait_for("PluginReady=False", WAIT, || async {
        let status = env.sets().get("agent").await.ok()?.status?;
        status
            .conditions
            .into_iter()
            .find(|c| c.type_ == "PluginReady" && c.status == "False")
    })
    .await;
    assert_eq!(condition.reason, "PluginTrapped", "{condition:?}");
    let events: Api<Event> = Api::namespaced(env.client.clone(), &env.ns);
    wait_for("a PluginFailed event", WAIT, || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items
            .iter()
            .any(|e| e.reason.as_deref() == Some("PluginFailed"))
            .then_some(())
    })
    .await;

    let c = env.add_node("c", &[], "amd64").await;
    wait_for("the healthy set to reach the new node", WAIT, || async {
        env.pods_of("other").await.contains_key(&c).then_some(())
    })
    .await;
    let after = env.pods_of("agent").await;
    let names: Vec<String> = after
        .values()
        .flatten()
        .map(ResourceExt::name_any)
        .collect();
    assert_eq!(
        names, before,
        "the failing set's pods were left exactly as they were"
    );
    assert!(after.contains_key(&a) && !after.contains_key(&c));
    controller.stop().await;
}
