//! `wasmdaemon simulate` end to end: the bundled examples, every output format, and one clear
//! line of error for each kind of bad input.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use k8s_openapi::api::core::v1::Pod;
use serde::Deserialize;
use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn wasmdaemon(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wasmdaemon"))
        .args(args)
        .current_dir(repo())
        .output()
        .unwrap()
}

fn simulate_json(nodes: &str, set: &str) -> Vec<Value> {
    let out = wasmdaemon(&[
        "simulate", "--nodes", nodes, "--set", set, "--output", "json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn row<'a>(rows: &'a [Value], node: &str) -> &'a Value {
    rows.iter()
        .find(|r| r["node"] == node)
        .unwrap_or_else(|| panic!("no row for {node}"))
}

/// Runs a failing command and returns its single stderr line.
fn error_line(args: &[&str]) -> String {
    let out = wasmdaemon(args);
    let stderr = String::from_utf8_lossy(&out.stderr).trim_end().to_string();
    assert!(!out.status.success(), "expected failure for {args:?}");
    assert!(out.stdout.is_empty(), "nothing on stdout on failure");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line expected: {stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    stderr
}

/// The error line for simulating the node-monitor set over a node dump file `name` holding
/// `text`.
fn node_dump_error(name: &str, text: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let nodes = temp_file(&dir, name, text);
    error_line(&[
        "simulate",
        "--nodes",
        &nodes,
        "--set",
        "examples/sets/node-monitor.yaml",
    ])
}

fn temp_file(dir: &tempfile::TempDir, name: &str, text: &str) -> String {
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

#[test]
fn gpu_telemetry_runs_only_on_gpu_nodes_with_a_variant_per_vendor() {
    let rows = simulate_json("examples/nodes", "examples/sets/gpu-telemetry.yaml");
    assert_eq!(rows.len(), 13);
    let nvidia = row(&rows, "ip-10-0-101-44.ec2.internal");
    assert_eq!(
        (&nvidia["decision"], &nvidia["variant"]),
        (&"run".into(), &"nvidia-large".into())
    );
    let amd = row(&rows, "ip-10-0-118-9.ec2.internal");
    assert_eq!(
        (&amd["decision"], &amd["variant"]),
        (&"run".into(), &"amd".into())
    );
    let cpu = row(&rows, "ip-10-0-45-101.ec2.internal");
    assert_eq!(cpu["decision"], "skip");
    assert_eq!(cpu["variant"], Value::Null);
    assert_eq!(cpu["reason"], "plugin: no GPU on this node");
    for r in &rows {
        let keys: Vec<_> = r.as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys, ["decision", "node", "reason", "variant"]);
    }
}

#[test]
fn set_without_policy_is_placed_as_an_upstream_daemonset() {
    let rows = simulate_json("examples/nodes", "examples/sets/node-monitor.yaml");
    // The template tolerates the control-plane taint, nothing else beyond the automatic ones.
    let expect = [
        ("ip-10-0-32-17.ec2.internal", "run"),
        ("ip-10-0-71-140.ec2.internal", "run"),
        ("ip-10-0-101-44.ec2.internal", "skip"),
        ("ip-10-0-83-150.ec2.internal", "skip"),
        ("ip-10-0-52-33.ec2.internal", "skip"),
        ("gke-ml-prod-spot-pool-5c1e2a7d-x8qv", "skip"),
    ];
    for (node, decision) in expect {
        assert_eq!(row(&rows, node)["decision"], decision, "{node}");
    }
    let spot = row(&rows, "ip-10-0-83-150.ec2.internal");
    assert_eq!(spot["reason"], "taint spot=true:NoSchedule not tolerated");
}

#[test]
fn log_collector_memory_follows_node_size() {
    let out = wasmdaemon(&[
        "simulate",
        "--nodes",
        "examples/nodes",
        "--set",
        "examples/sets/log-collector.yaml",
        "--output",
        "yaml",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        text.matches("\napiVersion: v1\nkind: Pod\n").count(),
        13,
        "{text}"
    );
    let pods: Vec<Pod> = serde_yaml::Deserializer::from_str(&text)
        .map(|doc| Pod::deserialize(doc).unwrap())
        .collect();
    assert_eq!(pods.len(), 13, "the collector tolerates everything");

    let pod_on = |node: &str| {
        pods.iter()
            .find(|p| wasmdaemon::planner::pod_node(p) == Some(node))
            .unwrap_or_else(|| panic!("no pod for {node}"))
    };
    let memory = |pod: &Pod| {
        let c = &pod.spec.as_ref().unwrap().containers[0];
        c.resources.as_ref().unwrap().requests.as_ref().unwrap()["memory"]
            .0
            .clone()
    };
    let big = pod_on("ip-10-0-64-212.ec2.internal");
    assert_eq!(memory(big), "1Gi");
    assert_eq!(
        big.metadata.labels.as_ref().unwrap()["wasmdaemon.io/variant"],
        "xlarge"
    );
    assert_eq!(memory(pod_on("ip-10-0-45-101.ec2.internal")), "128Mi");

    // Every pod is pinned to its node and carries the automatic daemon tolerations.
    let spec = big.spec.as_ref().unwrap();
    let tolerations = spec.tolerations.as_ref().unwrap();
    assert!(
        tolerations
            .iter()
            .any(|t| t.key.as_deref() == Some("node.kubernetes.io/not-ready"))
    );
    let terms = &spec
        .affinity
        .as_ref()
        .unwrap()
        .node_affinity
        .as_ref()
        .unwrap();
    let term = &terms
        .required_during_scheduling_ignored_during_execution
        .as_ref()
        .unwrap();
    assert_eq!(term.node_selector_terms.len(), 1);
    assert!(
        big.metadata
            .labels
            .as_ref()
            .unwrap()
            .contains_key("wasmdaemon.io/spec-hash")
    );
}

#[test]
fn multi_document_dump_and_single_json_object_are_read() {
    let rows = simulate_json(
        "examples/nodes/extra.yaml",
        "examples/sets/node-monitor.yaml",
    );
    assert_eq!(rows.len(), 2);
    let rows = simulate_json(
        "examples/nodes/gpu-node.json",
        "examples/sets/gpu-telemetry.yaml",
    );
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["variant"], "nvidia-large");
}

#[test]
fn table_output_has_a_row_per_node_and_a_summary() {
    let out = wasmdaemon(&[
        "simulate",
        "--nodes",
        "examples/nodes",
        "--set",
        "examples/sets/gpu-telemetry.yaml",
    ]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("NODE"));
    assert!(
        text.contains("3 of 13 nodes run the set (plugin hardware"),
        "{text}"
    );
}

#[test]
fn unparseable_yaml_names_the_file() {
    let line = node_dump_error(
        "nodes.yaml",
        "apiVersion: v1\nkind: Node\nmetadata: [unclosed\n",
    );
    assert!(
        line.contains("nodes.yaml: document 1: invalid YAML"),
        "{line}"
    );
}

#[test]
fn node_without_a_name_names_the_field() {
    let line = node_dump_error(
        "nodes.yaml",
        "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Node\n  metadata:\n    \
         labels: {a: b}\n",
    );
    assert!(
        line.contains("nodes.yaml: document 1: items[0]: metadata.name: missing"),
        "{line}"
    );
}

#[test]
fn node_field_of_the_wrong_type_names_the_field() {
    let line = node_dump_error(
        "nodes.json",
        r#"{"apiVersion": "v1", "kind": "Node", "metadata": {"name": "a"},
            "spec": {"taints": [{"key": "k", "effect": 3}]}}"#,
    );
    assert!(line.contains("nodes.json: spec.taints[0].effect"), "{line}");
}

#[test]
fn unknown_plugin_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let set = std::fs::read_to_string(repo().join("examples/sets/gpu-telemetry.yaml")).unwrap();
    let set = temp_file(
        &dir,
        "set.yaml",
        &set.replace("plugin: hardware", "plugin: gpu-magic"),
    );
    let line = error_line(&["simulate", "--nodes", "examples/nodes", "--set", &set]);
    assert!(
        line.contains("set.yaml: spec.policy.plugin: unknown plugin \"gpu-magic\""),
        "{line}"
    );
}

#[test]
fn invalid_plugin_config_is_reported_with_its_field() {
    let dir = tempfile::tempdir().unwrap();
    let set = std::fs::read_to_string(repo().join("examples/sets/log-collector.yaml")).unwrap();
    let set = temp_file(
        &dir,
        "set.yaml",
        &set.replace("minMemory: 64Gi", "minMemory: lots"),
    );
    let line = error_line(&["simulate", "--nodes", "examples/nodes", "--set", &set]);
    assert!(line.contains("set.yaml: spec.policy.config:"), "{line}");
    assert!(line.contains("rules[1].when.minMemory"), "{line}");
}

#[test]
fn variant_invented_by_the_plugin_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        env!("WASMDAEMON_TEST_PLUGIN_UNKNOWN_VARIANT"),
        dir.path().join("inventive.wasm"),
    )
    .unwrap();
    let set = std::fs::read_to_string(repo().join("examples/sets/gpu-telemetry.yaml")).unwrap();
    let set = set.replace("plugin: hardware", "plugin: inventive");
    let set = temp_file(&dir, "set.yaml", set.split("    config:").next().unwrap());
    let plugin_dir = dir.path().to_string_lossy().into_owned();
    let line = error_line(&[
        "simulate",
        "--nodes",
        "examples/nodes",
        "--set",
        &set,
        "--plugin-dir",
        &plugin_dir,
    ]);
    assert!(line.contains("malformed answer"), "{line}");
    assert!(
        line.contains("unknown variant \"no-such-variant\""),
        "{line}"
    );
}

