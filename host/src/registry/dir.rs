//! Keeps a [`PluginStore`] in step with a directory of `<name>.wasm` files by polling it.
//!
//! Polling a stat of each file is cheap and sees every way a file can change: written in
//! place, replaced by rename, deleted, or, in a Kubernetes ConfigMap volume, re-pointed when
//! the `..data` symlink is swapped to a new timestamped directory. A file is read and hashed
//! only when its fingerprint (size, mtime, inode, resolved path) changed, and offered to the
//! store only when its digest changed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use super::store::{FailureKind, PluginStore, Source, SwapFailure};
use crate::plugin::digest_of;

/// The default time between two scans.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// What identifies one state of a file without reading it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fingerprint {
    len: u64,
    modified: Option<SystemTime>,
    inode: u64,
    device: u64,
    target: Option<PathBuf>,
}

impl Fingerprint {
    fn of(path: &Path) -> std::io::Result<Option<Self>> {
        let meta = std::fs::metadata(path)?;
        if !meta.is_file() {
            return Ok(None);
        }
        #[cfg(unix)]
        let (inode, device) = {
            use std::os::unix::fs::MetadataExt;
            (meta.ino(), meta.dev())
        };
        #[cfg(not(unix))]
        let (inode, device) = (0, 0);
        Ok(Some(Self {
            len: meta.len(),
            modified: meta.modified().ok(),
            inode,
            device,
            target: std::fs::canonicalize(path).ok(),
        }))
    }
}

struct Seen {
    fingerprint: Fingerprint,
    digest: Option<String>,
}

/// One directory's view: what each file looked like at the last scan.
pub struct DirScanner {
    dir: PathBuf,
    seen: HashMap<String, Seen>,
    dir_unreadable: bool,
}

impl DirScanner {
    pub fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            seen: HashMap::new(),
            dir_unreadable: false,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Offers every new or changed file to `store`, removes plugins whose file is gone, and
    /// retries versions refused for a set's config ([`PluginStore::retry_refused`]). Returns
    /// how many plugins were offered or removed.
    ///
    /// An unreadable directory changes nothing (a volume being remounted must not look like
    /// every plugin deleted); it is logged once.
    pub fn scan(&mut self, store: &PluginStore) -> usize {
        let files = match self.list() {
            Ok(files) => {
                self.dir_unreadable = false;
                files
            }
            Err(error) => {
                if !self.dir_unreadable {
                    tracing::warn!(dir = %self.dir.display(), %error,
                        "failed to read the plugin directory");
                }
                self.dir_unreadable = true;
                return 0;
            }
        };

        let mut changes = 0;
        for (name, path) in &files {
            if self.visit(store, name, path) {
                changes += 1;
            }
        }

        let gone: Vec<String> = self
            .seen
            .keys()
            .filter(|name| !files.contains_key(*name))
            .cloned()
            .collect();
        for name in gone {
            self.seen.remove(&name);
            store.remove(&name, &Source::File(self.path_of(&name)));
            changes += 1;
        }
        changes + store.retry_refused()
    }

    /// `<name>.wasm` entries whose target is a regular file, by plugin name. Hidden entries
    /// (`..data`, `..2024_…`, editors' temporary files) are skipped.
    fn list(&self) -> std::io::Result<HashMap<String, PathBuf>> {
        let mut files = HashMap::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            let file_name = entry.file_name();
            let Some(file_name) = file_name.to_str() else {
                continue;
            };
            let Some(name) = file_name.strip_suffix(".wasm") else {
                continue;
            };
            if name.is_empty() || name.starts_with('.') {
                continue;
            }
            let path = entry.path();
            if std::fs::metadata(&path).is_ok_and(|m| m.is_file()) {
                files.insert(name.to_string(), path);
            }
        }
        Ok(files)
    }

    fn path_of(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.wasm"))
    }

    /// Reads, hashes and offers one file if its fingerprint changed; true when offered.
    fn visit(&mut self, store: &PluginStore, name: &str, path: &Path) -> bool {
        let Ok(Some(before)) = Fingerprint::of(path) else {
            return false;
        };
        if self.seen.get(name).is_some_and(|s| s.fingerprint == before) {
            return false;
        }

        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return false,
            Err(error) => {
                store.report(SwapFailure {
                    plugin: name.to_string(),
                    source: Source::File(path.to_path_buf()),
                    digest: None,
                    kind: FailureKind::Read,
                    message: format!("failed to read {}: {error}", path.display()),
                    sets: Vec::new(),
                });
                self.seen.insert(
                    name.to_string(),
                    Seen {
                        fingerprint: before,
                        digest: None,
                    },
                );
                return true;
            }
        };
        // A file still being written looks different after the read; take it next scan.
        if Fingerprint::of(path).ok().flatten().as_ref() != Some(&before) {
            return false;
        }

        let digest = digest_of(&bytes);
        let previous = self.seen.insert(
            name.to_string(),
            Seen {
                fingerprint: before,
                digest: Some(digest.clone()),
            },
        );
        if previous.is_some_and(|p| p.digest.as_deref() == Some(digest.as_str())) {
            return false;
        }
        let _ = store.offer(name, Source::File(path.to_path_buf()), &bytes);
        true
    }
}

/// A thread scanning a directory until dropped.
pub struct DirWatch {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl DirWatch {
    /// Scans `dir` once before returning, so plugins present at start-up are loaded before
    /// anything plans with them, then every `interval` on a thread of its own.
    ///
    /// # Errors
    ///
    /// When the thread cannot be started.
    pub fn start(
        store: Arc<PluginStore>,
        dir: PathBuf,
        interval: Duration,
    ) -> std::io::Result<Self> {
        let mut scanner = DirScanner::new(dir);
        scanner.scan(&store);

        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::Builder::new()
            .name("plugin-dir".into())
            .spawn(move || {
                while !stopped.load(Ordering::Relaxed) {
                    std::thread::park_timeout(interval);
                    if stopped.load(Ordering::Relaxed) {
                        break;
                    }
                    scanner.scan(&store);
                }
            })?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for DirWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}
