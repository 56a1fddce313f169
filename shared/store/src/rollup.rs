//! Rolling ticks up into candles: the candle deltas of a batch of new ticks, merged into stored
//! candles by an upsert that is correct for late and out-of-order ticks (a tick older than the
//! bar's first tick becomes its open, one newer than its last tick its close).

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use diesel::dsl::sql;
use diesel::expression::SqlLiteral;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Double, Text};
use tickmesh_proto::v1::Interval;

use crate::schema::candles;

/// The intervals ticks roll up into, finest first ([`Interval::STORED`]): (`tickmesh.v1.Interval`
/// number, length in microseconds).
pub const INTERVALS: [(i16, i64); Interval::STORED.len()] = stored_intervals();

const fn stored_intervals() -> [(i16, i64); Interval::STORED.len()] {
    let mut out = [(0, 0); Interval::STORED.len()];
    let mut i = 0;
    while i < out.len() {
        let interval = Interval::STORED[i];
        let Some(len) = interval.length_us() else {
            // Evaluated at compile time: a stored interval without a length does not build.
            panic!("a stored interval has no length");
        };
        out[i] = (interval as i16, len);
        i += 1;
    }
    out
}

/// SQL for the length in microseconds of the bar of a row's `interval_code`, built from
/// [`INTERVALS`].
pub(crate) fn bar_length_sql() -> String {
    let mut sql = String::from("(CASE interval_code ");
    for (code, len) in INTERVALS {
        sql.push_str(&format!("WHEN {code} THEN {len} "));
    }
    sql.push_str("END)");
    sql
}

/// `template` (a statement from a `.sql` file) with `{bar_length}` replaced by
/// [`bar_length_sql`].
pub(crate) fn with_bar_length(template: &str) -> String {
    template.replace("{bar_length}", &bar_length_sql())
}

/// Start of the bar of length `len` holding `ts_us` (bars are aligned to the epoch, UTC).
pub fn bar_start(ts_us: i64, len: i64) -> i64 {
    ts_us - ts_us.rem_euclid(len)
}

/// A candle as rolled up from some ticks, with the keys of its first and last tick.
#[derive(Debug, Clone, PartialEq, Insertable)]
#[diesel(table_name = candles)]
#[diesel(treat_none_as_default_value = false)]
pub struct CandleMerge {
    /// Instrument symbol.
    pub symbol: String,
    /// `tickmesh.v1.Interval` number.
    pub interval_code: i16,
    /// Start of the bar.
    pub open_time_us: i64,
    /// Price of the first tick.
    pub open: f64,
    /// Highest price.
    pub high: f64,
    /// Lowest price.
    pub low: f64,
    /// Price of the last tick.
    pub close: f64,
    /// Sum of sizes.
    pub volume: f64,
    /// Number of ticks.
    pub trade_count: i64,
    /// Closing is decided by the store, never by a delta.
    pub closed: bool,
    /// Time of the first tick.
    pub first_ts_us: i64,
    /// Trade id of the first tick.
    pub first_trade_id: String,
    /// Time of the last tick.
    pub last_ts_us: i64,
    /// Trade id of the last tick.
    pub last_trade_id: String,
}

impl CandleMerge {
    fn absorb(&mut self, ts_us: i64, trade_id: &str, price: f64, size: f64) {
        if (ts_us, trade_id) < (self.first_ts_us, self.first_trade_id.as_str()) {
            self.first_ts_us = ts_us;
            trade_id.clone_into(&mut self.first_trade_id);
            self.open = price;
        }
        if (ts_us, trade_id) > (self.last_ts_us, self.last_trade_id.as_str()) {
            self.last_ts_us = ts_us;
            trade_id.clone_into(&mut self.last_trade_id);
            self.close = price;
        }
        self.high = self.high.max(price);
        self.low = self.low.min(price);
        self.volume += size;
        self.trade_count += 1;
    }
}

/// The candle deltas of `ticks` for every interval, in key order (so concurrent writers lock
/// rows in the same order).
pub fn aggregate(ticks: &[crate::TickRow]) -> Vec<CandleMerge> {
    let mut index: HashMap<(&str, i16, i64), usize> = HashMap::new();
    let mut bars: Vec<CandleMerge> = Vec::new();
    // The bar each interval touched last: consecutive ticks of a feed mostly fall in it, so
    // the map is looked up once per bar rather than once per tick.
    let mut last: [Option<(&str, i64, usize)>; INTERVALS.len()] = [None; INTERVALS.len()];
    for tick in ticks {
        let symbol = tick.symbol.as_str();
        for (slot, &(code, len)) in INTERVALS.iter().enumerate() {
            let start = bar_start(tick.ts_us, len);
            if let Some((s, st, at)) = last[slot]
                && st == start
                && s == symbol
            {
                bars[at].absorb(tick.ts_us, &tick.trade_id, tick.price, tick.size);
                continue;
            }
            let at = match index.entry((symbol, code, start)) {
                Entry::Occupied(entry) => {
                    let at = *entry.get();
                    bars[at].absorb(tick.ts_us, &tick.trade_id, tick.price, tick.size);
                    at
                }
                Entry::Vacant(entry) => {
                    bars.push(CandleMerge {
                        symbol: tick.symbol.clone(),
                        interval_code: code,
                        open_time_us: start,
                        open: tick.price,
                        high: tick.price,
                        low: tick.price,
                        close: tick.price,
                        volume: tick.size,
                        trade_count: 1,
                        closed: false,
                        first_ts_us: tick.ts_us,
                        first_trade_id: tick.trade_id.clone(),
                        last_ts_us: tick.ts_us,
                        last_trade_id: tick.trade_id.clone(),
                    });
                    *entry.insert(bars.len() - 1)
                }
            };
            last[slot] = Some((symbol, start, at));
        }
    }
    bars.sort_unstable_by(|a, b| {
        (a.symbol.as_str(), a.interval_code, a.open_time_us).cmp(&(
            b.symbol.as_str(),
            b.interval_code,
            b.open_time_us,
        ))
    });
    bars
}

