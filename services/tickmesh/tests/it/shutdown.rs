//! SIGTERM to a service under load: readiness goes NOT_SERVING, the calls in flight complete,
//! the health stream ends cleanly, the process exits 0 within its grace period, and every
//! acknowledged write is in the store afterwards.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tickmesh_proto::v1::ingestion_service_client::IngestionServiceClient;
use tickmesh_proto::v1::{IngestTickBatchRequest, Side, Tick};
use tickmesh_store::{Store, StoreOptions};
use tokio::sync::Mutex;
use tokio_stream::StreamExt;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::support::{self, Process, channel, scratch_file};

/// 2025-01-06T00:00:00Z.
const T0: i64 = 1_736_121_600_000_000;
const BATCH: i64 = 10_000;
const CALLERS: usize = 4;
const GRACE: Duration = Duration::from_secs(5);

/// One call of the load: which ticks it carried, when it ran and how it ended.
struct Call {
    symbol: String,
    first_us: i64,
    started: Instant,
    finished: Instant,
    outcome: Result<u64, tonic::Code>,
    message: String,
}

fn batch(symbol: &str, n: i64) -> Vec<Tick> {
    (0..BATCH)
        .map(|i| {
            support::tick(
                symbol,
                T0 + (n * BATCH + i) * 1_000,
                format!("{n}-{i}"),
                100.0 + (i % 100) as f64 * 0.01,
                1.0,
                Side::Buy,
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_completes_in_flight_calls_and_loses_no_acknowledged_write() {
    let store_path = scratch_file("store.db");
    let url = format!("sqlite:{}", store_path.display());
    let mut server = Process::start(
        &["serve", "--target", "ingestion", "--listen", "127.0.0.1:0"],
        |c| {
            c.env("TICKMESH_STORE_URL", &url)
                .env("TICKMESH_SERVER__SHUTDOWN_GRACE_PERIOD", "5s");
        },
    );
    let addr = server.addr("ingestion").to_owned();

    // Readiness, watched the way a kubelet's gRPC probe sees it.
    let mut health = HealthClient::new(channel(&addr).await);
    let mut statuses = health
        .watch(HealthCheckRequest {
            service: "tickmesh.v1.IngestionService".to_owned(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        statuses.next().await.unwrap().unwrap().status,
        ServingStatus::Serving as i32
    );
    let watcher = tokio::spawn(async move {
        let mut seen = Vec::new();
        while let Some(update) = statuses.next().await {
            match update {
                Ok(update) => seen.push(update.status),
                Err(status) => return (seen, Some(status.code())),
            }
        }
        (seen, None)
    });

    // The load: callers on connections of their own, each writing batches of new ticks of its
    // own symbol back to back until the server stops taking calls.
    let calls: Arc<Mutex<Vec<Call>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut callers = Vec::new();
    for c in 0..CALLERS {
        let (calls, stop, addr) = (calls.clone(), stop.clone(), addr.clone());
        callers.push(tokio::spawn(async move {
            let mut client = IngestionServiceClient::new(channel(&addr).await)
                .max_encoding_message_size(64 << 20);
            let symbol = format!("LOAD{c}");
            for n in 0.. {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let started = Instant::now();
                let result = client
                    .ingest_tick_batch(IngestTickBatchRequest {
                        ticks: batch(&symbol, n),
                        source: "shutdown-test".into(),
                    })
                    .await;
                let message = match &result {
                    Err(status) => status.message().to_owned(),
                    Ok(_) => String::new(),
                };
                let outcome = result
                    .map(|r| r.into_inner().summary.unwrap().stored)
                    .map_err(|s| s.code());
                let failed = outcome.is_err();
                calls.lock().await.push(Call {
                    symbol: symbol.clone(),
                    first_us: T0 + n * BATCH * 1_000,
                    started,
                    finished: Instant::now(),
                    outcome,
                    message,
                });
                if failed {
                    break;
                }
            }
        }));
    }

    // Under load: every caller has had calls acknowledged.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let done = calls
            .lock()
            .await
            .iter()
            .filter(|c| c.outcome.is_ok())
            .count();
        if done >= 2 * CALLERS {
            break;
        }
        assert!(Instant::now() < deadline, "no load after 60 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let terminated = Instant::now();
    server.terminate();
    let status = server.wait_exit(GRACE + Duration::from_secs(5));
    let exited = terminated.elapsed();
    stop.store(true, Ordering::Relaxed);
    for caller in callers {
        tokio::time::timeout(Duration::from_secs(30), caller)
            .await
            .expect("callers end once the server is gone")
            .unwrap();
    }
    assert_eq!(status.code(), Some(0), "{}", server.log());
    assert!(exited < GRACE, "exit took {exited:?}, grace {GRACE:?}");
    let log = server.log();
    assert!(!log.contains("grace period over"), "{log}");

    let (seen, error) = watcher.await.unwrap();
    assert!(
        seen.contains(&(ServingStatus::NotServing as i32)),
        "readiness never went NOT_SERVING: {seen:?}"
    );
    assert_eq!(error, None, "the health stream ended with an error");

    // Calls in flight at SIGTERM (sent well before it, answered after) all completed. Only calls
    // sent after it fail: refused by the draining server (UNAVAILABLE) or, once it has closed
    // the connection, as the client library's transport error; none of them was acknowledged.
    let calls = calls.lock().await;
    let margin = Duration::from_millis(50);
    let in_flight: Vec<&Call> = calls
        .iter()
        .filter(|c| c.started + margin < terminated && c.finished > terminated)
        .collect();
    assert!(
        !in_flight.is_empty(),
        "no call was in flight at SIGTERM: the test proved nothing"
    );
    for call in &in_flight {
        assert_eq!(call.outcome, Ok(BATCH as u64), "an in-flight call failed");
    }
    for call in calls.iter() {
        if let Err(code) = call.outcome {
            assert!(
                call.started + margin >= terminated,
                "a call sent before SIGTERM failed with {code:?}: {}",
                call.message
            );
        }
    }

    // No acknowledged write is lost: every acknowledged batch is in the store, whole.
    let store = Store::open(&StoreOptions::new(url)).await.unwrap();
    let acked: Vec<&Call> = calls.iter().filter(|c| c.outcome.is_ok()).collect();
    for call in &acked {
        let stored = store
            .ticks(
                &call.symbol,
                call.first_us,
                call.first_us + BATCH * 1_000,
                BATCH + 1,
            )
            .await
            .unwrap();
        assert_eq!(
            stored.len() as i64,
            BATCH,
            "acknowledged batch of {} at {} incomplete",
            call.symbol,
            call.first_us
        );
    }
    let refused: Vec<String> = calls
        .iter()
        .filter_map(|c| {
            c.outcome
                .err()
                .map(|code| format!("{code:?}: {}", c.message))
        })
        .collect();
    eprintln!(
        "{} calls acknowledged, {} in flight at SIGTERM, refused after it: {refused:?}; exit 0 after {exited:?}",
        acked.len(),
        in_flight.len(),
    );
}
