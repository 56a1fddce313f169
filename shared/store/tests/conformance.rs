//! The same cases against both backends: a real, throwaway PostgreSQL (test kit) and an
//! SQLite file in a temp dir.

#![allow(clippy::unwrap_used)] // helpers unwrap too: a panic is a failed test

use prost::Message;
use tickmesh_proto::v1::{MarketEvent, MarketEventBatch, Signal, market_event::Payload};
use tickmesh_store::{
    BackendKind, CandleQuery, CandleRow, SignalRow, Store, StoreOptions, TickRow,
};
use tickmesh_testkit::Postgres;

struct Backends {
    _pg: Postgres,
    _dir: tempfile::TempDir,
    stores: Vec<Store>,
}

async fn backends() -> Backends {
    let pg = Postgres::start().expect("a throwaway PostgreSQL");
    let dir = tempfile::tempdir().unwrap();
    let sqlite_url = format!("sqlite:{}", dir.path().join("store.db").display());
    let stores = vec![
        Store::open(&StoreOptions::new(pg.url())).await.unwrap(),
        Store::open(&StoreOptions::new(sqlite_url)).await.unwrap(),
    ];
    Backends {
        _pg: pg,
        _dir: dir,
        stores,
    }
}

const DAY_US: i64 = 86_400_000_000;
/// 2024-01-30T00:00:00Z, so a few days of rows cross into the February partition.
const T0: i64 = 1_706_572_800_000_000;

fn tick(symbol: &str, i: i64) -> TickRow {
    TickRow {
        symbol: symbol.to_owned(),
        ts_us: T0 + i * 1_000_000,
        trade_id: format!("t{i}"),
        price: 100.0 + (i % 17) as f64 * 0.25,
        size: 1.0 + (i % 5) as f64,
        side: (i % 3) as i16,
    }
}

