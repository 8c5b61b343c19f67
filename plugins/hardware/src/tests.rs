//! Unit tests of the `hardware` plugin's config checks and decisions, run natively.

use wasmdaemon_plugin_sdk::{
    BatchBuilder, Decision, NodeInfoSpec, NodeSpec, Nodes, Plugin, SetInfo, parse_config, wit,
};

use crate::Hardware;
use crate::config::{Config, GpuVendor};
use crate::logic::{self, Hardware as Facts, Keys};

const GI: i64 = 1_073_741_824_000;

fn variants() -> Vec<String> {
    ["nvidia", "amd", "arm", "large", "a100"]
        .map(String::from)
        .to_vec()
}

fn config(json: &str) -> Config {
    let config: Config = parse_config(json).unwrap();
    config.check(&variants()).unwrap();
    config
}

fn validate(json: &str) -> Result<(), String> {
    wasmdaemon_plugin_sdk::validate_config::<Hardware>(json, &variants())
}

const EXAMPLE: &str = r#"{
    "rules": [
        {"when": {"gpuVendor": "nvidia", "gpuProduct": "NVIDIA-A100*"}, "variant": "a100"},
        {"when": {"gpuVendor": "nvidia", "minGpus": 1}, "variant": "nvidia"},
        {"when": {"gpuVendor": "amd"}, "variant": "amd"},
        {"when": {"arch": "arm64"}, "variant": "arm"},
        {"when": {"minMemory": "256Gi"}, "variant": "large"},
        {"when": {"instanceType": ["t3.*", "t4g.*"]}, "skip": "burstable instances are too small"}
    ],
    "default": {}
}"#;

/// Decides natively, with the decisions made owned so they outlive the batch.
fn decide(config: &Config, nodes: impl IntoIterator<Item = NodeSpec>) -> Vec<Decision<'static>> {
    let batch = BatchBuilder::of(nodes);
    let nodes = Nodes::new(&batch).unwrap();
    logic::decide(config, &nodes)
        .into_iter()
        .map(owned)
        .collect()
}

fn decide_node(config: &Config, node: NodeSpec) -> Decision<'static> {
    decide(config, [node]).remove(0)
}

fn owned(decision: Decision<'_>) -> Decision<'static> {
    match decision {
        Decision::Skip(reason) => Decision::skip(reason.into_owned()),
        Decision::Run { variant, .. } => match variant {
            Some(name) => Decision::variant(name.into_owned()),
            None => Decision::plain(),
        },
    }
}

fn gpus(node: NodeSpec, vendor: GpuVendor) -> u32 {
    let batch = BatchBuilder::of([node]);
    let nodes = Nodes::new(&batch).unwrap();
    let keys = Keys::of(&nodes);
    Facts::of(nodes.get(0).unwrap(), &keys).gpus(vendor)
}

fn x86() -> NodeSpec {
    x86_with_memory(64)
}

fn x86_with_memory(gibibytes: i64) -> NodeSpec {
    NodeSpec::named("x86")
        .with_label("kubernetes.io/arch", "amd64")
        .with_capacity("memory", gibibytes * GI)
        .with_capacity("cpu", 16_000)
}

#[test]
fn the_first_matching_rule_wins() {
    let config = config(EXAMPLE);
    let a100 = x86()
        .with_capacity("nvidia.com/gpu", 8_000)
        .with_label("nvidia.com/gpu.product", "NVIDIA-A100-SXM4-80GB");
    let t4 = x86()
        .with_capacity("nvidia.com/gpu", 1_000)
        .with_label("nvidia.com/gpu.product", "Tesla-T4");
    let mi300 = x86().with_capacity("amd.com/gpu", 8_000);
    let graviton = NodeSpec::named("arm").with_label("kubernetes.io/arch", "arm64");
    let big = x86_with_memory(512);
    let burstable = x86().with_label("node.kubernetes.io/instance-type", "t3.large");
    let plain = x86();
    let decisions = decide(&config, [a100, t4, mi300, graviton, big, burstable, plain]);
    assert_eq!(
        decisions,
        vec![
            Decision::variant("a100"),
            Decision::variant("nvidia"),
            Decision::variant("amd"),
            Decision::variant("arm"),
            Decision::variant("large"),
            Decision::skip("burstable instances are too small"),
            Decision::plain(),
        ]
    );
}

#[test]
fn the_default_outcome_applies_when_no_rule_matches() {
    let skip = config(
        r#"{
            "rules": [{"when": {"arch": "arm64"}, "variant": "arm"}],
            "default": {"skip": "not arm"}
        }"#,
    );
    assert_eq!(decide_node(&skip, x86()), Decision::skip("not arm"));
    let large = config(r#"{"rules": [], "default": {"variant": "large"}}"#);
    assert_eq!(decide_node(&large, x86()), Decision::variant("large"));
}

#[test]
fn gpu_counts_prefer_feature_discovery_then_capacity_then_presence_labels() {
    let labelled = x86()
        .with_label("nvidia.com/gpu.count", "4")
        .with_capacity("nvidia.com/gpu", 8_000);
    assert_eq!(gpus(labelled, GpuVendor::Nvidia), 4);
    let from_capacity = x86().with_capacity("nvidia.com/gpu", 2_000);
    assert_eq!(gpus(from_capacity, GpuVendor::Nvidia), 2);
    let from_allocatable = x86().with_allocatable("amd.com/gpu", 3_000);
    assert_eq!(gpus(from_allocatable, GpuVendor::Amd), 3);
    let from_pci = x86().with_label("feature.node.kubernetes.io/pci-0302_10de.present", "true");
    assert_eq!(gpus(from_pci, GpuVendor::Nvidia), 1);
    let gke = x86().with_label("cloud.google.com/gke-accelerator", "nvidia-tesla-t4");
    assert_eq!(gpus(gke, GpuVendor::Nvidia), 1);
    let intel = x86().with_label("feature.node.kubernetes.io/pci-0300_8086.present", "true");
    assert_eq!(gpus(intel.clone(), GpuVendor::Intel), 1);
    assert_eq!(gpus(intel, GpuVendor::Any), 1);
    assert_eq!(gpus(x86(), GpuVendor::Any), 0);
}

#[test]
fn gpu_count_bounds_count_all_vendors_without_a_vendor() {
    let config = config(
        r#"{"rules": [
            {"when": {"maxGpus": 0}, "variant": "large"},
            {"when": {"minGpus": 2}, "variant": "nvidia"}
        ], "default": {"skip": "one gpu"}}"#,
    );
    let none = x86();
    let two = x86()
        .with_capacity("nvidia.com/gpu", 1_000)
        .with_capacity("amd.com/gpu", 1_000);
    let one = x86().with_capacity("amd.com/gpu", 1_000);
    assert_eq!(
        decide(&config, [none, two, one]),
        vec![
            Decision::variant("large"),
            Decision::variant("nvidia"),
            Decision::skip("one gpu")
        ]
    );
}

