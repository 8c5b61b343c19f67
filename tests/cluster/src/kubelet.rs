//! A simulated kubelet: a client of the API that runs pods on registered nodes.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod, Taint};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::watcher;
use serde_json::{Value, json};
use tokio::task::AbortHandle;

use crate::store::now;

/// What the kubelet does with a pod bound to one of its nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodFate {
    /// Running and Ready (the default).
    Ready,
    /// Running but not Ready.
    NotReady,
    /// Failed.
    Fail,
    /// Succeeded (ran to completion).
    Succeed,
}

/// Tunables of the simulated kubelet.
#[derive(Debug, Clone)]
pub struct KubeletConfig {
    /// How long after binding a pod becomes Running.
    pub start_delay: Duration,
    /// How often registered nodes renew their Lease in `kube-node-lease`.
    pub heartbeat: Duration,
}

impl Default for KubeletConfig {
    fn default() -> Self {
        Self {
            start_delay: Duration::from_millis(50),
            heartbeat: Duration::from_secs(10),
        }
    }
}

type FateRule = Box<dyn Fn(&Pod) -> Option<PodFate> + Send + Sync>;

struct Inner {
    client: kube::Client,
    config: KubeletConfig,
    nodes: Mutex<HashSet<String>>,
    /// Registered nodes currently reported NotReady; their running pods are not Ready either.
    not_ready: Mutex<HashSet<String>>,
    fates: Mutex<HashMap<(String, String), PodFate>>,
    rules: Mutex<Vec<FateRule>>,
    /// Pods with a status change scheduled, to avoid scheduling it twice.
    in_flight: Mutex<HashSet<(String, String)>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A simulated kubelet for the nodes registered with it. Stops when dropped.
pub struct Kubelet {
    inner: Arc<Inner>,
    tasks: Vec<AbortHandle>,
}

impl std::fmt::Debug for Kubelet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kubelet")
            .field("nodes", &*lock(&self.inner.nodes))
            .finish()
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn key(pod: &Pod) -> (String, String) {
    (
        pod.metadata.namespace.clone().unwrap_or_default(),
        pod.metadata.name.clone().unwrap_or_default(),
    )
}

fn condition(kind: &str, ok: bool) -> Value {
    json!({
        "type": kind,
        "status": if ok { "True" } else { "False" },
        "lastProbeTime": null,
        "lastTransitionTime": now(),
    })
}

/// The pod status a kubelet reports for `fate`.
fn pod_status(pod: &Pod, fate: PodFate) -> Value {
    let ready = fate == PodFate::Ready;
    let containers: Vec<Value> = pod
        .spec
        .as_ref()
        .map(|s| s.containers.iter().collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|c| {
            let state = if fate == PodFate::Fail {
                json!({"terminated": {
                    "exitCode": 1, "reason": "Error", "startedAt": now(), "finishedAt": now()
                }})
            } else if fate == PodFate::Succeed {
                json!({"terminated": {
                    "exitCode": 0, "reason": "Completed", "startedAt": now(), "finishedAt": now()
                }})
            } else {
                json!({"running": {"startedAt": now()}})
            };
            json!({
                "name": c.name,
                "image": c.image.clone().unwrap_or_default(),
                "imageID": "",
                "ready": ready,
                "started": fate == PodFate::Ready || fate == PodFate::NotReady,
                "restartCount": 0,
                "state": state,
            })
        })
        .collect();
    json!({
        "phase": match fate {
            PodFate::Fail => "Failed",
            PodFate::Succeed => "Succeeded",
            PodFate::Ready | PodFate::NotReady => "Running",
        },
        "conditions": [
            condition("Initialized", true),
            condition("Ready", ready),
            condition("ContainersReady", ready),
            condition("PodScheduled", true),
        ],
        "containerStatuses": containers,
        "hostIP": "10.0.0.1",
        "podIP": "10.1.0.1",
        "startTime": now(),
    })
}

/// The fate the pod's status currently shows, if it was set by a kubelet.
fn current_fate(pod: &Pod) -> Option<PodFate> {
    let status = pod.status.as_ref()?;
    match status.phase.as_deref()? {
        "Failed" => Some(PodFate::Fail),
        "Succeeded" => Some(PodFate::Succeed),
        "Running" => {
            let ready = status
                .conditions
                .iter()
                .flatten()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            Some(if ready {
                PodFate::Ready
            } else {
                PodFate::NotReady
            })
        }
        _ => None,
    }
}

impl Inner {
    fn fate_of(&self, pod: &Pod) -> PodFate {
        let explicit = lock(&self.fates).get(&key(pod)).copied();
        let fate = explicit
            .or_else(|| lock(&self.rules).iter().find_map(|r| r(pod)))
            .unwrap_or(PodFate::Ready);
        let node = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .unwrap_or_default();
        if fate == PodFate::Ready && lock(&self.not_ready).contains(node) {
            // As the node lifecycle controller marks pods of a NotReady node.
            return PodFate::NotReady;
        }
        fate
    }

