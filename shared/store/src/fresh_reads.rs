//! Reads of a small value (a candle revision) shared by callers that ask at once, without
//! ever answering one of them from a read that started before it asked.
//!
//! A caller that arrives while no read of its key runs starts one; a caller that arrives while
//! one runs waits for the *next* one, which starts when the running one ends (started by one of
//! the callers waiting for it). So every answer comes from a read that began after its caller
//! arrived, and sees every write acknowledged before that, while a crowd of callers of one key
//! costs one read at a time instead of one each. A caller that goes away while it leads a read
//! hands the lead to the next waiter. Keys are forgotten when nobody waits on them, so the map
//! holds only keys being read.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

/// Shared fresh reads of values `V` by key `K`; a failed read's error is passed on as `E`
/// (cloned to every caller waiting on it).
pub struct FreshReads<K, V, E> {
    keys: Mutex<HashMap<K, Arc<Slot<V, E>>>>,
}

impl<K, V, E> std::fmt::Debug for FreshReads<K, V, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FreshReads")
            .field("keys", &lock(&self.keys).len())
            .finish()
    }
}

struct Slot<V, E> {
    state: Mutex<State<V, E>>,
    done: Notify,
}

struct State<V, E> {
    /// Reads started so far (the running one included).
    started: u64,
    /// The number of the last read that ended, and what it found.
    finished: u64,
    last: Option<Result<V, E>>,
    /// A read is running.
    reading: bool,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl<K, V, E> Default for FreshReads<K, V, E> {
    fn default() -> Self {
        Self {
            keys: Mutex::new(HashMap::new()),
        }
    }
}

impl<K, V, E> FreshReads<K, V, E>
where
    K: Hash + Eq + Clone,
    V: Clone,
    E: Clone,
{
    /// The value of `key` from a read started after this call: `read` runs it, here or in
    /// another caller of the same key.
    pub async fn get<F, Fut>(&self, key: &K, read: F) -> Result<V, E>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<V, E>>,
    {
        let slot = lock(&self.keys)
            .entry(key.clone())
            .or_insert_with(|| {
                Arc::new(Slot {
                    state: Mutex::new(State {
                        started: 0,
                        finished: 0,
                        last: None,
                        reading: false,
                    }),
                    done: Notify::new(),
                })
            })
            .clone();
        let result = self.wait(&slot, read).await;
        // Nobody else holds the slot (the map's reference and ours): forget the key.
        let mut keys = lock(&self.keys);
        if Arc::strong_count(&slot) == 2 && !lock(&slot.state).reading {
            keys.remove(key);
        }
        result
    }

    async fn wait<F, Fut>(&self, slot: &Slot<V, E>, read: F) -> Result<V, E>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<V, E>>,
    {
        // The read this caller needs: the next one to start.
        let wanted = lock(&slot.state).started + 1;
        loop {
            let notified = slot.done.notified();
            tokio::pin!(notified);
            // Registered before the state is looked at, so an end in between is not missed.
            notified.as_mut().enable();
            let number = {
                let mut state = lock(&slot.state);
                if state.finished >= wanted
                    && let Some(last) = &state.last
                {
                    return last.clone();
                }
                if state.reading {
                    None
                } else {
                    state.reading = true;
                    state.started += 1;
                    Some(state.started)
                }
            };
            let Some(number) = number else {
                notified.await;
                continue;
            };
            // This caller leads read `number`; if it is dropped meanwhile, the guard lets a
            // waiter start another.
            let lead = Lead { slot, ended: false };
            let result = read().await;
            lead.end(number, &result);
            return result;
        }
    }
}

/// The caller running a read of a slot.
struct Lead<'a, V, E> {
    slot: &'a Slot<V, E>,
    ended: bool,
}

impl<V: Clone, E: Clone> Lead<'_, V, E> {
    fn end(mut self, number: u64, result: &Result<V, E>) {
        {
            let mut state = lock(&self.slot.state);
            state.finished = number;
            state.last = Some(result.clone());
            state.reading = false;
        }
        self.ended = true;
        self.slot.done.notify_waiters();
    }
}

impl<V, E> Drop for Lead<'_, V, E> {
    fn drop(&mut self) {
        if !self.ended {
            lock(&self.slot.state).reading = false;
            self.slot.done.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
    use std::time::Duration;

    /// A value that writers move forward, read slowly, counting the reads.
    #[derive(Default)]
    struct Source {
        value: AtomicI64,
        reads: AtomicUsize,
    }

    impl Source {
        async fn read(&self) -> Result<i64, String> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            // The value as it was when the read began.
            let seen = self.value.load(Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            Ok(seen)
        }
    }

    #[tokio::test]
    async fn a_crowd_shares_reads_and_nobody_sees_a_value_older_than_its_arrival() {
        let source = Arc::new(Source::default());
        let reads = Arc::new(FreshReads::<&'static str, i64, String>::default());
        let mut callers = Vec::new();
        for i in 0..200 {
            let (source, reads) = (source.clone(), reads.clone());
            callers.push(tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(i % 50)).await;
                if i % 10 == 0 {
                    // A write acknowledged before the read below is asked for.
                    source.value.fetch_add(1, Ordering::SeqCst);
                }
                let floor = source.value.load(Ordering::SeqCst);
                let got = reads.get(&"GOOG", || source.read()).await.unwrap();
                assert!(got >= floor, "caller {i} got {got}, older than {floor}");
            }));
        }
        for caller in callers {
            caller.await.unwrap();
        }
        let count = source.reads.load(Ordering::SeqCst);
        assert!(count < 100, "{count} reads for 200 callers");
        assert!(lock(&reads.keys).is_empty(), "idle keys are forgotten");
    }

    #[tokio::test]
    async fn a_leader_that_goes_away_hands_the_read_on_and_errors_reach_every_waiter() {
        let reads = Arc::new(FreshReads::<u8, i64, String>::default());
        let slow = {
            let reads = reads.clone();
            tokio::spawn(async move {
                reads
                    .get(&1, || async {
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                        Ok(0)
                    })
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        let waiter = {
            let reads = reads.clone();
            tokio::spawn(async move { reads.get(&1, || async { Err("down".to_owned()) }).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        slow.abort();
        assert_eq!(waiter.await.unwrap(), Err("down".to_owned()));
    }
}
