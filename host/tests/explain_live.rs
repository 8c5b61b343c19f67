//! `wasmdaemon explain` against a cluster: the in-process API server (or the cluster
//! `WASMDAEMON_TEST_KUBECONFIG` names) holds a set, nodes and pods, and the built binary reads
//! them through `--kubeconfig`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod};
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, CustomResourceExt};
use serde_json::json;
use wasmdaemon::crd::WasmDaemonSet;
use wasmdaemon::plugin::{Limits, PluginEngine, digest_of};
use wasmdaemon::registry::{Registry, STOCK, configmap};
use wasmdaemon::render::HASH_LABEL;
use wasmdaemon_testcluster::{NodeShape, TestEnv};

/// The longest a pod is waited for.
const WAIT: Duration = Duration::from_secs(30);

/// A hash no rendering produces.
const OLD_HASH: &str = "0000000000000000";

/// One test's namespace on the cluster, and the kubeconfig the binary is given.
struct Cluster {
    env: TestEnv,
    kubeconfig: PathBuf,
    /// The kubeconfig's context names the test's namespace, so `--namespace` can be left out.
    context_namespace: bool,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// The in-process server with a kubeconfig written for it whose context is the test's
    /// namespace, or the cluster `WASMDAEMON_TEST_KUBECONFIG` names with that kubeconfig.
    async fn start() -> Self {
        let env = TestEnv::new().await.expect("the test cluster starts");
        env.install_crd(&WasmDaemonSet::crd())
            .await
            .expect("the CRD is installed");
        let dir = tempfile::tempdir().expect("a temporary directory");
        let (kubeconfig, context_namespace) = match env.cluster() {
            Some(cluster) => {
                let path = dir.path().join("kubeconfig");
                std::fs::write(&path, kubeconfig_for(&cluster.url(), env.namespace()))
                    .expect("the kubeconfig is written");
                (path, true)
            }
            None => (env.kubeconfig_path().to_path_buf(), false),
        };
        Self {
            env,
            kubeconfig,
            context_namespace,
            _dir: dir,
        }
    }

    fn ns(&self) -> &str {
        self.env.namespace()
    }

    /// `wasmdaemon explain <args> --kubeconfig <file>`, naming the namespace unless the
    /// kubeconfig's context does.
    async fn explain(&self, args: &[&str]) -> Output {
        let mut all: Vec<String> = ["explain"]
            .iter()
            .chain(args)
            .map(|a| a.to_string())
            .collect();
        all.extend(["--kubeconfig".into(), self.kubeconfig.display().to_string()]);
        if !self.context_namespace {
            all.extend(["--namespace".into(), self.ns().to_string()]);
        }
        run(all, None).await
    }

    /// Explains and expects success; returns stdout.
    async fn explain_ok(&self, args: &[&str]) -> String {
        let out = self.explain(args).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "explain {args:?} failed: {stderr}");
        String::from_utf8(out.stdout).expect("UTF-8 output")
    }

    async fn add_node(&self, name: &str, shape: &NodeShape) -> String {
        self.env
            .add_node(name, shape)
            .await
            .expect("the node is added")
    }

    /// Creates the set and returns it as stored (with its uid).
    async fn create_set(&self, set: &WasmDaemonSet) -> WasmDaemonSet {
        self.env
            .api::<WasmDaemonSet>()
            .create(&PostParams::default(), set)
            .await
            .expect("the set is created")
    }

    /// The pod the controller would create for `node` today, named `name`, bound to the node.
    async fn planned_pod(&self, set: &WasmDaemonSet, node: &str, name: &str) -> Pod {
        let nodes: Api<Node> = Api::all(self.env.client());
        let node = nodes.get(node).await.expect("the node exists");
        let set = set.clone();
        let mut pod = tokio::task::spawn_blocking(move || {
            let registry = Registry::new(PluginEngine::new(Limits::default()).unwrap(), None);
            let simulation = wasmdaemon::simulate::simulate(&set, &[node], &registry).unwrap();
            simulation
                .plan
                .create
                .into_iter()
                .next()
                .expect("the node runs the set")
                .pod
        })
        .await
        .expect("planning does not panic");
        pod.metadata.generate_name = None;
        pod.metadata.name = Some(name.to_string());
        let spec = pod.spec.as_mut().expect("a pod spec");
        spec.node_name = spec
            .affinity
            .as_ref()
            .and_then(|a| a.node_affinity.as_ref())
            .and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .and_then(|s| s.node_selector_terms.first())
            .and_then(|t| {
                t.match_fields
                    .as_ref()?
                    .first()?
                    .values
                    .as_ref()?
                    .first()
                    .cloned()
            });
        pod
    }

    /// Creates `pod` and waits until the kubelet reports it Running.
    async fn run_pod(&self, pod: &Pod) {
        let pods = self.env.api::<Pod>();
        pods.create(&PostParams::default(), pod)
            .await
            .expect("the pod is created");
        let name = pod.metadata.name.clone().unwrap_or_default();
        let running = || async {
            let pod = pods.get(&name).await.ok();
            pod.and_then(|p| p.status?.phase).as_deref() == Some("Running")
        };
        self.env
            .wait_until(&format!("pod {name} runs"), WAIT, running)
            .await
            .expect("the pod runs");
    }

    async fn teardown(self) {
        self.env
            .teardown()
            .await
            .expect("the test namespace is removed");
    }
}

