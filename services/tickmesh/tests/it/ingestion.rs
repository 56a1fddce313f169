//! Ingestion over gRPC into the embedded SQLite store and into a real PostgreSQL.

use std::ffi::OsString;

use tickmesh_proto::v1::ingestion_service_client::IngestionServiceClient;
use tickmesh_proto::v1::{
    Candle, IngestCandlesRequest, IngestTickBatchRequest, IngestTicksRequest, Interval, Side, Tick,
};
use tonic::Code;
use tonic::transport::Channel;
use tonic_types::StatusExt;

use crate::support::{self, Process, channel, serve_ingestion};

/// 2024-03-01T00:00:00Z.
const T0: i64 = 1_709_251_200_000_000;

fn tick(symbol: &str, i: i64) -> Tick {
    support::tick(
        symbol,
        T0 + i * 1_000,
        format!("{i}"),
        100.0 + i as f64 / 100.0,
        1.5,
        Side::Buy,
    )
}

async fn client(process: &Process) -> IngestionServiceClient<Channel> {
    IngestionServiceClient::new(channel(process.addr("ingestion")).await)
}

fn batch(ticks: Vec<Tick>) -> IngestTickBatchRequest {
    IngestTickBatchRequest {
        ticks,
        source: "test".into(),
    }
}

#[tokio::test]
async fn a_batch_is_stored_once_however_often_it_is_sent() {
    let mesh = Process::start(&["up", "--base-port", "0"], |_| {});
    let mut client = client(&mesh).await;
    let ticks: Vec<Tick> = (0..500).map(|i| tick("BTC-USD", i)).collect();
    let first = client
        .ingest_tick_batch(batch(ticks.clone()))
        .await
        .unwrap();
    let summary = first.into_inner().summary.unwrap();
    assert_eq!(
        (summary.stored, summary.duplicates, summary.rejected_count),
        (500, 0, 0)
    );
    let again = client.ingest_tick_batch(batch(ticks)).await.unwrap();
    let summary = again.into_inner().summary.unwrap();
    assert_eq!((summary.stored, summary.duplicates), (0, 500));
}

#[tokio::test]
async fn invalid_rows_are_reported_by_index_and_the_valid_ones_stored() {
    let mesh = Process::start(&["up", "--base-port", "0"], |_| {});
    let mut client = client(&mesh).await;
    let mut ticks: Vec<Tick> = (0..6).map(|i| tick("ETH-USD", i)).collect();
    ticks[1].price = f64::NAN;
    ticks[3].symbol = "X'; DROP TABLE ticks; --".into();
    ticks[4].size = -1.0;
    let summary = client
        .ingest_tick_batch(batch(ticks))
        .await
        .unwrap()
        .into_inner()
        .summary
        .unwrap();
    assert_eq!(summary.stored, 3);
    assert_eq!(summary.rejected_count, 3);
    let rejected: Vec<(u32, &str)> = summary
        .rejected
        .iter()
        .map(|r| (r.row_index, r.field.as_str()))
        .collect();
    assert_eq!(rejected, [(1, "price"), (3, "symbol"), (4, "size")]);
}

