//! `TestEnv`: the in-process cluster, or the one `WASMDAEMON_TEST_KUBECONFIG` names, per test.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Node, Pod, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::json;

use crate::kubelet::{Kubelet, KubeletConfig, update_taints};
use crate::nodes::NodeShape;
use crate::scheduler::Scheduler;
use crate::wait::{Probe, WaitTimeout, wait_until};
use crate::{ClusterError, TestCluster};

/// Environment variable naming a kubeconfig of an existing cluster to run against.
pub const KUBECONFIG_ENV: &str = "WASMDAEMON_TEST_KUBECONFIG";

/// How long setting up an environment on a real cluster may wait for its namespace.
const SETUP_WAIT: Duration = Duration::from_secs(30);

/// Errors setting up or using a test environment.
#[derive(Debug, thiserror::Error)]
pub enum EnvError {
    /// The in-process cluster failed to start.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// The kubeconfig named by `WASMDAEMON_TEST_KUBECONFIG` could not be used.
    #[error("loading {KUBECONFIG_ENV}: {0}")]
    Kubeconfig(String),
    /// An API call failed.
    #[error(transparent)]
    Api(#[from] kube::Error),
    /// The cluster did not reach the state needed to start.
    #[error("setting up: {0}")]
    Setup(String),
}

/// A namespace and a set of nodes on a cluster, cleaned up by [`TestEnv::teardown`] (or, less
/// reliably, on drop).
pub struct TestEnv {
    client: kube::Client,
    namespace: String,
    prefix: String,
    cluster: Option<TestCluster>,
    kubeconfig: PathBuf,
    nodes: Mutex<BTreeSet<String>>,
    kubelet: Option<Kubelet>,
    scheduler: Option<Scheduler>,
    torn_down: bool,
}

impl std::fmt::Debug for TestEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestEnv")
            .field("namespace", &self.namespace)
            .field("in_process", &self.cluster.is_some())
            .finish_non_exhaustive()
    }
}

fn unique_suffix() -> String {
    let uid = crate::store::new_uid();
    uid[..8].to_string()
}

impl TestEnv {
    /// The in-process cluster (with simulated scheduler and kubelet), or the cluster named by
    /// `WASMDAEMON_TEST_KUBECONFIG` (with the simulated kubelet for this environment's nodes).
    pub async fn new() -> Result<Self, EnvError> {
        Self::with_kubelet(KubeletConfig::default()).await
    }

    /// Like [`TestEnv::new`] with a differently configured simulated kubelet.
    pub async fn with_kubelet(kubelet: KubeletConfig) -> Result<Self, EnvError> {
        match std::env::var_os(KUBECONFIG_ENV).filter(|v| !v.is_empty()) {
            Some(path) => {
                let path = PathBuf::from(path);
                let client = client_from_kubeconfig(&path).await?;
                Self::finish(client, None, path, None, kubelet).await
            }
            None => Self::in_process_with(kubelet).await,
        }
    }

    /// Always the in-process cluster.
    pub async fn in_process() -> Result<Self, EnvError> {
        Self::in_process_with(KubeletConfig::default()).await
    }

    async fn in_process_with(kubelet: KubeletConfig) -> Result<Self, EnvError> {
        let cluster = TestCluster::start().await?;
        let client = cluster.client();
        let kubeconfig = cluster.kubeconfig_path();
        let scheduler = Some(Scheduler::start(client.clone()));
        Self::finish(client, Some(cluster), kubeconfig, scheduler, kubelet).await
    }

