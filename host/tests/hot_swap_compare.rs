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
    metadata: {name: held-back, labels: {wasmdaemon.test/skip: held-back}}
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_reads_the_nodes_of_a_cluster_through_a_kubeconfig() {
    use k8s_openapi::api::core::v1::Node;
    use kube::api::{Api, PostParams};

    let cluster = wasmdaemon_testcluster::TestCluster::start()
        .await
        .expect("test cluster");
    let nodes: Api<Node> = Api::all(cluster.client());
    let items: serde_yaml::Value = serde_yaml::from_str(NODES).expect("nodes yaml");
    for item in items["items"].as_sequence().expect("items") {
        let node: Node = serde_yaml::from_value(item.clone()).expect("node");
        nodes
            .create(&PostParams::default(), &node)
            .await
            .expect("node created");
    }

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("set.yaml"), SET).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_wasmdaemon"));
    command
        .arg("simulate")
        .arg("--nodes-from")
        .arg(cluster.kubeconfig_path())
        .arg("--set")
        .arg(dir.path().join("set.yaml"))
        .args([
            "--plugin-deadline-ms",
            "20000",
            "--output",
            "json",
            "--compare",
        ])
        .args([
            env!("WASMDAEMON_TEST_PLUGIN_ECHO"),
            env!("WASMDAEMON_TEST_PLUGIN_STDIO"),
        ]);
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("the command thread")
        .expect("run wasmdaemon");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "simulate --nodes-from failed: {stderr}"
    );
    let from_cluster = String::from_utf8(output.stdout).expect("utf-8 output");

    let listed = nodes.list(&Default::default()).await.expect("nodes listed");
    let dump = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": listed.items});
    let dump_dir = tempfile::tempdir().unwrap();
    std::fs::write(dump_dir.path().join("nodes.json"), dump.to_string()).unwrap();
    let from_dump = tokio::task::spawn_blocking(move || {
        let out = Command::new(env!("CARGO_BIN_EXE_wasmdaemon"))
            .arg("simulate")
            .arg("--nodes")
            .arg(dump_dir.path().join("nodes.json"))
            .arg("--set")
            .arg(dir.path().join("set.yaml"))
            .args([
                "--plugin-deadline-ms",
                "20000",
                "--output",
                "json",
                "--compare",
            ])
            .args([
                env!("WASMDAEMON_TEST_PLUGIN_ECHO"),
                env!("WASMDAEMON_TEST_PLUGIN_STDIO"),
            ])
            .output();
        out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
    })
    .await
    .expect("the command thread")
    .expect("run wasmdaemon");

    let json: serde_json::Value = serde_json::from_str(&from_cluster).expect("json output");
    assert_eq!(json["summary"]["nodes"], 3, "{from_cluster}");
    assert_eq!(
        from_cluster, from_dump,
        "the cluster's nodes compare as a dump of them does"
    );
}
