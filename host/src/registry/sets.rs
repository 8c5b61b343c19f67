//! What the controller needs from a live store: which sets use a plugin, and which sets to
//! plan again when a plugin changes.

use futures::StreamExt;
use futures::stream::BoxStream;
use kube::runtime::reflector::{ObjectRef, Store};
use tokio::sync::broadcast::error::RecvError;

use super::Registry;
use super::store::{PluginStore, SetUse};
use crate::crd::WasmDaemonSet;
use crate::planner;

/// The plugin a set names and how the store should check a new version against it.
pub fn set_use(set: &WasmDaemonSet) -> Option<(String, SetUse)> {
    let policy = set.spec.policy.as_ref()?;
    let info = planner::set_info(set);
    let use_ = SetUse {
        set: format!("{}/{}", info.namespace, info.name),
        info,
        pinned: policy.digest.clone(),
    };
    Some((policy.plugin.clone(), use_))
}

/// Lets `store` find the sets that use a plugin in the controller's cache of sets.
pub fn follow_sets(store: &PluginStore, sets: Store<WasmDaemonSet>) {
    store.set_users(move |plugin| {
        sets.state()
            .iter()
            .filter_map(|set| set_use(set))
            .filter(|(p, _)| p == plugin)
            .map(|(_, use_)| use_)
            .collect()
    });
}

/// The sets to plan again after each change of a plugin: those naming it. After missed
/// events (a lagging receiver) every set with a policy. Empty without a live store.
///
/// Also makes the store validate new versions against these sets ([`follow_sets`]).
pub fn replan_triggers(
    registry: &Registry,
    sets: Store<WasmDaemonSet>,
) -> BoxStream<'static, ObjectRef<WasmDaemonSet>> {
    let Some(store) = registry.store() else {
        return futures::stream::empty().boxed();
    };
    follow_sets(store, sets.clone());
    let events = store.subscribe();
    futures::stream::unfold((events, sets), |(mut events, sets)| async move {
        let plugin = match events.recv().await {
            Ok(event) => Some(event.plugin().to_string()),
            Err(RecvError::Lagged(missed)) => {
                tracing::debug!(missed, "missed plugin events; planning every set again");
                None
            }
            Err(RecvError::Closed) => return None,
        };
        let affected: Vec<ObjectRef<WasmDaemonSet>> = sets
            .state()
            .iter()
            .filter(|set| {
                set.spec
                    .policy
                    .as_ref()
                    .is_some_and(|p| plugin.as_ref().is_none_or(|name| p.plugin == *name))
            })
            .map(|set| ObjectRef::from_obj(&**set))
            .collect();
        Some((futures::stream::iter(affected), (events, sets)))
    })
    .flatten()
    .boxed()
}

/// Why a set's plugin deserves a look although the set plans fine with it: the source was
/// removed, or (for a set that follows updates, not `pinned` to a digest) a newer version was
/// refused. A `(reason, message)` for a condition.
pub fn notice(registry: &Registry, plugin: &str, pinned: bool) -> Option<(&'static str, String)> {
    let status = registry.store()?.status(plugin)?;
    if status.removed {
        let message = format!(
            "the source of plugin {plugin} ({}) was removed; running the last good version {}",
            status.source, status.plugin.digest
        );
        return Some(("PluginSourceRemoved", message));
    }
    if pinned {
        return None;
    }
    let failure = status.last_failure?;
    let message = format!("{failure}; still running {}", status.plugin.digest);
    Some((failure.kind.reason(), message))
}