#[tokio::test]
async fn a_batch_with_no_valid_row_is_invalid_argument_with_field_violations() {
    let mesh = Process::start(&["up", "--base-port", "0"], |_| {});
    let mut client = client(&mesh).await;
    let mut ticks: Vec<Tick> = (0..2).map(|i| tick("ETH-USD", i)).collect();
    ticks[0].price = f64::INFINITY;
    ticks[1].time_us = i64::MAX;
    let status = client.ingest_tick_batch(batch(ticks)).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let details = status
        .get_details_bad_request()
        .expect("BadRequest details");
    let fields: Vec<&str> = details
        .field_violations
        .iter()
        .map(|v| v.field.as_str())
        .collect();
    assert_eq!(fields, ["ticks[0].price", "ticks[1].time_us"]);

    let empty = client.ingest_tick_batch(batch(vec![])).await.unwrap_err();
    assert_eq!(empty.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn a_batch_over_the_configured_limit_is_refused_whole() {
    let mesh = Process::start(&["up", "--base-port", "0"], |c| {
        c.env("TICKMESH_INGESTION__MAX_BATCH_ROWS", "10");
    });
    let mut client = client(&mesh).await;
    let status = client
        .ingest_tick_batch(batch((0..11).map(|i| tick("BTC-USD", i)).collect()))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("over the limit of 10"),
        "{}",
        status.message()
    );
    // Nothing of it was stored: the same rows in allowed batches are all new.
    let summary = client
        .ingest_tick_batch(batch((0..10).map(|i| tick("BTC-USD", i)).collect()))
        .await
        .unwrap()
        .into_inner()
        .summary
        .unwrap();
    assert_eq!(summary.stored, 10);
}

#[tokio::test]
async fn a_tick_stream_commits_every_batch_and_sums_them_up() {
    let mesh = Process::start(&["up", "--base-port", "0"], |_| {});
    let mut client = client(&mesh).await;
    let batches: Vec<IngestTicksRequest> = (0..20)
        .map(|b| IngestTicksRequest {
            // Batch 5 repeats batch 4: its rows count as duplicates.
            ticks: (0..250)
                .map(|i| tick("SOL-USD", if b == 5 { 4 } else { b } * 250 + i))
                .collect(),
            source: "stream".into(),
        })
        .collect();
    let summary = client
        .ingest_ticks(tokio_stream::iter(batches))
        .await
        .unwrap()
        .into_inner()
        .summary
        .unwrap();
    assert_eq!(summary.batches, 20);
    assert_eq!(summary.stored, 19 * 250);
    assert_eq!(summary.duplicates, 250);
}

#[tokio::test]
async fn candles_are_validated_and_stored_idempotently() {
    let mesh = Process::start(&["up", "--base-port", "0"], |_| {});
    let mut client = client(&mesh).await;
    let day = 86_400_000_000;
    let candles: Vec<Candle> = (0..30)
        .map(|d| {
            support::candle(
                "GOOG",
                Interval::Interval1d,
                T0 + d * day,
                [100.0, 110.0, 95.0, 105.0],
                1e6,
            )
        })
        .collect();
    let request = || IngestCandlesRequest {
        candles: candles.clone(),
        source: "test".into(),
    };
    let summary = client
        .ingest_candles(request())
        .await
        .unwrap()
        .into_inner()
        .summary
        .unwrap();
    assert_eq!(summary.stored, 30);
    let summary = client
        .ingest_candles(request())
        .await
        .unwrap()
        .into_inner()
        .summary
        .unwrap();
    assert_eq!((summary.stored, summary.duplicates), (0, 30));
}

#[tokio::test]
async fn ingestion_into_postgres_is_counted_by_psql() {
    let pg = tickmesh_testkit::Postgres::start().expect("a throwaway PostgreSQL");
    let mesh = serve_ingestion(&[("TICKMESH_STORE_URL", OsString::from(pg.url()))]);
    let mut client = client(&mesh).await;
    let batches: Vec<IngestTicksRequest> = (0..10)
        .map(|b| IngestTicksRequest {
            ticks: (0..1000).map(|i| tick("BTC-USD", b * 1000 + i)).collect(),
            source: "pg".into(),
        })
        .collect();
    let summary = client
        .ingest_ticks(tokio_stream::iter(batches.clone()))
        .await
        .unwrap()
        .into_inner()
        .summary
        .unwrap();
    assert_eq!(summary.stored, 10_000);
    // A retried stream changes nothing.
    let again = client
        .ingest_ticks(tokio_stream::iter(batches))
        .await
        .unwrap()
        .into_inner()
        .summary
        .unwrap();
    assert_eq!((again.stored, again.duplicates), (0, 10_000));
    let counted = pg
        .psql("select count(*), count(distinct trade_id), min(price), max(price) from ticks where symbol = 'BTC-USD'")
        .unwrap();
    assert_eq!(counted, "10000|10000|100|199.99");
    // Months long past go to the DEFAULT partition (no partition per month of history)...
    assert_eq!(
        pg.psql("select count(*) from ticks_default").unwrap(),
        "10000"
    );
    // ...while the current month's rows go to its own partition, created ahead.
    let now_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64;
    let recent: Vec<Tick> = (0..5)
        .map(|i| Tick {
            time_us: now_us - 1_000_000 - i,
            ..tick("BTC-USD", 100_000 + i)
        })
        .collect();
    client.ingest_tick_batch(batch(recent)).await.unwrap();
    assert_eq!(
        pg.psql("select count(*) from ticks_default").unwrap(),
        "10000"
    );
    assert_eq!(pg.psql("select count(*) from ticks").unwrap(), "10005");
}

/// Decodes the market events of bus deliveries.
fn events_of(deliveries: &[tickmesh_bus::Delivery]) -> Vec<tickmesh_proto::v1::MarketEvent> {
    use prost::Message;
    deliveries
        .iter()
        .flat_map(|d| {
            tickmesh_proto::v1::MarketEventBatch::decode(d.body.as_slice())
                .unwrap()
                .events
        })
        .collect()
}

/// Reads deliveries until `want` events arrived (or 20 s passed).
async fn receive(
    subscription: &mut tickmesh_bus::Subscription,
    want: usize,
) -> Vec<tickmesh_proto::v1::MarketEvent> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut events = Vec::new();
    while events.len() < want && std::time::Instant::now() < deadline {
        let batch = subscription
            .next_batch(100, std::time::Duration::from_millis(200))
            .await
            .unwrap();
        let ids: Vec<String> = batch.iter().map(|d| d.id.clone()).collect();
        events.extend(events_of(&batch));
        subscription.ack(&ids).await.unwrap();
    }
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_ticks_and_closed_candles_reach_the_redis_bus() {
    use tickmesh_proto::v1::market_event::Payload;
    let pg = tickmesh_testkit::Postgres::start().expect("a throwaway PostgreSQL");
    let redis = tickmesh_testkit::Redis::start().expect("a throwaway Redis");
    let bus = tickmesh_bus::Bus::redis(&redis.url(), tickmesh::app::BUS_STREAM, 10_000)
        .await
        .unwrap();
    let mut subscription = bus.subscribe("test", "reader").await.unwrap();
    let mesh = serve_ingestion(&[
        ("TICKMESH_STORE_URL", OsString::from(pg.url())),
        ("TICKMESH_BUS_URL", OsString::from(redis.url())),
    ]);
    let mut client = client(&mesh).await;
    // Two minutes of ticks, one every 100 ms: 120 one-second bars and one one-minute bar close.
    let ticks: Vec<Tick> = (0..1200).map(|i| tick("BTC-USD", i * 100)).collect();
    client
        .ingest_tick_batch(batch(ticks.clone()))
        .await
        .unwrap();
    // The retry of the same batch publishes nothing new.
    client.ingest_tick_batch(batch(ticks)).await.unwrap();

    let events = receive(&mut subscription, 1200 + 119 + 1).await;
    let tick_events = events
        .iter()
        .filter(|e| matches!(e.payload, Some(Payload::Tick(_))))
        .count();
    let closed: Vec<&tickmesh_proto::v1::Candle> = events
        .iter()
        .filter_map(|e| match &e.payload {
            Some(Payload::Candle(c)) => Some(c),
            _ => None,
        })
        .collect();
    assert_eq!(tick_events, 1200);
    assert!(closed.iter().all(|c| c.closed));
    let one_second = closed
        .iter()
        .filter(|c| c.interval == Interval::Interval1s as i32)
        .count();
    let one_minute = closed
        .iter()
        .filter(|c| c.interval == Interval::Interval1m as i32)
        .count();
    // The last second and the last minute stay open: no later tick has arrived yet.
    assert_eq!((one_second, one_minute), (119, 1));
    let ids: std::collections::HashSet<&str> = events.iter().map(|e| e.event_id.as_str()).collect();
    assert_eq!(ids.len(), events.len(), "event ids are unique");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_closed_feed_candles_reach_the_redis_bus_once() {
    use tickmesh_proto::v1::market_event::Payload;
    let dir = tempfile::tempdir().unwrap();
    let redis = tickmesh_testkit::Redis::start().expect("a throwaway Redis");
    let bus = tickmesh_bus::Bus::redis(&redis.url(), tickmesh::app::BUS_STREAM, 10_000)
        .await
        .unwrap();
    let mut subscription = bus.subscribe("test", "reader").await.unwrap();
    let store = format!("sqlite:{}", dir.path().join("s.db").display());
    let mesh = serve_ingestion(&[
        ("TICKMESH_STORE_URL", OsString::from(&store)),
        ("TICKMESH_BUS_URL", OsString::from(redis.url())),
    ]);
    let mut client = client(&mesh).await;
    let hour = 3_600_000_000;
    let candles: Vec<Candle> = (0..10)
        .map(|h| Candle {
            // The last bar is still forming.
            closed: h < 9,
            ..support::candle(
                "EURUSD",
                Interval::Interval1h,
                T0 + h * hour,
                [1.07, 1.08, 1.06, 1.075],
                1000.0,
            )
        })
        .collect();
    let request = || IngestCandlesRequest {
        candles: candles.clone(),
        source: "feed".into(),
    };
    client.ingest_candles(request()).await.unwrap();
    client.ingest_candles(request()).await.unwrap();
    let events = receive(&mut subscription, 9).await;
    // Give a duplicate publication the chance to show up before counting.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let more = subscription
        .next_batch(100, std::time::Duration::from_millis(100))
        .await
        .unwrap();
    let candles_seen = events
        .iter()
        .chain(events_of(&more).iter())
        .filter(|e| matches!(&e.payload, Some(Payload::Candle(c)) if c.closed))
        .count();
    assert_eq!(
        candles_seen, 9,
        "each new closed candle once, the open one not at all"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_ingestion_processes_on_one_database_publish_each_commit_once() {
    let pg = tickmesh_testkit::Postgres::start().expect("a throwaway PostgreSQL");
    let redis = tickmesh_testkit::Redis::start().expect("a throwaway Redis");
    let start = || {
        serve_ingestion(&[
            ("TICKMESH_STORE_URL", OsString::from(pg.url())),
            ("TICKMESH_BUS_URL", OsString::from(redis.url())),
        ])
    };
    let (first, second) = (start(), start());
    let mut clients = [client(&first).await, client(&second).await];
    for b in 0..6 {
        let ticks: Vec<Tick> = (0..100).map(|i| tick("ADA-USD", b * 100 + i)).collect();
        clients[b as usize % 2]
            .ingest_tick_batch(batch(ticks))
            .await
            .unwrap();
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while pg.psql("select count(*) from outbox").unwrap() != "0" {
        assert!(std::time::Instant::now() < deadline, "outbox not drained");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // Only the lease holder publishes: six commits, six stream entries.
    let len = redis.command(&["XLEN", tickmesh::app::BUS_STREAM]).unwrap();
    assert_eq!(len, "6");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_down_ingestion_keeps_storing_and_publishes_when_it_is_back() {
    let pg = tickmesh_testkit::Postgres::start().expect("a throwaway PostgreSQL");
    let mut redis = tickmesh_testkit::Redis::start().expect("a throwaway Redis");
    let mesh = serve_ingestion(&[
        ("TICKMESH_STORE_URL", OsString::from(pg.url())),
        ("TICKMESH_BUS_URL", OsString::from(redis.url())),
    ]);
    let mut client = client(&mesh).await;
    redis.stop();
    for b in 0..5 {
        let ticks: Vec<Tick> = (0..100).map(|i| tick("ETH-USD", b * 100 + i)).collect();
        let summary = client
            .ingest_tick_batch(batch(ticks))
            .await
            .expect("ingestion does not depend on the bus being up")
            .into_inner()
            .summary
            .unwrap();
        assert_eq!(summary.stored, 100);
    }
    assert_eq!(
        pg.psql("select count(*) from outbox").unwrap(),
        "5",
        "events wait in the outbox"
    );
    redis.restart().unwrap();
    // The relay retries with backoff; every queued event reaches the stream.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let queued = pg.psql("select count(*) from outbox").unwrap();
        let len = redis.command(&["XLEN", tickmesh::app::BUS_STREAM]).unwrap();
        // At least once: a publish retried after a timeout may add an entry twice.
        if queued == "0" && len.parse::<u64>().unwrap_or(0) >= 5 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "outbox {queued}, stream length {len}:\n{}",
            mesh.log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_concurrency_limit_calls_are_refused_at_once_but_health_answers() {
    let mesh = Process::start(&["up", "--base-port", "0"], |c| {
        c.env("TICKMESH_SERVER__CONCURRENCY_LIMIT", "1");
    });
    let mut client = client(&mesh).await;
    // A client stream that stays open holds the one slot.
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let held = {
        let mut client = client.clone();
        tokio::spawn(async move {
            client
                .ingest_ticks(tokio_stream::wrappers::ReceiverStream::new(rx))
                .await
        })
    };
    tx.send(IngestTicksRequest {
        ticks: (0..10).map(|i| tick("BTC-USD", i)).collect(),
        source: "hold".into(),
    })
    .await
    .unwrap();
    // Wait until the server holds the stream: the in-flight gauge of the metrics shows it.
    let holding = "tickmesh_rpc_server_active_calls{rpc_system_name=\"grpc\",rpc_service=\"tickmesh.v1.IngestionService\",rpc_method=\"tickmesh.v1.IngestionService/IngestTicks\"} 1";
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !crate::support::scrape(&mesh.metrics).contains(holding) {
        assert!(
            !held.is_finished(),
            "the holding stream ended early: {:?}",
            held.await
        );
        assert!(
            std::time::Instant::now() < deadline,
            "the stream never reached the server"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let refused = client
        .ingest_tick_batch(batch(vec![tick("BTC-USD", 99)]))
        .await
        .expect_err("the one slot is taken");
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert!(
        refused.message().contains("server.concurrency_limit"),
        "{}",
        refused.message()
    );
    // A busy server is not a dead one.
    assert_eq!(
        crate::support::health(mesh.addr("ingestion"), "").await,
        tonic_health::pb::health_check_response::ServingStatus::Serving
    );
    drop(tx);
    let summary = held.await.unwrap().unwrap().into_inner().summary.unwrap();
    assert_eq!(summary.stored, 10);
    // The slot is free again.
    client
        .ingest_tick_batch(batch(vec![tick("BTC-USD", 100)]))
        .await
        .unwrap();
}
