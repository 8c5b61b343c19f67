//! Plugin hot swap: time from a new plugin file written to every set using it re-planned, at
//! 1,000 and 10,000 nodes with 10 sets, with the new version's compiled form in the disk cache;
//! and the load time of a stock plugin compiled cold against loaded from the disk cache.
//!
//! Run with `cargo bench -p wasmdaemon --bench hot_swap`. It prints a table; the figures in
//! BENCHMARKS.md come from one such run.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod};
use wasmdaemon::crd::WasmDaemonSet;
use wasmdaemon::node_table::NodeTable;
use wasmdaemon::planner::{self, Decider, PlanKey, PluginDecider, SetPlanner};
use wasmdaemon::plugin::{Limits, PluginEngine};
use wasmdaemon::registry::dir::{DirWatch, POLL_INTERVAL};
use wasmdaemon::registry::{PluginEvent, PluginStore, Registry, SetUse};

const SETS: usize = 10;
const ROUNDS: usize = 7;
const PLUGIN: &str = "gpu-rules";

fn main() {
    let hardware = std::fs::read(env!("WASMDAEMON_PLUGIN_HARDWARE")).expect("stock plugin");
    let cache = tempfile::tempdir().expect("cache dir");

    println!("plugin load (compile, link, describe) of the stock hardware plugin, {ROUNDS} rounds");
    let (cold, cached) = compile_cold_and_cached(&hardware, cache.path());
    println!("  cold compile:    {}", summary(&cold));
    println!("  from disk cache: {}", summary(&cached));
    println!(
        "  ratio (median):  {:.1}x",
        median(&cold).as_secs_f64() / median(&cached).as_secs_f64()
    );

    let versions: Vec<Vec<u8>> = (0..=ROUNDS).map(|i| tagged(&hardware, i)).collect();
    let warm = engine().with_disk_cache(cache.path()).expect("disk cache");
    for version in &versions {
        warm.load(PLUGIN, version).expect("version compiles");
    }

    println!(
        "\nnew file written -> {SETS} sets re-planned (poll every {POLL_INTERVAL:?}, disk-cached \
         compile), {ROUNDS} rounds"
    );
    for nodes in [1_000, 10_000] {
        let (swapped, replanned) = swap_latency(&versions, cache.path(), nodes);
        println!(
            "  {nodes:>6} nodes: written -> swapped  {}",
            summary(&swapped)
        );
        println!(
            "  {nodes:>6} nodes: written -> re-planned {}",
            summary(&replanned)
        );
    }
}

fn engine() -> PluginEngine {
    let limits = Limits {
        deadline: Duration::from_secs(30),
        ..Limits::default()
    };
    PluginEngine::new(limits).expect("engine")
}

/// Alternates a cold compile in a fresh engine with a load from the disk cache in another.
fn compile_cold_and_cached(bytes: &[u8], cache: &Path) -> (Vec<Duration>, Vec<Duration>) {
    engine()
        .with_disk_cache(cache)
        .expect("disk cache")
        .load("hardware", bytes)
        .expect("stock plugin loads");
    let (mut cold, mut cached) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let fresh = engine();
        let start = Instant::now();
        fresh.load("hardware", bytes).expect("cold load");
        cold.push(start.elapsed());
        assert_eq!(fresh.compilations(), 1);

        let restarted = engine().with_disk_cache(cache).expect("disk cache");
        let start = Instant::now();
        restarted.load("hardware", bytes).expect("cached load");
        cached.push(start.elapsed());
        assert_eq!(restarted.compilations(), 0, "loaded from the disk cache");
    }
    (cold, cached)
}

