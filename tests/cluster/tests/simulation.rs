//! The simulated scheduler and kubelet, driven through the API like the real components.

use std::time::Duration;

use anyhow::Result;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::{Value, json};
use wasmdaemon_testcluster::{NodeShape, PodFate, TestEnv};

const WAIT: Duration = Duration::from_secs(30);

fn pod(name: &str, extra_spec: Value) -> Pod {
    let mut spec = json!({"containers": [{"name": "main", "image": "registry.example/app:1"}]});
    if let (Some(s), Some(extra)) = (spec.as_object_mut(), extra_spec.as_object()) {
        s.extend(extra.clone());
    }
    serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).expect("valid pod")
}

fn pinned_to(node: &str) -> Value {
    required(json!({"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}))
}

/// Required node affinity with one node selector term.
fn required(term: Value) -> Value {
    json!({"affinity": {"nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [term]}
    }}})
}

fn summary(p: &Pod) -> (Option<String>, Option<String>, bool) {
    let status = p.status.clone().unwrap_or_default();
    let ready = status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    (
        p.spec.as_ref().and_then(|s| s.node_name.clone()),
        status.phase,
        ready,
    )
}

async fn pod_state(
    pods: &Api<Pod>,
    name: &str,
) -> Result<(Option<String>, Option<String>, bool), String> {
    match pods.get_opt(name).await {
        Ok(Some(p)) => Ok(summary(&p)),
        Ok(None) => Err(format!("pod {name} does not exist")),
        Err(e) => Err(e.to_string()),
    }
}

async fn wait_running(
    env: &TestEnv,
    pods: &Api<Pod>,
    name: &str,
    node: &str,
    ready: bool,
) -> Result<()> {
    env.wait_until(
        &format!("{name} runs on {node} (ready={ready})"),
        WAIT,
        || async {
            let state = pod_state(pods, name).await?;
            if state == (Some(node.to_string()), Some("Running".into()), ready) {
                Ok(())
            } else {
                Err(format!("{state:?}"))
            }
        },
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn a_pod_pinned_by_match_fields_is_bound_there_and_becomes_ready() -> Result<()> {
    let env = TestEnv::new().await?;
    let a = env.add_node("a", &NodeShape::new()).await?;
    env.add_node("b", &NodeShape::new()).await?;
    let pods: Api<Pod> = env.api();
    pods.create(&PostParams::default(), &pod("pinned", pinned_to(&a)))
        .await?;
    wait_running(&env, &pods, "pinned", &a, true).await?;
    env.teardown().await?;
    Ok(())
}

#[tokio::test]
async fn node_selectors_and_expressions_choose_matching_nodes() -> Result<()> {
    let env = TestEnv::new().await?;
    env.add_node("x86", &NodeShape::new()).await?;
    let arm = env.add_node("arm", &NodeShape::new().arch("arm64")).await?;
    let gpu = env
        .add_node(
            "gpu",
            &NodeShape::new().gpu("nvidia", 2).label("cores", "64"),
        )
        .await?;
    let pods: Api<Pod> = env.api();
    pods.create(
        &PostParams::default(),
        &pod(
            "arm",
            json!({"nodeSelector": {"kubernetes.io/arch": "arm64"}}),
        ),
    )
    .await?;
    let expr = required(json!({"matchExpressions": [
        {"key": "nvidia.com/gpu.present", "operator": "Exists"},
        {"key": "cores", "operator": "Gt", "values": ["32"]}
    ]}));
    pods.create(&PostParams::default(), &pod("gpu", expr))
        .await?;
    wait_running(&env, &pods, "arm", &arm, true).await?;
    wait_running(&env, &pods, "gpu", &gpu, true).await?;
    env.teardown().await?;
    Ok(())
}

#[tokio::test]
async fn an_unschedulable_pod_stays_pending_until_a_node_fits() -> Result<()> {
    let env = TestEnv::new().await?;
    let node = env
        .add_node(
            "tainted",
            &NodeShape::new().taint("dedicated", Some("x"), "NoSchedule"),
        )
        .await?;
    let pods: Api<Pod> = env.api();
    pods.create(&PostParams::default(), &pod("waiting", pinned_to(&node)))
        .await?;
    env.wait_until("the pod is marked unschedulable", WAIT, || async {
        let p = pods.get("waiting").await.map_err(|e| e.to_string())?;
        let conds = p.status.and_then(|s| s.conditions).unwrap_or_default();
        let unschedulable = conds.iter().any(|c| {
            c.type_ == "PodScheduled"
                && c.status == "False"
                && c.reason.as_deref() == Some("Unschedulable")
        });
        if unschedulable {
            Ok(())
        } else {
            Err(format!("conditions: {conds:?}"))
        }
    })
    .await?;
    assert_eq!(
        pod_state(&pods, "waiting")
            .await
            .map_err(anyhow::Error::msg)?
            .0,
        None
    );
    env.untaint_node(&node, "dedicated").await?;
    wait_running(&env, &pods, "waiting", &node, true).await?;
    env.teardown().await?;
    Ok(())
}

#[tokio::test]
async fn a_cordoned_node_receives_no_new_pods() -> Result<()> {
    let env = TestEnv::new().await?;
    let node = env.add_node("cordoned", &NodeShape::new()).await?;
    env.cordon_node(&node, true).await?;
    let pods: Api<Pod> = env.api();
    pods.create(&PostParams::default(), &pod("p", pinned_to(&node)))
        .await?;
    env.wait_until("the pod is marked unschedulable", WAIT, || async {
        let p = pods.get("p").await.map_err(|e| e.to_string())?;
        let conds = p.status.and_then(|s| s.conditions).unwrap_or_default();
        if conds
            .iter()
            .any(|c| c.type_ == "PodScheduled" && c.status == "False")
        {
            Ok(())
        } else {
            Err(format!("{conds:?}"))
        }
    })
    .await?;
    env.cordon_node(&node, false).await?;
    wait_running(&env, &pods, "p", &node, true).await?;
    env.teardown().await?;
    Ok(())
}

#[tokio::test]
async fn new_nodes_carry_the_not_ready_taint_until_the_kubelet_reports_ready() -> Result<()> {
    let env = TestEnv::new().await?;
    let nodes: Api<Node> = Api::all(env.client());
    let name = env.node_name("raw");
    nodes
        .create(&PostParams::default(), &NodeShape::new().to_node(&name))
        .await?;
    let created = nodes.get(&name).await?;
    let taints = created.spec.and_then(|s| s.taints).unwrap_or_default();
    if env.is_in_process() {
        assert!(
            taints
                .iter()
                .any(|t| t.key == "node.kubernetes.io/not-ready" && t.effect == "NoSchedule")
        );
    }
    env.kubelet().register_node(&name).await?;
    let ready = nodes.get(&name).await?;
    let taints = ready.spec.and_then(|s| s.taints).unwrap_or_default();
    assert!(
        taints
            .iter()
            .all(|t| t.key != "node.kubernetes.io/not-ready"),
        "{taints:?}"
    );
    env.kubelet().set_node_ready(&name, false).await?;
    let not_ready = nodes.get(&name).await?;
    let effects: Vec<String> = not_ready
        .spec
        .and_then(|s| s.taints)
        .unwrap_or_default()
        .into_iter()
        .filter(|t| t.key == "node.kubernetes.io/not-ready")
        .map(|t| t.effect)
        .collect();
    assert_eq!(effects, ["NoSchedule", "NoExecute"]);
    env.kubelet().forget_node(&name);
    nodes.delete(&name, &DeleteParams::default()).await?;
    env.teardown().await?;
    Ok(())
}

#[tokio::test]
async fn the_kubelet_can_fail_a_pod_or_keep_it_not_ready() -> Result<()> {
    let env = TestEnv::new().await?;
    let node = env.add_node("n", &NodeShape::new()).await?;
    let pods: Api<Pod> = env.api();
    env.kubelet().add_fate_rule(|p: &Pod| {
        (p.metadata.name.as_deref() == Some("sick")).then_some(PodFate::NotReady)
    });
    pods.create(&PostParams::default(), &pod("sick", pinned_to(&node)))
        .await?;
    pods.create(&PostParams::default(), &pod("doomed", pinned_to(&node)))
        .await?;
    wait_running(&env, &pods, "sick", &node, false).await?;
    wait_running(&env, &pods, "doomed", &node, true).await?;
    env.kubelet().fail_pod(env.namespace(), "doomed").await?;
    env.wait_until("the doomed pod failed", WAIT, || async {
        let state = pod_state(&pods, "doomed").await?;
        if state.1.as_deref() == Some("Failed") {
            Ok(())
        } else {
            Err(format!("{state:?}"))
        }
    })
    .await?;
    env.teardown().await?;
    Ok(())
}

#[tokio::test]
async fn graceful_deletion_of_a_bound_pod_is_finished_by_the_kubelet() -> Result<()> {
    let env = TestEnv::new().await?;
    let node = env.add_node("n", &NodeShape::new()).await?;
    let pods: Api<Pod> = env.api();
    pods.create(&PostParams::default(), &pod("graceful", pinned_to(&node)))
        .await?;
    wait_running(&env, &pods, "graceful", &node, true).await?;
    let deleted = pods.delete("graceful", &DeleteParams::default()).await?;
    if let Some(p) = deleted.left() {
        assert!(
            p.metadata.deletion_timestamp.is_some(),
            "a bound pod is deleted gracefully"
        );
    }
    env.wait_until("the kubelet finished the deletion", WAIT, || async {
        matches!(pods.get_opt("graceful").await, Ok(None))
    })
    .await?;

    pods.create(
        &PostParams::default(),
        &pod("unbound", json!({"schedulerName": "nobody"})),
    )
    .await?;
    pods.delete("unbound", &DeleteParams::default()).await?;
    assert!(
        pods.get_opt("unbound").await?.is_none(),
        "an unbound pod is deleted at once"
    );
    env.teardown().await?;
    Ok(())
}

#[tokio::test]
async fn removing_a_node_removes_its_pods() -> Result<()> {
    let env = TestEnv::new().await?;
    let node = env.add_node("gone", &NodeShape::new()).await?;
    let pods: Api<Pod> = env.api();
    pods.create(&PostParams::default(), &pod("p", pinned_to(&node)))
        .await?;
    wait_running(&env, &pods, "p", &node, true).await?;
    env.remove_node(&node).await?;
    env.wait_until("the pod is gone", WAIT, || async {
        matches!(pods.get_opt("p").await, Ok(None))
    })
    .await?;
    let nodes: Api<Node> = Api::all(env.client());
    assert!(nodes.get_opt(&node).await?.is_none());
    env.teardown().await?;
    Ok(())
}

#[tokio::test]
async fn pods_of_a_not_ready_node_lose_readiness_until_it_recovers() -> Result<()> {
    let env = TestEnv::new().await?;
    let node = env.add_node("flaky", &NodeShape::new()).await?;
    let pods: Api<Pod> = env.api();
    pods.create(&PostParams::default(), &pod("rider", pinned_to(&node)))
        .await?;
    wait_running(&env, &pods, "rider", &node, true).await?;
    env.kubelet().set_node_ready(&node, false).await?;
    wait_running(&env, &pods, "rider", &node, false).await?;
    env.kubelet().set_node_ready(&node, true).await?;
    wait_running(&env, &pods, "rider", &node, true).await?;
    env.teardown().await?;
    Ok(())
}

#[tokio::test]
async fn many_nodes_can_be_added_at_once() -> Result<()> {
    let env = TestEnv::new().await?;
    let names = env.add_nodes("pool", 5, &NodeShape::new().cpu("2")).await?;
    assert_eq!(names.len(), 5);
    let nodes: Api<Node> = Api::all(env.client());
    for name in &names {
        let node = nodes.get(name).await?;
        let ready = node.status.and_then(|s| s.conditions).unwrap_or_default();
        assert!(
            ready
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True"),
            "{name}"
        );
    }
    env.teardown().await?;
    Ok(())
}