/// A kubeconfig for the server at `url` whose context's namespace is `namespace`.
fn kubeconfig_for(url: &str, namespace: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\ncurrent-context: test\nclusters:\n- name: test\n  cluster:\n    \
         server: {url}\ncontexts:\n- name: test\n  context:\n    cluster: test\n    user: test\n    \
         namespace: {namespace}\nusers:\n- name: test\n  user: {{}}\n"
    )
}

/// Runs the built binary off the test's runtime. Nothing it could infer a cluster from is left
/// in its environment but `kubeconfig_env`, so a command that should not reach a cluster
/// cannot reach one elsewhere.
async fn run(args: Vec<String>, kubeconfig_env: Option<PathBuf>) -> Output {
    tokio::task::spawn_blocking(move || {
        let mut command = Command::new(env!("CARGO_BIN_EXE_wasmdaemon"));
        command
            .args(&args)
            .env_remove("POD_NAMESPACE")
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env_remove("KUBERNETES_SERVICE_PORT")
            .env("HOME", "/nonexistent")
            .env(
                "KUBECONFIG",
                kubeconfig_env.unwrap_or_else(|| PathBuf::from("/nonexistent/kubeconfig")),
            );
        command.output().expect("the binary runs")
    })
    .await
    .expect("the command thread does not panic")
}

/// The single `error:` line of a failed command.
fn error_line(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).trim_end().to_string();
    assert!(!out.status.success(), "expected a failure, got: {stderr}");
    assert!(out.stdout.is_empty(), "nothing on stdout on failure");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line expected: {stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    stderr
}

