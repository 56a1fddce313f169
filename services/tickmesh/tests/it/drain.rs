//! SIGTERM with IngestTicks streams open (issue 15 item 4): the streams stop taking frames,
//! finish the batch in flight and end with their summary; the rows stored are exactly the rows
//! the summaries acknowledge; the relay empties the outbox before the process exits 0. A call
//! that cannot finish within the grace period makes the exit non-zero.

use std::ffi::OsString;
use std::process::Command;
use std::time::{Duration, Instant};

use tickmesh_proto::v1::ingestion_service_client::IngestionServiceClient;
use tickmesh_proto::v1::{IngestTicksRequest, Side, Tick};
use tokio_stream::wrappers::ReceiverStream;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::support::{self, channel, serve_ingestion};

const STREAMS: usize = 4;
const BATCH: i64 = 1_000;
/// 2025-01-06T00:00:00Z.
const T0: i64 = 1_736_121_600_000_000;

fn batch(stream: usize, n: i64) -> IngestTicksRequest {
    IngestTicksRequest {
        ticks: (0..BATCH)
            .map(|i| -> Tick {
                support::tick(
                    &format!("DRAIN{stream}"),
                    T0 + (n * BATCH + i) * 1_000,
                    format!("{n}-{i}"),
                    100.0,
                    1.0,
                    Side::Buy,
                )
            })
            .collect(),
        source: "drain-test".into(),
    }
}

fn count(pg: &tickmesh_testkit::Postgres, table: &str) -> u64 {
    pg.psql(&format!("select count(*) from {table}"))
        .unwrap()
        .parse()
        .unwrap()
}

/// Opens `STREAMS` IngestTicks streams that send batches back to back until the server stops
/// taking them; each task returns (frames sent, the call's outcome).
async fn open_streams(
    addr: &str,
) -> Vec<
    tokio::task::JoinHandle<(
        i64,
        Result<tickmesh_proto::v1::IngestSummary, tonic::Status>,
    )>,
