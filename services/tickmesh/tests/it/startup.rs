//! Start-up with a dependency missing (issue 15, item 6): the process stays up, answers health
//! (alive, not ready), says which dependency it waits for at which address, and serves once
//! the dependency is reachable; the store's connect timeout is a setting.

use std::ffi::OsString;
use std::time::{Duration, Instant};

use tickmesh_proto::v1::ingestion_service_client::IngestionServiceClient;
use tickmesh_proto::v1::{IngestTickBatchRequest, Side, Tick};
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::support::{self, Process, channel, health, serve_ingestion, try_health};

const INGESTION: &str = "tickmesh.v1.IngestionService";

fn tick(i: i64) -> Tick {
    support::tick(
        "ETH-USD",
        1_709_251_200_000_000 + i * 1_000,
        format!("s{i}"),
        3_000.0 + i as f64,
        1.0,
        Side::Buy,
    )
}

fn batch(from: i64, n: i64) -> IngestTickBatchRequest {
    IngestTickBatchRequest {
        ticks: (from..from + n).map(tick).collect(),
        source: "startup".into(),
    }
}

/// `serve --target ingestion` on a port known before it is ready (the ready file is written
/// only once it serves).
fn spawn_ingestion(env: &[(&str, OsString)]) -> (Process, String) {
    let addr = format!("127.0.0.1:{}", tickmesh_testkit::free_port());
    let process = Process::spawn(
        &["serve", "--target", "ingestion", "--listen", &addr],
        |c| {
            c.envs(env.iter().map(|(k, v)| (*k, v)));
        },
    );
    (process, addr)
}

/// Polls `condition` until it holds; panics with the process's log after `limit`.
async fn eventually<F, Fut>(process: &mut Process, limit: Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = process.child.try_wait().unwrap() {
            panic!(
                "tickmesh exited with {status} while {what}:\n{}",
                process.log()
            );
        }
        if condition().await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not {what} within {limit:?}:\n{}",
            process.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_down_at_start_up_is_waited_for_with_health_not_serving_then_served() {
    let mut pg = tickmesh_testkit::Postgres::start().expect("a throwaway PostgreSQL");
    pg.stop();
    let (mut process, addr) = spawn_ingestion(&[("TICKMESH_STORE_URL", pg.url().into())]);

    // Alive (liveness on "") but not ready (readiness on the service name).
    eventually(
        &mut process,
        Duration::from_secs(20),
        "answering health",
        || async { try_health(&addr, INGESTION).await == Some(ServingStatus::NotServing) },
    )
    .await;
    assert_eq!(health(&addr, "").await, ServingStatus::Serving);

    // A call is refused with UNAVAILABLE naming the dependency's address (once it was tried).
    let pg_addr = format!("127.0.0.1:{}", pg.port());
    eventually(
        &mut process,
        Duration::from_secs(20),
        "refusing calls with UNAVAILABLE naming the store's address",
        || refusal_names(&addr, &pg_addr),
    )
    .await;

    // Still waiting, not crashing, a few retries later; the log names the address.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        process.child.try_wait().unwrap().is_none(),
        "{}",
        process.log()
    );
    let log = process.log();
    assert!(
        log.contains("dependency unreachable") && log.contains(&pg_addr),
        "the log names the missing store at {pg_addr}:\n{log}"
    );

    // The database comes up: the service becomes SERVING on the same port and stores.
    pg.restart().unwrap();
    process.wait_ready(Duration::from_secs(40));
    assert_eq!(process.addr("ingestion"), addr);
    eventually(&mut process, Duration::from_secs(10), "SERVING", || async {
        try_health(&addr, INGESTION).await == Some(ServingStatus::Serving)
    })
    .await;
    let mut client = IngestionServiceClient::new(channel(&addr).await);
    let summary = client
        .ingest_tick_batch(batch(0, 10))
        .await
        .unwrap()
        .into_inner()
        .summary
        .unwrap();
    assert_eq!(summary.stored, 10);
    assert_eq!(pg.psql("select count(*) from ticks").unwrap(), "10");

    process.terminate();
    assert!(process.wait_exit(Duration::from_secs(20)).success());
}

/// Whether a call is refused with UNAVAILABLE naming `needle` (the missing address).
async fn refusal_names(addr: &str, needle: &str) -> bool {
    let mut client = IngestionServiceClient::new(channel(addr).await);
    match client.ingest_tick_batch(batch(0, 1)).await {
        Err(status) => status.code() == Code::Unavailable && status.message().contains(needle),
        Ok(_) => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bus_down_at_start_up_is_waited_for_then_served() {
    let pg = tickmesh_testkit::Postgres::start().expect("a throwaway PostgreSQL");
    let mut redis = tickmesh_testkit::Redis::start().expect("a throwaway Redis");
    redis.stop();
    let (mut process, addr) = spawn_ingestion(&[
        ("TICKMESH_STORE_URL", pg.url().into()),
        ("TICKMESH_BUS_URL", redis.url().into()),
    ]);
    eventually(
        &mut process,
        Duration::from_secs(20),
        "answering health",
        || async { try_health(&addr, INGESTION).await == Some(ServingStatus::NotServing) },
    )
    .await;
    let redis_addr = format!("127.0.0.1:{}", redis.port());
    eventually(
        &mut process,
        Duration::from_secs(20),
        "naming Redis",
        || async { refusal_names(&addr, &redis_addr).await },
    )
    .await;
    redis.restart().unwrap();
    process.wait_ready(Duration::from_secs(40));
    eventually(&mut process, Duration::from_secs(10), "SERVING", || async {
        try_health(&addr, INGESTION).await == Some(ServingStatus::Serving)
    })
    .await;
    let log = process.log();
    assert!(
        log.contains("dependency unreachable") && log.contains(&redis_addr),
        "the log names the missing bus at {redis_addr}:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_during_a_database_outage_fails_after_the_configured_connect_timeout() {
    let mut pg = tickmesh_testkit::Postgres::start().expect("a throwaway PostgreSQL");
    let process = serve_ingestion(&[
        ("TICKMESH_STORE_URL", pg.url().into()),
        ("TICKMESH_STORE__CONNECT_TIMEOUT", "0.3s".into()),
    ]);
    let mut client = IngestionServiceClient::new(channel(process.addr("ingestion")).await);
    client.ingest_tick_batch(batch(0, 10)).await.unwrap();
    pg.stop();
    // Pooled connections die with the server; the first write notices that, later ones wait for
    // a new connection, which is where the connect timeout applies.
    let mut slowest = Duration::ZERO;
    for round in 0..3 {
        let started = Instant::now();
        let status = client
            .ingest_tick_batch(batch(100 + round * 10, 10))
            .await
            .unwrap_err();
        slowest = slowest.max(started.elapsed());
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    }
    // The built-in 3 s would make every write after the first take at least 3 s; 0.3 s with a
    // wide margin for a busy machine stays well under that.
    assert!(
        slowest < Duration::from_millis(2_500),
        "a write took {slowest:?} to fail with store.connect_timeout 0.3s:\n{}",
        process.log()
    );
}