/// A GPU telemetry agent placed by the stock `hardware` plugin: a variant per GPU vendor,
/// nodes without a GPU skipped.
fn gpu_set(ns: &str) -> WasmDaemonSet {
    serde_json::from_value(json!({
        "apiVersion": "wasmdaemon.io/v1alpha1", "kind": "WasmDaemonSet",
        "metadata": {"name": "gpu-telemetry", "namespace": ns},
        "spec": {
            "selector": {"matchLabels": {"app": "gpu-telemetry"}},
            "template": {
                "metadata": {"labels": {"app": "gpu-telemetry"}},
                "spec": {"containers": [{"name": "agent", "image": "telemetry:1"}],
                         "terminationGracePeriodSeconds": 0}
            },
            "variants": [
                {"name": "nvidia", "overlay": {"containers": [
                    {"name": "agent", "image": "telemetry-nvidia:1"}]}},
                {"name": "amd", "overlay": {"containers": [
                    {"name": "agent", "image": "telemetry-amd:1"}]}}
            ],
            "policy": {"plugin": "hardware", "config": {
                "rules": [{"when": {"gpuVendor": "nvidia"}, "variant": "nvidia"},
                          {"when": {"gpuVendor": "amd"}, "variant": "amd"}],
                "default": {"skip": "no GPU on this node"}
            }}
        }
    }))
    .expect("a valid set")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gpu_node_runs_the_set_with_its_vendor_variant_and_its_pod_is_up_to_date() {
    let cluster = Cluster::start().await;
    let node = cluster
        .add_node("gpu", &NodeShape::new().gpu("nvidia", 2))
        .await;
    let set = cluster.create_set(&gpu_set(cluster.ns())).await;
    let pod = cluster
        .planned_pod(&set, &node, "gpu-telemetry-current")
        .await;
    cluster.run_pod(&pod).await;

    let text = cluster.explain_ok(&["gpu-telemetry", &node]).await;

    let ns = cluster.ns();
    assert!(
        text.contains(&format!("set:        {ns}/gpu-telemetry\n")),
        "{text}"
    );
    assert!(text.contains("plugin:     hardware@sha256:"), "{text}");
    assert!(text.contains("decision:   run\n"), "{text}");
    assert!(text.contains("variant:    nvidia\n"), "{text}");
    assert!(
        text.contains("pod:        gpu-telemetry-current (Running, variant nvidia): up to date\n"),
        "{text}"
    );
    assert!(!text.contains("status:"), "{text}");
    cluster.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_a_gpu_does_not_run_the_set_and_says_why() {
    let cluster = Cluster::start().await;
    let node = cluster.add_node("cpu", &NodeShape::new()).await;
    cluster.create_set(&gpu_set(cluster.ns())).await;

    let text = cluster.explain_ok(&["gpu-telemetry", &node]).await;

    assert!(text.contains("predicates: pass\n"), "{text}");
    assert!(text.contains("decision:   skip\n"), "{text}");
    assert!(text.contains("no GPU on this node"), "{text}");
    assert!(
        text.contains("pods:       none of the set's pods is on this node\n"),
        "{text}"
    );
    cluster.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_of_an_older_spec_is_outdated_and_a_stale_status_digest_is_one_line() {
    let cluster = Cluster::start().await;
    let node = cluster
        .add_node("gpu", &NodeShape::new().gpu("nvidia", 2))
        .await;
    let set = cluster.create_set(&gpu_set(cluster.ns())).await;
    let mut old = cluster.planned_pod(&set, &node, "gpu-telemetry-old").await;
    // Matches the set's selector but has no controller: not one of the set's pods.
    let mut stranger = old.clone();
    stranger.metadata.name = Some("stranger".into());
    stranger.metadata.owner_references = None;
    old.metadata
        .labels
        .get_or_insert_with(BTreeMap::new)
        .insert(HASH_LABEL.to_string(), OLD_HASH.to_string());
    cluster.run_pod(&old).await;
    cluster.run_pod(&stranger).await;
    let stale = format!("hardware@sha256:{}", "0".repeat(64));
    cluster
        .env
        .api::<WasmDaemonSet>()
        .patch_status(
            "gpu-telemetry",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {
                "desiredNumberScheduled": 1, "currentNumberScheduled": 1,
                "numberMisscheduled": 0, "numberReady": 1, "plugin": stale}})),
        )
        .await
        .expect("the set's status is written");

    let text = cluster.explain_ok(&["gpu-telemetry", &node]).await;

    let outdated = format!(
        "pod:        gpu-telemetry-old (Running, variant nvidia): outdated (spec-hash {OLD_HASH}, \
         the node should run "
    );
    assert!(text.contains(&outdated), "{text}");
    assert!(!text.contains("stranger"), "{text}");
    let note: Vec<&str> = text.lines().filter(|l| l.starts_with("status:")).collect();
    assert_eq!(note.len(), 1, "{text}");
    assert!(
        note[0].starts_with(&format!(
            "status:     the controller last planned with {stale}; this used hardware@sha256:"
        )),
        "{text}"
    );
    cluster.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_set_that_does_not_exist_is_one_error_line() {
    let cluster = Cluster::start().await;
    let node = cluster.add_node("cpu", &NodeShape::new()).await;

    let line = error_line(&cluster.explain(&["missing", &node]).await);
    let ns = cluster.ns();
    assert_eq!(
        line,
        format!("error: set \"missing\" not found in namespace \"{ns}\"")
    );

    cluster.create_set(&gpu_set(ns)).await;
    let elsewhere = format!("{ns}-elsewhere");
    let args = vec![
        "explain".to_string(),
        "gpu-telemetry".to_string(),
        node.clone(),
        "--kubeconfig".to_string(),
        cluster.kubeconfig.display().to_string(),
        "--namespace".to_string(),
        elsewhere.clone(),
    ];
    let line = error_line(&run(args, None).await);
    assert_eq!(
        line,
        format!("error: set \"gpu-telemetry\" not found in namespace \"{elsewhere}\"")
    );
    cluster.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_does_not_exist_is_one_error_line() {
    let cluster = Cluster::start().await;
    cluster.create_set(&gpu_set(cluster.ns())).await;
    let missing = cluster.env.node_name("missing");

    let line = error_line(&cluster.explain(&["gpu-telemetry", &missing]).await);
    assert_eq!(
        line,
        format!("error: node \"{missing}\" not found in the cluster")
    );

    // Without --kubeconfig the cluster is found as kube finds it: here through KUBECONFIG.
    let mut args = vec![
        "explain".to_string(),
        "gpu-telemetry".to_string(),
        missing.clone(),
    ];
    if !cluster.context_namespace {
        args.extend(["--namespace".to_string(), cluster.ns().to_string()]);
    }
    let inferred = run(args, Some(cluster.kubeconfig.clone())).await;
    assert_eq!(error_line(&inferred), line);
    cluster.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_from_a_labelled_configmap_decides_when_its_namespace_is_given() {
    let cluster = Cluster::start().await;
    let ns = cluster.ns().to_string();
    let node = cluster
        .add_node("gold", &NodeShape::new().label("tier", "gold"))
        .await;
    let (_, rules) = STOCK
        .iter()
        .find(|(name, _)| *name == "label-rules")
        .expect("label-rules is a stock plugin");
    let configmap = ConfigMap {
        metadata: ObjectMeta {
            name: Some("tier-plugin".into()),
            labels: Some(BTreeMap::from([(
                configmap::LABEL.to_string(),
                "tier-rules".to_string(),
            )])),
            ..ObjectMeta::default()
        },
        binary_data: Some(BTreeMap::from([(
            "tier-rules.wasm".to_string(),
            ByteString(rules.to_vec()),
        )])),
        ..ConfigMap::default()
    };
    cluster
        .env
        .api::<ConfigMap>()
        .create(&PostParams::default(), &configmap)
        .await
        .expect("the plugin ConfigMap is created");
    let mut set = gpu_set(&ns);
    set.spec
        .variants
        .push(serde_json::from_value(json!({"name": "gold"})).unwrap());
    set.spec.policy = Some(
        serde_json::from_value(json!({"plugin": "tier-rules", "config": {
            "rules": [{"selector": {"matchLabels": {"tier": "gold"}}, "variant": "gold"}],
            "default": {"skip": "not a gold node"}
        }}))
        .unwrap(),
    );
    cluster.create_set(&set).await;

    let text = cluster
        .explain_ok(&["gpu-telemetry", &node, "--plugin-namespace", &ns])
        .await;
    let digest = digest_of(rules);
    assert!(
        text.contains(&format!(
            "plugin:     tier-rules@{digest} (describes itself as label-rules "
        )),
        "{text}"
    );
    assert!(text.contains("variant:    gold\n"), "{text}");

    let line = error_line(&cluster.explain(&["gpu-telemetry", &node]).await);
    assert!(line.contains("unknown plugin \"tier-rules\""), "{line}");
    cluster.teardown().await;
}

#[tokio::test]
async fn with_set_and_nodes_files_explain_stays_offline() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let file = |path: &str| repo.join(path).display().to_string();
    let args = vec![
        "explain".to_string(),
        "gpu-telemetry".to_string(),
        "ip-10-0-101-44.ec2.internal".to_string(),
        "--nodes".to_string(),
        file("examples/nodes"),
        "--set".to_string(),
        file("examples/sets/gpu-telemetry.yaml"),
    ];
    let out = run(args, None).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("set:        monitoring/gpu-telemetry\n"),
        "{text}"
    );
    assert!(text.contains("variant:    nvidia-large\n"), "{text}");
    assert!(!text.contains("pod:"), "{text}");
}

#[tokio::test]
async fn giving_only_one_of_set_and_nodes_is_a_usage_error() {
    let explain = |extra: &[&str]| {
        let mut args: Vec<String> = vec!["explain".into(), "agent".into(), "node-1".into()];
        args.extend(extra.iter().map(|a| a.to_string()));
        run(args, None)
    };
    for extra in [["--set", "set.yaml"], ["--nodes", "nodes.yaml"]] {
        let line = error_line(&explain(&extra).await);
        assert_eq!(
            line,
            "error: explain takes --set and --nodes together (offline), or neither (from the \
             cluster)"
        );
    }

    let mixed = explain(&["--set", "s.yaml", "--nodes", "n.yaml", "--kubeconfig", "k"]).await;
    let stderr = String::from_utf8_lossy(&mixed.stderr);
    assert_eq!(mixed.status.code(), Some(2), "{stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(stderr.contains("cannot be used with"), "{stderr}");
}

#[tokio::test]
async fn an_unreachable_cluster_and_a_bad_kubeconfig_are_one_error_line_each() {
    let dir = tempfile::tempdir().unwrap();
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let unreachable = dir.path().join("unreachable");
    std::fs::write(
        &unreachable,
        kubeconfig_for(&format!("http://{closed}"), "default"),
    )
    .unwrap();
    let garbage = dir.path().join("garbage");
    std::fs::write(&garbage, "clusters: [unterminated\n").unwrap();
    let no_context = dir.path().join("no-context");
    std::fs::write(&no_context, "apiVersion: v1\nkind: Config\n").unwrap();
    let missing = dir.path().join("missing");

    let explain = |kubeconfig: &Path| {
        let args = ["explain", "agent", "node-1", "--kubeconfig"];
        let mut args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        args.push(kubeconfig.display().to_string());
        run(args, None)
    };
    let line = error_line(&explain(&unreachable).await);
    assert!(
        line.starts_with(&format!(
            "error: failed to reach the cluster at http://{closed}: "
        )),
        "{line}"
    );
    for bad in [&garbage, &no_context, &missing] {
        let line = error_line(&explain(bad).await);
        assert!(
            line.contains(&format!("kubeconfig {}", bad.display())),
            "{line}"
        );
    }

    let line = error_line(
        &run(
            vec![
                "explain".into(),
                "agent".into(),
                "a/../b".into(),
                "--kubeconfig".into(),
                unreachable.display().to_string(),
            ],
            None,
        )
        .await,
    );
    assert!(
        line.starts_with("error: invalid node name \"a/../b\""),
        "{line}"
    );
}
