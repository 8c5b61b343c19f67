//! The plugin sandbox: each limit stops the misbehaving plugin with its own error kind, the
//! well-behaved plugin passes, and the host serves the next call normally afterwards.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use wasmdaemon::crd::WasmDaemonSet;
use wasmdaemon::node_table::NodeTable;
use wasmdaemon::planner::{Outcome, PlanKey, PluginDecider, SetPlanner};
use wasmdaemon::plugin::bindings::SetInfo;
use wasmdaemon::plugin::{Limits, LoadedPlugin, PluginDecision, PluginEngine, PluginError};

/// The deadline of the engine that checks deadlines.
const DEADLINE: Duration = Duration::from_millis(100);

/// An engine whose deadline no honest call on a loaded machine comes near, for every test that
/// is not about the deadline itself.
fn engine() -> &'static PluginEngine {
    static ENGINE: OnceLock<PluginEngine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let limits = Limits {
            deadline: Duration::from_secs(20),
            ..Limits::default()
        };
        PluginEngine::new(limits).unwrap()
    })
}

/// An engine with the default 100 ms deadline.
fn strict_engine() -> &'static PluginEngine {
    static ENGINE: OnceLock<PluginEngine> = OnceLock::new();
    ENGINE.get_or_init(|| PluginEngine::new(Limits::default()).unwrap())
}

fn load(name: &str, path: &str) -> Arc<LoadedPlugin> {
    load_into(engine(), name, path)
}

fn load_into(engine: &PluginEngine, name: &str, path: &str) -> Arc<LoadedPlugin> {
    let bytes = std::fs::read(path).unwrap();
    engine.load(name, &bytes).unwrap()
}

fn echo() -> Arc<LoadedPlugin> {
    load("test-echo", env!("WASMDAEMON_TEST_PLUGIN_ECHO"))
}

fn set(variants: &[&str]) -> SetInfo {
    SetInfo {
        namespace: "default".into(),
        name: "agent".into(),
        config: "null".into(),
        variants: variants.iter().map(|v| v.to_string()).collect(),
    }
}

fn node(name: &str, labels: &[(&str, &str)]) -> Node {
    let labels: std::collections::BTreeMap<_, _> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    serde_json::from_value(serde_json::json!({"metadata": {"name": name, "labels": labels}}))
        .unwrap()
}

/// Projects `nodes` as the plugin asked and decides them in one batch.
fn decide(
    plugin: &LoadedPlugin,
    set: &SetInfo,
    nodes: &[Node],
) -> Result<Vec<PluginDecision>, PluginError> {
    plugin.decide_nodes(set, &nodes.iter().collect::<Vec<_>>())
}

fn runs(decision: &PluginDecision, want: Option<&str>) -> bool {
    matches!(decision, PluginDecision::Run { variant, .. } if variant.as_deref() == want)
}

fn nodes(n: usize) -> Vec<Node> {
    (0..n).map(|i| node(&format!("node-{i}"), &[])).collect()
}

/// The well-behaved plugin still answers correctly: the failure before it left nothing behind.
fn assert_host_still_serves() {
    let answer = decide(
        &echo(),
        &set(&["gpu"]),
        &[node("a", &[("wasmdaemon.test/variant", "gpu")])],
    )
    .unwrap();
    assert!(runs(&answer[0], Some("gpu")));
}

#[test]
fn well_behaved_plugin_decides_every_node_of_a_large_batch() {
    let plugin = echo();
    assert_eq!(plugin.info.name, "test-echo");
    assert!(plugin.digest.starts_with("sha256:"));

    let mut batch = nodes(5000);
    batch[1] = node("gpu-node", &[("wasmdaemon.test/variant", "gpu")]);
    batch[2] = node("skipped", &[("wasmdaemon.test/skip", "not today")]);
    let answer = decide(&plugin, &set(&["gpu"]), &batch).unwrap();

    assert_eq!(answer.len(), 5000);
    assert!(runs(&answer[0], None));
    assert!(runs(&answer[1], Some("gpu")));
    assert_eq!(answer[2], PluginDecision::Skip("not today".into()));
}

#[test]
fn compiling_the_same_bytes_twice_reuses_the_compiled_plugin() {
    assert!(Arc::ptr_eq(&echo(), &echo()));
}

#[test]
fn endless_loop_is_interrupted_at_the_deadline() {
    let plugin = load_into(
        strict_engine(),
        "test-loop",
        env!("WASMDAEMON_TEST_PLUGIN_LOOP"),
    );
    let started = std::time::Instant::now();
    let error = decide(&plugin, &set(&[]), &nodes(3)).unwrap_err();
    assert!(
        matches!(error, PluginError::DeadlineExceeded { deadline, .. } if deadline == DEADLINE)
    );
    assert_eq!(error.kind(), "PluginDeadlineExceeded");
    println!("loop interrupted after {:?}", started.elapsed());
    assert_host_still_serves();
}

