//! Redis going away mid-run: callers see no error, the circuit opens, and everything comes back
//! by itself when Redis does.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tickmesh_cache::{Cache, SetOptions, Tier};
use tickmesh_proto::v1::CachingStrategy;

use crate::helpers::*;

const KEYS: usize = 50;
const READERS: usize = 4;

#[derive(Default)]
struct Tally {
    reads: AtomicU64,
    errors: AtomicU64,
    slowest_us: AtomicU64,
}

fn spawn_readers(
    cache: &Cache,
    tally: &Arc<Tally>,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..READERS)
        .map(|r| {
            let (cache, tally, stop) = (cache.clone(), tally.clone(), stop.clone());
            tokio::spawn(async move {
                let mut i = r;
                while !stop.load(Ordering::Relaxed) {
                    let key = format!("k{}", i % KEYS);
                    let start = Instant::now();
                    match cache.get_or_load("test", &key).await {
                        Ok(Some(_)) => {}
                        Ok(None) | Err(_) => {
                            tally.errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    let us = start.elapsed().as_micros() as u64;
                    tally.slowest_us.fetch_max(us, Ordering::Relaxed);
                    tally.reads.fetch_add(1, Ordering::Relaxed);
                    i += READERS;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_see_no_errors_while_redis_is_stopped_and_l2_comes_back_by_itself() {
    let mut redis = redis().await;
    let (a, b) = (multi_layer(&redis).await, multi_layer(&redis).await);
    let source = Counting::new(Duration::from_millis(1));
    a.register_loader("test", source.loader()).unwrap();
    assert!(a.l2_available());

    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let readers = spawn_readers(&a, &tally, &stop);
    tokio::time::sleep(Duration::from_millis(300)).await;

    let stopped = Instant::now();
    tokio::task::block_in_place(|| redis.stop());
    let opened = eventually(Duration::from_secs(5), "the circuit opens", || {
        !a.l2_available()
    })
    .await;
    let reads_at_open = tally.reads.load(Ordering::Relaxed);
    assert!(!a.stats().l2_available);
    // Keep reading with Redis gone: L1 and the source answer.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let degraded_reads = tally.reads.load(Ordering::Relaxed) - reads_at_open;
    // Writes do not fail either; they land in L1 only.
    let stored = a
        .set(
            "test",
            "written-while-down",
            Bytes::from_static(b"x"),
            SetOptions::default(),
        )
        .await
        .unwrap();
    assert!(stored.l1 && !stored.l2);
    let slowest_while_down = Duration::from_micros(tally.slowest_us.load(Ordering::Relaxed));

    tokio::task::block_in_place(|| redis.restart()).unwrap();
    let restarted = Instant::now();
    let closed = eventually(Duration::from_secs(10), "the circuit closes", || {
        a.l2_available()
    })
    .await;

    // L2 hits return: b writes fresh values to Redis, which drops a's L1 copies over pub/sub
    // (a resubscribed by itself), so a's next reads come from L2.
    let l2_hits_before = a
        .stats()
        .namespaces
        .iter()
        .find(|n| n.namespace == "test")
        .unwrap()
        .l2
        .hits;
    let mut from_l2 = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    while from_l2 < 10 {
        assert!(Instant::now() < deadline, "no L2 hits after the restart");
        for i in 0..KEYS {
            let key = format!("k{i}");
            let value = Bytes::from(format!("fresh-{i}"));
            b.set("test", &key, value.clone(), SetOptions::default())
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
            let hit = a.get("test", &key).await.unwrap().unwrap();
            if hit.value == value && hit.tier == Tier::L2 {
                from_l2 += 1;
            }
        }
    }
    let l2_hits_after = a
        .stats()
        .namespaces
        .iter()
        .find(|n| n.namespace == "test")
        .unwrap()
        .l2
        .hits;
    assert!(l2_hits_after > l2_hits_before);

    stop.store(true, Ordering::Relaxed);
    for reader in readers {
        reader.await.unwrap();
    }
    let (reads, errors) = (
        tally.reads.load(Ordering::Relaxed),
        tally.errors.load(Ordering::Relaxed),
    );
    println!(
        "redis stopped: circuit open after {opened:?}; {degraded_reads} reads in the next second; \
         slowest read while down {slowest_while_down:?}; restarted after {:?}, circuit closed {closed:?} \
         later; {reads} reads, {errors} errors",
        restarted - stopped
    );
    assert_eq!(errors, 0);
    assert!(
        degraded_reads > 100,
        "reads kept flowing while Redis was down"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_starts_degraded_when_redis_is_down_and_picks_it_up_later() {
    let mut redis = redis().await;
    let url = redis.url();
    tokio::task::block_in_place(|| redis.stop());
    let cache = Cache::new(&config(CachingStrategy::MultiLayer), Some(&url))
        .await
        .unwrap();
    let source = Counting::new(Duration::ZERO);
    cache.register_loader("test", source.loader()).unwrap();
    assert!(!cache.l2_available());
    let hit = cache.get_or_load("test", "k").await.unwrap().unwrap();
    assert_eq!(hit.tier, Tier::Source);
    assert_eq!(
        cache.get("test", "k").await.unwrap().unwrap().tier,
        Tier::L1
    );

    tokio::task::block_in_place(|| redis.restart()).unwrap();
    eventually(Duration::from_secs(10), "the circuit closes", || {
        cache.l2_available()
    })
    .await;
    // The subscriber connected late, so L1 (possibly stale) was dropped; the next load fills L2.
    let mut tiers = HashMap::new();
    for _ in 0..3 {
        let hit = cache.get_or_load("test", "k2").await.unwrap().unwrap();
        *tiers.entry(hit.tier).or_insert(0) += 1;
    }
    assert_eq!(tiers.get(&Tier::Source), Some(&1));
    assert_eq!(
        redis
            .command(&["EXISTS", "tickmesh:cache:test:k2"])
            .unwrap(),
        "1"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distributed_caching_answers_from_the_source_while_redis_is_down() {
    let mut redis = redis().await;
    let cache = Cache::new(&config(CachingStrategy::Distributed), Some(&redis.url()))
        .await
        .unwrap();
    let source = Counting::new(Duration::ZERO);
    cache.register_loader("test", source.loader()).unwrap();
    assert_eq!(
        cache.get_or_load("test", "k").await.unwrap().unwrap().tier,
        Tier::Source
    );
    assert_eq!(
        cache.get_or_load("test", "k").await.unwrap().unwrap().tier,
        Tier::L2
    );
    tokio::task::block_in_place(|| redis.stop());
    for _ in 0..20 {
        let hit = cache.get_or_load("test", "k").await.unwrap().unwrap();
        assert_eq!(hit.tier, Tier::Source);
    }
    assert!(!cache.l2_available());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_hangs_costs_readers_at_most_the_short_timeouts() {
    let redis = redis().await;
    let pid = redis.pid().unwrap().to_string();
    let cache = multi_layer(&redis).await;
    let source = Counting::new(Duration::ZERO);
    cache.register_loader("test", source.loader()).unwrap();
    // SIGSTOP: connections stay open and nothing answers, the worst case for a client.
    let signal = |sig: &str| {
        let status = std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap();
        assert!(status.success());
    };
    signal("-STOP");
    let mut slowest = Duration::ZERO;
    let start = Instant::now();
    let mut i = 0;
    // New keys every time: each read misses L1 and has to try L2.
    while start.elapsed() < Duration::from_secs(2) {
        let began = Instant::now();
        let hit = cache
            .get_or_load("test", &format!("hang-{i}"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(hit.tier, Tier::Source);
        slowest = slowest.max(began.elapsed());
        i += 1;
    }
    let unavailable = !cache.l2_available();
    signal("-CONT");
    println!("redis hung: {i} reads in 2 s, slowest {slowest:?}, circuit open: {unavailable}");
    assert!(unavailable);
    assert!(slowest < Duration::from_millis(1500), "{slowest:?}");
    assert!(
        i > 50,
        "once the circuit is open reads stop waiting on Redis ({i} reads)"
    );
    eventually(Duration::from_secs(10), "the circuit closes", || {
        cache.l2_available()
    })
    .await;
}
