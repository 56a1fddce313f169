//! `GetCandles` pages cut from the candle history the query process holds in memory
//! (`query.candle_history_bars` newest bars per pair, here 500 of GOOG's 2,148) are exactly the
//! store's rows, on SQLite and PostgreSQL: GOOG's daily bars replayed from the `backtesting`
//! CSV (the reference) come back row for row in every page size, order and range, inside the
//! held bars, across their edge and before it; every row once while new bars are being
//! ingested; and a correction of a held bar, and of an older one, is in the very next page.

use std::ffi::OsString;

use tickmesh_proto::v1::ingestion_service_client::IngestionServiceClient;
use tickmesh_proto::v1::query_service_client::QueryServiceClient;
use tickmesh_proto::v1::{Candle, GetCandlesRequest, IngestCandlesRequest, Interval, SortOrder};
use tonic::transport::Channel;

use crate::support::{self, Process, channel, describe, run, tickmesh};

const DAY_US: i64 = 86_400_000_000;
const HELD: usize = 500;

type Row = (i64, [f64; 5]);

fn row(c: &Candle) -> Row {
    (c.open_time_us, [c.open, c.high, c.low, c.close, c.volume])
}

fn candle((t, [o, h, l, c, v]): Row) -> Candle {
    support::candle("GOOG", Interval::Interval1d, t, [o, h, l, c], v)
}

/// Every page of `request`, in order.
async fn pages(
    client: &mut QueryServiceClient<Channel>,
    mut request: GetCandlesRequest,
) -> Vec<Vec<Row>> {
    let mut out = Vec::new();
    loop {
        let page = client
            .get_candles(request.clone())
            .await
            .unwrap_or_else(|e| panic!("{request:?}: {e:?}"))
            .into_inner();
        out.push(page.candles.iter().map(row).collect());
        if page.next_page_token.is_empty() {
            return out;
        }
        request.page_token = page.next_page_token;
    }
}

async fn ingest(ingestion: &mut IngestionServiceClient<Channel>, rows: &[Row]) {
    ingest_candles(ingestion, rows.iter().copied().map(candle).collect()).await;
}

