//! The in-process bus: a bounded log in memory with the consumer-group semantics of Redis Streams.
//!
//! One mutex guards the log, the groups and their pending entries; it is never held across an
//! await. Two `Notify`s wake the waiting sides: consumers when entries are appended, publishers
//! when acks free room.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::Delivery;
use crate::error::{BusError, parse_id};

/// The in-process bus; cheap to clone, every clone is the same log.
#[derive(Clone)]
pub struct InProcessBus {
    shared: Arc<Shared>,
}

struct Shared {
    capacity: usize,
    stats: Arc<crate::BusStats>,
    state: Mutex<State>,
    /// Wakes consumers waiting for entries.
    appended: Notify,
    /// Wakes publishers waiting for room.
    released: Notify,
}

struct State {
    entries: VecDeque<Vec<u8>>,
    /// Sequence number of `entries[0]`; sequence numbers are never reused.
    first: u64,
    groups: HashMap<String, Group>,
}

struct Group {
    /// The first entry never delivered to this group (Redis' last-delivered-id, plus one).
    next: u64,
    /// Entries delivered and not acked yet (Redis' PEL): sequence number to delivery time.
    /// Which consumer holds one does not matter: any consumer may claim it once idle.
    pending: BTreeMap<u64, Instant>,
}

impl State {
    /// The sequence number the next published entry gets.
    fn end(&self) -> u64 {
        self.first + self.entries.len() as u64
    }

    /// Drops the entries every group has delivered and had acked. With no group, no entry is
    /// needed: a group created later starts at the end, like `XGROUP CREATE ... $`.
    fn trim(&mut self) -> bool {
        let end = self.end();
        let keep_from = self
            .groups
            .values()
            .map(|group| group.pending.keys().next().copied().unwrap_or(group.next))
            .min()
            .unwrap_or(end);
        let mut trimmed = false;
        while self.first < keep_from && self.entries.pop_front().is_some() {
            self.first += 1;
            trimmed = true;
        }
        trimmed
    }
}

/// Formats a sequence number as a stream id, so ids look the same as Redis'.
fn format_id(seq: u64) -> String {
    format!("0-{seq}")
}

impl InProcessBus {
    /// A log holding at most `capacity` entries (at least 1) not yet acked by every group.
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            shared: Arc::new(Shared {
                capacity: capacity.max(1),
                stats: Arc::default(),
                state: Mutex::new(State {
                    entries: VecDeque::new(),
                    first: 0,
                    groups: HashMap::new(),
                }),
                appended: Notify::new(),
                released: Notify::new(),
            }),
        }
    }

    pub(crate) fn stats(&self) -> Arc<crate::BusStats> {
        self.shared.stats.clone()
    }

    /// Entries each group has not been handed yet.
    pub(crate) fn group_lags(&self) -> Vec<(String, u64)> {
        let state = self.lock();
        let end = state.end();
        let mut lags: Vec<(String, u64)> = state
            .groups
            .iter()
            .map(|(name, g)| (name.clone(), end.saturating_sub(g.next)))
            .collect();
        lags.sort();
        lags
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock, so a poisoned state is still consistent.
        self.shared
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends `events` in order, waiting for room whenever the log is full.
    pub(crate) async fn publish(&self, events: Vec<Vec<u8>>) {
        let mut events = events.into_iter().peekable();
        while events.peek().is_some() {
            // Registered before looking at the log, so an ack in between is not missed.
            let released = self.shared.released.notified();
            let mut appended = false;
            {
                let mut state = self.lock();
                while events.peek().is_some() {
                    let room = self.shared.capacity.saturating_sub(state.entries.len());
                    if room == 0 {
                        break;
                    }
                    state.entries.extend(events.by_ref().take(room));
                    appended = true;
                    // Without groups the entries go right away, making room for the rest.
                    state.trim();
                }
            }
            if appended {
                self.shared.appended.notify_waiters();
            }
            if events.peek().is_some() {
                released.await;
            }
        }
    }

    /// Creates `group` at the end of the log if it does not exist yet.
    pub(crate) fn subscribe(&self, group: &str, consumer: &str) -> InProcessSubscription {
        let mut state = self.lock();
        let end = state.end();
        state
            .groups
            .entry(group.to_owned())
            .or_insert_with(|| Group {
                next: end,
                pending: BTreeMap::new(),
            });
        InProcessSubscription {
            bus: self.clone(),
            group: group.to_owned(),
            consumer: consumer.to_owned(),
        }
    }
}

impl InProcessBus {
    /// Removes `group`: its position and pending entries no longer hold entries in the log.
    pub(crate) fn destroy_group(&self, group: &str) {
        let mut state = self.lock();
        if state.groups.remove(group).is_some() {
            state.trim();
        }
        drop(state);
        self.shared.released.notify_waiters();
    }
}

impl fmt::Debug for InProcessBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.lock();
        f.debug_struct("InProcessBus")
            .field("capacity", &self.shared.capacity)
            .field("entries", &state.entries.len())
            .field("groups", &state.groups.len())
            .finish()
    }
}

/// One consumer of one group of the in-process bus.
pub(crate) struct InProcessSubscription {
    bus: InProcessBus,
    group: String,
    consumer: String,
}

