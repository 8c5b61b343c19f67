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
use wasmdaemon::plugin::bindings::{self, Interest, NodeBatch};
use wasmdaemon::plugin::{Limits, PluginEngine, Projection};
use wasmdaemon::registry::Registry;
use wasmdaemon_plugin_hardware::Hardware;
use wasmdaemon_plugin_sdk as sdk;

mod common;
use common::realistic_node;

const CONFIG: &str = r#"{
    "rules": [
        {"when": {"gpuVendor": "nvidia", "minGpus": 4}, "variant": "nvidia-large"},
        {"when": {"gpuVendor": "nvidia"}, "variant": "nvidia"},
        {"when": {"gpuVendor": "amd"}, "variant": "amd"},
        {"when": {"minMemory": "512Gi"}, "variant": "xlarge"},
        {"when": {"arch": ["arm64"]}, "variant": "arm"}
    ]
}"#;

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

/// The host's batch as the guest SDK's type, for the native run: the same tables, copied.
fn to_guest(batch: &NodeBatch) -> sdk::NodeBatch {
    use sdk::wit;
    let entries = |rows: &[bindings::Entry]| -> Vec<wit::Entry> {
        rows.iter()
            .map(|e| wit::Entry {
                node: e.node,
                key: e.key,
                value: e.value,
            })
            .collect()
    };
    let amounts = |rows: &[bindings::Amount]| -> Vec<wit::Amount> {
        rows.iter()
            .map(|a| wit::Amount {
                node: a.node,
                name: a.name,
                milli_value: a.milli_value,
            })
            .collect()
    };
    sdk::NodeBatch {
        strings: batch.strings.clone(),
        nodes: batch
            .nodes
            .iter()
            .map(|n| wit::Node {
                name: n.name,
                unschedulable: n.unschedulable,
            })
            .collect(),
        labels: entries(&batch.labels),
        annotations: entries(&batch.annotations),
        taints: Vec::new(),
        conditions: entries(&batch.conditions),
        capacity: amounts(&batch.capacity),
        allocatable: amounts(&batch.allocatable),
        infos: batch
            .infos
            .iter()
            .map(|i| wit::NodeInfo {
                node: i.node,
                architecture: i.architecture,
                operating_system: i.operating_system,
                kernel_version: i.kernel_version,
                container_runtime_version: i.container_runtime_version,
                kubelet_version: i.kubelet_version,
                os_image: i.os_image,
            })
            .collect(),
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

    let guest_set = sdk::SetInfo::new(
        info.name.clone(),
        info.config.clone(),
        info.variants.iter().cloned(),
    );

    let mut group = c.benchmark_group("placement");
    group.sample_size(20);
    for size in [1_000usize, 10_000] {
        let nodes: Vec<Node> = (0..size).map(realistic_node).collect();
        let batch = plugin.projection.batch(&nodes);
        let guest_batch = to_guest(&batch);
        let full = Projection::new(&everything()).batch(&nodes);
        group.throughput(Throughput::Elements(size as u64));

        // The plugin's own export path (batch view, config, decisions, answer), run natively.
        group.bench_with_input(
            BenchmarkId::new("native", size),
            &guest_batch,
            |b, batch| {
                b.iter(|| black_box(sdk::decide::<Hardware>(&guest_set, batch).expect("decides")))
            },
        );
        // The same batch through the sandbox: a fresh instance, the copy in, the answer out.
        group.bench_with_input(BenchmarkId::new("wasm", size), &batch, |b, batch| {
            b.iter(|| black_box(plugin.decide(&info, batch).expect("decides")))
        });
        // Projection from Kubernetes nodes included, as a full re-plan pays it.
        group.bench_with_input(
            BenchmarkId::new("wasm-projecting", size),
            &nodes,
            |b, nodes| {
                b.iter(|| {
                    let batch = plugin.projection.batch(nodes);
                    black_box(plugin.decide(&info, &batch).expect("decides"))
                })
            },
        );
        // Every label, annotation, condition, resource and node info sent, as a plugin that
        // declared no interest would need.
        group.bench_with_input(
            BenchmarkId::new("wasm-every-field", size),
            &full,
            |b, batch| b.iter(|| black_box(plugin.decide(&info, batch).expect("decides"))),
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
