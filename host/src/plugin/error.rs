//! The ways a plugin call can fail, kept apart so callers can branch on them.

use std::time::Duration;

use thiserror::Error;

/// Why a plugin could not be loaded or did not produce a usable answer.
///
/// Every variant leaves the host in working order: the store that failed is dropped and the
/// next call starts from a fresh instance.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum PluginError {
    /// The bytes are not a component this host can run (bad binary, wrong world, missing
    /// exports, imports the host does not provide).
    #[error("failed to load plugin {plugin}: {message}")]
    Load { plugin: String, message: String },

    /// The call ran past its deadline and was interrupted.
    #[error("plugin {plugin} exceeded its {deadline:?} deadline")]
    DeadlineExceeded { plugin: String, deadline: Duration },

    /// The guest tried to grow its memory beyond the limit.
    #[error("plugin {plugin} hit its memory limit of {limit_bytes} bytes")]
    MemoryLimit { plugin: String, limit_bytes: usize },

    /// The guest trapped; `message` carries the trap and what the guest last wrote to stderr
    /// (a Rust panic message lands there).
    #[error("plugin {plugin} trapped: {message}")]
    Trap { plugin: String, message: String },

    /// The plugin ran to completion and returned an error of its own.
    #[error("plugin {plugin} reported an error: {message}")]
    Reported { plugin: String, message: String },

    /// The plugin answered, but the answer breaks the contract (wrong count, unknown variant,
    /// oversized strings or lists).
    #[error("plugin {plugin} returned a malformed answer: {message}")]
    Malformed { plugin: String, message: String },

    /// The host itself failed around the call.
    #[error("host failed while calling plugin {plugin}: {message}")]
    Host { plugin: String, message: String },
}

impl PluginError {
    /// A short PascalCase name of the failure kind, for conditions, events and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            PluginError::Load { .. } => "PluginLoadFailed",
            PluginError::DeadlineExceeded { .. } => "PluginDeadlineExceeded",
            PluginError::MemoryLimit { .. } => "PluginMemoryLimit",
            PluginError::Trap { .. } => "PluginTrapped",
            PluginError::Reported { .. } => "PluginReportedError",
            PluginError::Malformed { .. } => "PluginMalformedAnswer",
            PluginError::Host { .. } => "PluginHostFailure",
        }
    }
}
