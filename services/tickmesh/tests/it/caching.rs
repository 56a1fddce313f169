//! Two caching processes sharing one Redis (the test kit's): a thousand concurrent misses on one
//! key load it once across both, and a write on one drops the other's L1 copy within
//! milliseconds.

use std::ffi::OsString;
use std::time::{Duration, Instant};

use tickmesh_proto::v1::caching_service_client::CachingServiceClient;
use tickmesh_proto::v1::ingestion_service_client::IngestionServiceClient;
use tickmesh_proto::v1::{GetRequest, GetStatsRequest, IngestTickBatchRequest, SetRequest, Side};

use crate::support::{self, Process, channel, scratch_file};

fn shared(target: &str, redis: &str, store: &std::path::Path) -> Process {
    let env: Vec<(&str, OsString)> = vec![
        ("TICKMESH_BUS_URL", redis.into()),
        (
            "TICKMESH_STORE_URL",
            format!("sqlite:{}", store.display()).into(),
        ),
        (
            "TICKMESH_CACHING_STRATEGY",
            "CACHING_STRATEGY_MULTI_LAYER".into(),
        ),
        (
            "TICKMESH_DEPENDENCY_MANAGEMENT",
            "DEPENDENCY_MANAGEMENT_APPROACH_SELECTIVE_IMPORT".into(),
        ),
        // Under the whole test suite Redis can miss the cache's 250 ms timeout; with the
        // default 60 s open circuit a process would then stay on L1 for the rest of the test.
        ("TICKMESH_CIRCUIT_BREAKER__OPEN_DURATION", "0.2s".into()),
        // And a burst round where one process missed it loaded the key itself (two loads)
        // while L2 was back by the time the stats were read: 2 s keeps Redis counted as up
        // under the suite's load, which is what the one-load property is about. 2 s was still
        // missed once (CI, with the browser tests beside it): 5 s, and a load lock that does
        // not expire under a process stalled for 2 s (the default lock_ttl), which also let
        // the second process load.
        ("TICKMESH_CACHE__REDIS_TIMEOUT", "5s".into()),
        ("TICKMESH_CACHE__LOCK_TTL", "10s".into()),
    ];
    Process::start(
        &["serve", "--target", target, "--listen", "127.0.0.1:0"],
        |c| {
            c.envs(env.iter().map(|(k, v)| (*k, v)));
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_caching_processes_load_a_miss_once_and_invalidate_each_other() {
    let redis = tickmesh_testkit::Redis::start().expect("a throwaway Redis");
    let store = scratch_file("cache.db");
    std::fs::create_dir_all(store.parent().unwrap()).unwrap();
    let ingestion = shared("ingestion", &redis.url(), &store);
    let mut ingest = IngestionServiceClient::new(channel(ingestion.addr("ingestion")).await);
    const SYMBOLS: [&str; 4] = ["BTC-USD", "ETH-USD", "SOL-USD", "ADA-USD"];
    ingest
        .ingest_tick_batch(IngestTickBatchRequest {
            ticks: SYMBOLS
                .iter()
                .map(|symbol| {
                    support::tick(
                        symbol,
                        1_709_251_200_000_000,
                        "1".into(),
                        61_234.5,
                        0.1,
                        Side::Buy,
                    )
                })
                .collect(),
            ..Default::default()
        })
        .await
        .unwrap();
    let a = shared("caching", &redis.url(), &store);
    let b = shared("caching", &redis.url(), &store);
    let clients = [
        CachingServiceClient::new(channel(a.addr("caching")).await),
        CachingServiceClient::new(channel(b.addr("caching")).await),
    ];
    // (loads so far, whether L2 answers) of both processes together.
    let stats = || {
        let clients = clients.clone();
        async move {
            let (mut loads, mut l2) = (0, true);
            for mut client in clients {
                let s = client
                    .get_stats(GetStatsRequest {
                        namespace: "latest_prices".into(),
                    })
                    .await
                    .unwrap()
                    .into_inner();
                l2 &= s.l2_available;
                loads += s.namespaces.first().map_or(0, |n| n.loads);
            }
            (loads, l2)
        }
    };

    // 1,000 concurrent misses on one key, half on each process: one load across both. When
    // Redis is too slow to answer (a loaded machine: the cache's Redis timeout is 250 ms), the
    // cache degrades on purpose (L1 and the store) and the cross-process lock is not there, so
    // such a round does not count and the next symbol is tried.
    let mut proven = false;
    for symbol in SYMBOLS {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !stats().await.1 {
            assert!(
                Instant::now() < deadline,
                "Redis never became available as L2"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let (loads_before, _) = stats().await;
        let mut calls = Vec::new();
        for i in 0..1000 {
            let mut client = clients[i % 2].clone();
            calls.push(tokio::spawn(async move {
                client
                    .get(GetRequest {
                        namespace: "latest_prices".into(),
                        key: symbol.into(),
                    })
                    .await
                    .map(|r| r.into_inner())
            }));
        }
        let mut values = std::collections::HashSet::new();
        for call in calls {
            let got = call.await.unwrap().unwrap();
            assert!(got.found, "no caller sees an error or a miss");
            // The typed value (a latest price is never in the opaque `value`).
            assert!(got.typed.is_some(), "a found value is typed");
            values.insert(got.typed.map(|v| prost::Message::encode_to_vec(&v)));
        }
        assert_eq!(values.len(), 1, "every caller got the same value");
        let (loads_after, l2) = stats().await;
        if !l2 {
            eprintln!("{symbol}: Redis timed out during the burst (degraded round), next symbol");
            continue;
        }
        assert_eq!(
            loads_after - loads_before,
            1,
            "the store was asked once across both processes"
        );
        proven = true;
        break;
    }
    assert!(proven, "no round with Redis answering");
    // The cache's counters are on /metrics too.
    let text = crate::support::scrape(&a.metrics);
    assert!(text.contains("tickmesh_cache_l2_available 1"), "{text}");
    let hits: f64 = ["l1", "l2"]
        .iter()
        .filter_map(|tier| {
            let prefix = format!(
                "tickmesh_cache_hits_total{{cache_namespace=\"latest_prices\",tier=\"{tier}\"}}"
            );
            text.lines()
                .find(|l| l.starts_with(&prefix))?
                .rsplit(' ')
                .next()?
                .parse::<f64>()
                .ok()
        })
        .sum();
    assert!(hits > 0.0, "{text}");

    // A write on A drops B's L1 copy: B sees the new value within milliseconds.
    let (mut on_a, mut on_b) = (clients[0].clone(), clients[1].clone());
    let key = || GetRequest {
        namespace: "indicators".into(),
        key: "BTC-USD/2/demo".into(),
    };
    let mut delays = Vec::new();
    for round in 0..20u8 {
        // As above: a round in which Redis did not answer in time proves nothing either way.
        let deadline = Instant::now() + Duration::from_secs(30);
        while !stats().await.1 {
            assert!(
                Instant::now() < deadline,
                "Redis never became available as L2"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        on_a.set(SetRequest {
            namespace: "indicators".into(),
            key: "BTC-USD/2/demo".into(),
            value: vec![round],
            ttl: None,
            typed: None,
        })
        .await
        .unwrap();
        let started = Instant::now();
        let mut fresh = false;
        while started.elapsed() < Duration::from_secs(5) {
            let got = on_b.get(key()).await.unwrap().into_inner();
            if got.found && got.value == vec![round] {
                fresh = true;
                break;
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        if fresh {
            delays.push(started.elapsed());
        } else {
            assert!(
                !stats().await.1,
                "B kept a stale copy while Redis was answering"
            );
            // Degraded round: B's stale copy stands until its TTL, as documented; drop it.
            on_b.delete(tickmesh_proto::v1::DeleteRequest {
                namespace: "indicators".into(),
                key: "BTC-USD/2/demo".into(),
            })
            .await
            .unwrap();
        }
        // B now holds the value in its L1 for the next round.
    }
    assert!(
        delays.len() >= 10,
        "only {} clean rounds of 20",
        delays.len()
    );
    delays.sort();
    eprintln!(
        "cross-process invalidation delay over 20 writes: p50 {:?}, max {:?}",
        delays[delays.len() / 2],
        delays[delays.len() - 1]
    );
}
