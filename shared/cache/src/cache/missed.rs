//! Invalidations that did not reach Redis: the L2 delete and the pub/sub message on which the
//! other processes drop their L1 copies. A write or an invalidation made while Redis (or the
//! way to it) is down would otherwise be lost to every other process, which would go on serving
//! its copy, or the copy Redis kept, until the TTL ends. They are kept here, a bounded set per
//! namespace, and sent again as soon as Redis answers (the health probe replays them).

use std::collections::{HashMap, HashSet};
use std::mem;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::pubsub::Target;

/// Keys and patterns remembered per namespace; beyond that the whole namespace is invalidated
/// when Redis is back (correct, only more misses).
pub(super) const MAX_TARGETS_PER_NAMESPACE: usize = 1024;

/// What a namespace missed.
#[derive(Debug, PartialEq, Eq)]
enum Missed {
    Targets(HashSet<Target>),
    Namespace,
}

/// The invalidations to send again, by namespace name.
#[derive(Debug, Default)]
pub(super) struct MissedInvalidations {
    by_namespace: Mutex<HashMap<String, Missed>>,
    /// Whether anything is waiting (read by the probe on every tick without locking).
    pending: AtomicBool,
}

impl MissedInvalidations {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Missed>> {
        self.by_namespace.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Remembers an invalidation that did not reach Redis.
    pub fn record(&self, namespace: &str, target: Target) {
        let mut map = self.map();
        let missed = map
            .entry(namespace.to_owned())
            .or_insert_with(|| Missed::Targets(HashSet::new()));
        if let Missed::Targets(targets) = missed {
            if target == Target::Namespace || targets.len() >= MAX_TARGETS_PER_NAMESPACE {
                *missed = Missed::Namespace;
            } else {
                targets.insert(target);
            }
        }
        self.pending.store(true, Ordering::Release);
    }

    /// Whether some invalidation waits to be sent.
    pub fn pending(&self) -> bool {
        self.pending.load(Ordering::Acquire)
    }

    /// Takes everything that waits, by namespace (a failed replay records its targets again).
    pub fn take(&self) -> Vec<(String, Vec<Target>)> {
        let mut map = self.map();
        self.pending.store(false, Ordering::Release);
        mem::take(&mut *map)
            .into_iter()
            .map(|(namespace, missed)| {
                let targets = match missed {
                    Missed::Targets(targets) => targets.into_iter().collect(),
                    Missed::Namespace => vec![Target::Namespace],
                };
                (namespace, targets)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_kept_once_and_taken_all_at_once() {
        let missed = MissedInvalidations::default();
        assert!(!missed.pending());
        missed.record("prices", Target::Key("AAPL".into()));
        missed.record("prices", Target::Key("AAPL".into()));
        missed.record("prices", Target::Pattern("BTC-*".into()));
        assert!(missed.pending());
        let mut taken = missed.take();
        assert!(!missed.pending());
        assert_eq!(taken.len(), 1);
        let (namespace, targets) = taken.remove(0);
        assert_eq!(namespace, "prices");
        let targets: HashSet<_> = targets.into_iter().collect();
        assert_eq!(
            targets,
            HashSet::from([Target::Key("AAPL".into()), Target::Pattern("BTC-*".into())])
        );
        assert!(missed.take().is_empty());
    }

    #[test]
    fn too_many_targets_or_a_namespace_invalidation_become_the_whole_namespace() {
        let missed = MissedInvalidations::default();
        for i in 0..=MAX_TARGETS_PER_NAMESPACE {
            missed.record("prices", Target::Key(format!("k{i}")));
        }
        missed.record("signals", Target::Key("k".into()));
        missed.record("signals", Target::Namespace);
        missed.record("signals", Target::Key("later".into()));
        let mut taken = missed.take();
        taken.sort();
        assert_eq!(
            taken,
            [
                ("prices".to_owned(), vec![Target::Namespace]),
                ("signals".to_owned(), vec![Target::Namespace]),
            ]
        );
    }
}