/// Ingests `candles` in one call; every one is stored.
async fn ingest_candles(ingestion: &mut IngestionServiceClient<Channel>, candles: Vec<Candle>) {
    let n = candles.len();
    let summary = ingestion
        .ingest_candles(IngestCandlesRequest {
            candles,
            source: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .summary
        .unwrap();
    assert!(summary.rejected.is_empty(), "{summary:?}");
    assert_eq!(summary.stored as usize, n, "{summary:?}");
}

fn goog(page_size: u32, descending: bool) -> GetCandlesRequest {
    GetCandlesRequest {
        symbol: "GOOG".into(),
        interval: Interval::Interval1d as i32,
        page_size,
        order: if descending {
            SortOrder::Descending
        } else {
            SortOrder::Ascending
        } as i32,
        ..GetCandlesRequest::default()
    }
}

async fn held_pages_equal_the_store(ingestion: &str, query: &str) {
    let (csv, mut rows) = crate::export::goog_rows();
    let output = run(tickmesh()
        .args(["replay", "--symbol", "GOOG", "--batch", "500", "--target"])
        .arg(ingestion)
        .arg(&csv));
    assert!(output.status.success(), "{}", describe(&output));
    assert!(rows.len() > 4 * HELD, "{} rows", rows.len());
    let mut client = QueryServiceClient::new(channel(query).await);
    let mut ingestion = IngestionServiceClient::new(channel(ingestion).await);

    // Page sizes, orders and ranges: inside the held bars (the newest 500), across their
    // edge, before it, and empty.
    let n = rows.len();
    let edge = n - HELD;
    let ranges = [
        (None, None),
        (Some(edge + 10), None),
        (Some(edge), Some(n - 3)),
        (Some(edge - 40), Some(edge + 40)),
        (Some(100), Some(300)),
        (None, Some(edge + 1)),
    ];
    for (start, end) in ranges {
        let want = &rows[start.unwrap_or(0)..end.unwrap_or(n)];
        for page_size in [1, 7, 500, 5000] {
            if page_size == 1 && want.len() > 600 {
                continue;
            }
            for descending in [false, true] {
                let request = GetCandlesRequest {
                    start_time_us: start.map_or(0, |i| rows[i].0),
                    end_time_us: end.map_or(0, |i| rows[i].0),
                    ..goog(page_size, descending)
                };
                let got = pages(&mut client, request.clone()).await;
                for page in &got {
                    assert!(page.len() <= page_size as usize, "{request:?}");
                }
                let mut flat: Vec<Row> = got.into_iter().flatten().collect();
                if descending {
                    flat.reverse();
                }
                assert_eq!(flat.len(), want.len(), "{request:?}: row count");
                for (i, (g, w)) in flat.iter().zip(want).enumerate() {
                    assert_eq!(g, w, "{request:?}: row {i}");
                }
            }
        }
    }
    let empty = pages(
        &mut client,
        GetCandlesRequest {
            start_time_us: rows[n - 1].0 + 1,
            ..goog(100, false)
        },
    )
    .await;
    assert_eq!(empty, vec![Vec::<Row>::new()]);

    // New bars after the last one, ingested while a reader pages through the held bars: every
    // row once, in order, each as stored.
    let last = rows[n - 1].0;
    let extra: Vec<Row> = (1..=300)
        .map(|i| {
            let c = 1000.0 + i as f64;
            (
                last + i * DAY_US,
                [c - 1.0, c + 2.0, c - 2.0, c, 5_000.0 + i as f64],
            )
        })
        .collect();
    let writer = {
        let extra = extra.clone();
        let mut ingestion = ingestion.clone();
        tokio::spawn(async move {
            for chunk in extra.chunks(10) {
                ingest(&mut ingestion, chunk).await;
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        })
    };
    let mut seen: Vec<Row> = Vec::new();
    let mut request = GetCandlesRequest {
        start_time_us: rows[edge + 100].0,
        ..goog(25, false)
    };
    loop {
        let page = client
            .get_candles(request.clone())
            .await
            .unwrap()
            .into_inner();
        seen.extend(page.candles.iter().map(row));
        if page.next_page_token.is_empty() {
            break;
        }
        request.page_token = page.next_page_token;
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    writer.await.unwrap();
    let everything: Vec<Row> = rows.iter().chain(&extra).copied().collect();
    let from = edge + 100;
    assert!(seen.len() >= n - from, "{} rows seen", seen.len());
    for (i, (g, w)) in seen.iter().zip(&everything[from..]).enumerate() {
        assert_eq!(g, w, "row {i} while ingesting");
    }
    rows = everything;
    let all: Vec<Row> = pages(&mut client, goog(5000, false))
        .await
        .into_iter()
        .flatten()
        .collect();
    assert_eq!(all, rows, "after the ingest");

    // Corrections, one of a held bar and one of a bar before the held ones, are in the next
    // page that holds them.
    let n = rows.len();
    for i in [n - 20, 50] {
        let mut fixed = rows[i];
        fixed.1[3] += 0.25;
        fixed.1[1] = fixed.1[1].max(fixed.1[3]);
        ingest(&mut ingestion, &[fixed]).await;
        let page = client
            .get_candles(GetCandlesRequest {
                start_time_us: rows[i - 2].0,
                ..goog(5, false)
            })
            .await
            .unwrap()
            .into_inner();
        let got: Vec<Row> = page.candles.iter().map(row).collect();
        rows[i] = fixed;
        assert_eq!(
            got,
            rows[i - 2..i + 3].to_vec(),
            "right after correcting row {i}"
        );
        let newest = pages(&mut client, goog(5000, true))
            .await
            .into_iter()
            .flatten()
            .count();
        assert_eq!(newest, n);
    }
}

fn up(extra: Vec<(&'static str, OsString)>) -> Process {
    Process::start(&["up", "--base-port", "0"], move |c| {
        c.env("TICKMESH_QUERY__CANDLE_HISTORY_BARS", HELD.to_string())
            .envs(extra);
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_candle_pages_equal_the_store_on_sqlite() {
    let mesh = up(vec![]);
    held_pages_equal_the_store(mesh.addr("ingestion"), mesh.addr("query")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_candle_pages_equal_the_store_on_postgres() {
    let pg = tickmesh_testkit::Postgres::start().expect("a throwaway PostgreSQL");
    let mesh = up(vec![("TICKMESH_STORE_URL", pg.url().into())]);
    held_pages_equal_the_store(mesh.addr("ingestion"), mesh.addr("query")).await;
}

/// `tickmesh_query_held_candle_bytes` on `/metrics`.
fn held_bytes(metrics: &str) -> u64 {
    support::sample(metrics, "tickmesh_query_held_candle_bytes") as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_held_history_filled_past_its_bound_keeps_the_query_process_under_it() {
    // The bound, and what the process may grow past it: the allocator's slack and the rows of
    // the load in flight (one pair's 20,000 rows as read from the store).
    const BOUND: u64 = 16 << 20;
    const MARGIN: u64 = 8 << 20;
    // 16 pairs of 20,000 minute bars, about 127 bytes a bar held: some 40 MB, 2.5x the bound.
    const PAIRS: usize = 16;
    const BARS: usize = 20_000;
    let mesh = Process::start(&["up", "--base-port", "0"], |c| {
        c.env("TICKMESH_QUERY__CANDLE_CACHE_BYTES", BOUND.to_string())
            .env("TICKMESH_QUERY__CANDLE_HISTORY_BARS", BARS.to_string());
    });
    let mut ingestion = IngestionServiceClient::new(channel(mesh.addr("ingestion")).await);
    let mut query = QueryServiceClient::new(channel(mesh.addr("query")).await);
    let t0 = 1_735_689_600_000_000_i64; // 2025-01-01T00:00:00Z
    for pair in 0..PAIRS {
        for chunk in (0..BARS).step_by(5_000) {
            let candles = (chunk..chunk + 5_000)
                .map(|i| {
                    let price = 100.0 + (i % 100) as f64 / 10.0;
                    support::candle(
                        &format!("HELD{pair}"),
                        Interval::Interval1m,
                        t0 + i as i64 * 60_000_000,
                        [price, price + 1.0, price - 1.0, price + 0.5],
                        10.0,
                    )
                })
                .collect();
            ingest_candles(&mut ingestion, candles).await;
        }
    }
    let newest = |pair: usize| GetCandlesRequest {
        symbol: format!("HELD{pair}"),
        interval: Interval::Interval1m as i32,
        page_size: 500,
        order: SortOrder::Descending as i32,
        ..GetCandlesRequest::default()
    };
    // One pair held: the paths are warm; the baseline.
    query.get_candles(newest(0)).await.unwrap();
    let pid = mesh.child.id();
    let before = support::rss(pid);
    let mut most_held = 0;
    for round in 0..2 {
        for pair in 0..PAIRS {
            let page = query.get_candles(newest(pair)).await.unwrap().into_inner();
            assert_eq!(page.candles.len(), 500, "round {round}, pair {pair}");
            let held = held_bytes(&mesh.metrics);
            assert!(
                held <= BOUND,
                "{held} bytes held, over the bound of {BOUND}"
            );
            most_held = most_held.max(held);
        }
    }
    let grown = support::rss(pid).saturating_sub(before);
    eprintln!(
        "held at most {most_held} of {BOUND} bytes; RSS grew {grown} bytes ({:.1} MiB) loading \
         {PAIRS} pairs twice",
        grown as f64 / (1 << 20) as f64
    );
    // The bound was reached (so evictions ran), and memory followed it.
    assert!(most_held >= BOUND / 2, "only {most_held} bytes ever held");
    assert!(
        grown <= BOUND + MARGIN,
        "RSS grew {grown} bytes, more than the bound {BOUND} plus {MARGIN}"
    );
}