#[test]
fn plugin_file_named_like_a_stock_plugin_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        env!("WASMDAEMON_TEST_PLUGIN_ECHO"),
        dir.path().join("hardware.wasm"),
    )
    .unwrap();
    let plugin_dir = dir.path().to_string_lossy().into_owned();
    let args = [
        "simulate",
        "--nodes",
        "examples/nodes",
        "--set",
        "examples/sets/gpu-telemetry.yaml",
        "--plugin-dir",
        &plugin_dir,
    ];
    let line = error_line(&args);
    assert!(line.contains("has the name of a stock plugin"), "{line}");
}

#[test]
fn set_problems_name_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let base = std::fs::read_to_string(repo().join("examples/sets/gpu-telemetry.yaml")).unwrap();
    let cases = [
        (
            base.replace("kind: WasmDaemonSet", "kind: DaemonSet"),
            "expected apiVersion",
        ),
        (
            base.replace("- name: amd", "- name: nvidia"),
            "spec.variants[2].name: duplicate",
        ),
        (
            base.replace(
                "          - name: agent\n            image: docker.io",
                "          - name: agnt\n            image: docker.io",
            ),
            "spec.variants[2].overlay: variant \"amd\": container \"agnt\"",
        ),
        (
            base.replace(
                "        app.kubernetes.io/name: gpu-telemetry\n    spec:",
                "        app: other\n    spec:",
            ),
            "spec.template.metadata.labels: do not match spec.selector",
        ),
        (
            base.replace("minGpus: 4", "minGpus: four"),
            "spec.policy.config",
        ),
        (base.replace("  template:", "  templat:"), "spec"),
        (
            base.replace("              cpu: 100m", "              cpu: -100m"),
            "spec.template.spec.containers[0].resources.requests.cpu: \"-100m\" is negative",
        ),
        (
            base.replace(
                "    spec:\n      tolerations:",
                "    spec:\n      restartPolicy: Never\n      tolerations:",
            ),
            "spec.template.spec.restartPolicy",
        ),
    ];
    for (text, want) in cases {
        let set = temp_file(&dir, "set.yaml", &text);
        let line = error_line(&["simulate", "--nodes", "examples/nodes", "--set", &set]);
        assert!(line.contains(want), "want {want:?} in {line}");
    }
}

