//! wasmdaemon: a DaemonSet controller whose placement is decided by WebAssembly plugins.

pub mod controller;
pub mod crd;
pub mod input;
pub mod node_table;
pub mod planner;
pub mod plugin;
pub mod predicates;
pub mod quantity;
pub mod registry;
pub mod render;
pub mod selector;
pub mod simulate;
pub mod telemetry;
