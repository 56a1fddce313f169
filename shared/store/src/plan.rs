//! What a write does, decided without a database: whether a tick batch is all fresh, how a big
//! batch splits, which partitions and symbols it touches, and which candles become events. The
//! executors (`postgres.rs`, `sqlite.rs`) only run the statements these choose.

use std::collections::{BTreeSet, HashMap, HashSet};

use crate::{CandleRow, TickRow, rollup, time};

/// Batches at least this big, of two symbols or more, are written as two transactions.
pub(crate) const SPLIT_MIN_ROWS: usize = 4_000;

/// The first (oldest) tick time of each symbol in `rows` if every symbol's ticks are in
/// strictly increasing time (so no key repeats within the batch), else `None`.
pub(crate) fn first_tick_times(rows: &[TickRow]) -> Option<HashMap<&str, i64>> {
    let mut span: HashMap<&str, (i64, i64)> = HashMap::new();
    for row in rows {
        match span.get_mut(row.symbol.as_str()) {
            Some((_, newest)) if row.ts_us <= *newest => return None,
            Some((_, newest)) => *newest = row.ts_us,
            None => {
                span.insert(row.symbol.as_str(), (row.ts_us, row.ts_us));
            }
        }
    }
    Some(span.into_iter().map(|(s, (first, _))| (s, first)).collect())
}

/// Whether every symbol's ticks, starting at `first`, are newer than its newest stored tick
/// (`newest`: `None` for a symbol without ticks). The key includes the time, so such ticks
/// cannot be stored already and a plain INSERT (no conflict check) stores them all.
pub(crate) fn all_newer(first: &HashMap<&str, i64>, newest: &[(String, Option<i64>)]) -> bool {
    newest.iter().all(
        |(symbol, stored)| match (stored, first.get(symbol.as_str())) {
            (Some(stored), Some(first)) => first > stored,
            _ => true,
        },
    )
}

