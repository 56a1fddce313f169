//! Single-flight in the process: concurrent callers of one key share one run of its work.
//!
//! Generic over the key and the outcome, so it knows nothing of the cache that uses it.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::OnceCell;

/// Work in flight by key; each caller gets a clone of the one outcome.
pub(crate) struct Flights<K, T> {
    map: Mutex<HashMap<K, Arc<OnceCell<T>>>>,
}

impl<K, T> Default for Flights<K, T> {
    fn default() -> Self {
        Self {
            map: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Hash + Eq + Clone, T: Clone> Flights<K, T> {
    /// Runs `leader` unless work on `key` is already running, in which case this waits for
    /// that one and shares its outcome. If the running leader is cancelled, a waiter takes over.
    /// Once done, the key is forgotten: the next call runs again.
    pub async fn run<F, Fut>(&self, key: K, leader: F) -> T
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = T>,
    {
        let slot = Arc::clone(self.lock().entry(key.clone()).or_default());
        let outcome = slot.get_or_init(leader).await.clone();
        let mut map = self.lock();
        // A later flight of the key may have taken the place already: leave that one alone.
        if map.get(&key).is_some_and(|s| Arc::ptr_eq(s, &slot)) {
            map.remove(&key);
        }
        outcome
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<K, Arc<OnceCell<T>>>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    #[cfg(test)]
    fn in_flight(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn concurrent_callers_of_one_key_share_one_run() {
        let flights = Arc::new(Flights::<&str, u32>::default());
        let runs = Arc::new(AtomicUsize::new(0));
        let callers: Vec<_> = (0..50)
            .map(|_| {
                let (flights, runs) = (Arc::clone(&flights), Arc::clone(&runs));
                tokio::spawn(async move {
                    flights
                        .run("k", || async {
                            runs.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            7
                        })
                        .await
                })
            })
            .collect();
        for caller in callers {
            assert_eq!(caller.await.unwrap(), 7);
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert_eq!(flights.in_flight(), 0);
    }

    #[tokio::test]
    async fn different_keys_run_apart_and_a_finished_key_runs_again() {
        let flights = Flights::<u8, u8>::default();
        let (a, b) = tokio::join!(
            flights.run(1, || async { 10 }),
            flights.run(2, || async { 20 })
        );
        assert_eq!((a, b), (10, 20));
        assert_eq!(flights.run(1, || async { 11 }).await, 11);
        assert_eq!(flights.in_flight(), 0);
    }

    #[tokio::test]
    async fn a_waiter_takes_over_when_the_leader_is_cancelled() {
        let flights = Arc::new(Flights::<&str, &str>::default());
        let leader = {
            let flights = Arc::clone(&flights);
            tokio::spawn(async move {
                flights
                    .run("k", || async {
                        std::future::pending::<()>().await;
                        "leader"
                    })
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        let waiter = {
            let flights = Arc::clone(&flights);
            tokio::spawn(async move { flights.run("k", || async { "waiter" }).await })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        leader.abort();
        assert_eq!(waiter.await.unwrap(), "waiter");
        assert_eq!(flights.in_flight(), 0);
    }
}
