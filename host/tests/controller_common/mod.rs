//! Shared set-up of the controller tests: a cluster (the in-process test server, or the one
//! `WASMDAEMON_TEST_KUBECONFIG` points at), a namespace per test, nodes, a kubelet stand-in that
//! reports pods ready, a controller running in the test's process, and bounded waits.

#![allow(
    dead_code,
    reason = "each test binary uses a different part of this module"
)]

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, CustomResourceExt, ResourceExt};
use serde_json::json;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use wasmdaemon::controller::{self, Options};
use wasmdaemon::crd::WasmDaemonSet;
use wasmdaemon::planner::pod_node;
use wasmdaemon::plugin::{Limits, PluginEngine};
use wasmdaemon::registry::Registry;
use wasmdaemon::render::SET_LABEL;
use wasmdaemon::telemetry::ControllerMetrics;
use wasmdaemon_testcluster::TestCluster;

/// The longest any condition in these tests is waited for.
pub const WAIT: Duration = Duration::from_secs(30);

/// What the kubelet stand-in does with a pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    Ready,
    NotReady,
    Failed,
    Succeeded,
}

type FateRule = Arc<dyn Fn(&Pod) -> Fate + Send + Sync>;

/// One test's cluster and namespace.
pub struct Env {
    pub client: Client,
    pub ns: String,
    cluster: Option<TestCluster>,
    fate: Arc<Mutex<FateRule>>,
    kubelet: Option<JoinHandle<()>>,
    nodes: Mutex<Vec<String>>,
}

impl Env {
    /// A fresh namespace on the configured cluster, the CRD installed, and a kubelet stand-in.
    pub async fn start(test: &str) -> Env {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let (client, cluster) = match std::env::var_os("WASMDAEMON_TEST_KUBECONFIG") {
            Some(path) => {
                let file = kube::config::Kubeconfig::read_from(PathBuf::from(path))
                    .expect("WASMDAEMON_TEST_KUBECONFIG is readable");
                let config = kube::Config::from_custom_kubeconfig(file, &Default::default())
                    .await
                    .expect("WASMDAEMON_TEST_KUBECONFIG is a usable kubeconfig");
                (Client::try_from(config).expect("client"), None)
            }
            None => {
                let cluster = TestCluster::start().await.expect("test cluster starts");
                (cluster.client(), Some(cluster))
            }
        };
        let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
        match crds
            .create(&PostParams::default(), &WasmDaemonSet::crd())
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => panic!("failed to install the CRD: {e}"),
        }
        let ns = format!(
            "{}-{}",
            test.replace('_', "-"),
            std::process::id() % 100_000
        );
        let ns: String = ns.chars().take(63).collect();
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let namespace: Namespace =
            serde_json::from_value(json!({"metadata": {"name": ns}})).expect("namespace");
        let _ = namespaces.create(&PostParams::default(), &namespace).await;

