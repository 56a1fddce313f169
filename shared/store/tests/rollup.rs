//! The candles rolled up from ticks always equal the candles recomputed from the stored ticks,
//! whatever the order, batching, lateness and duplication of the ticks.

#![allow(clippy::unwrap_used)] // helpers unwrap too: a panic is a failed test

use proptest::prelude::*;
use tickmesh_store::rollup::{INTERVALS, bar_start};
use tickmesh_store::{CandleQuery, CandleRow, Store, StoreOptions, TickRow};

/// 2024-03-10T20:00:00Z: the ticks span midnight, so daily bars split too.
const BASE: i64 = 1_710_100_800_000_000;

/// The candles of every interval recomputed from `stored` (ticks sorted by time, trade id).
fn recompute(mut stored: Vec<TickRow>) -> Vec<CandleRow> {
    stored.sort_by(|a, b| (a.ts_us, &a.trade_id).cmp(&(b.ts_us, &b.trade_id)));
    let newest = stored.iter().map(|t| t.ts_us).max().unwrap_or(i64::MIN);
    let mut bars: Vec<CandleRow> = Vec::new();
    for (code, len) in INTERVALS {
        for t in &stored {
            let start = bar_start(t.ts_us, len);
            match bars.last_mut() {
                Some(bar) if bar.interval_code == code && bar.open_time_us == start => {
                    bar.high = bar.high.max(t.price);
                    bar.low = bar.low.min(t.price);
                    bar.close = t.price;
                    bar.volume += t.size;
                    bar.trade_count += 1;
                }
                _ => bars.push(CandleRow {
                    symbol: t.symbol.clone(),
                    interval_code: code,
                    open_time_us: start,
                    open: t.price,
                    high: t.price,
                    low: t.price,
                    close: t.price,
                    volume: t.size,
                    trade_count: 1,
                    closed: start + len <= newest,
                }),
            }
        }
    }
    bars
}

/// Asserts that the store's candles of `symbol` equal those recomputed from its stored ticks.
async fn assert_rollup_matches(store: &Store, symbol: &str) {
    let stored = store
        .ticks(symbol, i64::MIN, i64::MAX, i64::MAX)
        .await
        .unwrap();
    let expected = recompute(stored);
    let mut actual = Vec::new();
    for (code, _) in INTERVALS {
        actual.extend(
            store
                .candles(&CandleQuery {
                    symbol: symbol.into(),
                    interval_code: code,
                    start_us: None,
                    end_us: None,
                    after_us: None,
                    descending: false,
                    limit: i64::MAX,
                })
                .await
                .unwrap(),
        );
    }
    assert_eq!(actual, expected, "{:?} {symbol}", store.kind());
}

fn tick_strategy() -> impl Strategy<Value = TickRow> {
    (
        prop::sample::select(vec!["AAA", "BBB"]),
        // Within about 5 hours, on a coarse grid so that ties on time happen.
        0i64..72_000,
        0u32..40,
        1u32..4000,
        0u32..40,
    )
        .prop_map(|(symbol, step, id, quarter_price, quarter_size)| TickRow {
            symbol: symbol.into(),
            ts_us: BASE + step * 250_000,
            trade_id: format!("{id}"),
            // Quarters are exact in binary, so volume sums do not depend on order.
            price: f64::from(quarter_price) / 4.0,
            size: f64::from(quarter_size) / 4.0,
            side: 1,
        })
}

/// Writes `ticks` in the batches `cuts` makes, plus one batch sent twice.
async fn write_in_batches(store: &Store, ticks: &[TickRow], cuts: &[usize]) {
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (ticks.len() + 1)).collect();
    cuts.extend([0, ticks.len()]);
    cuts.sort_unstable();
    cuts.dedup();
    for pair in cuts.windows(2) {
        let batch = ticks[pair[0]..pair[1]].to_vec();
        store.insert_ticks(batch.clone()).await.unwrap();
        if pair[0] == 0 {
            // A retried batch changes nothing.
            assert_eq!(store.insert_ticks(batch).await.unwrap().stored, 0);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn rollup_equals_recomputing_from_stored_ticks(
        ticks in prop::collection::vec(tick_strategy(), 1..400).prop_shuffle(),
        cuts in prop::collection::vec(0usize..400, 0..8),
    ) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let url = format!("sqlite:{}", dir.path().join("s.db").display());
            let store = Store::open(&StoreOptions::new(url)).await.unwrap();
            write_in_batches(&store, &ticks, &cuts).await;
            for symbol in ["AAA", "BBB"] {
                assert_rollup_matches(&store, symbol).await;
            }
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollup_on_postgres_equals_recomputing_from_stored_ticks() {
    let pg = tickmesh_testkit::Postgres::start().expect("a throwaway PostgreSQL");
    let store = Store::open(&StoreOptions::new(pg.url())).await.unwrap();
    // Late and out-of-order: a fixed shuffle of ticks spread over several hours.
    let ticks: Vec<TickRow> = (0..3000i64)
        .map(|i| {
            let j = (i * 7919) % 3000;
            TickRow {
                symbol: if j % 3 == 0 { "AAA" } else { "BBB" }.into(),
                ts_us: BASE + j * 5_000_000,
                trade_id: format!("{}", j % 11),
                price: (1 + (j * 37) % 997) as f64 / 4.0,
                size: (j % 9) as f64 / 4.0,
                side: 2,
            }
        })
        .collect();
    write_in_batches(&store, &ticks, &[700, 1500, 2900]).await;
    for symbol in ["AAA", "BBB"] {
        assert_rollup_matches(&store, symbol).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_batches_split_over_two_connections_on_postgres_roll_up_the_same() {
    let pg = tickmesh_testkit::Postgres::start().expect("a throwaway PostgreSQL");
    let store = Store::open(&StoreOptions::new(pg.url())).await.unwrap();
    // Three symbols, uneven, in time order (the plain-insert path), in batches big enough to be
    // split; then the same ticks shuffled in one big batch (the idempotent path, split too).
    let symbols = ["AAA", "BBB", "BBB", "CCC", "CCC", "CCC"];
    let ticks: Vec<TickRow> = (0..15_000i64)
        .map(|i| TickRow {
            symbol: symbols[(i % 6) as usize].into(),
            ts_us: BASE + i * 1_000_000,
            trade_id: format!("{i}"),
            price: (1 + (i * 37) % 997) as f64 / 4.0,
            size: (i % 9) as f64 / 4.0,
            side: 1,
        })
        .collect();
    write_in_batches(&store, &ticks, &[6_000, 11_000]).await;
    let mut shuffled: Vec<TickRow> = (0..ticks.len())
        .map(|i| ticks[(i * 7919) % ticks.len()].clone())
        .collect();
    shuffled.truncate(9_000);
    assert_eq!(store.insert_ticks(shuffled).await.unwrap().stored, 0);
    assert_eq!(store.count_ticks("AAA").await.unwrap(), 2_500);
    assert_eq!(store.count_ticks("BBB").await.unwrap(), 5_000);
    assert_eq!(store.count_ticks("CCC").await.unwrap(), 7_500);
    for symbol in ["AAA", "BBB", "CCC"] {
        assert_rollup_matches(&store, symbol).await;
    }
}
