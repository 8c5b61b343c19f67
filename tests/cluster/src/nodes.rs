//! `NodeShape`: a builder for Node objects of a given hardware shape.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, NodeSpec, NodeStatus, NodeSystemInfo, Taint};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// The hardware and labels of a simulated node.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeShape {
    cpu: String,
    memory: String,
    arch: String,
    os: String,
    max_pods: u32,
    gpu: Option<(String, u32)>,
    labels: BTreeMap<String, String>,
    taints: Vec<Taint>,
}

impl Default for NodeShape {
    fn default() -> Self {
        Self {
            cpu: "4".into(),
            memory: "16Gi".into(),
            arch: "amd64".into(),
            os: "linux".into(),
            max_pods: 110,
            gpu: None,
            labels: BTreeMap::new(),
            taints: Vec::new(),
        }
    }
}

/// The extended resource name and node label prefix used for a GPU vendor.
fn gpu_resource(vendor: &str) -> String {
    match vendor {
        "nvidia" => "nvidia.com/gpu".into(),
        "amd" => "amd.com/gpu".into(),
        "intel" => "gpu.intel.com/i915".into(),
        other => format!("{other}/gpu"),
    }
}

impl NodeShape {
    /// A 4 CPU, 16Gi, amd64 Linux node.
    pub fn new() -> Self {
        Self::default()
    }

    /// CPU capacity as a quantity (`"8"`, `"500m"`).
    pub fn cpu(mut self, cpu: impl Into<String>) -> Self {
        self.cpu = cpu.into();
        self
    }

    /// Memory capacity as a quantity (`"32Gi"`).
    pub fn memory(mut self, memory: impl Into<String>) -> Self {
        self.memory = memory.into();
        self
    }

    /// CPU architecture (`amd64`, `arm64`), reported in `kubernetes.io/arch`.
    pub fn arch(mut self, arch: impl Into<String>) -> Self {
        self.arch = arch.into();
        self
    }

    /// Operating system, reported in `kubernetes.io/os`.
    pub fn os(mut self, os: impl Into<String>) -> Self {
        self.os = os.into();
        self
    }

    /// Pod capacity.
    pub fn max_pods(mut self, pods: u32) -> Self {
        self.max_pods = pods;
        self
    }

    /// `count` GPUs of `vendor` (`nvidia`, `amd`, `intel`): an extended resource in capacity
    /// (`nvidia.com/gpu`, ...) plus labels `<resource>.present=true` and `<resource>.count=N`.
    pub fn gpu(mut self, vendor: impl Into<String>, count: u32) -> Self {
        self.gpu = Some((vendor.into(), count));
        self
    }

    /// An extra label.
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// A taint (`effect` is `NoSchedule`, `PreferNoSchedule` or `NoExecute`).
    pub fn taint(mut self, key: impl Into<String>, value: Option<&str>, effect: &str) -> Self {
        self.taints.push(Taint {
            key: key.into(),
            value: value.map(str::to_string),
            effect: effect.into(),
            time_added: None,
        });
        self
    }

    /// The labels a node of this shape carries.
    pub fn labels(&self, name: &str) -> BTreeMap<String, String> {
        let mut labels = BTreeMap::from([
            ("kubernetes.io/arch".to_string(), self.arch.clone()),
            ("kubernetes.io/os".to_string(), self.os.clone()),
            ("kubernetes.io/hostname".to_string(), name.to_string()),
            ("beta.kubernetes.io/arch".to_string(), self.arch.clone()),
            ("beta.kubernetes.io/os".to_string(), self.os.clone()),
        ]);
        if let Some((vendor, count)) = &self.gpu {
            let res = gpu_resource(vendor);
            labels.insert(format!("{res}.present"), "true".into());
            labels.insert(format!("{res}.count"), count.to_string());
        }
        labels.extend(self.labels.clone());
        labels
    }

    /// The status a kubelet would report for a node of this shape (without conditions).
    pub fn status(&self) -> NodeStatus {
        let mut capacity = BTreeMap::from([
            ("cpu".to_string(), Quantity(self.cpu.clone())),
            ("memory".to_string(), Quantity(self.memory.clone())),
            ("pods".to_string(), Quantity(self.max_pods.to_string())),
            ("ephemeral-storage".to_string(), Quantity("100Gi".into())),
        ]);
        if let Some((vendor, count)) = &self.gpu {
            capacity.insert(gpu_resource(vendor), Quantity(count.to_string()));
        }
        NodeStatus {
            allocatable: Some(capacity.clone()),
            capacity: Some(capacity),
            node_info: Some(NodeSystemInfo {
                architecture: self.arch.clone(),
                operating_system: self.os.clone(),
                kubelet_version: "v1.28.0-sim".into(),
                kube_proxy_version: "v1.28.0-sim".into(),
                container_runtime_version: "sim://1.0".into(),
                os_image: "Simulated".into(),
                kernel_version: "6.0.0".into(),
                boot_id: String::new(),
                machine_id: String::new(),
                system_uuid: String::new(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// A Node object of this shape.
    pub fn to_node(&self, name: &str) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(self.labels(name)),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                taints: (!self.taints.is_empty()).then(|| self.taints.clone()),
                ..Default::default()
            }),
            status: Some(self.status()),
        }
    }
}
