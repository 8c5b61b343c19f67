//! Placement cost per node: the stock `hardware` plugin through WASM against the same decision
//! run natively, at 1,000 and 10,000 realistic nodes, plus the cost of sending every label and
//! the cost of a re-plan when one node changed.
//!
//! Run with `cargo bench -p wasmdaemon --bench placement`.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use k8s_openapi::api::core::v1::Node;
use wasmdaemon::crd::WasmDaemonSet;
use wasmdaemon::planner::{self, Decider, PluginDecider};
use wasmdaemon::plugin::bindings::{self, Interest};
use wasmdaemon::plugin::{Limits, PluginEngine, Projection};
use wasmdaemon::registry::Registry;

const CONFIG: &str = r#"{
    "rules": [
        {"when": {"gpuVendor": "nvidia", "minGpus": 4}, "variant": "nvidia-large"},
        {"when": {"gpuVendor": "nvidia"}, "variant": "nvidia"},
        {"when": {"gpuVendor": "amd"}, "variant": "amd"},
        {"when": {"minMemory": "512Gi"}, "variant": "xlarge"},
        {"when": {"arch": ["arm64"]}, "variant": "arm"}
    ]
}"#;

/// A node as a kubelet, NFD and GPU feature discovery would label it: 21 labels or more.
fn realistic_node(i: usize) -> Node {
    let (arch, instance, memory, gpu) = match i % 10 {
        0 => (
            "amd64",
            "p4d.24xlarge",
            "1152Gi",
            Some(("nvidia.com/gpu", "8")),
        ),
        1 => (
            "amd64",
            "g4ad.16xlarge",
            "256Gi",
            Some(("amd.com/gpu", "4")),
        ),
        2 | 3 => ("arm64", "m7g.4xlarge", "64Gi", None),
        4 => ("amd64", "x2iedn.16xlarge", "2048Gi", None),
        _ => ("amd64", "m6i.2xlarge", "32Gi", None),
    };
    let name = format!(
        "ip-10-{}-{}-{}.ec2.internal",
        i / 65536,
        (i / 256) % 256,
        i % 256
    );
    let mut labels: BTreeMap<String, String> = [
        ("beta.kubernetes.io/arch", arch),
        ("beta.kubernetes.io/instance-type", instance),
        ("beta.kubernetes.io/os", "linux"),
        ("failure-domain.beta.kubernetes.io/region", "us-east-1"),
        ("failure-domain.beta.kubernetes.io/zone", "us-east-1a"),
        ("kubernetes.io/arch", arch),
        ("kubernetes.io/os", "linux"),
        ("node.kubernetes.io/instance-type", instance),
        ("topology.kubernetes.io/region", "us-east-1"),
        ("topology.kubernetes.io/zone", "us-east-1a"),
        ("topology.ebs.csi.aws.com/zone", "us-east-1a"),
        ("karpenter.sh/capacity-type", "on-demand"),
        ("karpenter.sh/nodepool", "default"),
        ("karpenter.k8s.aws/instance-family", "m6i"),
        ("karpenter.k8s.aws/instance-size", "2xlarge"),
        ("karpenter.k8s.aws/instance-hypervisor", "nitro"),
        ("feature.node.kubernetes.io/cpu-cpuid.AVX512F", "true"),
        ("feature.node.kubernetes.io/kernel-version.major", "6"),
        ("feature.node.kubernetes.io/system-os_release.ID", "ubuntu"),
        ("node.kubernetes.io/lifecycle", "normal"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    labels.insert("kubernetes.io/hostname".into(), name.clone());
    if let Some((resource, _)) = gpu {
        let vendor = resource.split('.').next().unwrap_or_default();
        labels.insert(
            format!("feature.node.kubernetes.io/pci-{vendor}.present"),
            "true".into(),
        );
    }
    let mut capacity = serde_json::json!({
        "cpu": "64", "memory": memory, "pods": "110", "ephemeral-storage": "500Gi",
        "hugepages-1Gi": "0", "hugepages-2Mi": "0"
    });
    if let Some((resource, count)) = gpu {
        capacity[resource] = count.into();
    }
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "labels": labels},
        "spec": {"providerID": format!("aws:///us-east-1a/i-{i:017x}")},
        "status": {
            "capacity": capacity.clone(),
            "allocatable": capacity,
            "conditions": [{"type": "Ready", "status": "True"}],
            "nodeInfo": {
                "architecture": arch, "operatingSystem": "linux", "kernelVersion": "6.5.0",
                "containerRuntimeVersion": "containerd://1.7.16", "kubeletVersion": "v1.29.6",
                "osImage": "Ubuntu 22.04.4 LTS", "bootID": "", "machineID": "",
                "systemUUID": "", "kubeProxyVersion": ""
            }
        }
    }))
    .expect("benchmark node is valid")
}

