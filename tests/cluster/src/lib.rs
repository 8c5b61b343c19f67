//! An in-process Kubernetes API server, a simulated scheduler and kubelet, and test utilities.

mod cluster;
mod env;
mod faults;
mod kubelet;
mod nodes;
mod patch;
mod resources;
mod scheduler;
mod selectors;
mod server;
mod status;
mod store;
mod wait;

pub use cluster::{ClusterError, TestCluster};
pub use env::{EnvError, KUBECONFIG_ENV, TestEnv};
pub use faults::{Fault, RequestMatch};
pub use kubelet::{Kubelet, KubeletConfig, PodFate};
pub use nodes::NodeShape;
pub use scheduler::{Scheduler, fits};
pub use server::ServerOptions;
pub use status::ApiError;
pub use wait::{POLL_INTERVAL, Probe, WaitTimeout, wait_until};
