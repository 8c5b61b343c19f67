//! The sandboxed plugin runtime: WIT bindings, engine, limits and node projection.

pub mod cache;
mod engine;
mod error;
mod output;
mod projection;

pub use engine::{Limits, LoadStage, LoadedPlugin, PluginDecision, PluginEngine, digest_of};
pub use error::PluginError;
pub use projection::{Projection, SharedBatches, key_of};

/// Host-side bindings of `wit/placement.wit`.
pub mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "plugin",
        additional_derives: [PartialEq, Eq, Hash],
    });

    pub use self::wasmdaemon::placement::types::*;
}