/// The symbols of `rows`, each once, in one fixed order (writers lock them in this order).
pub(crate) fn symbols(rows: &[TickRow]) -> Vec<&str> {
    rows.iter()
        .map(|t| t.symbol.as_str())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// `rows` in two halves of about the same size, no symbol in both (each symbol's ticks keep
/// their order); `Err(rows)` when the batch is small or of one symbol.
pub(crate) fn split_by_symbol(
    rows: Vec<TickRow>,
) -> Result<(Vec<TickRow>, Vec<TickRow>), Vec<TickRow>> {
    if rows.len() < SPLIT_MIN_ROWS {
        return Err(rows);
    }
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for row in &rows {
        *counts.entry(row.symbol.as_str()).or_default() += 1;
    }
    if counts.len() < 2 {
        return Err(rows);
    }
    // Largest first, each to the lighter half.
    let mut by_size: Vec<(&str, usize)> = counts.into_iter().collect();
    by_size.sort_unstable_by(|x, y| y.1.cmp(&x.1).then(x.0.cmp(y.0)));
    let (mut first, mut sizes) = (HashSet::new(), [0usize; 2]);
    for (symbol, n) in by_size {
        if sizes[0] <= sizes[1] {
            first.insert(symbol.to_owned());
            sizes[0] += n;
        } else {
            sizes[1] += n;
        }
    }
    let (mut a, mut b) = (Vec::with_capacity(sizes[0]), Vec::with_capacity(sizes[1]));
    for row in rows {
        if first.contains(&row.symbol) {
            a.push(row);
        } else {
            b.push(row);
        }
    }
    Ok((a, b))
}

/// The months (partitions of `ticks`) the ticks fall in.
pub(crate) fn tick_months(rows: &[TickRow]) -> BTreeSet<(i64, u32)> {
    rows.iter().map(|r| time::month_of(r.ts_us)).collect()
}

/// The months (partitions of `candles`) of the bars the ticks roll up into: a bar starts at
/// or before its ticks, possibly in the month before.
pub(crate) fn bar_months(rows: &[TickRow]) -> BTreeSet<(i64, u32)> {
    rows.iter()
        .flat_map(|r| {
            rollup::INTERVALS
                .iter()
                .map(|&(_, len)| time::month_of(rollup::bar_start(r.ts_us, len)))
        })
        .collect()
}

/// The months (partitions of `candles`) of ingested candles.
pub(crate) fn candle_months(rows: &[CandleRow]) -> BTreeSet<(i64, u32)> {
    rows.iter()
        .map(|r| time::month_of(r.open_time_us))
        .collect()
}

/// The candle events of a tick write: bars the rollup merged into that had closed already (a
/// late tick corrected them), then the bars the write closed.
pub(crate) fn tick_candle_events(merged: Vec<CandleRow>, closed: Vec<CandleRow>) -> Vec<CandleRow> {
    let mut events: Vec<CandleRow> = merged.into_iter().filter(|c| c.closed).collect();
    events.extend(closed);
    events
}

/// The candle events of a candle write: the closed ones among the new or corrected rows.
pub(crate) fn closed_candles(stored: &[CandleRow]) -> Vec<CandleRow> {
    stored.iter().filter(|c| c.closed).cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tick(symbol: &str, ts_us: i64) -> TickRow {
        TickRow {
            symbol: symbol.into(),
            ts_us,
            trade_id: format!("{ts_us}"),
            price: 1.0,
            size: 1.0,
            side: 0,
        }
    }

    fn bar(open_time_us: i64, closed: bool) -> CandleRow {
        CandleRow {
            symbol: "S".into(),
            interval_code: 1,
            open_time_us,
            open: 1.0,
            high: 1.0,
            low: 1.0,
            close: 1.0,
            volume: 1.0,
            trade_count: 1,
            closed,
        }
    }

    #[test]
    fn ticks_in_increasing_time_per_symbol_give_each_symbols_first_time() {
        let rows = [tick("A", 5), tick("B", 1), tick("A", 7), tick("B", 2)];
        let first = first_tick_times(&rows).unwrap();
        assert_eq!(first, HashMap::from([("A", 5), ("B", 1)]));
    }

    #[test]
    fn a_repeated_or_earlier_time_within_a_symbol_is_not_fresh() {
        assert_eq!(first_tick_times(&[tick("A", 5), tick("A", 5)]), None);
        assert_eq!(first_tick_times(&[tick("A", 5), tick("A", 4)]), None);
        // Another symbol at the same time is fine.
        assert!(first_tick_times(&[tick("A", 5), tick("B", 5)]).is_some());
    }

    #[test]
    fn ticks_are_fresh_only_when_newer_than_every_stored_newest() {
        let first = HashMap::from([("A", 10), ("B", 3)]);
        let newest = |a, b| vec![("A".to_string(), a), ("B".to_string(), b)];
        assert!(all_newer(&first, &newest(Some(9), None)));
        assert!(all_newer(&first, &newest(None, None)));
        assert!(!all_newer(&first, &newest(Some(10), None)));
        assert!(!all_newer(&first, &newest(Some(1), Some(3))));
    }

    #[test]
    fn symbols_are_listed_once_in_sorted_order() {
        let rows = [tick("B", 1), tick("A", 2), tick("B", 3)];
        assert_eq!(symbols(&rows), ["A", "B"]);
    }

    #[test]
    fn a_big_batch_splits_into_balanced_halves_with_no_symbol_in_both() {
        let mut rows = Vec::new();
        for i in 0..SPLIT_MIN_ROWS as i64 {
            let symbol = ["A", "B", "C", "D"][(i % 4) as usize];
            rows.push(tick(symbol, i));
        }
        rows.extend((0..500).map(|i| tick("E", i)));
        let total = rows.len();
        let (a, b) = split_by_symbol(rows.clone()).unwrap();
        assert_eq!(a.len() + b.len(), total);
        assert!(
            a.len().abs_diff(b.len()) <= 1_500,
            "{} vs {}",
            a.len(),
            b.len()
        );
        let in_a: HashSet<&str> = a.iter().map(|t| t.symbol.as_str()).collect();
        assert!(b.iter().all(|t| !in_a.contains(t.symbol.as_str())));
        // Each symbol's ticks keep their order.
        let order_of = |half: &[TickRow], s: &str| -> Vec<i64> {
            half.iter()
                .filter(|t| t.symbol == s)
                .map(|t| t.ts_us)
                .collect()
        };
        for s in ["A", "B", "C", "D", "E"] {
            let original = order_of(&rows, s);
            let kept = if in_a.contains(s) {
                order_of(&a, s)
            } else {
                order_of(&b, s)
            };
            assert_eq!(kept, original, "{s}");
        }
    }

    #[test]
    fn a_small_or_single_symbol_batch_is_not_split() {
        let small: Vec<TickRow> = (0..10).map(|i| tick(["A", "B"][i % 2], i as i64)).collect();
        assert_eq!(split_by_symbol(small.clone()), Err(small));
        let one: Vec<TickRow> = (0..SPLIT_MIN_ROWS as i64 * 2)
            .map(|i| tick("A", i))
            .collect();
        assert_eq!(split_by_symbol(one.clone()), Err(one));
    }

    #[test]
    fn partitions_cover_the_ticks_and_their_bars() {
        // 2024-02-29T23:59:59Z and 2024-03-01T00:00:01Z.
        let feb = 1_709_251_199_000_000;
        let mar = 1_709_251_201_000_000;
        let rows = [tick("A", feb), tick("A", mar)];
        assert_eq!(tick_months(&rows), BTreeSet::from([(2024, 2), (2024, 3)]));
        assert_eq!(bar_months(&rows), BTreeSet::from([(2024, 2), (2024, 3)]));
        assert_eq!(
            candle_months(&[bar(feb, true)]),
            BTreeSet::from([(2024, 2)])
        );
    }

    #[test]
    fn corrected_closed_bars_and_newly_closed_bars_are_the_events() {
        let merged = vec![bar(1, false), bar(2, true)];
        let closed = vec![bar(3, true)];
        let events = tick_candle_events(merged, closed);
        assert_eq!(
            events.iter().map(|c| c.open_time_us).collect::<Vec<_>>(),
            [2, 3]
        );
        assert_eq!(
            closed_candles(&[bar(1, false), bar(4, true)]),
            [bar(4, true)]
        );
    }
}
