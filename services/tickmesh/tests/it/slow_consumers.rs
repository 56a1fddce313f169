//! Reliability regression tests (issue 15 item 5): a subscriber whose transport stops taking
//! bytes is cut after `server.stream_send_timeout` with RESOURCE_EXHAUSTED and a resume point,
//! and stops counting in `tickmesh_query_active_streams`; a subscriber that reads stays open.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tickmesh_proto::v1::ingestion_service_client::IngestionServiceClient;
use tickmesh_proto::v1::query_service_client::QueryServiceClient;
use tickmesh_proto::v1::{
    EventKind, IngestTickBatchRequest, Side, StreamMarketDataRequest, Tick, market_event::Payload,
};
use tonic::Code;

use crate::support::{self, Process, channel, scrape};

const T0: i64 = 1_700_006_400_000_000;
const SYMBOL: &str = "STALL";
/// Subscribers that stop reading.
const STALLED: usize = 8;
const SEND_TIMEOUT: Duration = Duration::from_secs(2);

fn ticks(range: std::ops::Range<i64>) -> Vec<Tick> {
    range
        .map(|i| {
            support::tick(
                SYMBOL,
                T0 + i * 1_000_000,
                format!("{i}"),
                100.0 + i as f64,
                0.1,
                Side::Buy,
            )
        })
        .collect()
}

fn request() -> StreamMarketDataRequest {
    StreamMarketDataRequest {
        symbols: vec![SYMBOL.into()],
        kinds: vec![EventKind::Tick as i32],
        ..Default::default()
    }
}

fn active_streams(process: &Process) -> Option<u64> {
    scrape(&process.metrics)
        .lines()
        .find_map(|l| l.strip_prefix("tickmesh_query_active_streams "))
        .and_then(|v| v.trim().parse().ok())
}

