//! Reading a node's hardware and picking the first matching rule; plain Rust, no WebAssembly.

use wasmdaemon_plugin_sdk::{Decision, KeySlots, NodeRef, Nodes};

use crate::config::{Config, GpuVendor, When};

/// Labels the plugin reads. The host sends only these (see `describe`). [`Hardware::of`]
/// dispatches on the position of a key in this list.
pub const LABELS: &[&str] = &[
    ARCH_LABEL,
    OS_LABEL,
    INSTANCE_TYPE_LABEL,
    "nvidia.com/gpu.count",
    "nvidia.com/gpu.product",
    "nvidia.com/gpu.present",
    "amd.com/gpu.product-name",
    GKE_ACCELERATOR_LABEL,
    "feature.node.kubernetes.io/pci-10de.present",
    "feature.node.kubernetes.io/pci-0300_10de.present",
    "feature.node.kubernetes.io/pci-0302_10de.present",
    "feature.node.kubernetes.io/pci-1002.present",
    "feature.node.kubernetes.io/pci-0300_1002.present",
    "feature.node.kubernetes.io/pci-0380_1002.present",
    "feature.node.kubernetes.io/pci-0300_8086.present",
    "feature.node.kubernetes.io/pci-0380_8086.present",
];

/// Resources the plugin reads from capacity (or allocatable when capacity lacks them), in the
/// order [`Hardware::of`] dispatches on.
pub const RESOURCES: &[&str] = &[
    "cpu",
    "memory",
    NVIDIA_GPU,
    AMD_GPU,
    INTEL_GPU_I915,
    INTEL_GPU_XE,
];

const ARCH_LABEL: &str = "kubernetes.io/arch";
const OS_LABEL: &str = "kubernetes.io/os";
const INSTANCE_TYPE_LABEL: &str = "node.kubernetes.io/instance-type";
const GKE_ACCELERATOR_LABEL: &str = "cloud.google.com/gke-accelerator";
const NVIDIA_GPU: &str = "nvidia.com/gpu";
const AMD_GPU: &str = "amd.com/gpu";
const INTEL_GPU_I915: &str = "gpu.intel.com/i915";
const INTEL_GPU_XE: &str = "gpu.intel.com/xe";

const NVIDIA: usize = 0;
const AMD: usize = 1;
const INTEL: usize = 2;

/// What the plugin knows about one node's hardware.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hardware<'a> {
    /// GPUs per vendor: NVIDIA, AMD, Intel.
    pub gpus: [u32; 3],
    /// `nvidia.com/gpu.product`.
    pub nvidia_product: Option<&'a str>,
    /// `amd.com/gpu.product-name`.
    pub amd_product: Option<&'a str>,
    /// `kubernetes.io/arch`, else `nodeInfo.architecture`.
    pub arch: Option<&'a str>,
    /// `kubernetes.io/os`, else `nodeInfo.operatingSystem`.
    pub os: Option<&'a str>,
    /// `node.kubernetes.io/instance-type`.
    pub instance_type: Option<&'a str>,
    /// Memory capacity in thousandths of a byte.
    pub memory: Option<i64>,
    /// CPU capacity in thousandths of a CPU.
    pub cpu: Option<i64>,
}

/// Positions in [`LABELS`].
mod label {
    pub const ARCH: usize = 0;
    pub const OS: usize = 1;
    pub const INSTANCE_TYPE: usize = 2;
    pub const NVIDIA_COUNT: usize = 3;
    pub const NVIDIA_PRODUCT: usize = 4;
    pub const NVIDIA_PRESENT: usize = 5;
    pub const AMD_PRODUCT: usize = 6;
    pub const GKE_ACCELERATOR: usize = 7;
    pub const NVIDIA_PCI: std::ops::RangeInclusive<usize> = 8..=10;
    pub const AMD_PCI: std::ops::RangeInclusive<usize> = 11..=13;
    pub const INTEL_PCI: std::ops::RangeInclusive<usize> = 14..=15;
}

