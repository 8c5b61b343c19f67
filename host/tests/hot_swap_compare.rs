//! `wasmdaemon simulate --compare OLD NEW`: previews which nodes a plugin swap changes.

use std::path::Path;
use std::process::Command;

const SET: &str = r#"
apiVersion: wasmdaemon.io/v1alpha1
kind: WasmDaemonSet
metadata:
  name: probe
  namespace: default
spec:
  selector:
    matchLabels: {app: probe}
  template:
    metadata:
      labels: {app: probe}
    spec:
      containers:
        - name: probe
          image: registry.example.com/probe:1
  variants:
    - name: big
      overlay:
        containers:
          - name: probe
            image: registry.example.com/probe-big:1
  policy:
    plugin: probe
"#;

const NODES: &str = r#"
apiVersion: v1
kind: List
items:
  - apiVersion: v1
    kind: Node
    metadata: {name: plain, labels: {kubernetes.io/os: linux}}
  - apiVersion: v1
    kind: Node
    metadata: {name: big, labels: {wasmdaemon.test/variant: big}}
  - apiVersion: v1
    kind: Node
    metadata: {name: held-back, labels: {wasmdaemon.test/skip: held back}}
"#;

fn compare(dir: &Path, old: &str, new: &str, json: bool) -> String {
    std::fs::write(dir.join("set.yaml"), SET).unwrap();
    std::fs::write(dir.join("nodes.yaml"), NODES).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_wasmdaemon"));
    command
        .arg("simulate")
        .arg("--nodes")
        .arg(dir.join("nodes.yaml"))
        .arg("--set")
        .arg(dir.join("set.yaml"))
        .args(["--plugin-deadline-ms", "20000", "--compare", old, new]);
    if json {
        command.args(["--output", "json"]);
    }
    let output = command.output().expect("run wasmdaemon");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "simulate --compare failed: {stderr}"
    );
    String::from_utf8(output.stdout).expect("utf-8 output")
}

#[test]
fn compare_lists_the_nodes_whose_decision_or_variant_changes() {
    let dir = tempfile::tempdir().unwrap();
    let old = env!("WASMDAEMON_TEST_PLUGIN_ECHO");
    let new = env!("WASMDAEMON_TEST_PLUGIN_STDIO");

    let json: serde_json::Value =
        serde_json::from_str(&compare(dir.path(), old, new, true)).expect("json output");
    let changes: Vec<(&str, &str)> = json["changes"]
        .as_array()
        .expect("a list of changes")
        .iter()
        .map(|c| {
            (
                c["node"].as_str().unwrap_or("?"),
                c["change"].as_str().unwrap_or("?"),
            )
        })
        .collect();
    assert_eq!(changes, vec![("big", "variant"), ("held-back", "start")]);
    let summary = &json["summary"];
    assert_eq!(summary["nodes"], 3);
    assert_eq!(summary["unchanged"], 1);
    assert_eq!(summary["start"], 1);
    assert_eq!(summary["variant"], 1);
    assert_eq!(summary["stop"], 0);

    let table = compare(dir.path(), old, new, false);
    assert!(table.contains("held-back"), "{table}");
    assert!(
        !table.lines().any(|l| l.starts_with("plain ")),
        "unchanged nodes are not listed"
    );
    assert!(
        table.contains("2 of 3 nodes change: 1 start, 0 stop, 1 change variant"),
        "{table}"
    );
}

#[test]
fn comparing_a_version_with_itself_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let echo = env!("WASMDAEMON_TEST_PLUGIN_ECHO");
    let table = compare(dir.path(), echo, echo, false);
    assert!(table.contains("0 of 3 nodes change"), "{table}");
}