fn set() -> WasmDaemonSet {
    let variants: Vec<_> = ["nvidia-large", "nvidia", "amd", "xlarge", "arm"]
        .iter()
        .map(|v| serde_json::json!({"name": v}))
        .collect();
    serde_json::from_value(serde_json::json!({
        "apiVersion": "wasmdaemon.io/v1alpha1", "kind": "WasmDaemonSet",
        "metadata": {"name": "bench", "namespace": "default", "uid": "u"},
        "spec": {
            "selector": {"matchLabels": {"app": "bench"}},
            "template": {
                "metadata": {"labels": {"app": "bench"}},
                "spec": {"containers": [{"name": "agent", "image": "agent:1"}]}
            },
            "variants": variants,
            "policy": {"plugin": "hardware", "config": serde_json::from_str::<serde_json::Value>(CONFIG).expect("config is JSON")}
        }
    }))
    .expect("benchmark set is valid")
}

/// The host's projected node as the guest SDK's type, for the native run.
fn to_guest(node: &bindings::Node) -> wasmdaemon_plugin_sdk::Node {
    use wasmdaemon_plugin_sdk as sdk;
    let pairs = |list: &[bindings::KeyValue]| -> Vec<sdk::KeyValue> {
        list.iter()
            .map(|p| sdk::KeyValue {
                key: p.key.clone(),
                value: p.value.clone(),
            })
            .collect()
    };
    let resources = |list: &[bindings::Resource]| -> Vec<sdk::Resource> {
        list.iter()
            .map(|r| sdk::Resource {
                name: r.name.clone(),
                milli_value: r.milli_value,
            })
            .collect()
    };
    sdk::Node {
        name: node.name.clone(),
        labels: pairs(&node.labels),
        annotations: pairs(&node.annotations),
        taints: Vec::new(),
        unschedulable: node.unschedulable,
        conditions: Vec::new(),
        capacity: resources(&node.capacity),
        allocatable: resources(&node.allocatable),
        info: node.info.as_ref().map(|i| sdk::NodeInfo {
            architecture: i.architecture.clone(),
            operating_system: i.operating_system.clone(),
            kernel_version: i.kernel_version.clone(),
            container_runtime_version: i.container_runtime_version.clone(),
            kubelet_version: i.kubelet_version.clone(),
            os_image: i.os_image.clone(),
        }),
    }
}

fn everything() -> Interest {
    Interest {
        labels: vec!["*".into()],
        annotations: vec!["*".into()],
        taints: true,
        unschedulable: true,
        conditions: true,
        resources: vec!["*".into()],
        node_info: true,
    }
}

fn placement(c: &mut Criterion) {
    let limits = Limits {
        deadline: Duration::from_secs(10),
        ..Limits::default()
    };
    let engine = PluginEngine::new(limits).expect("engine starts");
    let registry = Registry::new(engine, None);
    let plugin = registry.load("hardware", None).expect("stock plugin loads");
    let set = set();
    let info = planner::set_info(&set);
    let config: wasmdaemon_plugin_hardware::Config =
        serde_json::from_str(CONFIG).expect("config parses natively");

    let mut group = c.benchmark_group("placement");
    group.sample_size(20);
    for size in [1_000usize, 10_000] {
        let nodes: Vec<Node> = (0..size).map(realistic_node).collect();
        let projected: Vec<bindings::Node> =
            nodes.iter().map(|n| plugin.projection.project(n)).collect();
        let guest_nodes: Vec<_> = projected.iter().map(to_guest).collect();
        let everything = Projection::new(&everything());
        let full: Vec<bindings::Node> = nodes.iter().map(|n| everything.project(n)).collect();
        group.throughput(Throughput::Elements(size as u64));

        group.bench_with_input(
            BenchmarkId::new("native", size),
            &guest_nodes,
            |b, nodes| {
                b.iter(|| black_box(wasmdaemon_plugin_hardware::logic::decide(&config, nodes)))
            },
        );
        group.bench_with_input(
            BenchmarkId::new("wasm-projected", size),
            &projected,
            |b, nodes| b.iter(|| black_box(plugin.decide(&info, nodes).expect("decides"))),
        );
        group.bench_with_input(
            BenchmarkId::new("wasm-projecting", size),
            &nodes,
            |b, nodes| {
                b.iter(|| {
                    let batch: Vec<_> =
                        nodes.iter().map(|n| plugin.projection.project(n)).collect();
                    black_box(plugin.decide(&info, &batch).expect("decides"))
                })
            },
        );
        group.bench_with_input(
            BenchmarkId::new("wasm-every-field", size),
            &full,
            |b, nodes| b.iter(|| black_box(plugin.decide(&info, nodes).expect("decides"))),
        );

        // A re-plan after one node changed: only that node is sent to the plugin.
        let mut decider = PluginDecider::new(plugin.clone());
        let refs: Vec<&Node> = nodes.iter().collect();
        decider.decide(&info, &refs).expect("warms up");
        let mut flip = false;
        let mut changed = nodes.clone();
        group.bench_function(BenchmarkId::new("one-node-changed", size), |b| {
            b.iter(|| {
                flip = !flip;
                let labels = changed[7].metadata.labels.get_or_insert_with(BTreeMap::new);
                let arch = if flip { "arm64" } else { "amd64" };
                labels.insert("kubernetes.io/arch".into(), arch.into());
                let refs: Vec<&Node> = changed.iter().collect();
                black_box(decider.decide(&info, &refs).expect("decides"))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, placement);
criterion_main!(benches);