/// Polls the autoscaling gauge until it reads `want`, at most `limit`.
async fn gauge_reaches(process: &Process, want: u64, limit: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let got = tokio::task::block_in_place(|| active_streams(process));
        if got == Some(want) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "tickmesh_query_active_streams is {got:?}, not {want}, after {limit:?}:\n{}",
            process.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_that_stop_reading_are_cut_and_stop_counting_while_a_reader_stays() {
    let pg = tickmesh_testkit::Postgres::start().expect("a throwaway PostgreSQL");
    let redis = tickmesh_testkit::Redis::start().expect("a throwaway Redis");
    let mesh = Process::start(&["up", "--base-port", "0"], |c| {
        c.env("TICKMESH_STORE_URL", pg.url())
            .env("TICKMESH_BUS_URL", redis.url())
            .env("TICKMESH_SERVER__STREAM_SEND_TIMEOUT", "2s");
    });
    let addr = format!("http://{}", mesh.addr("query"));

    // Subscribers whose HTTP/2 stream window is tiny and who never poll their response: after
    // a few events the server's sends have nowhere to go. Each on its own connection.
    let mut stalled = Vec::new();
    for _ in 0..STALLED {
        let tiny = tonic::transport::Endpoint::from_shared(addr.clone())
            .unwrap()
            .http2_adaptive_window(false)
            .initial_stream_window_size(Some(1024))
            .initial_connection_window_size(Some(1024))
            .connect()
            .await
            .unwrap();
        let stream = QueryServiceClient::new(tiny)
            .stream_market_data(request())
            .await
            .unwrap()
            .into_inner();
        stalled.push(stream);
    }
    // A subscriber that reads everything, on its own connection.
    let mut reading = QueryServiceClient::new(channel(mesh.addr("query")).await)
        .stream_market_data(request())
        .await
        .unwrap()
        .into_inner();
    let got = Arc::new(AtomicUsize::new(0));
    let reader = {
        let got = got.clone();
        tokio::spawn(async move {
            let mut ids = Vec::new();
            loop {
                match tokio::time::timeout(Duration::from_secs(30), reading.message()).await {
                    Ok(Ok(Some(item))) => {
                        if let Some(Payload::Tick(t)) = item.event.and_then(|e| e.payload) {
                            let id = t.trade_id.parse::<i64>().unwrap();
                            ids.push(id);
                            got.fetch_add(1, Ordering::Relaxed);
                            if id == -1 {
                                return (ids, reading);
                            }
                        }
                    }
                    other => panic!("the reading subscriber was cut off: {other:?}"),
                }
            }
        })
    };
    gauge_reaches(&mesh, STALLED as u64 + 1, Duration::from_secs(10)).await;

    // Events: 20 batches of 500 ticks. Each write waits until the reading subscriber has the
    // previous one, so it stays a reader that keeps up however busy the machine is.
    let mut ingest = IngestionServiceClient::new(channel(mesh.addr("ingestion")).await);
    let started = Instant::now();
    for batch in 0..20_i64 {
        ingest
            .ingest_tick_batch(IngestTickBatchRequest {
                ticks: ticks(batch * 500..(batch + 1) * 500),
                ..Default::default()
            })
            .await
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while got.load(Ordering::Relaxed) < (batch as usize + 1) * 500 {
            assert!(Instant::now() < deadline, "the reading subscriber stalled");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    // The stalled streams end server-side after the send timeout (2 s) and leave the gauge: the
    // bound is that timeout plus the time the events took to go out, plus slack for a busy box.
    let took = gauge_reaches(&mesh, 1, SEND_TIMEOUT + Duration::from_secs(15)).await;
    eprintln!(
        "stalled streams left the gauge {:?} after the first write ({took:?} after the last)",
        started.elapsed()
    );
    // And the server really ended them (their tasks are gone), not only stopped counting them.
    let deadline = Instant::now() + SEND_TIMEOUT + Duration::from_secs(15);
    loop {
        let cut = mesh.log().matches("stream cut").count();
        if cut >= STALLED {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{cut} of {STALLED} stalled streams cut:\n{}",
            mesh.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "stalled streams cut by the server {:?} after the first write",
        started.elapsed()
    );
    // And counted, for the alert on cut subscribers.
    let metrics = tokio::task::block_in_place(|| scrape(&mesh.metrics));
    let counted: f64 = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix("tickmesh_query_slow_subscribers_cut_total{reason=\"stalled\"} ")
        })
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no cut counter in\n{metrics}"));
    assert!(counted >= STALLED as f64, "{counted} cut streams counted");

    // Each stalled subscriber, reading at last, gets what was buffered for it, then
    // RESOURCE_EXHAUSTED naming the resume point: the time of the last event it got.
    for (n, mut stream) in stalled.into_iter().enumerate() {
        let mut last_us = None;
        let status = loop {
            match tokio::time::timeout(Duration::from_secs(10), stream.message())
                .await
                .expect("a cut stream ends instead of hanging")
            {
                Ok(Some(item)) => {
                    last_us = item.event.map(|e| match e.payload {
                        Some(Payload::Tick(t)) => t.time_us,
                        _ => 0,
                    })
                }
                Ok(None) => panic!("stalled stream {n} ended without saying why"),
                Err(status) => break status,
            }
        };
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
        let resume: i64 = status
            .message()
            .split("resume_from_time_us=")
            .nth(1)
            .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no resume point in {:?}", status.message()));
        assert_eq!(Some(resume), last_us, "{}", status.message());
    }

    // The reading subscriber is still open and complete: one more tick reaches it.
    ingest
        .ingest_tick_batch(IngestTickBatchRequest {
            ticks: vec![support::tick(
                SYMBOL,
                T0 + 20_000 * 1_000_000,
                "-1".into(),
                1.0,
                1.0,
                Side::Buy,
            )],
            ..Default::default()
        })
        .await
        .unwrap();
    let (ids, _still_open) = reader.await.unwrap();
    let mut expected: Vec<i64> = (0..10_000).collect();
    expected.push(-1);
    assert_eq!(ids, expected, "every tick once, in order");
    assert_eq!(
        tokio::task::block_in_place(|| active_streams(&mesh)),
        Some(1)
    );
}