/// SQL of the merge of a delta (`excluded`) into a stored candle (`candles`), the same on
/// PostgreSQL and SQLite. SET expressions all see the stored row as it was before the update.
pub(crate) mod merge_sql {
    const EARLIER: &str = "(excluded.first_ts_us, excluded.first_trade_id) < (candles.first_ts_us, candles.first_trade_id)";
    const LATER: &str = "(excluded.last_ts_us, excluded.last_trade_id) > (candles.last_ts_us, candles.last_trade_id)";

    fn pick(condition: &str, column: &str) -> String {
        format!("CASE WHEN {condition} THEN excluded.{column} ELSE candles.{column} END")
    }

    /// `open`.
    pub fn open() -> String {
        pick(EARLIER, "open")
    }
    /// `first_ts_us`.
    pub fn first_ts() -> String {
        pick(EARLIER, "first_ts_us")
    }
    /// `first_trade_id`.
    pub fn first_trade() -> String {
        pick(EARLIER, "first_trade_id")
    }
    /// `close`.
    pub fn close() -> String {
        pick(LATER, "close")
    }
    /// `last_ts_us`.
    pub fn last_ts() -> String {
        pick(LATER, "last_ts_us")
    }
    /// `last_trade_id`.
    pub fn last_trade() -> String {
        pick(LATER, "last_trade_id")
    }
    /// `high`.
    pub fn high() -> String {
        "CASE WHEN excluded.high > candles.high THEN excluded.high ELSE candles.high END".into()
    }
    /// `low`.
    pub fn low() -> String {
        "CASE WHEN excluded.low < candles.low THEN excluded.low ELSE candles.low END".into()
    }
    /// `volume`.
    pub fn volume() -> String {
        "candles.volume + excluded.volume".into()
    }
    /// `trade_count`.
    pub fn trade_count() -> String {
        "candles.trade_count + excluded.trade_count".into()
    }
}

type Set<C, T> = diesel::dsl::Eq<C, SqlLiteral<T>>;

/// The SET clause of the merge of a delta into a stored candle (see [`merge_sql`]).
pub(crate) type MergeSet = (
    Set<candles::open, Double>,
    Set<candles::high, Double>,
    Set<candles::low, Double>,
    Set<candles::close, Double>,
    Set<candles::volume, Double>,
    Set<candles::trade_count, BigInt>,
    Set<candles::first_ts_us, BigInt>,
    Set<candles::first_trade_id, Text>,
    Set<candles::last_ts_us, BigInt>,
    Set<candles::last_trade_id, Text>,
);

/// The SET clause of the merge, the same on both backends.
pub(crate) fn merge_set() -> MergeSet {
    use crate::schema::candles::dsl as cd;
    use merge_sql as m;
    (
        cd::open.eq(sql::<Double>(&m::open())),
        cd::high.eq(sql::<Double>(&m::high())),
        cd::low.eq(sql::<Double>(&m::low())),
        cd::close.eq(sql::<Double>(&m::close())),
        cd::volume.eq(sql::<Double>(&m::volume())),
        cd::trade_count.eq(sql::<BigInt>(&m::trade_count())),
        cd::first_ts_us.eq(sql::<BigInt>(&m::first_ts())),
        cd::first_trade_id.eq(sql::<Text>(&m::first_trade())),
        cd::last_ts_us.eq(sql::<BigInt>(&m::last_ts())),
        cd::last_trade_id.eq(sql::<Text>(&m::last_trade())),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TickRow;

    fn tick(ts_us: i64, id: &str, price: f64) -> TickRow {
        TickRow {
            symbol: "S".into(),
            ts_us,
            trade_id: id.into(),
            price,
            size: 1.0,
            side: 0,
        }
    }

    #[test]
    fn out_of_order_ticks_give_the_bar_of_the_sorted_ticks() {
        let deltas = aggregate(&[tick(30, "c", 3.0), tick(10, "a", 1.0), tick(20, "b", 5.0)]);
        let second = deltas.iter().find(|d| d.interval_code == 1).unwrap();
        assert_eq!(
            (second.open, second.high, second.low, second.close),
            (1.0, 5.0, 1.0, 3.0)
        );
        assert_eq!(second.trade_count, 3);
        assert_eq!(deltas.len(), INTERVALS.len());
    }

    #[test]
    fn the_sql_bar_lengths_match_the_intervals() {
        for (code, len) in INTERVALS {
            assert!(
                bar_length_sql().contains(&format!("WHEN {code} THEN {len} ")),
                "interval {code}"
            );
        }
        assert_eq!(INTERVALS.len(), 7);
        assert_eq!(INTERVALS[0], (1, 1_000_000));
        assert_eq!(INTERVALS[6], (7, 86_400_000_000));
        let length = |code| Interval::from_code(code).and_then(Interval::length_us);
        assert_eq!(length(2), Some(60_000_000));
        assert_eq!(length(0), None);
        assert_eq!(length(99), None);
    }

    #[test]
    fn bars_start_on_interval_boundaries_before_the_epoch_too() {
        assert_eq!(bar_start(-1, 1_000_000), -1_000_000);
        assert_eq!(bar_start(86_400_000_001, 86_400_000_000), 86_400_000_000);
    }
}