    /// Re-evaluates every pod bound to `node`.
    async fn resync_node(self: &Arc<Self>, node: &str) -> Result<(), kube::Error> {
        let pods: Api<Pod> = Api::all(self.client.clone());
        let lp = kube::api::ListParams::default().fields(&format!("spec.nodeName={node}"));
        for pod in pods.list(&lp).await? {
            self.handle(pod).await;
        }
        Ok(())
    }

    fn owns(&self, pod: &Pod) -> bool {
        let node = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .unwrap_or_default();
        !node.is_empty() && lock(&self.nodes).contains(node)
    }

    async fn handle(self: &Arc<Self>, pod: Pod) {
        if !self.owns(&pod) {
            return;
        }
        let (ns, name) = key(&pod);
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        if pod.metadata.deletion_timestamp.is_some() {
            let dp = DeleteParams {
                grace_period_seconds: Some(0),
                preconditions: Some(Preconditions {
                    uid: pod.metadata.uid.clone(),
                    resource_version: None,
                }),
                ..Default::default()
            };
            let _ = api.delete(&name, &dp).await;
            return;
        }
        let fate = self.fate_of(&pod);
        if current_fate(&pod) == Some(fate) {
            return;
        }
        // A pod that terminated stays terminated, as with restartPolicy Never.
        if matches!(current_fate(&pod), Some(PodFate::Fail | PodFate::Succeed)) {
            return;
        }
        if !lock(&self.in_flight).insert((ns.clone(), name.clone())) {
            return;
        }
        let inner = self.clone();
        tokio::spawn(async move {
            let fresh_start = current_fate(&pod).is_none();
            if fresh_start {
                tokio::time::sleep(inner.config.start_delay).await;
            }
            lock(&inner.in_flight).remove(&(ns.clone(), name.clone()));
            let Ok(Some(pod)) = api.get_opt(&name).await else {
                return;
            };
            if !inner.owns(&pod) || pod.metadata.deletion_timestamp.is_some() {
                return;
            }
            let fate = inner.fate_of(&pod);
            if current_fate(&pod) == Some(fate) {
                return;
            }
            let patch = json!({"status": pod_status(&pod, fate)});
            let _ = api
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await;
        });
    }
}

impl Kubelet {
    /// Starts a kubelet using `client`; it manages no nodes until [`Kubelet::register_node`].
    pub fn start(client: kube::Client, config: KubeletConfig) -> Self {
        let inner = Arc::new(Inner {
            client,
            config,
            nodes: Mutex::default(),
            not_ready: Mutex::default(),
            fates: Mutex::default(),
            rules: Mutex::default(),
            in_flight: Mutex::default(),
        });
        let pods = tokio::spawn(run_pods(inner.clone())).abort_handle();
        let leases = tokio::spawn(run_heartbeats(inner.clone())).abort_handle();
        Self {
            inner,
            tasks: vec![pods, leases],
        }
    }

    /// Takes over `node`: reports it Ready, clears the not-ready taint and runs its pods.
    pub async fn register_node(&self, node: &str) -> Result<(), kube::Error> {
        lock(&self.inner.nodes).insert(node.to_string());
        renew_lease(&self.inner.client, node).await?;
        self.set_node_ready(node, true).await
    }

    /// Stops managing `node` (its pods stay as they are).
    pub fn forget_node(&self, node: &str) {
        lock(&self.inner.nodes).remove(node);
    }

    /// The nodes this kubelet manages.
    pub fn nodes(&self) -> Vec<String> {
        let mut v: Vec<String> = lock(&self.inner.nodes).iter().cloned().collect();
        v.sort();
        v
    }

