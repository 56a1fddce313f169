//! Writes and invalidations on one process drop the L1 copies of the others, within
//! milliseconds.

use std::time::{Duration, Instant};

use bytes::Bytes;
use tickmesh_cache::{SetOptions, Tier};

use crate::helpers::*;

const ROUNDS: usize = 100;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_set_on_one_process_drops_the_l1_copy_of_the_other() {
    let redis = redis().await;
    let (a, b) = (multi_layer(&redis).await, multi_layer(&redis).await);
    a.set(
        "test",
        "AAPL",
        Bytes::from_static(b"v0"),
        SetOptions::default(),
    )
    .await
    .unwrap();
    let mut delays = Vec::with_capacity(ROUNDS);
    let mut stale_reads = 0;
    for round in 1..=ROUNDS {
        // b holds the previous value in its L1 (its read of the last round may have raced the
        // invalidation of that round's write, which drops the copy again: read until it sticks).
        let mut reads = 0;
        loop {
            let before = b.get("test", "AAPL").await.unwrap().unwrap();
            assert_eq!(before.value, format!("v{}", round - 1));
            if before.tier == Tier::L1 {
                break;
            }
            reads += 1;
            assert!(reads < 100, "round {round}: b never keeps the value in L1");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }

        let value = Bytes::from(format!("v{round}"));
        a.set("test", "AAPL", value.clone(), SetOptions::default())
            .await
            .unwrap();
        let written = Instant::now();
        loop {
            let hit = b.get("test", "AAPL").await.unwrap().unwrap();
            if hit.value == value {
                assert_eq!(hit.tier, Tier::L2, "the new value comes from Redis");
                break;
            }
            stale_reads += 1;
            assert!(
                written.elapsed() < Duration::from_secs(2),
                "round {round}: b still sees {:?}",
                hit.value
            );
            tokio::task::yield_now().await;
        }
        delays.push(written.elapsed());
    }
    let (p50, max) = p50_max(delays);
    println!(
        "cross-process L1 invalidation after set: p50 {p50:?}, max {max:?} over {ROUNDS} rounds ({stale_reads} stale reads in total)"
    );
    assert!(p50 < Duration::from_millis(50), "p50 {p50:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_ignores_its_own_invalidations() {
    let redis = redis().await;
    let a = multi_layer(&redis).await;
    a.set("test", "k", Bytes::from_static(b"v"), SetOptions::default())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Its own message came back over pub/sub and did not drop the fresh L1 copy.
    assert_eq!(a.get("test", "k").await.unwrap().unwrap().tier, Tier::L1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_pattern_and_namespace_invalidations_reach_every_process() {
    let redis = redis().await;
    let (a, b) = (multi_layer(&redis).await, multi_layer(&redis).await);
    for key in ["BTC-USD", "BTC-EUR", "ETH-USD", "SOL-USD"] {
        a.set("test", key, Bytes::from(key), SetOptions::default())
            .await
            .unwrap();
    }
    // Into b's L1 as well, once a's own invalidations of those writes have gone by.
    tokio::time::sleep(Duration::from_millis(100)).await;
    for key in ["BTC-USD", "BTC-EUR", "ETH-USD", "SOL-USD"] {
        assert!(b.get("test", key).await.unwrap().is_some());
        assert_eq!(b.get("test", key).await.unwrap().unwrap().tier, Tier::L1);
    }

    // Delete one key.
    assert!(a.delete("test", "SOL-USD").await.unwrap());
    assert!(!a.delete("test", "SOL-USD").await.unwrap(), "already gone");
    let gone = wait_until_missing(&b, "SOL-USD").await;
    println!("delete reached the other process after {gone:?}");

    // A pattern.
    let dropped = a.invalidate_pattern("test", "BTC-*").await.unwrap();
    assert_eq!((dropped.l1, dropped.l2), (2, 2));
    wait_until_missing(&b, "BTC-USD").await;
    wait_until_missing(&b, "BTC-EUR").await;
    assert_eq!(
        b.get("test", "ETH-USD").await.unwrap().unwrap().tier,
        Tier::L1
    );

    // The whole namespace.
    let dropped = a.invalidate_namespace("test").await.unwrap();
    assert_eq!((dropped.l1, dropped.l2), (1, 1));
    wait_until_missing(&b, "ETH-USD").await;
    assert_eq!(redis.command(&["DBSIZE"]).unwrap(), "0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pattern_invalidation_walks_many_keys_in_batches() {
    let redis = redis().await;
    let a = multi_layer(&redis).await;
    for i in 0..3000 {
        a.set(
            "test",
            &format!("bulk-{i}"),
            Bytes::from_static(b"x"),
            SetOptions::default(),
        )
        .await
        .unwrap();
    }
    a.set(
        "test",
        "other",
        Bytes::from_static(b"x"),
        SetOptions::default(),
    )
    .await
    .unwrap();
    let dropped = a.invalidate_pattern("test", "bulk-*").await.unwrap();
    assert_eq!((dropped.l1, dropped.l2), (3000, 3000));
    assert_eq!(redis.command(&["DBSIZE"]).unwrap(), "1");
}

/// Waits until `key` is neither in `cache`'s L1 nor in Redis.
async fn wait_until_missing(cache: &tickmesh_cache::Cache, key: &str) -> Duration {
    let start = Instant::now();
    while cache.get("test", key).await.unwrap().is_some() {
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{key} still cached"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    start.elapsed()
}
