//! Per-node backoff for replacing failed pods, so a node whose kubelet keeps rejecting the
//! pod is not hammered with create/delete cycles.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// First wait after a failed pod is deleted.
pub const INITIAL: Duration = Duration::from_secs(1);
/// Longest wait between two deletions of failed pods on one node.
pub const MAX: Duration = Duration::from_secs(15 * 60);

/// Backoff state of one set, keyed by node. Starts over when the set's generation changes: a
/// new spec deserves a fresh attempt everywhere.
#[derive(Debug, Default)]
pub struct FailedPodBackoff {
    generation: Option<i64>,
    nodes: HashMap<String, Entry>,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    delay: Duration,
    last: Instant,
}

impl FailedPodBackoff {
    /// Forgets every node's backoff when `generation` differs from the last one seen.
    pub fn observe_generation(&mut self, generation: Option<i64>) {
        if self.generation != generation {
            self.generation = generation;
            self.nodes.clear();
        }
    }

    /// How long a failed pod on `node` must still be left alone, if at all.
    pub fn wait(&self, node: &str, now: Instant) -> Option<Duration> {
        let entry = self.nodes.get(node)?;
        let since = now.saturating_duration_since(entry.last);
        (since < entry.delay).then(|| entry.delay - since)
    }

    /// Records that a failed pod on `node` is being deleted now; returns the wait before the
    /// next one may be. An entry untouched for twice the maximum starts over.
    pub fn record(&mut self, node: &str, now: Instant) -> Duration {
        let entry = self.nodes.entry(node.to_string()).or_insert(Entry {
            delay: Duration::ZERO,
            last: now,
        });
        let expired = now.saturating_duration_since(entry.last) > 2 * MAX;
        entry.delay = if entry.delay.is_zero() || expired {
            INITIAL
        } else {
            (entry.delay * 2).min(MAX)
        };
        entry.last = now;
        entry.delay
    }

    /// Drops entries of nodes `keep` rejects and entries long expired.
    pub fn retain(&mut self, now: Instant, keep: impl Fn(&str) -> bool) {
        self.nodes
            .retain(|node, e| keep(node) && now.saturating_duration_since(e.last) <= 2 * MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_doubles_from_one_second_up_to_fifteen_minutes() {
        let mut backoff = FailedPodBackoff::default();
        let start = Instant::now();
        assert_eq!(backoff.wait("n", start), None);
        assert_eq!(backoff.record("n", start), Duration::from_secs(1));
        assert_eq!(backoff.wait("n", start), Some(Duration::from_secs(1)));
        let mut now = start;
        let mut last = Duration::ZERO;
        for _ in 0..20 {
            now += backoff.wait("n", now).unwrap_or_default();
            last = backoff.record("n", now);
        }
        assert_eq!(last, MAX);
        assert_eq!(backoff.wait("other", now), None);
    }

    #[test]
    fn a_new_generation_resets_every_node() {
        let mut backoff = FailedPodBackoff::default();
        let now = Instant::now();
        backoff.observe_generation(Some(1));
        backoff.record("n", now);
        backoff.record("n", now + Duration::from_secs(1));
        backoff.observe_generation(Some(1));
        assert!(backoff.wait("n", now + Duration::from_secs(1)).is_some());
        backoff.observe_generation(Some(2));
        assert_eq!(backoff.wait("n", now + Duration::from_secs(1)), None);
        assert_eq!(backoff.record("n", now), INITIAL);
    }
}
