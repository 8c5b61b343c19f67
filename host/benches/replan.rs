//! Re-planning after one node changes, at 10,000 nodes and 50 sets (30 decided by the stock
//! `hardware` plugin through WASM, 20 by the predicates alone), measured side by side:
//!
//! - `incremental`: the node table takes the event, the sets it can affect are picked, and each
//!   of them decides only the changed node.
//! - `+ diff if changed`: what the controller does: the same, plus, for each set where a
//!   decision changed, the comparison of every decision with its pods (creates, deletes,
//!   outdated pods). A set whose decisions did not change stops after deciding.
//! - `+ diff always`: the comparison for every affected set, as a pass did before it could stop.
//! - `full re-decide`: every affected set decides every node again, with the plugin's answers
//!   memoized by fingerprint (how a pass worked before the node table).
//!
//! Run with `cargo bench -p wasmdaemon --bench replan`. It prints a table; the figures in
//! BENCHMARKS.md come from one such run.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod};
use wasmdaemon::crd::WasmDaemonSet;
use wasmdaemon::node_table::{NodeChange, NodeTable};
use wasmdaemon::planner::{self, Applied, Decider, PlanKey, PluginDecider, SetPlanner};
use wasmdaemon::plugin::{Limits, LoadedPlugin, PluginEngine};
use wasmdaemon::registry::Registry;

mod common;
use common::realistic_node;

const NODES: usize = 10_000;
const SETS: usize = 50;
const PLUGIN_SETS: usize = 30;
const ROUNDS: usize = 200;
const FULL_ROUNDS: usize = 3;

const CONFIG: &str = r#"{"rules": [
    {"when": {"gpuVendor": "nvidia"}, "variant": "gpu"},
    {"when": {"arch": ["arm64"]}, "variant": "arm"},
    {"when": {"minMemory": "512Gi"}, "variant": "big"}
]}"#;

/// What the controller keeps for one set between passes.
struct SetMemory {
    set: WasmDaemonSet,
    plugin: Option<std::sync::Arc<LoadedPlugin>>,
    decider: Option<PluginDecider>,
    planner: SetPlanner,
    pods: Vec<Pod>,
}

impl SetMemory {
    fn key(&self) -> PlanKey {
        PlanKey::of(&self.set, self.plugin.as_ref().map(|p| p.digest.as_str()))
    }

    /// Brings the kept decisions up to date with `table`.
    fn decide(&mut self, table: &NodeTable) -> Applied {
        let key = self.key();
        let delta = table.delta(self.planner.since(&key));
        let decider = self.decider.as_mut().map(|d| d as &mut dyn Decider);
        self.planner
            .apply(&self.set, key, &delta, decider)
            .expect("decides")
    }

    fn affected_by(&self, changes: &[NodeChange]) -> bool {
        let reads = self.plugin.as_deref().map(|p| &p.projection);
        changes
            .iter()
            .any(|c| wasmdaemon::node_table::affects(&self.set, reads, &c.change))
    }
}