/// Positions in [`RESOURCES`].
mod resource {
    pub const CPU: usize = 0;
    pub const MEMORY: usize = 1;
    pub const NVIDIA: usize = 2;
    pub const AMD: usize = 3;
    pub const INTEL: std::ops::RangeInclusive<usize> = 4..=5;
}

/// The keys the plugin reads, resolved once per batch so that reading a node compares integers.
pub struct Keys {
    labels: KeySlots,
    resources: KeySlots,
}

impl Keys {
    /// Resolves [`LABELS`] and [`RESOURCES`] against a batch.
    pub fn of(nodes: &Nodes<'_>) -> Self {
        Keys {
            labels: nodes.key_slots(LABELS),
            resources: nodes.key_slots(RESOURCES),
        }
    }
}

impl<'a> Hardware<'a> {
    /// Reads a node's hardware from its labels and resources in one pass over each.
    ///
    /// A vendor's GPU count is, in order of preference: the physical count from GPU feature
    /// discovery (`nvidia.com/gpu.count`), the extended resource in capacity (else allocatable),
    /// or one when only a presence label (product, `gpu.present`, GKE's accelerator label, a PCI
    /// label from node feature discovery) shows the vendor.
    pub fn of(node: NodeRef<'a>, keys: &Keys) -> Self {
        let mut hardware = Hardware::default();
        let mut counted = [None::<u32>; 3];
        let mut present = [false; 3];
        for (key, value) in node.label_keys() {
            let Some(slot) = keys.labels.slot(key) else {
                continue;
            };
            match slot {
                label::ARCH => hardware.arch = Some(value),
                label::OS => hardware.os = Some(value),
                label::INSTANCE_TYPE => hardware.instance_type = Some(value),
                label::NVIDIA_COUNT => counted[NVIDIA] = value.parse().ok(),
                label::NVIDIA_PRODUCT => {
                    hardware.nvidia_product = Some(value);
                    present[NVIDIA] = true;
                }
                label::AMD_PRODUCT => {
                    hardware.amd_product = Some(value);
                    present[AMD] = true;
                }
                label::GKE_ACCELERATOR => present[NVIDIA] |= value.starts_with("nvidia-"),
                label::NVIDIA_PRESENT => present[NVIDIA] |= value == "true",
                slot if label::NVIDIA_PCI.contains(&slot) => present[NVIDIA] |= value == "true",
                slot if label::AMD_PCI.contains(&slot) => present[AMD] |= value == "true",
                slot if label::INTEL_PCI.contains(&slot) => present[INTEL] |= value == "true",
                _ => {}
            }
        }
        if hardware.arch.is_none() || hardware.os.is_none() {
            let info = node.info();
            let nonempty = |text: &'a str| Some(text).filter(|text| !text.is_empty());
            hardware.arch = hardware
                .arch
                .or(info.and_then(|i| nonempty(i.architecture)));
            hardware.os = hardware
                .os
                .or(info.and_then(|i| nonempty(i.operating_system)));
        }

        let mut extended = [None::<i64>; 3];
        for (key, milli_value) in node.amount_keys() {
            let slot = match keys.resources.slot(key) {
                Some(resource::MEMORY) => &mut hardware.memory,
                Some(resource::CPU) => &mut hardware.cpu,
                Some(resource::NVIDIA) => &mut extended[NVIDIA],
                Some(resource::AMD) => &mut extended[AMD],
                Some(slot) if resource::INTEL.contains(&slot) => &mut extended[INTEL],
                _ => continue,
            };
            // Capacity comes first, so allocatable only fills what capacity left out.
            slot.get_or_insert(milli_value);
        }

        for vendor in [NVIDIA, AMD, INTEL] {
            let from_resource = extended[vendor]
                .filter(|milli| *milli > 0)
                .map(|milli| u32::try_from(milli / 1000).unwrap_or(u32::MAX));
            hardware.gpus[vendor] = counted[vendor]
                .or(from_resource)
                .unwrap_or(u32::from(present[vendor]));
        }
        hardware
    }