#[test]
fn memory_bomb_is_stopped_at_the_memory_limit() {
    let plugin = load(
        "test-memory-bomb",
        env!("WASMDAEMON_TEST_PLUGIN_MEMORY_BOMB"),
    );
    let error = decide(&plugin, &set(&[]), &nodes(1)).unwrap_err();
    assert!(
        matches!(error, PluginError::MemoryLimit { limit_bytes, .. } if limit_bytes == 64 << 20),
        "{error:?}"
    );
    assert_host_still_serves();
}

#[test]
fn panic_is_reported_as_a_trap_with_the_guest_message() {
    let plugin = load("test-panic", env!("WASMDAEMON_TEST_PLUGIN_PANIC"));
    let error = decide(&plugin, &set(&[]), &nodes(2)).unwrap_err();
    match &error {
        PluginError::Trap { message, .. } => {
            assert!(
                message.contains("test-panic: deliberate panic in decide (2 nodes)"),
                "{message}"
            )
        }
        other => panic!("expected a trap, got {other:?}"),
    }
    assert_host_still_serves();
}

#[test]
fn wrong_decision_count_is_a_malformed_answer() {
    let plugin = load(
        "test-wrong-count",
        env!("WASMDAEMON_TEST_PLUGIN_WRONG_COUNT"),
    );
    let error = decide(&plugin, &set(&[]), &nodes(4)).unwrap_err();
    assert!(
        matches!(&error, PluginError::Malformed { message, .. } if message == "3 decisions for 4 nodes"),
        "{error:?}"
    );
    assert_host_still_serves();
}

#[test]
fn invented_variant_is_a_malformed_answer() {
    let plugin = load(
        "test-unknown-variant",
        env!("WASMDAEMON_TEST_PLUGIN_UNKNOWN_VARIANT"),
    );
    let error = decide(&plugin, &set(&["gpu"]), &nodes(1)).unwrap_err();
    assert!(
        matches!(&error, PluginError::Malformed { message, .. }
            if message.contains("unknown variant \"no-such-variant\"")),
        "{error:?}"
    );
    assert_host_still_serves();
}

#[test]
fn oversized_reason_is_a_malformed_answer() {
    let plugin = load(
        "test-huge-reason",
        env!("WASMDAEMON_TEST_PLUGIN_HUGE_REASON"),
    );
    let error = decide(&plugin, &set(&[]), &nodes(2)).unwrap_err();
    assert!(
        matches!(&error, PluginError::Malformed { message, .. } if message.contains("skip reason")),
        "{error:?}"
    );
    assert_host_still_serves();
}

#[test]
fn a_million_decisions_for_two_nodes_is_refused() {
    let plugin = load(
        "test-many-decisions",
        env!("WASMDAEMON_TEST_PLUGIN_MANY_DECISIONS"),
    );
    let error = decide(&plugin, &set(&[]), &nodes(2)).unwrap_err();
    // Either the million entries fit in guest memory and the count is wrong, or building them
    // ran out of memory first: both stop the plugin without harming the host.
    assert!(
        matches!(
            error,
            PluginError::Malformed { .. } | PluginError::MemoryLimit { .. }
        ),
        "{error:?}"
    );
    assert_host_still_serves();
}

#[test]
fn log_and_stdio_floods_are_bounded() {
    for (name, path) in [
        ("test-log-flood", env!("WASMDAEMON_TEST_PLUGIN_LOG_FLOOD")),
        ("test-stdio", env!("WASMDAEMON_TEST_PLUGIN_STDIO")),
    ] {
        let plugin = load(name, path);
        // The flood completes with its output cut to the limits.
        match decide(&plugin, &set(&[]), &nodes(2)) {
            Ok(answer) => assert_eq!(answer.len(), 2),
            Err(error) => {
                assert!(
                    matches!(error, PluginError::DeadlineExceeded { .. }),
                    "{name}: {error:?}"
                )
            }
        }
    }
    assert_host_still_serves();
}

fn probe_reason(name: &str, path: &str) -> String {
    let answer = decide(&load(name, path), &set(&[]), &nodes(1)).unwrap();
    match &answer[0] {
        PluginDecision::Skip(reason) => reason.to_string(),
        other => panic!("{name}: expected a skip carrying the probe report, got {other:?}"),
    }
}

