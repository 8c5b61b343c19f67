//! The `hardware` plugin's config: ordered rules over node hardware, and what unmatched nodes get.

use serde::Deserialize;
use wasmdaemon_plugin_sdk::config::{Outcome, Problems, check_outcome, outcome_decision};
use wasmdaemon_plugin_sdk::{Decision, Quantity, StringList};

/// `spec.policy.config` of a set placed by the `hardware` plugin.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Config {
    /// Checked in order; the first rule whose `when` matches decides the node.
    pub rules: Vec<Rule>,
    /// What a node that no rule matches gets; the plain template when absent.
    #[serde(default)]
    pub default: Outcome,
}

/// One rule: conditions, and the outcome when all of them hold.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Rule {
    /// Every condition given must hold; an empty `when` matches every node.
    #[serde(default)]
    pub when: When,
    /// Run this variant on a matching node.
    pub variant: Option<String>,
    /// Skip a matching node, with this reason.
    pub skip: Option<String>,
}

/// A GPU vendor the plugin recognises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum GpuVendor {
    /// NVIDIA (`nvidia.com/gpu`, GPU feature discovery labels, PCI vendor 10de).
    Nvidia,
    /// AMD (`amd.com/gpu`, AMD node labeller labels, PCI vendor 1002).
    Amd,
    /// Intel (`gpu.intel.com/i915`, `gpu.intel.com/xe`, PCI display class with vendor 8086).
    Intel,
    /// A GPU of any of the vendors above.
    Any,
}

/// The conditions of a rule; all that are given must hold.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct When {
    /// The node has at least one GPU of this vendor; GPU counts below count only this vendor.
    pub gpu_vendor: Option<GpuVendor>,
    /// At least this many GPUs.
    pub min_gpus: Option<u32>,
    /// At most this many GPUs.
    pub max_gpus: Option<u32>,
    /// The GPU product label matches one of these; a trailing `*` matches any rest.
    pub gpu_product: Option<StringList>,
    /// The architecture (`kubernetes.io/arch`) is one of these.
    pub arch: Option<StringList>,
    /// The operating system (`kubernetes.io/os`) is one of these.
    pub os: Option<StringList>,
    /// The instance type (`node.kubernetes.io/instance-type`) matches one of these; a trailing
    /// `*` matches any rest.
    pub instance_type: Option<StringList>,
    /// Memory capacity at least this.
    pub min_memory: Option<Quantity>,
    /// Memory capacity at most this.
    pub max_memory: Option<Quantity>,
    /// CPU capacity at least this.
    pub min_cpu: Option<Quantity>,
    /// CPU capacity at most this.
    pub max_cpu: Option<Quantity>,
}

impl Rule {
    /// The decision this rule gives a matching node.
    pub fn decision(&self) -> Decision<'_> {
        outcome_decision(self.variant.as_deref(), self.skip.as_deref())
    }
}

impl Config {
    /// Checks what parsing cannot: outcomes, ranges, patterns, and variant names against the
    /// set's declared variants. Lists every problem, each with its field path.
    pub fn check(&self, variants: &[String]) -> Result<(), String> {
        let mut problems = Problems::new();
        for (index, rule) in self.rules.iter().enumerate() {
            let path = format!("rules[{index}]");
            check_outcome(
                &mut problems,
                &path,
                rule.variant.as_deref(),
                rule.skip.as_deref(),
                variants,
            );
            check_when(&mut problems, &format!("{path}.when"), &rule.when);
        }
        self.default.check(&mut problems, "default", variants);
        problems.finish()
    }
}

fn check_when(problems: &mut Problems, path: &str, when: &When) {
    if let (Some(min), Some(max)) = (when.min_gpus, when.max_gpus)
        && min > max
    {
        problems.add(
            path,
            format!("minGpus ({min}) is greater than maxGpus ({max})"),
        );
    }
    if when.gpu_vendor.is_some() && when.max_gpus == Some(0) {
        problems.add(
            format!("{path}.maxGpus"),
            "gpuVendor needs at least one GPU, so maxGpus 0 never matches; drop gpuVendor to \
             match nodes without GPUs",
        );
    }
    for (name, min, max) in [
        ("Memory", &when.min_memory, &when.max_memory),
        ("Cpu", &when.min_cpu, &when.max_cpu),
    ] {
        if let (Some(min), Some(max)) = (min, max)
            && min.milli_value() > max.milli_value()
        {
            problems.add(
                path,
                format!("min{name} ({min}) is greater than max{name} ({max})"),
            );
        }
    }
    for (name, list) in [("arch", &when.arch), ("os", &when.os)] {
        if list.as_ref().is_some_and(StringList::is_empty) {
            problems.add(
                format!("{path}.{name}"),
                "the list is empty, so it never matches",
            );
        }
    }
    for (name, list) in [
        ("gpuProduct", &when.gpu_product),
        ("instanceType", &when.instance_type),
    ] {
        let Some(list) = list else { continue };
        if list.is_empty() {
            problems.add(
                format!("{path}.{name}"),
                "the list is empty, so it never matches",
            );
        }
        for (index, pattern) in list.iter().enumerate() {
            if pattern.trim_end_matches('*').contains('*') {
                problems.add(
                    format!("{path}.{name}[{index}]"),
                    format!("`{pattern}`: only a single trailing `*` is supported"),
                );
            }
        }
    }
    if when.gpu_vendor == Some(GpuVendor::Intel) && when.gpu_product.is_some() {
        problems.add(
            format!("{path}.gpuProduct"),
            "Intel GPUs carry no product label the plugin reads; gpuProduct works for nvidia \
             and amd",
        );
    }
}
