//! Compiled plugins kept on disk, so a restarted host does not compile the same component again.
//!
//! One file per component digest and engine configuration:
//! `<component sha256>-<engine hash>.cwasm` holding a header, the sha256 of the serialized
//! artifact, and the artifact. A file is only deserialized when its name matches this engine's
//! [`Engine::precompile_compatibility_hash`] and its stored sha256 matches its content; anything
//! else is deleted and compiled again.
//!
//! Files are never pruned: versions no longer used and files of other engine configurations
//! stay until someone empties the directory, one compiled plugin each. Pruning by age would be
//! the fix once deployments swap plugins often.

use std::hash::Hasher;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};
use thiserror::Error;
use wasmtime::Engine;
use wasmtime::component::Component;

/// The first bytes of every cache file; bumped when the layout changes.
const MAGIC: &[u8; 8] = b"WDCWASM1";
const HEADER_LEN: usize = MAGIC.len() + 32;

/// Why the cache directory cannot be used.
#[derive(Debug, Error)]
pub enum CacheError {
    #[error("failed to create cache directory {path}: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("cache directory {0} is writable by other users; refusing to load code from it")]
    Shared(PathBuf),
}

/// A directory of compiled components owned by this host.
#[derive(Debug)]
pub struct DiskCache {
    dir: PathBuf,
    engine_key: String,
    hits: AtomicU64,
    rejected: AtomicU64,
}

/// How often the cache served or refused a compiled component.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Components deserialized from disk instead of compiled.
    pub hits: u64,
    /// Files found but not trusted (corrupted, truncated, or refused by wasmtime); each was
    /// deleted and its component compiled again.
    pub rejected: u64,
}

impl DiskCache {
    /// Opens (creating, mode 0700 on Unix) `dir` for compiled components of `engine`.
    ///
    /// # Errors
    ///
    /// When the directory cannot be created, or when other users may write to it: a file they
    /// planted there would be run as native code.
    pub fn open(dir: &Path, engine: &Engine) -> Result<Self, CacheError> {
        create_private_dir(dir).map_err(|source| CacheError::Create {
            path: dir.to_path_buf(),
            source,
        })?;
        if shared(dir) {
            return Err(CacheError::Shared(dir.to_path_buf()));
        }

        let mut hasher = ShaHasher(Sha256::new());
        std::hash::Hash::hash(&engine.precompile_compatibility_hash(), &mut hasher);
        let engine_key = hex::encode(&hasher.0.finalize()[..8]);
        Ok(Self {
            dir: dir.to_path_buf(),
            engine_key,
            hits: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
        })
    }

    /// The default directory: `$XDG_CACHE_HOME/wasmdaemon`, else `/var/cache/wasmdaemon` when
    /// it can be created, else `wasmdaemon` in the system temporary directory.
    pub fn default_dir() -> PathBuf {
        if let Some(xdg) = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
            return PathBuf::from(xdg).join("wasmdaemon");
        }
        let system = PathBuf::from("/var/cache/wasmdaemon");
        if create_private_dir(&system).is_ok() {
            return system;
        }
        std::env::temp_dir().join("wasmdaemon")
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
        }
    }

    /// Where the component with `digest` (`sha256:<hex>`) is kept for this engine.
    pub fn path(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        self.dir.join(format!("{hex}-{}.cwasm", self.engine_key))
    }

    /// The compiled component for `digest`, if a trustworthy one is on disk.
    pub fn get(&self, engine: &Engine, digest: &str) -> Option<Component> {
        let path = self.path(digest);
        let file = std::fs::read(&path).ok()?;
        let Some(artifact) = verified_artifact(&file) else {
            self.reject(&path, "checksum mismatch");
            return None;
        };
        match deserialize(engine, artifact) {
            Ok(component) => {
                self.hits.fetch_add(1, Ordering::Relaxed);
                Some(component)
            }
            Err(error) => {
                self.reject(&path, &format!("{error:#}"));
                None
            }
        }
    }

    /// Stores a compiled component. Failing to is logged, never fatal: the component is
    /// already compiled in memory.
    pub fn put(&self, digest: &str, component: &Component) {
        let path = self.path(digest);
        let result = component
            .serialize()
            .map_err(|e| std::io::Error::other(format!("{e:#}")))
            .and_then(|artifact| write_atomically(&self.dir, &path, &artifact));
        if let Err(error) = result {
            tracing::warn!(path = %path.display(), %error, "failed to write compiled plugin");
        }
    }

    fn reject(&self, path: &Path, why: &str) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(path = %path.display(), why, "compiled plugin cache file not trusted");
        let _ = std::fs::remove_file(path);
    }
}