> {
    let mut streams = Vec::new();
    for s in 0..STREAMS {
        let mut client = IngestionServiceClient::new(channel(addr).await);
        streams.push(tokio::spawn(async move {
            let (tx, rx) = tokio::sync::mpsc::channel(1);
            let call =
                tokio::spawn(async move { client.ingest_ticks(ReceiverStream::new(rx)).await });
            let mut sent = 0;
            while tx.send(batch(s, sent)).await.is_ok() {
                sent += 1;
                if call.is_finished() {
                    break;
                }
            }
            drop(tx);
            let outcome = call.await.unwrap().map(|r| r.into_inner().summary.unwrap());
            (sent, outcome)
        }));
    }
    streams
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_open_tick_streams_with_summaries_that_match_the_store_and_empties_the_outbox()
{
    let pg = tickmesh_testkit::Postgres::start().expect("a throwaway PostgreSQL");
    let mut server = serve_ingestion(&[
        ("TICKMESH_STORE_URL", OsString::from(pg.url())),
        ("TICKMESH_SERVER__SHUTDOWN_GRACE_PERIOD", "10s".into()),
    ]);
    let streams = open_streams(server.addr("ingestion")).await;
    // Under load: rows of every stream committed (60 s: a noisy 2-core box).
    let deadline = Instant::now() + Duration::from_secs(60);
    while count(&pg, "(select distinct symbol from ticks) s") < STREAMS as u64 {
        assert!(Instant::now() < deadline, "no load after 60 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A health client connected before the signal: during the drain it must see NOT_SERVING
    // (the listener stays open), not a refused connection.
    let addr = server.addr("ingestion").to_owned();
    let mut health =
        tonic_health::pb::health_client::HealthClient::new(crate::support::channel(&addr).await);
    let terminated = Instant::now();
    server.terminate();
    let mut seen = Vec::new();
    while terminated.elapsed() < Duration::from_secs(5) {
        let request = tonic_health::pb::HealthCheckRequest {
            service: "tickmesh.v1.IngestionService".into(),
        };
        match health.check(request).await {
            Ok(r) => {
                seen.push(r.into_inner().status);
                if seen.last() == Some(&(ServingStatus::NotServing as i32)) {
                    break;
                }
            }
            Err(_) => break,
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        seen.last(),
        Some(&(ServingStatus::NotServing as i32)),
        "health during the drain answered {seen:?}, then nothing"
    );
    // A new connection during the drain is still accepted and answered.
    assert_eq!(
        crate::support::try_health(&addr, "tickmesh.v1.IngestionService").await,
        Some(ServingStatus::NotServing)
    );
    let mut acknowledged = 0;
    for stream in streams {
        // Every stream ends once the server drains (well within the 10 s grace period).
        let (sent, outcome) = tokio::time::timeout(Duration::from_secs(30), stream)
            .await
            .expect("the stream ended")
            .unwrap();
        let summary =
            outcome.unwrap_or_else(|s| panic!("a stream ended without its summary: {s:?}"));
        assert!(summary.batches as i64 <= sent);
        assert_eq!(
            summary.stored,
            summary.batches * BATCH as u64,
            "{summary:?}"
        );
        acknowledged += summary.stored;
    }
    let status = server.wait_exit(Duration::from_secs(20));
    let drained = terminated.elapsed();
    let log = server.log();
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(!log.contains("grace period over"), "{log}");
    assert_eq!(
        count(&pg, "ticks"),
        acknowledged,
        "rows stored != rows acknowledged"
    );
    assert_eq!(
        count(&pg, "outbox"),
        0,
        "events left in the outbox after exit"
    );
    eprintln!("{acknowledged} rows acknowledged and stored; exit 0 after {drained:?}");
}

/// A PostgreSQL stopped with SIGSTOP, postmaster and backends, until [`Frozen::thaw`]. The
/// postmaster stops first, so it forks no backend after the list is taken; a backend that exits
/// in between is simply gone (kill then says "no such process", which must not fail a test: CI
/// once lost one to an exiting worker).
struct Frozen {
    postmaster: String,
    backends: Vec<String>,
}

fn kill(signal: &str, pid: &str) -> bool {
    support::run(Command::new("kill").arg(format!("-{signal}")).arg(pid))
        .status
        .success()
}

impl Frozen {
    fn new(pg: &tickmesh_testkit::Postgres) -> Self {
        let postmaster = pg.pid().unwrap().to_string();
        assert!(kill("STOP", &postmaster), "cannot stop the postmaster");
        let children = support::run(Command::new("pgrep").args(["-P", &postmaster]));
        let backends: Vec<String> = String::from_utf8_lossy(&children.stdout)
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        assert!(!backends.is_empty(), "no PostgreSQL backend to freeze");
        for pid in &backends {
            kill("STOP", pid);
        }
        Self {
            postmaster,
            backends,
        }
    }

    fn thaw(self) {
        for pid in &self.backends {
            kill("CONT", pid);
        }
        assert!(
            kill("CONT", &self.postmaster),
            "cannot continue the postmaster"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_blocked_behind_a_frozen_postgres_past_the_grace_period_exits_non_zero() {
    let pg = tickmesh_testkit::Postgres::start().expect("a throwaway PostgreSQL");
    let mut server = serve_ingestion(&[
        ("TICKMESH_STORE_URL", OsString::from(pg.url())),
        ("TICKMESH_SERVER__SHUTDOWN_GRACE_PERIOD", "1s".into()),
    ]);
    let streams = open_streams(server.addr("ingestion")).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while count(&pg, "ticks") == 0 {
        assert!(Instant::now() < deadline, "no load after 60 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Freeze PostgreSQL: the batch in flight can never commit.
    let frozen = Frozen::new(&pg);
    server.terminate();
    let status = server.wait_exit(Duration::from_secs(20));
    frozen.thaw();
    let log = server.log();
    assert_ne!(
        status.code(),
        Some(0),
        "exit 0 although calls were cut off: {log}"
    );
    assert!(log.contains("grace period over"), "{log}");
    for stream in streams {
        let _ = tokio::time::timeout(Duration::from_secs(30), stream).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_logs_a_store_outage_once_and_recovered_only_once_the_store_answers() {
    let mut pg = tickmesh_testkit::Postgres::start().expect("a throwaway PostgreSQL");
    let server = serve_ingestion(&[("TICKMESH_STORE_URL", OsString::from(pg.url()))]);
    let holds = |log: &str| log.contains("this process relays the outbox");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !holds(&server.log()) {
        assert!(Instant::now() < deadline, "{}", server.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    pg.stop();
    // Several retries' worth of outage (the relay backs off from 100 ms).
    let deadline = Instant::now() + Duration::from_secs(20);
    while !server.log().contains("outbox relay cannot reach the store") {
        assert!(Instant::now() < deadline, "no warning:\n{}", server.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let during = server.log();
    assert_eq!(
        during
            .matches("outbox relay cannot reach the store")
            .count(),
        1,
        "one warning per outage:\n{during}"
    );
    assert!(
        !during.contains("outbox relay recovered"),
        "recovered while PostgreSQL is down:\n{during}"
    );
    pg.restart().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !server.log().contains("outbox relay recovered") {
        assert!(Instant::now() < deadline, "no recovery:\n{}", server.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `tickmesh_store_pool_waiting{pool="write"}` on the server's `/metrics`.
fn pool_waiting(metrics: &str) -> u64 {
    support::sample(metrics, "tickmesh_store_pool_waiting{pool=\"write\"}") as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_waiting_for_a_store_connection_show_on_metrics_while_postgres_hangs() {
    let pg = tickmesh_testkit::Postgres::start().expect("a throwaway PostgreSQL");
    // One connection for four streams and the relay; a wait as long as the test needs.
    let mut server = serve_ingestion(&[
        ("TICKMESH_STORE_URL", OsString::from(pg.url())),
        ("TICKMESH_STORE__POOL_SIZE", "1".into()),
        ("TICKMESH_STORE__CONNECT_TIMEOUT", "30s".into()),
    ]);
    let metrics = server.metrics.clone();
    let streams = open_streams(server.addr("ingestion")).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while count(&pg, "ticks") == 0 {
        assert!(Instant::now() < deadline, "no load after 60 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // PostgreSQL hangs: the batch holding the one connection never ends, the others queue.
    let frozen = Frozen::new(&pg);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut most = 0;
    while most < 2 && Instant::now() < deadline {
        most = most.max(pool_waiting(&metrics));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    frozen.thaw();
    assert!(
        most >= 2,
        "at most {most} callers waiting for the one connection with {STREAMS} streams open"
    );
    // Once PostgreSQL answers, the waiting callers are served: rows commit again.
    let frozen_rows = count(&pg, "ticks");
    let deadline = Instant::now() + Duration::from_secs(20);
    while count(&pg, "ticks") <= frozen_rows {
        assert!(
            Instant::now() < deadline,
            "nothing committed 20 s after PostgreSQL returned"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.terminate();
    let status = server.wait_exit(Duration::from_secs(30));
    for stream in streams {
        let (_, outcome) = stream.await.unwrap();
        outcome.expect("a stream that waited for the connection ends with its summary");
    }
    assert!(status.success(), "{}", server.log());
    eprintln!("at most {most} callers waited for the store's one connection");
}
