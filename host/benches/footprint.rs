//! Memory held by the controller's view of a cluster of 10,000 nodes and 30,000 pods: the node
//! table, the pods as the pod cache keeps them, and the kept decisions of 50 sets (three
//! running on every node, one of them through the stock `hardware` plugin, and 47 selecting a
//! small part of the cluster by label).
//!
//! Run with `cargo bench -p wasmdaemon --bench footprint`. It prints, after each stage, the heap
//! bytes in use (counted by a wrapping allocator) and the resident set size, which also keeps
//! memory freed but not returned to the system; the figures in BENCHMARKS.md come from one such
//! run. Linux only (it reads `/proc/self/status`).

#![expect(
    unsafe_code,
    reason = "counting heap use takes a global allocator, whose trait is unsafe to implement"
)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicIsize, Ordering};

use k8s_openapi::api::core::v1::Pod;
use wasmdaemon::crd::WasmDaemonSet;
use wasmdaemon::node_table::NodeTable;
use wasmdaemon::planner::{Decider, PlanKey, PluginDecider, SetPlanner};
use wasmdaemon::plugin::{Limits, PluginEngine};
use wasmdaemon::registry::Registry;

mod common;
use common::realistic_node;

/// The system allocator, counting the bytes in use.
struct Counting;

static IN_USE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is passed to the system allocator unchanged; only a counter is updated.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        IN_USE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller's obligations are passed on as they are.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        IN_USE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        IN_USE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn heap_mib() -> f64 {
    IN_USE.load(Ordering::Relaxed) as f64 / (1024.0 * 1024.0)
}

const NODES: usize = 10_000;
const EVERYWHERE: usize = 3;
const SETS: usize = 50;

fn main() {
    let registry = Registry::new(PluginEngine::new(Limits::default()).expect("engine"), None);
    let hardware = registry.load("hardware", None).expect("stock plugin");
    let start = heap_mib();
    println!(
        "{:<46} {:>10} {:>10} {:>10}",
        "stage", "heap MiB", "added", "RSS MiB"
    );
    let mut last = start;
    let mut report = |stage: &str| {
        let now = heap_mib();
        println!(
            "{stage:<46} {now:>10.1} {:>10.1} {:>10.1}",
            now - last,
            rss_mib()
        );
        last = now;
    };
    report("engine and stock plugin loaded");

    let table = NodeTable::from_nodes((0..NODES).map(|i| {
        let mut node = realistic_node(i);
        let labels = node.metadata.labels.get_or_insert_default();
        labels.insert("pool".into(), format!("pool-{}", i % 100));
        node
    }));
    report(&format!("node table, {NODES} nodes"));

    let sets: Vec<WasmDaemonSet> = (0..SETS).map(set).collect();
    let mut planners: Vec<(SetPlanner, Option<PluginDecider>)> = Vec::new();
    for (i, set) in sets.iter().enumerate() {
        let mut planner = SetPlanner::default();
        let mut decider = (i == 0).then(|| PluginDecider::new(hardware.clone()));
        let digest = decider.as_ref().map(|d| d.plugin().digest.clone());
        let key = PlanKey::of(set, digest.as_deref());
        let delta = table.delta(planner.since(&key));
        let decider_ref = decider.as_mut().map(|d| d as &mut dyn Decider);
        planner
            .apply(set, key, &delta, decider_ref)
            .expect("decides");
        planners.push((planner, decider));
    }
    report(&format!("kept decisions of {SETS} sets"));

    let mut pods: Vec<Arc<Pod>> = Vec::new();
    for (set, (planner, _)) in sets.iter().zip(&planners).take(EVERYWHERE) {
        for create in planner.plan(set, &[]).create {
            let mut pod = create.pod;
            pod.metadata.name = Some(format!(
                "{}-{}",
                set.metadata.name.as_deref().unwrap_or(""),
                pods.len()
            ));
            pod.metadata.uid = Some(format!("uid-{}", pods.len()));
            if let Some(spec) = pod.spec.as_mut() {
                spec.node_name = Some(create.node.clone());
            }
            pod.status = Some(
                serde_json::from_value(serde_json::json!({
                    "phase": "Running",
                    "conditions": [{"type": "Ready", "status": "True"}],
                    "podIP": "10.0.0.1",
                    "startTime": "2026-01-01T00:00:00Z"
                }))
                .expect("status"),
            );
            // The pod watch slims each pod before caching it.
            wasmdaemon::controller::slim_pod(&mut pod);
            pods.push(Arc::new(pod));
        }
    }
    report(&format!("{} pods as the pod cache holds them", pods.len()));

    println!(
        "\nheap held by the cluster view: {:.1} MiB; process RSS {:.1} MiB (target: 300 MiB \
         for 10,000 nodes and 30,000 pods)",
        last - start,
        rss_mib()
    );
    std::hint::black_box((&table, &planners, &pods));
}

/// Three sets run on every node (the first through `hardware`); the others select one pool of
/// a hundred.
fn set(i: usize) -> WasmDaemonSet {
    let name = format!("agent-{i}");
    let mut spec = serde_json::json!({
        "selector": {"matchLabels": {"app": name}},
        "template": {
            "metadata": {"labels": {"app": name}},
            "spec": {"containers": [{"name": "agent", "image": "registry.example/agent:1.2.3",
                "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}}}]}
        },
        "variants": [{"name": "gpu"}, {"name": "arm"}],
    });
    if i >= EVERYWHERE {
        spec["template"]["spec"]["nodeSelector"] = serde_json::json!({"pool": format!("pool-{i}")});
    }
    if i == 0 {
        spec["policy"] = serde_json::json!({"plugin": "hardware", "config": {"rules": [
            {"when": {"gpuVendor": "nvidia"}, "variant": "gpu"},
            {"when": {"arch": ["arm64"]}, "variant": "arm"}
        ]}});
    }
    serde_json::from_value(serde_json::json!({
        "apiVersion": "wasmdaemon.io/v1alpha1", "kind": "WasmDaemonSet",
        "metadata": {"name": name, "namespace": "bench", "uid": format!("uid-{i}"),
                     "generation": 1},
        "spec": spec,
    }))
    .expect("bench set")
}

/// The resident set size of this process, in MiB.
fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}
