//! Creates and deletes a set has issued but its pod cache has not shown yet, so a lagging
//! cache never leads to a second pod on a node or a second delete of the same pod.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;

/// How long an expectation is trusted. A pod created and deleted again before the cache saw
/// it would otherwise block its node forever.
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// Pending writes of one set.
#[derive(Debug, Default)]
pub struct Expectations {
    /// Node → (name of the pod created for it, when).
    creates: HashMap<String, (String, Instant)>,
    /// Pod name → (its node, when it was deleted).
    deletes: HashMap<String, (String, Instant)>,
}

impl Expectations {
    pub fn expect_create(&mut self, node: &str, pod: &str, now: Instant) {
        self.creates
            .insert(node.to_string(), (pod.to_string(), now));
    }

    pub fn expect_delete(&mut self, pod: &str, node: &str, now: Instant) {
        self.deletes
            .insert(pod.to_string(), (node.to_string(), now));
    }

    /// Settles what the cache now shows: a created pod is present; a deleted pod is gone or
    /// terminating. `pods` is every pod of the set in the cache.
    pub fn observe(&mut self, pods: &[Pod], now: Instant) {
        let present = |name: &str| {
            pods.iter()
                .find(|p| p.metadata.name.as_deref() == Some(name))
        };
        self.creates.retain(|_, (pod, at)| {
            now.saturating_duration_since(*at) < TIMEOUT && present(pod).is_none()
        });
        self.deletes.retain(|pod, (_, at)| {
            now.saturating_duration_since(*at) < TIMEOUT
                && present(pod).is_some_and(|p| p.metadata.deletion_timestamp.is_none())
        });
    }

    /// Whether a create for `node` is still in flight.
    pub fn creating(&self, node: &str) -> bool {
        self.creates.contains_key(node)
    }

    /// Whether the delete of `pod` is still in flight.
    pub fn deleting(&self, pod: &str) -> bool {
        self.deletes.contains_key(pod)
    }

    /// Whether anything on `node` is still in flight.
    pub fn busy(&self, node: &str) -> bool {
        self.creating(node) || self.deletes.values().any(|(n, _)| n == node)
    }

    /// Whether nothing is in flight.
    pub fn is_empty(&self) -> bool {
        self.creates.is_empty() && self.deletes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, deleting: bool) -> Pod {
        let mut pod = Pod::default();
        pod.metadata.name = Some(name.to_string());
        if deleting {
            pod.metadata.deletion_timestamp =
                Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    k8s_openapi::jiff::Timestamp::now(),
                ));
        }
        pod
    }

    #[test]
    fn a_create_is_pending_until_the_cache_shows_the_pod() {
        let mut e = Expectations::default();
        let now = Instant::now();
        e.expect_create("n1", "p1", now);
        e.observe(&[], now);
        assert!(e.creating("n1") && e.busy("n1"));
        e.observe(&[pod("p1", false)], now);
        assert!(!e.creating("n1"));
        assert!(e.is_empty());
    }

    #[test]
    fn a_delete_is_pending_until_the_pod_is_gone_or_terminating() {
        let mut e = Expectations::default();
        let now = Instant::now();
        e.expect_delete("p1", "n1", now);
        e.observe(&[pod("p1", false)], now);
        assert!(e.deleting("p1") && e.busy("n1"));
        e.observe(&[pod("p1", true)], now);
        assert!(!e.deleting("p1"));
    }

    #[test]
    fn expectations_expire() {
        let mut e = Expectations::default();
        let now = Instant::now();
        e.expect_create("n1", "p1", now);
        e.observe(&[], now + TIMEOUT);
        assert!(!e.creating("n1"));
    }
}