fn candle(symbol: &str, day: i64) -> CandleRow {
    CandleRow {
        symbol: symbol.to_owned(),
        interval_code: 7,
        open_time_us: T0 + day * DAY_US,
        open: 10.0 + day as f64,
        high: 12.0 + day as f64,
        low: 9.0 + day as f64,
        close: 11.0 + day as f64,
        volume: 1000.0 * day as f64,
        trade_count: 0,
        closed: true,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writing_the_same_batch_twice_leaves_the_store_unchanged() {
    let b = backends().await;
    for store in &b.stores {
        let batch: Vec<TickRow> = (0..1000).map(|i| tick("BTC-USD", i)).collect();
        assert_eq!(
            store.insert_ticks(batch.clone()).await.unwrap().stored,
            1000,
            "{:?}",
            store.kind()
        );
        assert_eq!(
            store.insert_ticks(batch.clone()).await.unwrap().stored,
            0,
            "{:?}",
            store.kind()
        );
        // Half old, half new: only the new half is stored.
        let overlapping: Vec<TickRow> = (500..1500).map(|i| tick("BTC-USD", i)).collect();
        assert_eq!(store.insert_ticks(overlapping).await.unwrap().stored, 500);
        assert_eq!(store.count_ticks("BTC-USD").await.unwrap(), 1500);
        let back = store
            .ticks("BTC-USD", T0, T0 + 1000 * 1_000_000, 10_000)
            .await
            .unwrap();
        assert_eq!(back, batch, "{:?}", store.kind());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_bigger_than_one_statement_is_stored_in_one_go() {
    let b = backends().await;
    for store in &b.stores {
        // More rows than one statement takes on either backend, spanning several days.
        let batch: Vec<TickRow> = (0..25_000).map(|i| tick("ETH-USD", i * 30)).collect();
        assert_eq!(store.insert_ticks(batch).await.unwrap().stored, 25_000);
        assert_eq!(store.count_ticks("ETH-USD").await.unwrap(), 25_000);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn candle_pages_cover_the_range_exactly_once_in_both_orders() {
    let b = backends().await;
    for store in &b.stores {
        let all: Vec<CandleRow> = (0..95).map(|d| candle("GOOG", d)).collect();
        assert_eq!(store.insert_candles(all.clone()).await.unwrap(), 95);
        assert_eq!(store.insert_candles(all.clone()).await.unwrap(), 0);
        // Another symbol and interval in the same table must not leak into the pages.
        store
            .insert_candles(vec![
                candle("AAPL", 3),
                CandleRow {
                    interval_code: 5,
                    ..candle("GOOG", 3)
                },
            ])
            .await
            .unwrap();

        let (start, end) = (T0 + 10 * DAY_US, T0 + 80 * DAY_US);
        let expected: Vec<&CandleRow> = all
            .iter()
            .filter(|c| (start..end).contains(&c.open_time_us))
            .collect();
        for descending in [false, true] {
            let mut seen = Vec::new();
            let mut after = None;
            loop {
                let page = store
                    .candles(&CandleQuery {
                        symbol: "GOOG".into(),
                        interval_code: 7,
                        start_us: Some(start),
                        end_us: Some(end),
                        after_us: after,
                        descending,
                        limit: 7,
                    })
                    .await
                    .unwrap();
                if page.is_empty() {
                    break;
                }
                after = page.last().map(|c| c.open_time_us);
                seen.extend(page);
            }
            let mut want: Vec<CandleRow> = expected.iter().map(|c| (*c).clone()).collect();
            if descending {
                want.reverse();
            }
            assert_eq!(seen, want, "{:?} descending={descending}", store.kind());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_latest_tick_is_the_newest_and_strings_are_stored_literally() {
    let b = backends().await;
    for store in &b.stores {
        let odd = "X'); DROP TABLE ticks; --";
        let mut rows: Vec<TickRow> = (0..50).rev().map(|i| tick(odd, i)).collect();
        rows.push(tick("OTHER", 99));
        store.insert_ticks(rows).await.unwrap();
        let latest = store.latest_tick(odd).await.unwrap().unwrap();
        assert_eq!(latest, tick(odd, 49));
        assert_eq!(store.count_ticks(odd).await.unwrap(), 50);
        assert_eq!(store.latest_tick("NOPE").await.unwrap(), None);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signals_are_idempotent_too() {
    let b = backends().await;
    for store in &b.stores {
        let signal = SignalRow {
            symbol: "BTC-USD".into(),
            interval_code: 2,
            time_us: T0,
            strategy: 5,
            action: 1,
            confidence: 0.75,
            price: 42_000.0,
            body: vec![1, 2, 3],
        };
        assert_eq!(store.insert_signals(vec![signal.clone()]).await.unwrap(), 1);
        assert_eq!(store.insert_signals(vec![signal]).await.unwrap(), 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_main_queries_are_served_by_an_index() {
    let b = backends().await;
    let queries = [
        // GetCandles pages.
        "SELECT * FROM candles WHERE symbol = 'GOOG' AND interval_code = 7 AND open_time_us >= 0 AND open_time_us < 99 ORDER BY open_time_us LIMIT 500",
        // Tick ranges and the latest price.
        "SELECT * FROM ticks WHERE symbol = 'GOOG' AND ts_us >= 0 AND ts_us < 99 ORDER BY ts_us, trade_id LIMIT 500",
        "SELECT * FROM ticks WHERE symbol = 'GOOG' ORDER BY ts_us DESC, trade_id DESC LIMIT 1",
        // GetSignals by symbol and time, and by outcome.
        "SELECT * FROM signals WHERE symbol = 'GOOG' AND time_us >= 0 ORDER BY time_us DESC LIMIT 100",
        "SELECT * FROM signals WHERE action = 1 AND time_us >= 0 ORDER BY time_us DESC LIMIT 100",
    ];
    for store in &b.stores {
        // The check itself can fail: a filter on an unindexed column is caught.
        let control = store
            .explain("SELECT * FROM ticks WHERE price = 1")
            .await
            .unwrap();
        assert!(!served_by_index(store.kind(), &control), "{control}");
        for sql in queries {
            let plan = store.explain(sql).await.unwrap();
            assert!(
                served_by_index(store.kind(), &plan),
                "{:?} does not use an index for\n{sql}\nplan:\n{plan}",
                store.kind()
            );
        }
    }
}

fn served_by_index(kind: BackendKind, plan: &str) -> bool {
    let uses_index = match kind {
        BackendKind::Postgres => {
            plan.contains("Index Scan")
                || plan.contains("Index Only Scan")
                || plan.contains("Bitmap Index Scan")
        }
        BackendKind::Sqlite => {
            plan.lines()
                .all(|l| !l.starts_with("SCAN") || l.contains("USING"))
                && (plan.contains("USING INDEX")
                    || plan.contains("USING PRIMARY KEY")
                    || plan.contains("USING COVERING INDEX"))
        }
    };
    uses_index && !plan.contains("Seq Scan")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_candle_is_a_correction_and_an_unchanged_one_a_duplicate() {
    let b = backends().await;
    for store in &b.stores {
        let kind = store.kind();
        let batch: Vec<CandleRow> = (0..5).map(|d| candle("GOOG", d)).collect();
        assert_eq!(store.insert_candles(batch.clone()).await.unwrap(), 5);
        assert_eq!(store.insert_candles(batch.clone()).await.unwrap(), 0);
        // The source corrects day 2's close; the rest of the batch is a retry.
        let mut corrected = batch.clone();
        corrected[2].close += 0.5;
        corrected[2].high += 0.5;
        assert_eq!(
            store.insert_candles(corrected.clone()).await.unwrap(),
            1,
            "{kind:?}"
        );
        let back = store
            .candles(&CandleQuery {
                symbol: "GOOG".into(),
                interval_code: 7,
                start_us: None,
                end_us: None,
                after_us: None,
                descending: false,
                limit: 100,
            })
            .await
            .unwrap();
        assert_eq!(back, corrected, "{kind:?}");
        // The correction is a new event, the retry is not.
        assert_ne!(
            tickmesh_store::events::candle_id(&batch[2]),
            tickmesh_store::events::candle_id(&corrected[2])
        );
        assert_eq!(
            tickmesh_store::events::candle_id(&batch[1]),
            tickmesh_store::events::candle_id(&corrected[1])
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ticks_sharing_a_microsecond_and_mixed_old_and_new_symbols_are_all_stored_once() {
    let b = backends().await;
    for store in &b.stores {
        let kind = store.kind();
        // Two trades in one microsecond: not strictly increasing, so the idempotent path.
        let mut same_time = vec![tick("AAA", 0), tick("AAA", 0), tick("AAA", 1)];
        same_time[1].trade_id = "other".into();
        assert_eq!(
            store.insert_ticks(same_time).await.unwrap().stored,
            3,
            "{kind:?}"
        );
        // Newer ticks of a stored symbol with a new symbol: all new.
        let fresh = vec![tick("AAA", 2), tick("BBB", 0), tick("AAA", 3)];
        assert_eq!(store.insert_ticks(fresh.clone()).await.unwrap().stored, 3);
        // One symbol new, one with a tick at its newest stored time: the stored one is
        // skipped, the others are stored.
        let mixed = vec![tick("CCC", 0), tick("AAA", 3), tick("BBB", 1)];
        assert_eq!(store.insert_ticks(mixed).await.unwrap().stored, 2);
        assert_eq!(store.count_ticks("AAA").await.unwrap(), 5);
        assert_eq!(store.count_ticks("BBB").await.unwrap(), 2);
        assert_eq!(store.count_ticks("CCC").await.unwrap(), 1);
    }
}

fn signal(symbol: &str, minute: i64, strategy: i32) -> (Signal, SignalRow) {
    let signal = Signal {
        symbol: symbol.to_owned(),
        interval: 2,
        time_us: T0 + minute * 60_000_000,
        strategy,
        action: 1,
        confidence: 0.75,
        price: 42_000.0 + minute as f64,
        indicators: [("rsi_14".to_owned(), 31.5)].into(),
        ..Signal::default()
    };
    let row = SignalRow::of(&signal);
    (signal, row)
}

/// The signal events queued in the outbox, in order.
async fn queued_signals(store: &Store) -> Vec<MarketEvent> {
    let mut events = Vec::new();
    for row in store.outbox_pending(10_000).await.unwrap() {
        let batch = MarketEventBatch::decode(row.body.as_slice()).unwrap();
        events.extend(
            batch
                .events
                .into_iter()
                .filter(|e| matches!(e.payload, Some(Payload::Signal(_)))),
        );
    }
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inserting_signals_queues_their_events_once() {
    let b = backends().await;
    for store in &b.stores {
        let kind = store.kind();
        let (signals, rows): (Vec<Signal>, Vec<SignalRow>) = [
            signal("BTC-USD", 0, 1),
            signal("BTC-USD", 0, 2),
            signal("ETH-USD", 1, 1),
        ]
        .into_iter()
        .unzip();
        assert_eq!(
            store.insert_signals(rows.clone()).await.unwrap(),
            3,
            "{kind:?}"
        );
        let events = queued_signals(store).await;
        let want: Vec<(String, Option<Payload>)> = signals
            .iter()
            .map(|s| {
                let event = tickmesh_store::events::signal_event(s.clone(), 0);
                (event.event_id, event.payload)
            })
            .collect();
        let got: Vec<(String, Option<Payload>)> = events
            .iter()
            .map(|e| (e.event_id.clone(), e.payload.clone()))
            .collect();
        assert_eq!(got, want, "{kind:?}");
        assert!(events.iter().all(|e| e.published_time_us > 0), "{kind:?}");

        // The same signals again queue nothing; with one new signal, only that one.
        assert_eq!(store.insert_signals(rows.clone()).await.unwrap(), 0);
        assert_eq!(queued_signals(store).await.len(), 3, "{kind:?}");
        let (new_signal, new_row) = signal("ETH-USD", 2, 1);
        let mut again = rows.clone();
        again.push(new_row);
        assert_eq!(store.insert_signals(again).await.unwrap(), 1);
        let events = queued_signals(store).await;
        assert_eq!(events.len(), 4, "{kind:?}");
        assert_eq!(
            events[3].payload,
            Some(Payload::Signal(new_signal)),
            "{kind:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_cut_off_by_postgres_going_away_is_transient() {
    let mut pg = Postgres::start().expect("a throwaway PostgreSQL");
    let store = std::sync::Arc::new(Store::open(&StoreOptions::new(pg.url())).await.unwrap());
    // One symbol, so one transaction: the batch is stored whole or not at all.
    let rows = 200_000;
    let batch: Vec<TickRow> = (0..rows).map(|i| tick("CUT", i)).collect();
    let write = tokio::spawn({
        let store = store.clone();
        async move { store.insert_ticks(batch).await }
    });
    // Stop the server while the write's transaction is open.
    loop {
        assert!(
            !write.is_finished(),
            "the write finished before the server could be stopped; make the batch bigger"
        );
        let busy = pg
            .psql(
                "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' \
                 AND state <> 'idle' AND pid <> pg_backend_pid()",
            )
            .unwrap();
        if busy != "0" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    tokio::task::block_in_place(|| pg.stop());
    let error = write
        .await
        .unwrap()
        .expect_err("a write whose server went away fails");
    assert!(error.is_transient(), "not transient: {error:?}");
    eprintln!("the write failed with: {error}");

    tokio::task::block_in_place(|| pg.restart()).unwrap();
    let stored = store.count_ticks("CUT").await.unwrap();
    assert!(
        stored == 0 || stored == rows,
        "{stored} of {rows} ticks stored"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_store_of_a_database_holds_the_relay_lease_at_a_time() {
    let pg = Postgres::start().expect("a throwaway PostgreSQL");
    let dir = tempfile::tempdir().unwrap();
    let sqlite_url = format!("sqlite:{}", dir.path().join("store.db").display());
    for url in [pg.url(), sqlite_url] {
        // Two stores on one database, as two processes have them.
        let first = Store::open(&StoreOptions::new(url.clone())).await.unwrap();
        let second = Store::open(&StoreOptions::new(url.clone())).await.unwrap();
        let mut held = first.relay_lease().await.unwrap().expect("a free lease");
        assert!(held.still_held().await);
        assert!(
            second.relay_lease().await.unwrap().is_none(),
            "{url}: a second holder"
        );
        drop(held);
        // Given up when dropped (PostgreSQL may take a moment to end the lock's session).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while second.relay_lease().await.unwrap().is_none() {
            assert!(
                std::time::Instant::now() < deadline,
                "{url}: lease not free again"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outbox_backlog_spans_the_queued_ids_and_is_none_when_drained() {
    let b = backends().await;
    for store in &b.stores {
        assert_eq!(
            store.outbox_backlog().await.unwrap(),
            None,
            "{:?}",
            store.kind()
        );
        for symbol in ["AAA", "BBB", "CCC"] {
            store.insert_ticks(vec![tick(symbol, 0)]).await.unwrap();
        }
        let queued = store.outbox_pending(100).await.unwrap();
        assert!(queued.len() >= 3, "{:?}", store.kind());
        let ids: Vec<i64> = queued.iter().map(|row| row.id).collect();
        let (lowest, highest) = (*ids.iter().min().unwrap(), *ids.iter().max().unwrap());
        assert_eq!(
            store.outbox_backlog().await.unwrap(),
            Some((lowest, highest)),
            "{:?}",
            store.kind()
        );
        // Publishing the oldest moves the lowest id up; publishing all empties it.
        store.outbox_remove(&[lowest]).await.unwrap();
        let (after, _) = store.outbox_backlog().await.unwrap().unwrap();
        assert!(after > lowest, "{:?}", store.kind());
        store.outbox_remove(&ids).await.unwrap();
        assert_eq!(
            store.outbox_backlog().await.unwrap(),
            None,
            "{:?}",
            store.kind()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_candle_revision_moves_with_every_write_that_changes_a_candle_of_the_pair() {
    let b = backends().await;
    for store in &b.stores {
        let kind = store.kind();
        let rev =
            async |symbol: &str, code: i16| store.candle_revision(symbol, code).await.unwrap();
        assert_eq!(rev("REVA", 7).await, 0, "{kind:?}: never written");
        store
            .insert_candles(vec![candle("REVA", 0), candle("REVA", 1)])
            .await
            .unwrap();
        let first = rev("REVA", 7).await;
        assert!(first > 0, "{kind:?}");
        // The same rows again change nothing: the revision stays.
        store
            .insert_candles(vec![candle("REVA", 0), candle("REVA", 1)])
            .await
            .unwrap();
        assert_eq!(
            rev("REVA", 7).await,
            first,
            "{kind:?}: a repeat is no change"
        );
        // A correction of an old bar moves it; another pair is untouched.
        let mut corrected = candle("REVA", 0);
        corrected.close += 0.5;
        store.insert_candles(vec![corrected]).await.unwrap();
        let second = rev("REVA", 7).await;
        assert!(second > first, "{kind:?}: a correction");
        assert_eq!(rev("REVB", 7).await, 0, "{kind:?}");
        // Ticks move the revision of every interval their rollup touched.
        let before_1m = rev("REVT", 2).await;
        store
            .insert_ticks((0..120).map(|i| tick("REVT", i)).collect())
            .await
            .unwrap();
        let after_1m = rev("REVT", 2).await;
        assert!(
            after_1m > before_1m,
            "{kind:?}: ticks rolled up into 1m bars"
        );
        assert!(rev("REVT", 7).await > 0, "{kind:?}: and into the daily bar");
        assert_eq!(rev("REVA", 7).await, second, "{kind:?}");
    }
}
