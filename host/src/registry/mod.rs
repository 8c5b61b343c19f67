//! Finds plugins by name: the stock plugins built into the binary, then user plugins, either
//! read from a directory on each load or kept current by a live [`PluginStore`].

pub mod configmap;
pub mod dir;
pub mod sets;
mod store;

pub use store::{
    FailureKind, PluginEvent, PluginStatus, PluginStore, SetUse, Source, SwapFailure, SwapMetrics,
};

use std::path::{Path, PathBuf};
use std::sync::Arc;

use thiserror::Error;

use crate::plugin::{LoadedPlugin, PluginEngine, PluginError};

/// The plugins shipped inside the binary, by name.
pub const STOCK: &[(&str, &[u8])] = &[
    (
        "hardware",
        include_bytes!(env!("WASMDAEMON_PLUGIN_HARDWARE")),
    ),
    (
        "label-rules",
        include_bytes!(env!("WASMDAEMON_PLUGIN_LABEL_RULES")),
    ),
];

/// A plugin name that could not be turned into a usable plugin.
#[derive(Debug, Error)]
pub enum RegistryError {
    #[error("unknown plugin {name:?}: not a stock plugin ({stock}){searched}")]
    Unknown {
        name: String,
        stock: String,
        searched: String,
    },

    #[error(
        "plugin {name:?} in {path} has the name of a stock plugin; rename the file, or allow \
         stock plugins to be overridden"
    )]
    ShadowsStock { name: String, path: PathBuf },

    #[error("invalid plugin name {0:?}: use lower-case letters, digits and '-'")]
    InvalidName(String),

    #[error("failed to read plugin {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error(transparent)]
    Plugin(#[from] PluginError),

    #[error("plugin {name:?} has digest {actual} but the set pins {pinned}")]
    DigestMismatch {
        name: String,
        actual: String,
        pinned: String,
    },
}

/// Resolves plugin names for one engine.
pub struct Registry {
    engine: PluginEngine,
    dir: Option<PathBuf>,
    allow_shadowing: bool,
    live: Option<Arc<PluginStore>>,
}

impl Registry {
    pub fn new(engine: PluginEngine, dir: Option<PathBuf>) -> Self {
        Self {
            engine,
            dir,
            allow_shadowing: false,
            live: None,
        }
    }

    /// Resolves names through a live store: its current user versions, then the stock plugins.
    pub fn live(store: Arc<PluginStore>) -> Self {
        Self {
            engine: store.engine().clone(),
            dir: None,
            allow_shadowing: false,
            live: Some(store),
        }
    }

    /// The live store behind this registry, if it has one.
    pub fn store(&self) -> Option<&Arc<PluginStore>> {
        self.live.as_ref()
    }

    /// Lets a plugin in the directory replace a stock plugin of the same name.
    pub fn allow_shadowing(mut self, allow: bool) -> Self {
        self.allow_shadowing = allow;
        self
    }

    pub fn engine(&self) -> &PluginEngine {
        &self.engine
    }

    /// Loads plugin `name`, checking the digest pin when one is given.
    pub fn load(
        &self,
        name: &str,
        pinned: Option<&str>,
    ) -> Result<Arc<LoadedPlugin>, RegistryError> {
        if let Some(store) = &self.live {
            return store.get(name, pinned);
        }
        if !valid_name(name) {
            return Err(RegistryError::InvalidName(name.to_string()));
        }

        let stock = STOCK
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, bytes)| *bytes);
        let file = self.dir.as_deref().map(|d| d.join(format!("{name}.wasm")));
        let file = file.filter(|f| f.is_file());

        let loaded = match (stock, file) {
            (Some(_), Some(path)) if !self.allow_shadowing => {
                return Err(RegistryError::ShadowsStock {
                    name: name.to_string(),
                    path,
                });
            }
            (_, Some(path)) => {
                let bytes = read(&path)?;
                self.engine.load(name, &bytes)?
            }
            (Some(bytes), None) => self.engine.load(name, bytes)?,
            (None, None) => {
                return Err(RegistryError::Unknown {
                    name: name.to_string(),
                    stock: STOCK.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", "),
                    searched: match &self.dir {
                        Some(dir) => format!(" and no {name}.wasm in {}", dir.display()),
                        None => " and no --plugin-dir given".to_string(),
                    },
                });
            }
        };

        if let Some(pinned) = pinned
            && pinned != loaded.digest
        {
            return Err(RegistryError::DigestMismatch {
                name: name.to_string(),
                actual: loaded.digest.clone(),
                pinned: pinned.to_string(),
            });
        }
        Ok(loaded)
    }
}

/// Lower-case letters, digits and `-`, 1 to 63 bytes.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn read(path: &Path) -> Result<Vec<u8>, RegistryError> {
    std::fs::read(path).map_err(|source| RegistryError::Read {
        path: path.to_path_buf(),
        source,
    })
}
