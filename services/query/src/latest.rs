//! The query process's own tier of latest prices, in front of the caching service.
//!
//! A price is first read through the caching service (its L1, L2, then the store) and kept
//! here as a *seed*, served for at most the `latest_prices` namespace's TTL. From then on every
//! tick of that symbol on the bus (which this process reads anyway for live streams) moves the
//! entry forward, and an entry moved by the bus is *confirmed*: the entry is the newest tick
//! without a TTL, as long as the bus delivers every tick committed since.
//!
//! That last condition is checked, not assumed. The tier is *behind* after any bus read error
//! (a gap: events may have been lost with Redis, or be waiting in the outbox behind the relay's
//! backoff) and whenever the outbox holds an event older than [`BACKLOG_BOUND`] (the relay is
//! down or slow, an ingestion pod restarted). A background check looks at the outbox every
//! [`CHECK_EVERY`]; the tier answers only while
//! - the bus reads fine,
//! - a check that started less than [`CHECK_VALID`] ago found no event older than
//!   [`BACKLOG_BOUND`] queued, and
//! - since the last gap, a clean check has completed and a bus read started after it has
//!   returned (so the gap's events, published before that check, have arrived here).
//!
//! While it is behind, the tier answers nothing (the caller reads the store) and takes no
//! seeds; after a bus gap every entry is *suspect* until a tick from the bus confirms it again.
//! So an answer from the tier is never older than the newest tick acknowledged before the call
//! by more than [`STALENESS_BOUND`].
//!
//! How old an outbox event is comes from its id, not from clocks: an event is older than the
//! bound if its id is at most the highest id a check saw at least [`BACKLOG_BOUND`] earlier.
//!
//! Only symbols somebody asked for are held (at most [`MAX_SYMBOLS`]); ticks of others cost one
//! read-locked map lookup.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use tickmesh_proto::v1::{LatestPrice, Tick};

/// Most symbols held.
pub const MAX_SYMBOLS: usize = 100_000;
/// Oldest an event may wait in the outbox while the tier still answers.
pub const BACKLOG_BOUND: Duration = Duration::from_secs(1);
/// How often the outbox is checked.
pub const CHECK_EVERY: Duration = Duration::from_millis(100);
/// How long a clean check vouches for the tier, from when it started.
pub const CHECK_VALID: Duration = Duration::from_millis(400);
/// Most an answer of the tier lags the newest tick acknowledged before the call: what a
/// clean check proves ([`BACKLOG_BOUND`], sampled every [`CHECK_EVERY`]) for as long as it
/// vouches ([`CHECK_VALID`]).
pub const STALENESS_BOUND: Duration = Duration::from_millis(1_500);

/// Latest prices kept current by the bus.
#[derive(Debug)]
pub struct LatestPrices {
    entries: RwLock<HashMap<String, Entry>>,
    trust: Mutex<Trust>,
    /// Until when the tier may answer, in nanoseconds since `base`; 0: not now.
    trusted_until: AtomicU64,
    base: Instant,
}

#[derive(Debug)]
struct Entry {
    price: LatestPrice,
    state: State,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Moved by a tick from the bus, and the bus has not had a gap since.
    Confirmed,
    /// Read through the caching service at this instant.
    Seeded(Instant),
    /// Held from before a bus gap: a real tick, but maybe not the newest.
    Suspect,
}

/// What decides whether the tier may answer.
#[derive(Debug)]
struct Trust {
    /// The last bus read succeeded.
    bus_ok: bool,
    /// When the tier was last found behind (or the subscription started).
    gap_at: Instant,
    /// When the first clean check since `gap_at` finished.
    clean_done: Option<Instant>,
    /// A bus read started after `clean_done` returned: the gap's events are here.
    caught_up: bool,
    /// When the last clean check started.
    clean_started: Option<Instant>,
    /// Highest outbox id ever seen, per check start (oldest first, pruned to one older than
    /// the bound).
    samples: VecDeque<(Instant, i64)>,
    highest: i64,
}

/// Why the tier is behind, as an outbox check found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// Nothing older than [`BACKLOG_BOUND`] waits in the outbox.
    Clean,
    /// An event older than [`BACKLOG_BOUND`] waits (lowest queued id).
    Backlog(i64),
    /// The outbox could not be read.
    Failed,
}

impl Default for LatestPrices {
    fn default() -> Self {
        let now = Instant::now();
        Self {
            entries: RwLock::new(HashMap::new()),
            trust: Mutex::new(Trust {
                bus_ok: false,
                gap_at: now,
                clean_done: None,
                caught_up: false,
                clean_started: None,
                samples: VecDeque::new(),
                highest: 0,
            }),
            trusted_until: AtomicU64::new(0),
            base: now,
        }
    }
}