    /// Reports `node` Ready or NotReady. NotReady also adds the `node.kubernetes.io/not-ready`
    /// NoSchedule and NoExecute taints and reports the node's running pods not Ready, as the
    /// node lifecycle controller would; Ready undoes both.
    pub async fn set_node_ready(&self, node: &str, ready: bool) -> Result<(), kube::Error> {
        if ready {
            lock(&self.inner.not_ready).remove(node);
        } else {
            lock(&self.inner.not_ready).insert(node.to_string());
        }
        let api: Api<Node> = Api::all(self.inner.client.clone());
        let reason = if ready {
            "KubeletReady"
        } else {
            "KubeletNotReady"
        };
        let status = json!({"status": {"conditions": [{
            "type": "Ready",
            "status": if ready { "True" } else { "False" },
            "reason": reason,
            "message": if ready { "kubelet is posting ready status" } else { "not ready" },
            "lastHeartbeatTime": now(),
            "lastTransitionTime": now(),
        }]}});
        api.patch_status(node, &PatchParams::default(), &Patch::Merge(&status))
            .await?;
        let not_ready = "node.kubernetes.io/not-ready";
        update_taints(&api, node, |taints| {
            taints.retain(|t| t.key != not_ready);
            if !ready {
                for effect in ["NoSchedule", "NoExecute"] {
                    taints.push(Taint {
                        key: not_ready.into(),
                        effect: effect.into(),
                        value: None,
                        time_added: None,
                    });
                }
            }
        })
        .await?;
        self.inner.resync_node(node).await
    }

    /// Gives one pod a fate, now and for as long as it exists.
    pub async fn set_pod_fate(
        &self,
        namespace: &str,
        name: &str,
        fate: PodFate,
    ) -> Result<(), kube::Error> {
        lock(&self.inner.fates).insert((namespace.into(), name.into()), fate);
        let api: Api<Pod> = Api::namespaced(self.inner.client.clone(), namespace);
        if let Some(pod) = api.get_opt(name).await? {
            self.inner.handle(pod).await;
        }
        Ok(())
    }

    /// Fails a pod.
    pub async fn fail_pod(&self, namespace: &str, name: &str) -> Result<(), kube::Error> {
        self.set_pod_fate(namespace, name, PodFate::Fail).await
    }

    /// Keeps a pod Running but not Ready.
    pub async fn keep_pod_not_ready(&self, namespace: &str, name: &str) -> Result<(), kube::Error> {
        self.set_pod_fate(namespace, name, PodFate::NotReady).await
    }

    /// Decides the fate of pods without an explicit one; the first rule returning `Some` wins.
    pub fn add_fate_rule(&self, rule: impl Fn(&Pod) -> Option<PodFate> + Send + Sync + 'static) {
        lock(&self.inner.rules).push(Box::new(rule));
    }
}

/// Reads a node, edits its taints and writes it back, retrying on conflicts.
pub(crate) async fn update_taints(
    api: &Api<Node>,
    node: &str,
    edit: impl Fn(&mut Vec<Taint>),
) -> Result<(), kube::Error> {
    loop {
        let mut current = api.get(node).await?;
        let spec = current.spec.get_or_insert_with(Default::default);
        let mut taints = spec.taints.clone().unwrap_or_default();
        let before = taints.clone();
        edit(&mut taints);
        if taints == before {
            return Ok(());
        }
        spec.taints = Some(taints);
        match api.replace(node, &PostParams::default(), &current).await {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(e)) if e.code == 409 => continue,
            Err(e) => return Err(e),
        }
    }
}

async fn renew_lease(client: &kube::Client, node: &str) -> Result<(), kube::Error> {
    let api: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let renew = k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string();
    let lease = json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": node},
        "spec": {"holderIdentity": node, "leaseDurationSeconds": 40, "renewTime": renew},
    });
    let pp = PatchParams::apply("simulated-kubelet").force();
    api.patch(node, &pp, &Patch::Apply(&lease))
        .await
        .map(|_| ())
}

async fn run_heartbeats(inner: Arc<Inner>) {
    let mut tick = tokio::time::interval(inner.config.heartbeat);
    loop {
        tick.tick().await;
        let nodes: Vec<String> = lock(&inner.nodes).iter().cloned().collect();
        for node in nodes {
            let _ = renew_lease(&inner.client, &node).await;
        }
    }
}

async fn run_pods(inner: Arc<Inner>) {
    loop {
        let api: Api<Pod> = Api::all(inner.client.clone());
        let mut events = watcher(api, watcher::Config::default()).boxed();
        while let Some(event) = events.next().await {
            match event {
                Ok(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod)) => {
                    inner.handle(pod).await
                }
                Ok(watcher::Event::Delete(pod)) => {
                    lock(&inner.fates).remove(&key(&pod));
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!("kubelet watch: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}