    async fn finish(
        client: kube::Client,
        cluster: Option<TestCluster>,
        kubeconfig: PathBuf,
        scheduler: Option<Scheduler>,
        kubelet: KubeletConfig,
    ) -> Result<Self, EnvError> {
        let prefix = format!("wdt-{}", unique_suffix());
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let ns = json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": prefix, "labels": {"wasmdaemon.io/test": "true"}},
        });
        namespaces
            .create(
                &PostParams::default(),
                &serde_json::from_value(ns).map_err(kube::Error::SerdeError)?,
            )
            .await?;
        if cluster.is_none() {
            // Pods are refused until the service account controller has created `default`.
            let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &prefix);
            let exists = || async { matches!(accounts.get_opt("default").await, Ok(Some(_))) };
            if let Err(e) =
                wait_until("the default service account exists", SETUP_WAIT, exists).await
            {
                tracing::warn!("{e}");
            }
        }
        let kubelet = Some(Kubelet::start(client.clone(), kubelet));
        Ok(Self {
            client,
            namespace: prefix.clone(),
            prefix,
            cluster,
            kubeconfig,
            nodes: Mutex::default(),
            kubelet,
            scheduler,
            torn_down: false,
        })
    }

    /// A client for the cluster.
    pub fn client(&self) -> kube::Client {
        self.client.clone()
    }

    /// The fresh namespace this environment works in.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// A namespaced `Api` in this environment's namespace.
    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// Path of a kubeconfig for the cluster (for `kubectl --kubeconfig`).
    pub fn kubeconfig_path(&self) -> &std::path::Path {
        &self.kubeconfig
    }

    /// Whether this runs against the in-process cluster.
    pub fn is_in_process(&self) -> bool {
        self.cluster.is_some()
    }

    /// The in-process cluster, for fault injection; `None` (after printing a note that `test`
    /// is skipped) on a real cluster.
    pub fn faults(&self, test: &str) -> Option<&TestCluster> {
        if self.cluster.is_none() {
            println!("skipping {test}: fault injection needs the in-process cluster");
        }
        self.cluster.as_ref()
    }

    /// The in-process cluster, if that is what this environment runs on.
    pub fn cluster(&self) -> Option<&TestCluster> {
        self.cluster.as_ref()
    }

    /// The simulated kubelet running this environment's nodes.
    pub fn kubelet(&self) -> &Kubelet {
        match &self.kubelet {
            Some(k) => k,
            None => unreachable!("the kubelet lives until teardown"),
        }
    }

    /// Whether the simulated scheduler runs (only on the in-process cluster; a real cluster has
    /// its own).
    pub fn has_simulated_scheduler(&self) -> bool {
        self.scheduler.is_some()
    }

    /// The cluster-unique name of this environment's node called `name`.
    pub fn node_name(&self, name: &str) -> String {
        format!("{}-{name}", self.prefix)
    }

    /// Creates a node of `shape` named [`TestEnv::node_name`]`(name)`, registers it with the
    /// simulated kubelet (which reports it Ready) and returns its full name.
    pub async fn add_node(&self, name: &str, shape: &NodeShape) -> Result<String, EnvError> {
        let full = self.node_name(name);
        let api: Api<Node> = Api::all(self.client.clone());
        let mut node = shape.to_node(&full);
        node.metadata
            .labels
            .get_or_insert_with(Default::default)
            .insert("wasmdaemon.io/test-env".into(), self.prefix.clone());
        api.create(&PostParams::default(), &node).await?;
        lock(&self.nodes).insert(full.clone());
        let status = json!({"status": shape.status()});
        api.patch_status(&full, &PatchParams::default(), &Patch::Merge(&status))
            .await?;
        self.kubelet().register_node(&full).await?;
        Ok(full)
    }

    /// Adds `count` nodes of `shape` named `<prefix>-0`, `<prefix>-1`, ... and returns their
    /// full names.
    pub async fn add_nodes(
        &self,
        prefix: &str,
        count: usize,
        shape: &NodeShape,
    ) -> Result<Vec<String>, EnvError> {
        let adds = (0..count).map(|i| {
            let name = format!("{prefix}-{i}");
            async move { self.add_node(&name, shape).await }
        });
        futures::future::try_join_all(adds).await
    }

    /// Creates (or, if it exists, leaves alone) a CustomResourceDefinition and waits until it is
    /// established and its resources are served.
    pub async fn install_crd(&self, crd: &CustomResourceDefinition) -> Result<(), EnvError> {
        let api: Api<CustomResourceDefinition> = Api::all(self.client.clone());
        match api.create(&PostParams::default(), crd).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
        let name = crd.metadata.name.clone().unwrap_or_default();
        let established = || async {
            let Ok(current) = api.get(&name).await else {
                return false;
            };
            let conditions = current
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default();
            conditions
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
        };
        wait_until(
            &format!("CRD {name} is established"),
            SETUP_WAIT,
            established,
        )
        .await
        .map_err(|e| EnvError::Setup(e.to_string()))?;
        let spec = &crd.spec;
        let served = spec
            .versions
            .iter()
            .filter(|v| v.served)
            .map(|v| v.name.clone());
        for version in served {
            let gvk = kube::api::GroupVersionKind::gvk(&spec.group, &version, &spec.names.kind);
            let resource = kube::api::ApiResource::from_gvk_with_plural(&gvk, &spec.names.plural);
            let objects: Api<kube::api::DynamicObject> =
                Api::all_with(self.client.clone(), &resource);
            let listable = || async { objects.list(&ListParams::default().limit(1)).await.is_ok() };
            wait_until(
                &format!("{} {version} is served", spec.names.plural),
                SETUP_WAIT,
                listable,
            )
            .await
            .map_err(|e| EnvError::Setup(e.to_string()))?;
        }
        Ok(())
    }

    /// Sets (`Some`) or removes (`None`) labels on a node.
    pub async fn relabel_node(
        &self,
        node: &str,
        labels: &[(&str, Option<&str>)],
    ) -> Result<(), EnvError> {
        let api: Api<Node> = Api::all(self.client.clone());
        let map: serde_json::Map<String, serde_json::Value> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
        api.patch(
            node,
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": {"labels": map}})),
        )
        .await?;
        Ok(())
    }

    /// Adds a taint to a node (replacing one with the same key and effect).
    pub async fn taint_node(
        &self,
        node: &str,
        key: &str,
        value: Option<&str>,
        effect: &str,
    ) -> Result<(), EnvError> {
        let api: Api<Node> = Api::all(self.client.clone());
        update_taints(&api, node, |taints| {
            taints.retain(|t| !(t.key == key && t.effect == effect));
            taints.push(k8s_openapi::api::core::v1::Taint {
                key: key.into(),
                value: value.map(str::to_string),
                effect: effect.into(),
                time_added: None,
            });
        })
        .await?;
        Ok(())
    }

    /// Removes every taint with `key` from a node.
    pub async fn untaint_node(&self, node: &str, key: &str) -> Result<(), EnvError> {
        let api: Api<Node> = Api::all(self.client.clone());
        update_taints(&api, node, |taints| taints.retain(|t| t.key != key)).await?;
        Ok(())
    }

    /// Marks a node unschedulable (or schedulable again).
    pub async fn cordon_node(&self, node: &str, cordoned: bool) -> Result<(), EnvError> {
        let api: Api<Node> = Api::all(self.client.clone());
        let patch =
            json!({"spec": {"unschedulable": if cordoned { json!(true) } else { json!(null) }}});
        api.patch(node, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        Ok(())
    }

    /// Deletes a node and force-deletes the pods bound to it (there is no kubelet left to finish
    /// their graceful deletion).
    pub async fn remove_node(&self, node: &str) -> Result<(), EnvError> {
        self.kubelet().forget_node(node);
        lock(&self.nodes).remove(node);
        delete_node_and_pods(&self.client, node).await
    }

    /// Polls `probe` like [`wait_until`]; on timeout the error also lists the pods of this
    /// environment's namespace and its nodes.
    pub async fn wait_until<F, Fut, P>(
        &self,
        what: &str,
        timeout: Duration,
        probe: F,
    ) -> Result<(), WaitTimeout>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = P>,
        P: Into<Probe>,
    {
        match wait_until(what, timeout, probe).await {
            Ok(()) => Ok(()),
            Err(mut e) => {
                let dump = self.describe().await;
                e.state = if e.state.is_empty() {
                    dump
                } else {
                    format!("{}\n{dump}", e.state)
                };
                Err(e)
            }
        }
    }

    /// A short description of the pods in the namespace and the environment's nodes.
    pub async fn describe(&self) -> String {
        let mut out = String::new();
        let pods: Api<Pod> = self.api();
        match pods.list(&ListParams::default()).await {
            Ok(list) => {
                out.push_str(&format!("pods in {}:\n", self.namespace));
                for p in list {
                    let status = p.status.clone().unwrap_or_default();
                    let ready = status
                        .conditions
                        .iter()
                        .flatten()
                        .any(|c| c.type_ == "Ready" && c.status == "True");
                    out.push_str(&format!(
                        "  {} node={} phase={} ready={ready}{}\n",
                        p.metadata.name.unwrap_or_default(),
                        p.spec
                            .and_then(|s| s.node_name)
                            .unwrap_or_else(|| "-".into()),
                        status.phase.unwrap_or_default(),
                        if p.metadata.deletion_timestamp.is_some() {
                            " deleting"
                        } else {
                            ""
                        },
                    ));
                }
            }
            Err(e) => out.push_str(&format!("listing pods failed: {e}\n")),
        }
        let nodes: Api<Node> = Api::all(self.client.clone());
        let lp = ListParams::default().labels(&format!("wasmdaemon.io/test-env={}", self.prefix));
        match nodes.list(&lp).await {
            Ok(list) => {
                out.push_str("nodes:\n");
                for n in list {
                    let ready = n
                        .status
                        .as_ref()
                        .and_then(|s| s.conditions.as_ref())
                        .into_iter()
                        .flatten()
                        .any(|c| c.type_ == "Ready" && c.status == "True");
                    let spec = n.spec.unwrap_or_default();
                    let taints: Vec<String> = spec
                        .taints
                        .unwrap_or_default()
                        .iter()
                        .map(|t| format!("{}:{}", t.key, t.effect))
                        .collect();
                    out.push_str(&format!(
                        "  {} ready={ready} unschedulable={} taints=[{}]\n",
                        n.metadata.name.unwrap_or_default(),
                        spec.unschedulable.unwrap_or(false),
                        taints.join(",")
                    ));
                }
            }
            Err(e) => out.push_str(&format!("listing nodes failed: {e}\n")),
        }
        out
    }

    /// Deletes the namespace (force-deleting its pods first) and the nodes this environment
    /// created, then stops the simulated components.
    pub async fn teardown(mut self) -> Result<(), EnvError> {
        self.torn_down = true;
        if self.cluster.is_some() {
            return Ok(());
        }
        let nodes: Vec<String> = lock(&self.nodes).iter().cloned().collect();
        cleanup(&self.client, &self.namespace, &nodes).await
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

async fn client_from_kubeconfig(path: &std::path::Path) -> Result<kube::Client, EnvError> {
    let kubeconfig =
        Kubeconfig::read_from(path).map_err(|e| EnvError::Kubeconfig(e.to_string()))?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| EnvError::Kubeconfig(e.to_string()))?;
    Ok(kube::Client::try_from(config)?)
}

async fn force_delete_pods(pods: &Api<Pod>, lp: &ListParams) -> Result<(), EnvError> {
    let dp = DeleteParams {
        grace_period_seconds: Some(0),
        ..Default::default()
    };
    for p in pods.list(lp).await? {
        let name = p.metadata.name.unwrap_or_default();
        match pods_for(pods, p.metadata.namespace.as_deref())
            .delete(&name, &dp)
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

fn pods_for(all: &Api<Pod>, ns: Option<&str>) -> Api<Pod> {
    match ns {
        Some(ns) => Api::namespaced(all.clone().into_client(), ns),
        None => all.clone(),
    }
}

async fn delete_node_and_pods(client: &kube::Client, node: &str) -> Result<(), EnvError> {
    let pods: Api<Pod> = Api::all(client.clone());
    force_delete_pods(
        &pods,
        &ListParams::default().fields(&format!("spec.nodeName={node}")),
    )
    .await?;
    let nodes: Api<Node> = Api::all(client.clone());
    match nodes.delete(node, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

async fn cleanup(client: &kube::Client, namespace: &str, nodes: &[String]) -> Result<(), EnvError> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    force_delete_pods(&pods, &ListParams::default()).await?;
    for node in nodes {
        delete_node_and_pods(client, node).await?;
    }
    let namespaces: Api<Namespace> = Api::all(client.clone());
    match namespaces
        .delete(namespace, &DeleteParams::background())
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        self.scheduler.take();
        self.kubelet.take();
        if self.torn_down || self.cluster.is_some() {
            return;
        }
        let path = self.kubeconfig.clone();
        let namespace = self.namespace.clone();
        let nodes: Vec<String> = lock(&self.nodes).iter().cloned().collect();
        // The test's runtime may be shutting down; clean up on a runtime of our own.
        let cleaner = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                match client_from_kubeconfig(&path).await {
                    Ok(client) => {
                        if let Err(e) = cleanup(&client, &namespace, &nodes).await {
                            eprintln!("cleaning up test namespace {namespace}: {e}");
                        }
                    }
                    Err(e) => eprintln!("cleaning up test namespace {namespace}: {e}"),
                }
            });
        });
        let _ = cleaner.join();
    }
}