/// Swaps the plugin `ROUNDS` times through a watched directory while a planner re-plans every
/// set using it on each swap, as the controller does (in parallel, one plugin call per core).
fn swap_latency(
    versions: &[Vec<u8>],
    cache: &Path,
    nodes: usize,
) -> (Vec<Duration>, Vec<Duration>) {
    let engine = engine().with_disk_cache(cache).expect("disk cache");
    let store = Arc::new(PluginStore::new(engine, false));
    let sets: Vec<WasmDaemonSet> = (0..SETS).map(set).collect();
    let uses: Vec<SetUse> = sets
        .iter()
        .filter_map(wasmdaemon::registry::sets::set_use)
        .map(|(_, u)| u)
        .collect();
    store.set_users(move |plugin| {
        if plugin == PLUGIN {
            uses.clone()
        } else {
            Vec::new()
        }
    });

    let dir = tempfile::tempdir().expect("plugin dir");
    let path = dir.path().join(format!("{PLUGIN}.wasm"));
    std::fs::write(&path, &versions[0]).expect("first version");
    let watch =
        DirWatch::start(store.clone(), dir.path().to_path_buf(), POLL_INTERVAL).expect("watch");

    let list: Vec<Node> = (0..nodes).map(node).collect();
    let table = NodeTable::from_nodes(list.iter().cloned());
    let registry = Arc::new(Registry::live(store.clone()));
    let planner = Planner::new(registry, sets, table, list);
    planner.replan_all();
    let start = Instant::now();
    planner.replan_all();
    let unchanged = start.elapsed();
    let plugin = store.get(PLUGIN, None).expect("plugin");
    let refs: Vec<&Node> = planner.nodes.iter().collect();
    let projected: Vec<_> = refs
        .chunks(planner::MAX_BATCH)
        .map(|chunk| plugin.projection.batch(chunk.iter().copied()))
        .collect();
    let info = planner::set_info(&planner.sets[0]);
    let mut decider = PluginDecider::new(plugin.clone());
    let set0 = &planner.sets[0];
    planner::decide_nodes(set0, &planner.nodes, Some(&mut decider)).expect("decide");
    let start = Instant::now();
    planner::decide_nodes(set0, &planner.nodes, Some(&mut decider)).expect("decide");
    let memo_decide = start.elapsed();
    let start = Instant::now();
    let _ = plugin.projection.batch(planner.nodes.iter());
    println!(
        "  {:>6} nodes: one set: decide_nodes with every answer memoized {:.1} ms, projecting \
         alone {:.1} ms",
        planner.nodes.len(),
        memo_decide.as_secs_f64() * 1e3,
        start.elapsed().as_secs_f64() * 1e3
    );
    let start = Instant::now();
    for batch in &projected {
        plugin.decide(&info, batch).expect("decide");
    }
    println!(
        "  {:>6} nodes: pass over {SETS} sets with nothing changed {:.1} ms; one set's \
         plugin calls alone {:.1} ms",
        planner.nodes.len(),
        unchanged.as_secs_f64() * 1e3,
        start.elapsed().as_secs_f64() * 1e3
    );

    let mut events = store.subscribe();
    let (done_tx, done_rx) = mpsc::channel::<(Instant, Instant)>();
    let worker = std::thread::spawn(move || {
        while let Ok(event) = events.blocking_recv() {
            if let PluginEvent::Swapped { plugin, .. } = event
                && plugin == PLUGIN
            {
                let swapped = Instant::now();
                planner.replan_all();
                if done_tx.send((swapped, Instant::now())).is_err() {
                    return;
                }
            }
        }
    });

    let (mut swapped, mut replanned) = (Vec::new(), Vec::new());
    for version in &versions[1..] {
        let written = Instant::now();
        let tmp = dir.path().join(".incoming");
        std::fs::write(&tmp, version).expect("write version");
        std::fs::rename(&tmp, &path).expect("rename version");
        let (at_swap, at_done) = done_rx
            .recv_timeout(Duration::from_secs(120))
            .expect("re-planned within two minutes");
        swapped.push(at_swap - written);
        replanned.push(at_done - written);
    }
    drop(watch);
    // The planner thread holds the store, so its receiver never closes; it stays detached and
    // ends with the process.
    drop(worker);
    (swapped, replanned)
}

/// What the bench keeps per set between passes, as the controller does.
#[derive(Default)]
struct SetMemory {
    decider: Option<PluginDecider>,
    planner: SetPlanner,
    pods: Vec<Pod>,
}

/// Plans sets as the controller does: a decider per set, replaced when the digest changes, and
/// kept decisions, redone in full when the digest changes.
struct Planner {
    registry: Arc<Registry>,
    sets: Vec<WasmDaemonSet>,
    table: NodeTable,
    nodes: Vec<Node>,
    state: Vec<Mutex<SetMemory>>,
}

impl Planner {
    fn new(
        registry: Arc<Registry>,
        sets: Vec<WasmDaemonSet>,
        table: NodeTable,
        nodes: Vec<Node>,
    ) -> Self {
        let state = sets.iter().map(|_| Mutex::default()).collect();
        Self {
            registry,
            sets,
            table,
            nodes,
            state,
        }
    }