#[test]
fn plugin_cannot_read_or_write_files() {
    let report = probe_reason("test-filesystem", env!("WASMDAEMON_TEST_PLUGIN_FILESYSTEM"));
    assert!(report.contains("read /etc/passwd: error"), "{report}");
    assert!(report.contains("list /: error"), "{report}");
    assert!(report.contains("write /tmp: error"), "{report}");
    assert!(!std::path::Path::new("/tmp/wasmdaemon-test-plugin").exists());
}

#[test]
fn plugin_cannot_open_sockets() {
    let report = probe_reason("test-network", env!("WASMDAEMON_TEST_PLUGIN_NETWORK"));
    for part in [
        "connect 127.0.0.1:1: error",
        "listen: error",
        "udp: error",
        "resolve: error",
    ] {
        assert!(report.contains(part), "{part} missing from {report}");
    }
}

#[test]
fn plugin_sees_no_environment_or_arguments() {
    let report = probe_reason(
        "test-environment",
        env!("WASMDAEMON_TEST_PLUGIN_ENVIRONMENT"),
    );
    assert_eq!(report, "env: []; args: []");
}

#[test]
fn config_rejected_by_the_plugin_is_a_reported_error() {
    let plugin = echo();
    assert_eq!(plugin.validate_config("null", &[]), Ok(()));
    let error = plugin
        .validate_config(r#"{"reject": "threshold too low"}"#, &[])
        .unwrap_err();
    assert!(
        matches!(&error, PluginError::Reported { message, .. } if message.contains("threshold too low")),
        "{error:?}"
    );
}

#[test]
fn bytes_that_are_not_a_component_fail_to_load() {
    let error = engine().load("junk", b"\0asm\x01\0\0\0").unwrap_err();
    assert!(
        matches!(&error, PluginError::Load { plugin, .. } if plugin == "junk"),
        "{error:?}"
    );
    let error = engine().load("text", b"hello").unwrap_err();
    assert_eq!(error.kind(), "PluginLoadFailed");
}

/// A set using `plugin` with `config`, running everywhere.
fn daemon_set(name: &str, plugin: &str, config: serde_json::Value) -> WasmDaemonSet {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "wasmdaemon.io/v1alpha1", "kind": "WasmDaemonSet",
        "metadata": {"name": name, "namespace": "default", "uid": name, "generation": 1},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                         "spec": {"containers": [{"name": "c", "image": "i"}]}},
            "variants": [{"name": "arm"}],
            "policy": {"plugin": plugin, "config": config}
        }
    }))
    .unwrap()
}

#[test]
fn sets_deciding_the_same_nodes_at_the_same_moment_share_one_projection() {
    let hardware = std::fs::read(env!("WASMDAEMON_PLUGIN_HARDWARE")).unwrap();
    let plugin = engine().load("hardware", &hardware).unwrap();
    let arch = |name: &str, arch: &str| node(name, &[("kubernetes.io/arch", arch)]);
    let mut table = NodeTable::from_nodes([arch("a", "arm64"), arch("b", "amd64")]);
    let arm_rule = serde_json::json!({"rules": [{"when": {"arch": ["arm64"]}, "variant": "arm"}]});
    let sets = [
        daemon_set("first", "hardware", arm_rule.clone()),
        daemon_set("second", "hardware", arm_rule),
        daemon_set("third", "hardware", serde_json::json!({"rules": []})),
    ];
    let mut planners: Vec<(SetPlanner, PluginDecider)> = sets
        .iter()
        .map(|_| (SetPlanner::default(), PluginDecider::new(plugin.clone())))
        .collect();
    let mut pass = |table: &NodeTable| {
        let mut variants = Vec::new();
        for (set, (planner, decider)) in sets.iter().zip(&mut planners) {
            let key = PlanKey::of(set, Some(&plugin.digest));
            let delta = table.delta(planner.since(&key));
            planner.apply(set, key, &delta, Some(decider)).unwrap();
            variants.push(
                planner
                    .decisions()
                    .iter()
                    .map(|p| match &p.outcome {
                        Outcome::Run { variant, .. } => variant.clone().unwrap_or_default(),
                        Outcome::Skip { .. } => "skip".to_string(),
                    })
                    .collect::<Vec<_>>(),
            );
        }
        variants
    };

    let first = pass(&table);
    assert_eq!(first, [vec!["arm", ""], vec!["arm", ""], vec!["", ""]]);
    assert_eq!(plugin.batches.built(), 1, "three sets, one projection");

    // After a change, each set is sent only the changed node, projected for it alone.
    table.apply(arch("b", "arm64"));
    let second = pass(&table);
    assert_eq!(
        second,
        [vec!["arm", "arm"], vec!["arm", "arm"], vec!["", ""]]
    );
    assert_eq!(plugin.batches.built(), 1);
}
