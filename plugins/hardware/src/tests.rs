//! Unit tests of the `hardware` plugin's config checks and decisions, run natively.

use wasmdaemon_plugin_sdk::{Decision, Node, NodeInfo, Plugin, SetInfo, parse_config};

use crate::Hardware;
use crate::config::{Config, GpuVendor};
use crate::logic::{self, Hardware as Facts};

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

fn x86() -> Node {
    x86_with_memory(64)
}

fn x86_with_memory(gibibytes: i64) -> Node {
    Node::named("x86")
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
    let graviton = Node::named("arm").with_label("kubernetes.io/arch", "arm64");
    let big = x86_with_memory(512);
    let burstable = x86().with_label("node.kubernetes.io/instance-type", "t3.large");
    let plain = x86();
    let decisions = logic::decide(&config, &[a100, t4, mi300, graviton, big, burstable, plain]);
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
    assert_eq!(logic::decide_node(&skip, &x86()), Decision::skip("not arm"));
    let large = config(r#"{"rules": [], "default": {"variant": "large"}}"#);
    assert_eq!(
        logic::decide_node(&large, &x86()),
        Decision::variant("large")
    );
}

#[test]
fn gpu_counts_prefer_feature_discovery_then_capacity_then_presence_labels() {
    let labelled = x86()
        .with_label("nvidia.com/gpu.count", "4")
        .with_capacity("nvidia.com/gpu", 8_000);
    assert_eq!(Facts::of(&labelled).gpus(GpuVendor::Nvidia), 4);
    let from_capacity = x86().with_capacity("nvidia.com/gpu", 2_000);
    assert_eq!(Facts::of(&from_capacity).gpus(GpuVendor::Nvidia), 2);
    let from_allocatable = x86().with_allocatable("amd.com/gpu", 3_000);
    assert_eq!(Facts::of(&from_allocatable).gpus(GpuVendor::Amd), 3);
    let from_pci = x86().with_label("feature.node.kubernetes.io/pci-0302_10de.present", "true");
    assert_eq!(Facts::of(&from_pci).gpus(GpuVendor::Nvidia), 1);
    let gke = x86().with_label("cloud.google.com/gke-accelerator", "nvidia-tesla-t4");
    assert_eq!(Facts::of(&gke).gpus(GpuVendor::Nvidia), 1);
    let intel = x86().with_label("feature.node.kubernetes.io/pci-0300_8086.present", "true");
    assert_eq!(Facts::of(&intel).gpus(GpuVendor::Intel), 1);
    assert_eq!(Facts::of(&intel).gpus(GpuVendor::Any), 1);
    assert_eq!(Facts::of(&x86()).gpus(GpuVendor::Any), 0);
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
        logic::decide(&config, &[none, two, one]),
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
    let info = NodeInfo {
        architecture: "arm64".into(),
        operating_system: "linux".into(),
        kernel_version: String::new(),
        container_runtime_version: String::new(),
        kubelet_version: String::new(),
        os_image: String::new(),
    };
    let node = Node::named("n").with_info(info);
    assert_eq!(logic::decide_node(&config, &node), Decision::variant("arm"));
    assert_eq!(
        logic::decide_node(&config, &Node::named("bare")),
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
    let nodes = [x86_with_memory(300), x86()];
    let decisions = wasmdaemon_plugin_sdk::decide::<Hardware>(&set, &nodes).unwrap();
    assert_eq!(
        decisions,
        vec![Decision::variant("large"), Decision::plain()]
    );
    let broken = SetInfo::new("s", r#"{"rules": [{"variant": "gone"}]}"#, variants());
    assert!(wasmdaemon_plugin_sdk::decide::<Hardware>(&broken, &nodes).is_err());
}