    fn replan_all(&self) {
        let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
        let next = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|scope| {
            for _ in 0..workers {
                scope.spawn(|| {
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if i >= self.sets.len() {
                            return;
                        }
                        self.replan(i);
                    }
                });
            }
        });
    }

    fn replan(&self, i: usize) {
        let set = &self.sets[i];
        let mut state = self.state[i].lock().unwrap_or_else(PoisonError::into_inner);
        let memory = &mut *state;
        let plugin = self.registry.load(PLUGIN, None).expect("plugin resolves");
        if memory
            .decider
            .as_ref()
            .is_none_or(|d| d.plugin().digest != plugin.digest)
        {
            memory.decider = Some(PluginDecider::new(plugin.clone()));
        }
        let key = PlanKey::of(set, Some(&plugin.digest));
        let delta = self.table.delta(memory.planner.since(&key));
        let decider = memory.decider.as_mut().map(|d| d as &mut dyn Decider);
        let applied = memory
            .planner
            .apply(set, key, &delta, decider)
            .expect("decide");
        // As the controller does: a set whose decisions did not change (and whose pods did not)
        // needs no comparison with its pods.
        if !applied.changed && !memory.pods.is_empty() {
            return;
        }
        let plan = memory.planner.plan(set, &memory.pods);
        assert_eq!(plan.nodes.len(), self.table.len());
        if memory.pods.is_empty() {
            memory.pods = plan.create.into_iter().map(|c| c.pod).collect();
        }
    }
}

/// The stock hardware plugin with a custom section naming the round: a new digest each round,
/// the same behaviour.
fn tagged(component: &[u8], round: usize) -> Vec<u8> {
    let payload = [
        b"\x0fwasmdaemon-bench".as_slice(),
        round.to_string().as_bytes(),
    ]
    .concat();
    let mut out = component.to_vec();
    out.push(0);
    out.push(payload.len() as u8);
    out.extend_from_slice(&payload);
    out
}

fn set(i: usize) -> WasmDaemonSet {
    let name = format!("agent-{i}");
    serde_json::from_value(serde_json::json!({
        "apiVersion": "wasmdaemon.io/v1alpha1", "kind": "WasmDaemonSet",
        "metadata": {"name": name, "namespace": "bench", "uid": format!("uid-{i}")},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "agent", "image": "agent:1"}]}
            },
            "variants": [{"name": "gpu"}, {"name": "arm"}, {"name": "big"}],
            "policy": {"plugin": PLUGIN, "config": {"rules": [
                {"when": {"gpuVendor": "any"}, "variant": "gpu"},
                {"when": {"arch": ["arm64"]}, "variant": "arm"},
                {"when": {"minMemory": "256Gi"}, "variant": "big"}
            ]}}
        }
    }))
    .expect("bench set")
}

fn node(i: usize) -> Node {
    let arch = if i.is_multiple_of(4) {
        "arm64"
    } else {
        "amd64"
    };
    let memory = if i.is_multiple_of(7) { "512Gi" } else { "64Gi" };
    let mut labels: BTreeMap<String, String> = (0..15)
        .map(|k| {
            (
                format!("example.com/label-{k}"),
                format!("value-{}", (i + k) % 5),
            )
        })
        .collect();
    labels.insert("kubernetes.io/arch".into(), arch.into());
    labels.insert("kubernetes.io/os".into(), "linux".into());
    let mut capacity = serde_json::json!({"cpu": "32", "memory": memory, "pods": "110"});
    if i % 10 == 3 {
        capacity["nvidia.com/gpu"] = "4".into();
    }
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": format!("node-{i:05}"), "labels": labels},
        "status": {
            "capacity": capacity.clone(),
            "allocatable": capacity,
            "conditions": [{"type": "Ready", "status": "True"}],
            "nodeInfo": {
                "architecture": arch, "operatingSystem": "linux", "kernelVersion": "6.8.0",
                "containerRuntimeVersion": "containerd://1.7.20", "kubeletVersion": "v1.33.1",
                "osImage": "Ubuntu 24.04 LTS", "bootID": "", "machineID": "",
                "systemUUID": "", "kubeProxyVersion": ""
            }
        }
    }))
    .expect("bench node")
}

fn median(samples: &[Duration]) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    sorted[sorted.len() / 2]
}

fn summary(samples: &[Duration]) -> String {
    let max = samples.iter().max().copied().unwrap_or_default();
    let min = samples.iter().min().copied().unwrap_or_default();
    format!(
        "median {:>8.1} ms  min {:>8.1} ms  max {:>8.1} ms",
        median(samples).as_secs_f64() * 1e3,
        min.as_secs_f64() * 1e3,
        max.as_secs_f64() * 1e3
    )
}
