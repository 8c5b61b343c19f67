//! The node watch: keeps the shared [`NodeTable`] and turns each placement-relevant change into
//! reconciles of only the sets it can affect.
//!
//! A heartbeat changes nothing a placement reads, so it does no work at all. A new or removed
//! node concerns every set. An update concerns a set when a changed part is one its placement
//! reads: a taint (tolerations are per set), a label its `nodeSelector` or required affinity
//! names, or a part its plugin declared interest in.

use std::collections::HashSet;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard};

use futures::{Stream, StreamExt, future};
use k8s_openapi::api::core::v1::Node;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use tokio::sync::watch;

use crate::crd::WasmDaemonSet;
use crate::node_table::{NodeChange, NodeTable, affects};
use crate::plugin::LoadedPlugin;
use crate::telemetry::ControllerMetrics;

/// The node table shared by every reconcile, and whether its first list is complete.
pub struct Nodes {
    table: RwLock<NodeTable>,
    ready: watch::Sender<bool>,
    /// Nodes of a relist in progress, swapped in when it completes.
    relist: std::sync::Mutex<Option<Vec<Node>>>,
}

impl Default for Nodes {
    fn default() -> Self {
        Self {
            table: RwLock::default(),
            ready: watch::Sender::new(false),
            relist: std::sync::Mutex::default(),
        }
    }
}

impl Nodes {
    /// The table, for reading. Hold it only to copy out what is needed.
    pub fn read(&self) -> RwLockReadGuard<'_, NodeTable> {
        self.table.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Resolves once the first list has been stored.
    pub async fn wait_until_ready(&self) {
        let mut ready = self.ready.subscribe();
        // The sender lives in `self`, so waiting cannot fail while `self` is borrowed.
        let _ = ready.wait_for(|ready| *ready).await;
    }

    /// Applies one watch event; returns the placement-relevant changes it made.
    pub fn handle(&self, event: watcher::Event<Node>) -> Vec<NodeChange> {
        let mut relist = self.relist.lock().unwrap_or_else(PoisonError::into_inner);
        let table = || self.table.write().unwrap_or_else(PoisonError::into_inner);
        match event {
            watcher::Event::Apply(node) => table().apply(slim(node)).into_iter().collect(),
            watcher::Event::Delete(node) => {
                let name = node.metadata.name.unwrap_or_default();
                table().remove(&name).into_iter().collect()
            }
            watcher::Event::Init => {
                *relist = Some(Vec::new());
                Vec::new()
            }
            watcher::Event::InitApply(node) => {
                relist.get_or_insert_with(Vec::new).push(slim(node));
                Vec::new()
            }
            watcher::Event::InitDone => {
                let nodes = relist.take().unwrap_or_default();
                let changes = table().replace_all(nodes);
                self.ready.send_replace(true);
                changes
            }
        }
    }
}

/// Drops what no placement reads and what makes a Node large: managed fields and the image
/// list.
fn slim(mut node: Node) -> Node {
    node.metadata.managed_fields = None;
    if let Some(status) = node.status.as_mut() {
        status.images = None;
    }
    node
}

/// The sets to reconcile for each watch event; watch errors are logged and dropped (the
/// watcher retries with backoff).
pub fn triggers<S>(
    nodes: Arc<Nodes>,
    events: S,
    sets: Store<WasmDaemonSet>,
    metrics: Arc<ControllerMetrics>,
    plugin_of: impl Fn(&ObjectRef<WasmDaemonSet>) -> Option<Arc<LoadedPlugin>> + Send + 'static,
) -> impl Stream<Item = ObjectRef<WasmDaemonSet>> + Send
where
    S: Stream<Item = Result<watcher::Event<Node>, watcher::Error>> + Send,
{
    events
        .filter_map(move |event| {
            let changes = match event {
                Ok(event) => nodes.handle(event),
                Err(error) => {
                    tracing::warn!(%error, "node watch failed; retrying");
                    Vec::new()
                }
            };
            let mut affected = HashSet::new();
            if !changes.is_empty() {
                for set in sets.state() {
                    let key = ObjectRef::from_obj(&*set);
                    let plugin = plugin_of(&key);
                    let reads = plugin.as_deref().map(|p| &p.projection);
                    if changes.iter().any(|c| affects(&set, reads, &c.change)) {
                        affected.insert(key);
                    }
                }
                metrics.node_changes.add(changes.len() as u64);
                metrics.node_triggers.add(affected.len() as u64);
                let count = nodes.read().len() as u64;
                metrics
                    .nodes
                    .store(count, std::sync::atomic::Ordering::Relaxed);
                tracing::trace!(
                    changes = changes.len(),
                    sets = affected.len(),
                    "nodes changed"
                );
            }
            future::ready((!affected.is_empty()).then(|| futures::stream::iter(affected)))
        })
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_table_is_ready_after_the_first_list_and_swaps_in_relists_whole() {
        let nodes = Nodes::default();
        let node = |name: &str| -> Node {
            serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).unwrap()
        };
        assert!(nodes.handle(watcher::Event::Init).is_empty());
        assert!(
            nodes
                .handle(watcher::Event::InitApply(node("a")))
                .is_empty()
        );
        assert_eq!(nodes.read().len(), 0, "a partial list is not visible");
        assert_eq!(nodes.handle(watcher::Event::InitDone).len(), 1);
        tokio::time::timeout(std::time::Duration::from_secs(1), nodes.wait_until_ready())
            .await
            .expect("ready after the first list");

        nodes.handle(watcher::Event::Init);
        nodes.handle(watcher::Event::InitApply(node("b")));
        let changes = nodes.handle(watcher::Event::InitDone);
        assert_eq!(changes.len(), 2, "b added and a removed: {changes:?}");
        assert!(nodes.read().get("a").is_none());
    }
}