        let fate: Arc<Mutex<FateRule>> = Arc::new(Mutex::new(Arc::new(|_: &Pod| Fate::Ready)));
        let kubelet = Some(tokio::spawn(kubelet(
            client.clone(),
            ns.clone(),
            fate.clone(),
        )));
        Env {
            client,
            ns,
            cluster,
            fate,
            kubelet,
            nodes: Mutex::default(),
        }
    }

    /// The in-process server, when the tests run against it.
    pub fn cluster(&self) -> Option<&TestCluster> {
        self.cluster.as_ref()
    }

    /// Decides what the kubelet stand-in does with pods from now on.
    pub fn set_fate(&self, rule: impl Fn(&Pod) -> Fate + Send + Sync + 'static) {
        *self.fate.lock().unwrap_or_else(PoisonError::into_inner) = Arc::new(rule);
    }

    pub fn sets(&self) -> Api<WasmDaemonSet> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    pub fn pods_api(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    /// A Ready node with these labels (node names are prefixed with the namespace).
    pub async fn add_node(&self, name: &str, labels: &[(&str, &str)], arch: &str) -> String {
        let full = format!("{}-{name}", self.ns);
        let mut labels: BTreeMap<&str, &str> = labels.iter().copied().collect();
        labels.insert("kubernetes.io/arch", arch);
        labels.insert("kubernetes.io/os", "linux");
        let node: Node = serde_json::from_value(json!({
            "metadata": {"name": full, "labels": labels},
            "status": {
                "conditions": [{"type": "Ready", "status": "True",
                                "lastHeartbeatTime": Timestamp::now().to_string()}],
                "capacity": {"cpu": "4", "memory": "8Gi", "pods": "110"},
                "allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"},
                "nodeInfo": {"architecture": arch, "operatingSystem": "linux",
                    "bootID": "", "containerRuntimeVersion": "", "kernelVersion": "",
                    "kubeProxyVersion": "", "kubeletVersion": "", "machineID": "",
                    "osImage": "", "systemUUID": ""}
            }
        }))
        .expect("node");
        let nodes: Api<Node> = Api::all(self.client.clone());
        nodes
            .create(&PostParams::default(), &node)
            .await
            .expect("node is created");
        // Status is a subresource: a create ignores it, as in a real API server.
        let status = Patch::Merge(json!({"status": node.status}));
        nodes
            .patch_status(&full, &PatchParams::default(), &status)
            .await
            .expect("node status is written");
        // The node lifecycle controller lifts the not-ready taint of a Ready node; play it.
        let lift = Patch::Merge(json!({"spec": {"taints": []}}));
        nodes
            .patch(&full, &PatchParams::default(), &lift)
            .await
            .expect("node taints are lifted");
        let untainted = |n: &Node| {
            n.spec
                .as_ref()
                .and_then(|s| s.taints.as_ref())
                .is_none_or(|t| t.iter().all(|t| !t.key.starts_with("node.kubernetes.io/")))
        };
        wait_for("the new node to lose its not-ready taint", WAIT, || async {
            nodes.get(&full).await.ok().filter(untainted).map(|_| ())
        })
        .await;
        self.nodes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(full.clone());
        full
    }

    pub async fn remove_node(&self, full: &str) {
        let nodes: Api<Node> = Api::all(self.client.clone());
        nodes
            .delete(full, &DeleteParams::default())
            .await
            .expect("node is deleted");
    }

    pub async fn label_node(&self, full: &str, key: &str, value: Option<&str>) {
        let nodes: Api<Node> = Api::all(self.client.clone());
        let patch = json!({"metadata": {"labels": {key: value}}});
        nodes
            .patch(full, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .expect("node is labelled");
    }

    /// Rewrites the node's heartbeat, as a kubelet does every few seconds.
    pub async fn heartbeat(&self, full: &str) {
        let nodes: Api<Node> = Api::all(self.client.clone());
        let mut node = nodes.get_status(full).await.expect("node exists");
        if let Some(conditions) = node.status.as_mut().and_then(|s| s.conditions.as_mut()) {
            for c in conditions {
                c.last_heartbeat_time = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    Timestamp::now(),
                ));
            }
        }
        node.metadata.managed_fields = None;
        nodes
            .replace_status(full, &PostParams::default(), &node)
            .await
            .expect("heartbeat is written");
    }

    /// A set running `image` on nodes labelled `role=<role>` (or every node when `role` is
    /// empty), with `extra` merged into its spec.
    pub fn set(
        &self,
        name: &str,
        role: &str,
        image: &str,
        extra: serde_json::Value,
    ) -> WasmDaemonSet {
        let mut spec = json!({
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "main", "image": image}],
                         "terminationGracePeriodSeconds": 0}
            }
        });
        if !role.is_empty() {
            spec["template"]["spec"]["nodeSelector"] = json!({"role": role});
        }
        if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
            spec.extend(extra.clone());
        }
        serde_json::from_value(json!({
            "apiVersion": "wasmdaemon.io/v1alpha1", "kind": "WasmDaemonSet",
            "metadata": {"name": name, "namespace": self.ns},
            "spec": spec
        }))
        .expect("set")
    }

    pub async fn create_set(&self, set: &WasmDaemonSet) -> WasmDaemonSet {
        self.sets()
            .create(&PostParams::default(), set)
            .await
            .expect("set is created")
    }

    /// Patches the set's spec with a merge patch.
    pub async fn patch_set(&self, name: &str, spec: serde_json::Value) {
        self.sets()
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": spec})),
            )
            .await
            .expect("set is patched");
    }

    /// The pods of `set` that are not being deleted, by node.
    pub async fn pods_of(&self, set: &str) -> BTreeMap<String, Vec<Pod>> {
        let pods = self
            .pods_api()
            .list(&ListParams::default().labels(&format!("{SET_LABEL}={set}")))
            .await
            .expect("pods are listed");
        let mut by_node: BTreeMap<String, Vec<Pod>> = BTreeMap::new();
        for pod in pods
            .items
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
        {
            let node = pod_node(&pod).unwrap_or_default().to_string();
            by_node.entry(node).or_default().push(pod);
        }
        by_node
    }

    /// Starts a controller for this namespace.
    pub fn start_controller(&self, plugin_dir: Option<PathBuf>) -> Running {
        self.start_controller_counting(plugin_dir, Arc::default())
    }

    /// Starts a controller for this namespace that counts into `metrics`.
    pub fn start_controller_counting(
        &self,
        plugin_dir: Option<PathBuf>,
        metrics: Arc<ControllerMetrics>,
    ) -> Running {
        let limits = Limits {
            deadline: Duration::from_secs(2),
            ..Limits::default()
        };
        let registry = Registry::new(PluginEngine::new(limits).expect("engine"), plugin_dir);
        let options = Options {
            namespace: Some(self.ns.clone()),
            metrics,
            ..Options::default()
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let client = self.client.clone();
        let handle = tokio::spawn(async move {
            controller::run(client, registry, options, async {
                let _ = stopped.await;
            })
            .await;
        });
        Running {
            stop: Some(stop),
            handle: Some(handle),
        }
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Some(kubelet) = self.kubelet.take() {
            kubelet.abort();
        }
    }
}