/// The artifact inside a cache file, when the header and checksum are intact.
fn verified_artifact(file: &[u8]) -> Option<&[u8]> {
    if file.len() < HEADER_LEN || !file.starts_with(MAGIC) {
        return None;
    }
    let (header, artifact) = file.split_at(HEADER_LEN);
    let stored = &header[MAGIC.len()..];
    (Sha256::digest(artifact).as_slice() == stored).then_some(artifact)
}

#[expect(
    unsafe_code,
    reason = "deserializing a compiled component is unsafe by contract"
)]
fn deserialize(engine: &Engine, artifact: &[u8]) -> wasmtime::Result<Component> {
    // SAFETY: wasmtime requires that the bytes come from `Component::serialize` of a trusted
    // engine. These do: only `DiskCache::put` writes files under this name, in a directory
    // this host created with mode 0700 and refuses to use when others can write to it. The
    // file name carries this engine's `precompile_compatibility_hash` (and wasmtime checks its
    // own version and configuration in the artifact as well), and `verified_artifact` checked
    // the sha256 stored in the header against the artifact, so a truncated or corrupted file
    // never gets here.
    unsafe { Component::deserialize(engine, artifact) }
}

/// Writes header, checksum and artifact to a temporary file in `dir`, then renames it over
/// `path`, so a reader sees a whole file or none.
fn write_atomically(dir: &Path, path: &Path, artifact: &[u8]) -> std::io::Result<()> {
    let mut tmp = tempfile_in(dir)?;
    let checksum = Sha256::digest(artifact);
    tmp.1.write_all(MAGIC)?;
    tmp.1.write_all(&checksum)?;
    tmp.1.write_all(artifact)?;
    tmp.1.sync_all()?;
    drop(tmp.1);
    let renamed = std::fs::rename(&tmp.0, path);
    if renamed.is_err() {
        let _ = std::fs::remove_file(&tmp.0);
    }
    renamed
}

fn tempfile_in(dir: &Path) -> std::io::Result<(PathBuf, std::fs::File)> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let path = dir.join(format!(".tmp-{}-{n}", std::process::id()));
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)?;
    Ok((path, file))
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

#[cfg(unix)]
fn shared(dir: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(dir).is_ok_and(|m| m.permissions().mode() & 0o022 != 0)
}

#[cfg(not(unix))]
fn shared(_dir: &Path) -> bool {
    false
}

/// Feeds `Hash` input into sha256, which, unlike the std hasher, is stable across builds.
struct ShaHasher(Sha256);

impl Hasher for ShaHasher {
    fn finish(&self) -> u64 {
        let digest = self.0.clone().finalize();
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        u64::from_le_bytes(first)
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_whose_checksum_does_not_match_is_not_trusted() {
        let artifact = b"compiled".to_vec();
        let mut file = MAGIC.to_vec();
        file.extend_from_slice(&Sha256::digest(&artifact));
        file.extend_from_slice(&artifact);
        assert_eq!(verified_artifact(&file), Some(&artifact[..]));

        let last = file.len() - 1;
        file[last] ^= 1;
        assert_eq!(verified_artifact(&file), None);
        assert_eq!(verified_artifact(&file[..HEADER_LEN - 1]), None);
        assert_eq!(
            verified_artifact(b"not a cache file at all, but long enough!"),
            None
        );
    }
}
