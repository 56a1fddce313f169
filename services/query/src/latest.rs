//! The query process's own tier of latest prices, in front of the caching service.
//!
//! A price is first read through the caching service (its L1, L2, then the store) and kept
//! here as a *seed*, served for at most the `latest_prices` namespace's TTL. From then on every
//! tick of that symbol on the bus (which this process reads anyway for live streams) moves the
//! entry forward, and an entry moved by the bus is *confirmed*: the bus subscription started
//! before the seed was read, so every tick committed since is seen here, and the entry is the
//! newest tick without a TTL. While the bus cannot be read, the tier steps aside and every read
//! goes to the caching service again.
//!
//! Only symbols somebody asked for are held (at most [`MAX_SYMBOLS`]); ticks of others cost one
//! read-locked map lookup.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{PoisonError, RwLock};
use std::time::{Duration, Instant};

use tickmesh_proto::v1::{LatestPrice, Tick};

/// Most symbols held.
pub const MAX_SYMBOLS: usize = 100_000;

/// Latest prices kept current by the bus.
#[derive(Debug)]
pub struct LatestPrices {
    entries: RwLock<HashMap<String, Entry>>,
    /// The bus subscription is up and its last read succeeded.
    live: AtomicBool,
}

#[derive(Debug)]
struct Entry {
    price: LatestPrice,
    /// When the seed was read; `None` once a tick from the bus confirmed the entry.
    seeded: Option<Instant>,
}

impl Default for LatestPrices {
    fn default() -> Self {
        Self {
            entries: RwLock::new(HashMap::new()),
            live: AtomicBool::new(false),
        }
    }
}

impl LatestPrices {
    /// The price of `symbol` if held: confirmed, or seeded less than `seed_ttl` ago.
    pub fn get(&self, symbol: &str, seed_ttl: Duration) -> Option<LatestPrice> {
        if !self.live.load(Ordering::Acquire) {
            return None;
        }
        let entries = self.entries.read().unwrap_or_else(PoisonError::into_inner);
        let entry = entries.get(symbol)?;
        match entry.seeded {
            Some(at) if at.elapsed() >= seed_ttl => None,
            _ => Some(entry.price.clone()),
        }
    }

    /// Keeps a price read through the caching service, unless a newer one is held.
    pub fn seed(&self, price: &LatestPrice) {
        if !self.live.load(Ordering::Acquire) {
            return;
        }
        let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
        let full = entries.len() >= MAX_SYMBOLS;
        match entries.get_mut(&price.symbol) {
            Some(entry) if entry.price.time_us > price.time_us => {}
            Some(entry) if entry.price.time_us == price.time_us && entry.seeded.is_none() => {}
            Some(entry) => {
                entry.price = price.clone();
                entry.seeded = Some(Instant::now());
            }
            None if full => {}
            None => {
                entries.insert(
                    price.symbol.clone(),
                    Entry {
                        price: price.clone(),
                        seeded: Some(Instant::now()),
                    },
                );
            }
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
            entry.seeded = None;
        }
    }

    /// Whether the bus subscription is up; while it is not, the tier serves nothing.
    pub fn set_live(&self, live: bool) {
        self.live.store(live, Ordering::Release);
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

    #[test]
    fn nothing_is_served_while_the_bus_is_down() {
        let tier = LatestPrices::default();
        tier.seed(&price("A", 1.0, 10));
        assert_eq!(tier.get("A", TTL), None);
        tier.set_live(true);
        tier.seed(&price("A", 1.0, 10));
        assert_eq!(tier.get("A", TTL), Some(price("A", 1.0, 10)));
        tier.set_live(false);
        assert_eq!(tier.get("A", TTL), None);
    }

    #[test]
    fn a_seed_expires_unless_the_bus_confirms_it() {
        let tier = LatestPrices::default();
        tier.set_live(true);
        tier.seed(&price("A", 1.0, 10));
        assert_eq!(tier.get("A", Duration::ZERO), None);
        // A late tick (older than the seed) neither moves the entry back nor confirms it: the
        // seed may lag the store by its TTL.
        tier.observe(&tick("A", 0.5, 5));
        assert_eq!(tier.get("A", Duration::ZERO), None);
        tier.observe(&tick("A", 2.0, 20));
        assert_eq!(tier.get("A", Duration::ZERO), Some(price("A", 2.0, 20)));
        // An older seed does not replace a newer confirmed price.
        tier.seed(&price("A", 1.0, 10));
        assert_eq!(tier.get("A", Duration::ZERO), Some(price("A", 2.0, 20)));
    }

    #[test]
    fn ticks_of_symbols_nobody_asked_for_are_not_held() {
        let tier = LatestPrices::default();
        tier.set_live(true);
        tier.observe(&tick("B", 2.0, 20));
        assert_eq!(tier.get("B", TTL), None);
    }
}