/// A controller running in the test's process.
pub struct Running {
    stop: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<()>>,
}

impl Running {
    /// Asks the controller to shut down and waits until it has.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(handle) = self.handle.take() {
            tokio::time::timeout(WAIT, handle)
                .await
                .expect("controller shuts down in time")
                .expect("controller task ends cleanly");
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            handle.abort();
        }
    }
}

/// Polls `probe` until it returns `Some`, failing the test with `what` after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Plays the kubelet for the namespace's pods: reports each pod per the fate rule, and
/// finishes the deletion of terminating pods.
async fn kubelet(client: Client, ns: String, fate: Arc<Mutex<FateRule>>) {
    let api: Api<Pod> = Api::namespaced(client, &ns);
    loop {
        if let Ok(pods) = api.list(&ListParams::default()).await {
            for pod in pods.items {
                let name = pod.name_any();
                if pod.metadata.deletion_timestamp.is_some() {
                    let _ = api
                        .delete(&name, &DeleteParams::default().grace_period(0))
                        .await;
                    continue;
                }
                let rule = fate.lock().unwrap_or_else(PoisonError::into_inner).clone();
                let want = rule(&pod);
                if current_fate(&pod) == Some(want) {
                    continue;
                }
                let status = match want {
                    Fate::Ready => json!({"phase": "Running", "conditions": [
                        {"type": "Ready", "status": "True",
                         "lastTransitionTime": Timestamp::now().to_string()}]}),
                    Fate::NotReady => json!({"phase": "Running", "conditions": [
                        {"type": "Ready", "status": "False",
                         "lastTransitionTime": Timestamp::now().to_string()}]}),
                    Fate::Failed => json!({"phase": "Failed", "conditions": []}),
                    Fate::Succeeded => json!({"phase": "Succeeded", "conditions": []}),
                };
                let patch = Patch::Merge(json!({ "status": status }));
                let _ = api
                    .patch_status(&name, &PatchParams::default(), &patch)
                    .await;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn current_fate(pod: &Pod) -> Option<Fate> {
    let status = pod.status.as_ref()?;
    let ready = status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    match status.phase.as_deref()? {
        "Failed" => Some(Fate::Failed),
        "Succeeded" => Some(Fate::Succeeded),
        "Running" if ready => Some(Fate::Ready),
        "Running" => Some(Fate::NotReady),
        _ => None,
    }
}

/// Whether a pod reports Ready.
pub fn is_ready(pod: &Pod) -> bool {
    current_fate(pod) == Some(Fate::Ready)
}