#[test]
fn architecture_falls_back_to_node_info_and_unknown_amounts_match_no_bound() {
    let config = config(
        r#"{"rules": [
            {"when": {"arch": ["arm64"]}, "variant": "arm"},
            {"when": {"maxMemory": "1Ti"}, "variant": "large"}
        ]}"#,
    );
    let node = NodeSpec::named("n").with_info(NodeInfoSpec::new("arm64", "linux"));
    assert_eq!(decide_node(&config, node), Decision::variant("arm"));
    assert_eq!(
        decide_node(&config, NodeSpec::named("bare")),
        Decision::plain()
    );
}

#[test]
fn interest_names_only_what_the_plugin_reads() {
    let interest = Hardware::describe().interest;
    assert!(
        interest
            .labels
            .iter()
            .all(|key| key != "*" && !key.ends_with('/'))
    );
    assert!(
        interest
            .labels
            .iter()
            .any(|key| key == "kubernetes.io/arch")
    );
    assert!(
        interest
            .resources
            .iter()
            .any(|name| name == "nvidia.com/gpu")
    );
    assert!(interest.annotations.is_empty());
    assert!(!interest.node_info && !interest.taints && !interest.conditions);
}

#[test]
fn config_errors_name_the_field_path() {
    let error = validate(r#"{"rules": [{}, {}, {"when": {"minMemory": "12Zi"}}]}"#).unwrap_err();
    assert!(
        error.starts_with("config: rules[2].when.minMemory: invalid quantity `12Zi`"),
        "{error}"
    );
    let error = validate(r#"{"rules": [{"when": {"gpuVendr": "nvidia"}}]}"#).unwrap_err();
    assert!(
        error.contains("rules[0].when") && error.contains("unknown field `gpuVendr`"),
        "{error}"
    );
    let error = validate(r#"{"rules": [{"when": {"gpuVendor": "matrox"}}]}"#).unwrap_err();
    assert!(
        error.contains("rules[0].when.gpuVendor") && error.contains("matrox"),
        "{error}"
    );
    let error = validate(r#"{"rules": [], "skipUnmatched": true}"#).unwrap_err();
    assert!(error.contains("unknown field `skipUnmatched`"), "{error}");
}

#[test]
fn undeclared_variants_and_contradictions_are_all_reported() {
    let error = validate(
        r#"{"rules": [
            {"when": {"arch": "arm64"}, "variant": "arm"},
            {"when": {"minGpus": 4, "maxGpus": 2}, "variant": "huge"},
            {"when": {"minMemory": "2Gi", "maxMemory": "1Gi"}, "variant": "large", "skip": "x"},
            {"when": {"instanceType": "p*d.*"}}
        ], "default": {"variant": "medium"}}"#,
    )
    .unwrap_err();
    let expected = [
        "config: rules[1].variant: `huge` is not a variant of this set",
        "config: rules[1].when: minGpus (4) is greater than maxGpus (2)",
        "config: rules[2]: give either `variant` or `skip`, not both",
        "config: rules[2].when: minMemory (2Gi) is greater than maxMemory (1Gi)",
        "config: rules[3].when.instanceType[0]: `p*d.*`: only a single trailing `*` is supported",
        "config: default.variant: `medium` is not a variant of this set",
    ];
    for line in expected {
        assert!(error.contains(line), "missing {line:?} in:\n{error}");
    }
    assert_eq!(error.lines().count(), expected.len(), "{error}");
}

#[test]
fn a_missing_config_is_rejected_with_a_clear_message() {
    let error = validate("null").unwrap_err();
    assert!(error.contains("needs a config"), "{error}");
}

#[test]
fn the_exported_decide_path_parses_the_set_config() {
    let set = SetInfo::new("s", EXAMPLE, variants());
    let nodes = BatchBuilder::of([x86_with_memory(300), x86(), x86_with_memory(512)]);
    let answer = wasmdaemon_plugin_sdk::decide::<Hardware>(&set, &nodes).unwrap();
    assert_eq!(answer.strings, ["large"]);
    let run = |variant| {
        wit::Decision::Run(wit::Run {
            variant,
            overrides: None,
        })
    };
    assert_eq!(answer.decisions, [run(Some(0)), run(None), run(Some(0))]);
    let broken = SetInfo::new("s", r#"{"rules": [{"variant": "gone"}]}"#, variants());
    assert!(wasmdaemon_plugin_sdk::decide::<Hardware>(&broken, &nodes).is_err());
}

/// A cluster-like batch: every node with arch, OS, instance type, CPU and memory; every tenth
/// with an A100 GPU.
fn ten_thousand_nodes() -> Vec<NodeSpec> {
    (0..10_000)
        .map(|i| {
            let arch = if i % 4 == 0 { "arm64" } else { "amd64" };
            let kind = ["m5.large", "t3.large", "p4d.24xlarge"][i % 3];
            let mut node = NodeSpec::named(format!("node-{i}"))
                .with_label("kubernetes.io/arch", arch)
                .with_label("kubernetes.io/os", "linux")
                .with_label("node.kubernetes.io/instance-type", kind)
                .with_capacity("cpu", 16_000)
                .with_capacity("memory", 64 * GI)
                .with_allocatable("cpu", 15_000)
                .with_allocatable("memory", 60 * GI);
            if i % 10 == 0 {
                node = node
                    .with_label("nvidia.com/gpu.product", "NVIDIA-A100-SXM4-80GB")
                    .with_capacity("nvidia.com/gpu", 8_000);
            }
            node
        })
        .collect()
}

/// The best of five runs of `rounds` calls of `run`, in nanoseconds per node: the machine the
/// tests run on is often shared, and the minimum is the least disturbed figure.
fn best_per_node(rounds: u32, nodes: u32, mut run: impl FnMut()) -> f64 {
    (0..5)
        .map(|_| {
            let start = std::time::Instant::now();
            for _ in 0..rounds {
                run();
            }
            start.elapsed().as_nanos() as f64 / f64::from(rounds * nodes)
        })
        .fold(f64::INFINITY, f64::min)
}

#[test]
#[ignore = "timing; run with --release -- --ignored --nocapture"]
fn time_decide_on_ten_thousand_nodes() {
    use std::hint::black_box;

    let config = config(EXAMPLE);
    let set = SetInfo::new("s", EXAMPLE, variants());
    let batch = BatchBuilder::of(ten_thousand_nodes());
    let nodes = Nodes::new(&batch).unwrap();

    let logic = best_per_node(50, 10_000, || {
        black_box(logic::decide(&config, black_box(&nodes)));
    });
    let view = best_per_node(50, 10_000, || {
        black_box(Nodes::new(black_box(&batch)).unwrap());
    });
    let export = best_per_node(50, 10_000, || {
        let answer = wasmdaemon_plugin_sdk::decide::<Hardware>(&set, black_box(&batch));
        black_box(answer.unwrap());
    });
    eprintln!("logic::decide on a built view: {logic:.1} ns per node");
    eprintln!("Nodes::new: {view:.1} ns per node");
    eprintln!("sdk::decide (view, logic, answer): {export:.1} ns per node");
}