    /// GPUs of a vendor, or of all vendors for [`GpuVendor::Any`].
    pub fn gpus(&self, vendor: GpuVendor) -> u32 {
        match vendor {
            GpuVendor::Nvidia => self.gpus[NVIDIA],
            GpuVendor::Amd => self.gpus[AMD],
            GpuVendor::Intel => self.gpus[INTEL],
            GpuVendor::Any => self
                .gpus
                .iter()
                .fold(0, |sum, count| sum.saturating_add(*count)),
        }
    }

    /// Whether every condition of `when` holds.
    pub fn matches(&self, when: &When) -> bool {
        let vendor = when.gpu_vendor.unwrap_or(GpuVendor::Any);
        let gpus = self.gpus(vendor);
        if when.gpu_vendor.is_some() && gpus == 0 {
            return false;
        }
        if when.min_gpus.is_some_and(|min| gpus < min)
            || when.max_gpus.is_some_and(|max| gpus > max)
        {
            return false;
        }
        if let Some(patterns) = &when.gpu_product {
            let products = match vendor {
                GpuVendor::Nvidia => [self.nvidia_product, None],
                GpuVendor::Amd => [self.amd_product, None],
                GpuVendor::Intel => [None, None],
                GpuVendor::Any => [self.nvidia_product, self.amd_product],
            };
            let found = products.into_iter().flatten().any(|product| {
                patterns
                    .iter()
                    .any(|pattern| pattern_matches(pattern, product))
            });
            if !found {
                return false;
            }
        }
        if let Some(allowed) = &when.arch
            && !self.arch.is_some_and(|arch| allowed.contains(arch))
        {
            return false;
        }
        if let Some(allowed) = &when.os
            && !self.os.is_some_and(|os| allowed.contains(os))
        {
            return false;
        }
        if let Some(patterns) = &when.instance_type
            && !self.instance_type.is_some_and(|kind| {
                patterns
                    .iter()
                    .any(|pattern| pattern_matches(pattern, kind))
            })
        {
            return false;
        }
        within(
            self.memory,
            when.min_memory.as_ref(),
            when.max_memory.as_ref(),
        ) && within(self.cpu, when.min_cpu.as_ref(), when.max_cpu.as_ref())
    }
}

fn within(
    amount: Option<i64>,
    min: Option<&wasmdaemon_plugin_sdk::Quantity>,
    max: Option<&wasmdaemon_plugin_sdk::Quantity>,
) -> bool {
    if min.is_none() && max.is_none() {
        return true;
    }
    // A node that does not report the amount matches no bound on it.
    let Some(amount) = amount else { return false };
    min.is_none_or(|min| amount >= min.milli_value())
        && max.is_none_or(|max| amount <= max.milli_value())
}

/// `pattern` equals `value`, or ends in `*` and the rest is a prefix of `value`.
pub fn pattern_matches(pattern: &str, value: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => value.starts_with(prefix.trim_end_matches('*')),
        None => pattern == value,
    }
}

/// Decides one node: the first matching rule's outcome, else the config's default.
pub fn decide_node<'c>(config: &'c Config, node: NodeRef<'_>, keys: &Keys) -> Decision<'c> {
    let hardware = Hardware::of(node, keys);
    match config
        .rules
        .iter()
        .find(|rule| hardware.matches(&rule.when))
    {
        Some(rule) => rule.decision(),
        None => config.default.decision(),
    }
}

/// Decides a batch: one decision per node, in order. The decisions borrow their names and
/// reasons from the config.
pub fn decide<'c>(config: &'c Config, nodes: &Nodes<'_>) -> Vec<Decision<'c>> {
    let keys = Keys::of(nodes);
    nodes
        .iter()
        .map(|node| decide_node(config, node, &keys))
        .collect()
}