impl LatestPrices {
    fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX)
    }

    /// Whether the tier may answer now.
    pub fn trusted(&self) -> bool {
        self.nanos(Instant::now()) < self.trusted_until.load(Ordering::Acquire)
    }

    /// The price of `symbol` if the tier may answer and holds it: confirmed, or seeded less
    /// than `seed_ttl` ago.
    pub fn get(&self, symbol: &str, seed_ttl: Duration) -> Option<LatestPrice> {
        if !self.trusted() {
            return None;
        }
        let entries = self.entries.read().unwrap_or_else(PoisonError::into_inner);
        let entry = entries.get(symbol)?;
        match entry.state {
            State::Confirmed => Some(entry.price.clone()),
            State::Seeded(at) if at.elapsed() < seed_ttl => Some(entry.price.clone()),
            State::Seeded(_) | State::Suspect => None,
        }
    }

    /// Keeps a price read through the caching service, unless a newer one is held; returns the
    /// newer of the two (a held price is a committed tick too), the one to answer.
    pub fn seed(&self, price: LatestPrice) -> LatestPrice {
        let trusted = self.trusted();
        let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
        let full = entries.len() >= MAX_SYMBOLS;
        match entries.get_mut(&price.symbol) {
            Some(entry) if entry.price.time_us > price.time_us => entry.price.clone(),
            // Confirmed by the bus already: nothing newer to learn from the caching service.
            Some(entry)
                if entry.price.time_us == price.time_us && entry.state == State::Confirmed =>
            {
                price
            }
            // A fresh read of the same seed renews it (else a symbol without ticks, once its
            // seed expired, went through the caching service on every call from then on).
            Some(entry) if trusted => {
                entry.price = price.clone();
                entry.state = State::Seeded(Instant::now());
                price
            }
            None if trusted && !full => {
                entries.insert(
                    price.symbol.clone(),
                    Entry {
                        price: price.clone(),
                        state: State::Seeded(Instant::now()),
                    },
                );
                price
            }
            _ => price,
        }
    }

    /// A tick from the bus: moves its symbol's entry forward and confirms it, if the entry is held
    /// and not newer than the tick.
    pub fn observe(&self, tick: &Tick) {
        {
            let entries = self.entries.read().unwrap_or_else(PoisonError::into_inner);
            match entries.get(&tick.symbol) {
                Some(entry) if tick.time_us >= entry.price.time_us => {}
                _ => return,
            }
        }
        let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = entries.get_mut(&tick.symbol)
            && tick.time_us >= entry.price.time_us
        {
            entry.price = LatestPrice {
                symbol: tick.symbol.clone(),
                price: tick.price,
                time_us: tick.time_us,
            };
            entry.state = State::Confirmed;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Trust> {
        self.trust.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The tier is behind from now on; after a bus gap (`lost`), what it holds is suspect.
    fn gap(&self, trust: &mut Trust, lost: bool) {
        self.trusted_until.store(0, Ordering::Release);
        trust.gap_at = Instant::now();
        trust.clean_done = None;
        trust.caught_up = false;
        if lost {
            let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
            for entry in entries.values_mut() {
                entry.state = State::Suspect;
            }
        }
    }

    fn refresh(&self, trust: &Trust) {
        if let (true, true, Some(started)) = (trust.bus_ok, trust.caught_up, trust.clean_started) {
            self.trusted_until
                .store(self.nanos(started + CHECK_VALID), Ordering::Release);
        }
    }

    /// The bus subscription (re)started, or is gone (`false`, at shutdown): a gap either way.
    pub fn subscribed(&self, up: bool) {
        let mut trust = self.lock();
        trust.bus_ok = up;
        self.gap(&mut trust, true);
    }

    /// A bus read that started at `started` returned: `Ok(full)` with a full batch or not (a
    /// full batch may have left events behind), or failed.
    pub fn bus_read(&self, started: Instant, outcome: Result<bool, ()>) {
        let mut trust = self.lock();
        match outcome {
            Err(()) => {
                trust.bus_ok = false;
                self.gap(&mut trust, true);
            }
            // The first read after a gap: checks from now on tell whether the gap is filled.
            Ok(_) if !trust.bus_ok => {
                trust.bus_ok = true;
                self.gap(&mut trust, false);
            }
            Ok(full) => {
                if !full && trust.clean_done.is_some_and(|done| started >= done) {
                    trust.caught_up = true;
                }
                self.refresh(&trust);
            }
        }
    }

    /// An outbox check that started at `started` read `backlog` (lowest and highest queued id,
    /// `None` when empty, `Err` when the store did not answer).
    pub fn outbox_checked(
        &self,
        started: Instant,
        backlog: Result<Option<(i64, i64)>, ()>,
    ) -> Check {
        let mut trust = self.lock();
        let check = match backlog {
            Err(()) => Check::Failed,
            Ok(queued) => {
                if let Some((_, highest)) = queued {
                    trust.highest = trust.highest.max(highest);
                }
                let highest = trust.highest;
                trust.samples.push_back((started, highest));
                // The newest sample at least the bound old is the reference; older ones go.
                let old_enough =
                    |at: &Instant| started.saturating_duration_since(*at) >= BACKLOG_BOUND;
                while trust.samples.len() > 1
                    && trust.samples.get(1).is_some_and(|(at, _)| old_enough(at))
                {
                    trust.samples.pop_front();
                }
                let reference = trust
                    .samples
                    .front()
                    .filter(|(at, _)| old_enough(at))
                    .map(|(_, h)| *h);
                match (queued, reference) {
                    (None, _) => Check::Clean,
                    (Some((lowest, _)), Some(h)) if lowest > h => Check::Clean,
                    // Queued at least the bound ago, or since before this process looked.
                    (Some((lowest, _)), _) => Check::Backlog(lowest),
                }
            }
        };
        if check == Check::Clean {
            if started >= trust.gap_at && trust.clean_done.is_none() {
                trust.clean_done = Some(Instant::now());
            }
            trust.clean_started = Some(started);
            self.refresh(&trust);
        } else {
            self.gap(&mut trust, false);
        }
        check
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn price(symbol: &str, price: f64, time_us: i64) -> LatestPrice {
        LatestPrice {
            symbol: symbol.into(),
            price,
            time_us,
        }
    }

    fn tick(symbol: &str, price: f64, time_us: i64) -> Tick {
        Tick {
            symbol: symbol.into(),
            time_us,
            trade_id: "1".into(),
            price,
            size: 1.0,
            side: 1,
        }
    }

    const TTL: Duration = Duration::from_secs(60);

    /// Subscribed, a first read, a clean check, a read started after it: trusted.
    fn settled() -> LatestPrices {
        let tier = LatestPrices::default();
        tier.subscribed(true);
        tier.bus_read(Instant::now(), Ok(false));
        tier.outbox_checked(Instant::now(), Ok(None));
        assert!(!tier.trusted(), "no read since the check yet");
        tier.bus_read(Instant::now(), Ok(false));
        assert!(tier.trusted());
        tier
    }

    #[test]
    fn nothing_is_served_or_seeded_until_the_tier_has_caught_up() {
        let tier = LatestPrices::default();
        assert_eq!(tier.seed(price("A", 1.0, 10)), price("A", 1.0, 10));
        assert_eq!(tier.get("A", TTL), None);
        let tier = settled();
        tier.seed(price("A", 1.0, 10));
        assert_eq!(tier.get("A", TTL), Some(price("A", 1.0, 10)));
    }

    #[test]
    fn a_read_that_started_before_the_clean_check_does_not_count() {
        let tier = LatestPrices::default();
        tier.subscribed(true);
        tier.bus_read(Instant::now(), Ok(false));
        let before = Instant::now();
        tier.outbox_checked(Instant::now(), Ok(None));
        tier.bus_read(before, Ok(false));
        assert!(!tier.trusted());
        // A full batch may have left the gap's events behind.
        tier.bus_read(Instant::now(), Ok(true));
        assert!(!tier.trusted());
        tier.bus_read(Instant::now(), Ok(false));
        assert!(tier.trusted());
    }

    #[test]
    fn a_bus_gap_makes_held_prices_suspect_until_a_tick_confirms_them() {
        let tier = settled();
        tier.seed(price("A", 1.0, 10));
        tier.observe(&tick("A", 2.0, 20));
        tier.bus_read(Instant::now(), Err(()));
        assert!(!tier.trusted());
        assert_eq!(tier.get("A", TTL), None);
        // Back: the first read restarts the wait for a clean check and a read after it.
        tier.bus_read(Instant::now(), Ok(false));
        assert!(!tier.trusted());
        tier.outbox_checked(Instant::now(), Ok(None));
        tier.bus_read(Instant::now(), Ok(false));
        assert!(tier.trusted());
        // The gap's events may be lost: the held price waits for a tick, and the caching
        // service's older answer is not taken over it.
        assert_eq!(tier.get("A", TTL), None);
        assert_eq!(tier.seed(price("A", 1.5, 15)), price("A", 2.0, 20));
        assert_eq!(tier.get("A", TTL), None);
        tier.observe(&tick("A", 3.0, 30));
        assert_eq!(tier.get("A", TTL), Some(price("A", 3.0, 30)));
    }

    #[test]
    fn an_event_queued_longer_than_the_bound_withdraws_trust_until_it_is_published() {
        let tier = settled();
        // Checks a bound apart (instants ahead of now stand for checks to come): ids up to 10
        // are queued, and a bound later 7 still is.
        let first = Instant::now() + BACKLOG_BOUND;
        assert_eq!(tier.outbox_checked(first, Ok(Some((7, 10)))), Check::Clean);
        assert_eq!(
            tier.outbox_checked(first + BACKLOG_BOUND / 2, Ok(Some((7, 12)))),
            Check::Clean
        );
        assert_eq!(
            tier.outbox_checked(first + BACKLOG_BOUND, Ok(Some((7, 14)))),
            Check::Backlog(7)
        );
        assert!(!tier.trusted());
        // Published up to 10: what is queued now is younger than the bound.
        let later = first + BACKLOG_BOUND + CHECK_EVERY;
        assert_eq!(tier.outbox_checked(later, Ok(Some((11, 15)))), Check::Clean);
        assert!(!tier.trusted(), "no read since the check yet");
        tier.bus_read(Instant::now(), Ok(false));
        assert!(tier.trusted());
    }

    #[test]
    fn a_queued_event_of_unknown_age_or_an_unreadable_outbox_withdraws_trust() {
        let tier = settled();
        // No check a bound ago to compare with: the event may be old.
        assert_eq!(
            tier.outbox_checked(Instant::now(), Ok(Some((1, 1)))),
            Check::Backlog(1)
        );
        assert!(!tier.trusted());
        let tier = settled();
        assert_eq!(tier.outbox_checked(Instant::now(), Err(())), Check::Failed);
        assert!(!tier.trusted());
    }

    #[test]
    fn a_clean_check_vouches_for_a_limited_time_only() {
        let tier = settled();
        // The checker stopped: the last clean check started longer than CHECK_VALID ago.
        let past = Instant::now() - CHECK_VALID - Duration::from_millis(1);
        tier.outbox_checked(past, Ok(None));
        tier.bus_read(Instant::now(), Ok(false));
        assert!(!tier.trusted());
    }

    #[test]
    fn a_seed_expires_unless_the_bus_confirms_it() {
        let tier = settled();
        tier.seed(price("A", 1.0, 10));
        assert_eq!(tier.get("A", Duration::ZERO), None);
        // A late tick (older than the seed) neither moves the entry back nor confirms it: the
        // seed may lag the store by its TTL.
        tier.observe(&tick("A", 0.5, 5));
        assert_eq!(tier.get("A", Duration::ZERO), None);
        tier.observe(&tick("A", 2.0, 20));
        assert_eq!(tier.get("A", Duration::ZERO), Some(price("A", 2.0, 20)));
        // An older seed does not replace a newer confirmed price.
        assert_eq!(tier.seed(price("A", 1.0, 10)), price("A", 2.0, 20));
        assert_eq!(tier.get("A", Duration::ZERO), Some(price("A", 2.0, 20)));
    }

    #[test]
    fn an_expired_seed_read_again_unchanged_is_served_for_another_ttl() {
        let tier = settled();
        let ttl = Duration::from_millis(30);
        tier.seed(price("A", 1.0, 10));
        assert_eq!(tier.get("A", ttl), Some(price("A", 1.0, 10)));
        std::thread::sleep(ttl);
        assert_eq!(tier.get("A", ttl), None, "the seed expired");
        // The caching service answers the same price again: it is a seed again.
        let tier_now = settled_again(&tier);
        tier_now.seed(price("A", 1.0, 10));
        assert_eq!(tier_now.get("A", ttl), Some(price("A", 1.0, 10)));
    }

    /// A fresh clean check and a read after it (the one of `settled` vouches for 400 ms only).
    fn settled_again(tier: &LatestPrices) -> &LatestPrices {
        tier.outbox_checked(Instant::now(), Ok(None));
        tier.bus_read(Instant::now(), Ok(false));
        assert!(tier.trusted());
        tier
    }

    #[test]
    fn ticks_of_symbols_nobody_asked_for_are_not_held() {
        let tier = settled();
        tier.observe(&tick("B", 2.0, 20));
        assert_eq!(tier.get("B", TTL), None);
    }
}
