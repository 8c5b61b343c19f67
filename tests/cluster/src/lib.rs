//! An in-process Kubernetes API server, a simulated scheduler and kubelet, and test helpers.

mod cluster;
mod faults;
mod patch;
mod resources;
mod selectors;
mod server;
mod status;
mod store;

pub use cluster::{ClusterError, TestCluster};
pub use faults::{Fault, RequestMatch};
pub use server::ServerOptions;
pub use status::ApiError;
