//! Fixtures shared by the benchmarks.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Node;

/// A node as a kubelet, NFD and GPU feature discovery would label it: 21 labels or more.
pub fn realistic_node(i: usize) -> Node {
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