impl InProcessSubscription {
    /// Removes this subscription's group from the log.
    pub(crate) fn leave(self) {
        self.bus.destroy_group(&self.group);
    }

    pub(crate) fn group(&self) -> &str {
        &self.group
    }

    pub(crate) fn consumer(&self) -> &str {
        &self.consumer
    }

    /// Pending entries idle for `claim_idle` if any (then `true`: claimed), else new entries,
    /// waiting up to `wait`.
    pub(crate) async fn next_batch(
        &mut self,
        max: usize,
        wait: Duration,
        claim_idle: Duration,
    ) -> (Vec<Delivery>, bool) {
        let max = max.max(1);
        // No deadline (a wait too long to represent) waits for as long as it takes.
        let deadline = Instant::now().checked_add(wait);
        loop {
            // Registered before looking at the log, so an append in between is not missed.
            let appended = self.bus.shared.appended.notified();
            let (batch, claimed) = self.take(max, claim_idle);
            if !batch.is_empty() {
                return (batch, claimed);
            }
            match deadline {
                Some(deadline) => {
                    if tokio::time::timeout_at(deadline, appended).await.is_err() {
                        return (Vec::new(), false);
                    }
                }
                None => appended.await,
            }
        }
    }

    /// What `XAUTOCLAIM` and then `XREADGROUP ... >` would hand this consumer, as one step.
    fn take(&self, max: usize, claim_idle: Duration) -> (Vec<Delivery>, bool) {
        let now = Instant::now();
        let mut state = self.bus.lock();
        let end = state.end();
        let State {
            entries,
            first,
            groups,
        } = &mut *state;
        let group = groups.entry(self.group.clone()).or_insert_with(|| Group {
            next: end,
            pending: BTreeMap::new(),
        });
        let body = |seq: u64| {
            usize::try_from(seq - *first)
                .ok()
                .and_then(|index| entries.get(index))
                .cloned()
        };

        let mut batch = Vec::new();
        for (&seq, delivered_at) in &mut group.pending {
            if batch.len() == max {
                break;
            }
            if now.duration_since(*delivered_at) < claim_idle {
                continue;
            }
            // Pending entries are never trimmed, so the body is there.
            if let Some(body) = body(seq) {
                *delivered_at = now;
                batch.push(Delivery {
                    id: format_id(seq),
                    body,
                });
            }
        }
        if !batch.is_empty() {
            return (batch, true);
        }

        while batch.len() < max && group.next < end {
            let seq = group.next;
            group.next += 1;
            if let Some(body) = body(seq) {
                group.pending.insert(seq, now);
                batch.push(Delivery {
                    id: format_id(seq),
                    body,
                });
            }
        }
        (batch, false)
    }

    /// Removes `ids` from the group's pending entries, whichever consumer holds them.
    pub(crate) fn ack(&mut self, ids: &[String]) -> Result<(), BusError> {
        let ids = ids
            .iter()
            .map(|id| parse_id(id))
            .collect::<Result<Vec<_>, _>>()?;
        let trimmed = {
            let mut state = self.bus.lock();
            if let Some(group) = state.groups.get_mut(&self.group) {
                // An id we never handed out (`ms` other than 0) acks nothing, as in Redis.
                for (_, seq) in ids.iter().filter(|(ms, _)| *ms == 0) {
                    group.pending.remove(seq);
                }
            }
            state.trim()
        };
        if trimmed {
            self.bus.shared.released.notify_waiters();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(range: std::ops::Range<u32>) -> Vec<Vec<u8>> {
        range.map(|i| i.to_be_bytes().to_vec()).collect()
    }

    #[tokio::test]
    async fn without_groups_nothing_is_kept() {
        let bus = InProcessBus::new(2);
        bus.publish(events(0..10)).await;
        assert_eq!(bus.lock().entries.len(), 0);
    }

    #[tokio::test]
    async fn an_entry_is_kept_until_every_group_acked_it() {
        let bus = InProcessBus::new(8);
        let mut a = bus.subscribe("a", "1");
        let mut b = bus.subscribe("b", "1");
        bus.publish(events(0..3)).await;
        let (from_a, _) = a.next_batch(10, Duration::ZERO, Duration::MAX).await;
        a.ack(&from_a.iter().map(|d| d.id.clone()).collect::<Vec<_>>())
            .ok();
        assert_eq!(bus.lock().entries.len(), 3);
        let (from_b, _) = b.next_batch(2, Duration::ZERO, Duration::MAX).await;
        b.ack(&from_b.iter().map(|d| d.id.clone()).collect::<Vec<_>>())
            .ok();
        assert_eq!(bus.lock().entries.len(), 1);
    }

    #[tokio::test]
    async fn acking_a_foreign_id_does_nothing() {
        let bus = InProcessBus::new(8);
        let mut sub = bus.subscribe("g", "c");
        bus.publish(events(0..1)).await;
        let (batch, _) = sub.next_batch(1, Duration::ZERO, Duration::MAX).await;
        assert_eq!(batch.len(), 1);
        assert!(sub.ack(&["1-0".to_owned()]).is_ok());
        assert!(sub.ack(&["nonsense".to_owned()]).is_err());
        assert_eq!(bus.lock().entries.len(), 1);
    }
}