fn main() {
    let registry = Registry::new(PluginEngine::new(Limits::default()).expect("engine"), None);
    let hardware = registry.load("hardware", None).expect("stock plugin");
    let mut table = NodeTable::from_nodes((0..NODES).map(realistic_node));
    let mut sets: Vec<SetMemory> = (0..SETS)
        .map(|i| {
            let plugin = (i < PLUGIN_SETS).then(|| hardware.clone());
            SetMemory {
                set: set(i, plugin.is_some()),
                decider: plugin.clone().map(PluginDecider::new),
                plugin,
                planner: SetPlanner::default(),
                pods: Vec::new(),
            }
        })
        .collect();
    let start = Instant::now();
    for memory in &mut sets {
        memory.decide(&table);
        memory.pods = memory
            .planner
            .plan(&memory.set, &[])
            .create
            .into_iter()
            .map(|c| c.pod)
            .collect();
    }
    println!(
        "{NODES} nodes, {SETS} sets ({PLUGIN_SETS} through the hardware plugin); first plan of \
         every set {:.0} ms\n",
        start.elapsed().as_secs_f64() * 1e3
    );

    let mut nodes: Vec<Node> = (0..NODES).map(realistic_node).collect();
    let events = [
        (
            "a label all read; no decision changes",
            "node.kubernetes.io/instance-type",
            ["m6i.2xlarge", "m6i.4xlarge"],
        ),
        (
            "a label all read; all decisions change",
            "kubernetes.io/os",
            ["linux", "windows"],
        ),
        ("a label no set reads", "karpenter.sh/nodepool", ["a", "b"]),
    ];
    println!(
        "{:<40} {:>5} {:>12} {:>20} {:>16} {:>15}",
        "one node changes",
        "sets",
        "incremental",
        "+ diff if changed",
        "+ diff always",
        "full re-decide"
    );
    for (kind, (what, label, values)) in events.iter().enumerate() {
        let mut times: [Vec<Duration>; 4] = Default::default();
        let mut affected_sets = 0;
        for round in 0..ROUNDS {
            let i = (round * 7919 + kind * 13) % NODES;
            let labels = nodes[i].metadata.labels.get_or_insert_default();
            let value = match labels.get(*label).map(String::as_str) == Some(values[0]) {
                true => values[1],
                false => values[0],
            };
            labels.insert(label.to_string(), value.to_string());

            let start = Instant::now();
            let changes: Vec<NodeChange> = table.apply(nodes[i].clone()).into_iter().collect();
            let affected: Vec<usize> = (0..SETS)
                .filter(|&s| sets[s].affected_by(&changes))
                .collect();
            let changed: Vec<usize> = affected
                .iter()
                .copied()
                .filter(|&s| sets[s].decide(&table).changed)
                .collect();
            let decided = start.elapsed();

            let diff = |which: &[usize]| {
                let start = Instant::now();
                for &s in which {
                    std::hint::black_box(sets[s].planner.plan(&sets[s].set, &sets[s].pods));
                }
                start.elapsed()
            };
            times[0].push(decided);
            times[1].push(decided + diff(&changed));
            times[2].push(decided + diff(&affected));
            affected_sets = affected.len();

            if round < FULL_ROUNDS {
                times[3].push(full_redecide(&mut sets, &affected, &nodes));
            }
        }
        let full = match times[3].is_empty() {
            true => "-".to_string(),
            false => fmt(median(&times[3])),
        };
        println!(
            "{what:<40} {affected_sets:>5} {:>12} {:>20} {:>16} {full:>15}",
            fmt(median(&times[0])),
            fmt(median(&times[1])),
            fmt(median(&times[2])),
        );
    }

    let info = planner::set_info(&sets[0].set);
    let one = hardware.projection.batch([&nodes[5]]);
    let calls: Vec<Duration> = (0..ROUNDS * 5)
        .map(|_| {
            let start = Instant::now();
            std::hint::black_box(hardware.decide(&info, &one).expect("decides"));
            start.elapsed()
        })
        .collect();
    let sets_at_rest: Vec<Duration> = sets
        .iter()
        .map(|memory| {
            let start = Instant::now();
            std::hint::black_box(memory.planner.plan(&memory.set, &memory.pods));
            start.elapsed()
        })
        .collect();
    println!(
        "
one plugin call deciding one node (a fresh instance): {}; one set's diff of {NODES} \
         decisions against its pods: {}",
        fmt(median(&calls)),
        fmt(median(&sets_at_rest))
    );

    let start = Instant::now();
    let heartbeat = table.apply(nodes[3].clone());
    println!(
        "a heartbeat (nothing placement reads changed): {} change(s), {}",
        heartbeat.iter().count(),
        fmt(start.elapsed())
    );
}

/// Every affected set decides every node again, its plugin's answers memoized.
fn full_redecide(sets: &mut [SetMemory], affected: &[usize], nodes: &[Node]) -> Duration {
    let start = Instant::now();
    for &s in affected {
        let memory = &mut sets[s];
        let decider = memory.decider.as_mut().map(|d| d as &mut dyn Decider);
        let decided = planner::decide_nodes(&memory.set, nodes, decider).expect("decides");
        std::hint::black_box(decided);
    }
    start.elapsed()
}

fn median(times: &[Duration]) -> Duration {
    let mut sorted = times.to_vec();
    sorted.sort();
    sorted[sorted.len() / 2]
}

fn fmt(d: Duration) -> String {
    match d.as_secs_f64() {
        s if s >= 1e-2 => format!("{:.1} ms", s * 1e3),
        s => format!("{:.0} µs", s * 1e6),
    }
}

/// Plugin sets pick a variant per node through `hardware`; the others run where the
/// predicates allow, on Linux nodes of a listed instance type.
fn set(i: usize, plugin: bool) -> WasmDaemonSet {
    let name = format!("agent-{i}");
    let mut spec = serde_json::json!({
        "selector": {"matchLabels": {"app": name}},
        "template": {
            "metadata": {"labels": {"app": name}},
            "spec": {
                "containers": [{"name": "agent", "image": "agent:1"}],
                "nodeSelector": {"kubernetes.io/os": "linux"},
                "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [{"matchExpressions": [{
                        "key": "node.kubernetes.io/instance-type", "operator": "NotIn",
                        "values": [format!("t3.{i}")]
                    }]}]
                }}}
            }
        },
        "variants": [{"name": "gpu"}, {"name": "arm"}, {"name": "big"}],
    });
    if plugin {
        spec["policy"] = serde_json::json!({
            "plugin": "hardware",
            "config": serde_json::from_str::<serde_json::Value>(CONFIG).expect("config is JSON"),
        });
    }
    serde_json::from_value(serde_json::json!({
        "apiVersion": "wasmdaemon.io/v1alpha1", "kind": "WasmDaemonSet",
        "metadata": {"name": name, "namespace": "bench", "uid": format!("uid-{i}"),
                     "generation": 1},
        "spec": spec,
    }))
    .expect("bench set")
}