#[test]
fn missing_files_are_reported() {
    let line = error_line(&[
        "simulate",
        "--nodes",
        "no/such/dir",
        "--set",
        "examples/sets/x.yaml",
    ]);
    assert!(line.contains("no/such/dir"), "{line}");
}

#[test]
fn misspelt_set_fields_are_errors_not_silently_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let base = std::fs::read_to_string(repo().join("examples/sets/log-collector.yaml")).unwrap();
    let cases = [
        (
            base.replace("      overlay:", "      overlays:"),
            "spec.variants[0].overlays: unknown field",
        ),
        (
            base.replace("  minReadySeconds: 10", "  minReadySecond: 10"),
            "spec.minReadySecond",
        ),
    ];
    for (text, want) in cases {
        let set = temp_file(&dir, "set.yaml", &text);
        let line = error_line(&["simulate", "--nodes", "examples/nodes", "--set", &set]);
        assert!(line.contains(want), "want {want:?} in {line}");
    }
}

#[test]
fn an_empty_node_dump_and_a_missing_plugin_dir_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let empty = temp_file(&dir, "nodes.yaml", "---\n");
    let line = error_line(&[
        "simulate",
        "--nodes",
        &empty,
        "--set",
        "examples/sets/node-monitor.yaml",
    ]);
    assert!(line.contains("no Node objects found"), "{line}");

    let missing = dir.path().join("nowhere").to_string_lossy().into_owned();
    let args = [
        "simulate",
        "--nodes",
        "examples/nodes",
        "--set",
        "examples/sets/node-monitor.yaml",
        "--plugin-dir",
        &missing,
    ];
    assert!(error_line(&args).contains("not a directory"));
}

#[test]
fn output_that_cannot_be_written_is_one_error_line_and_a_closed_pipe_is_quiet() {
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_wasmdaemon"))
        .arg("crd")
        .stdout(full)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.starts_with("error: failed to write the output"),
        "{stderr}"
    );

    let mut child = Command::new(env!("CARGO_BIN_EXE_wasmdaemon"))
        .arg("crd")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stderr.is_empty());
}

#[test]
fn run_refuses_a_namespace_the_api_server_could_not_hold() {
    for flag in ["--namespace", "--plugin-namespace"] {
        let out = wasmdaemon(&["run", "--kubeconfig", "/nonexistent", flag, "a/b"]);
        assert_eq!(out.status.code(), Some(2), "{flag}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("invalid namespace name \"a/b\""),
            "{stderr}"
        );
    }
}
