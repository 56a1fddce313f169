//! A thousand callers missing on one key cause one load: in one process and across two.

use std::time::Duration;

use futures_util::future::join_all;
use tickmesh_cache::{Cache, Tier};
use tickmesh_proto::v1::CachingStrategy;

use crate::helpers::*;

const CALLERS: usize = 1000;

async fn stampede(caches: &[Cache], key: &str) -> Vec<Tier> {
    let calls = (0..CALLERS).map(|i| {
        let cache = caches[i % caches.len()].clone();
        let key = key.to_owned();
        tokio::spawn(async move { cache.get_or_load("test", &key).await })
    });
    let mut tiers = Vec::new();
    for result in join_all(calls).await {
        let hit = result.unwrap().unwrap().expect("the loader has every key");
        assert!(hit.value.starts_with(format!("value-{key}-").as_bytes()));
        tiers.push(hit.tier);
    }
    tiers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_misses_load_once_in_memory() {
    let cache = Cache::new(&config(CachingStrategy::InMemory), None)
        .await
        .unwrap();
    let source = Counting::new(Duration::from_millis(50));
    cache.register_loader("test", source.loader()).unwrap();
    stampede(std::slice::from_ref(&cache), "BTC-USD").await;
    assert_eq!(source.calls(), 1);
    let stats = cache.stats();
    let ns = stats
        .namespaces
        .iter()
        .find(|n| n.namespace == "test")
        .unwrap();
    assert_eq!((ns.requests, ns.loads), (CALLERS as u64, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_misses_load_once_with_redis() {
    let redis = redis().await;
    // A Redis timeout long enough for a host busy with the rest of the suite: the lock's
    // release must not time out (it would then only expire), which is not what this checks.
    let mut patient = config(CachingStrategy::MultiLayer);
    patient
        .cache
        .get_or_insert_with(Default::default)
        .redis_timeout = secs_f(2.0);
    let cache = Cache::new(&patient, Some(&redis.url())).await.unwrap();
    let source = Counting::new(Duration::from_millis(50));
    cache.register_loader("test", source.loader()).unwrap();
    let tiers = stampede(std::slice::from_ref(&cache), "ETH-USD").await;
    assert_eq!(source.calls(), 1);
    // Afterwards the value is in both tiers.
    assert!(tiers.contains(&Tier::Source));
    assert_eq!(
        cache.get("test", "ETH-USD").await.unwrap().unwrap().tier,
        Tier::L1
    );
    assert_eq!(
        redis
            .command(&["EXISTS", "tickmesh:cache:test:ETH-USD"])
            .unwrap(),
        "1"
    );
    assert_eq!(
        redis
            .command(&["EXISTS", "tickmesh:cache-lock:test:ETH-USD"])
            .unwrap(),
        "0",
        "the lock is released"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_misses_across_two_processes_load_once() {
    let redis = redis().await;
    let (a, b) = (multi_layer(&redis).await, multi_layer(&redis).await);
    let source = Counting::new(Duration::from_millis(100));
    a.register_loader("test", source.loader()).unwrap();
    b.register_loader("test", source.loader()).unwrap();
    for round in 0..5 {
        let key = format!("SOL-USD-{round}");
        let before = source.calls();
        let tiers = stampede(&[a.clone(), b.clone()], &key).await;
        assert_eq!(source.calls() - before, 1, "round {round}: {tiers:?}");
        // The process that lost the lock answered its callers from L2.
        assert!(tiers.contains(&Tier::L2), "round {round}");
    }
    let (sa, sb) = (a.stats(), b.stats());
    let loads = |s: &tickmesh_cache::CacheStats| {
        s.namespaces
            .iter()
            .find(|n| n.namespace == "test")
            .unwrap()
            .loads
    };
    assert_eq!(loads(&sa) + loads(&sb), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_load_is_shared_by_the_waiters_and_not_cached() {
    let cache = Cache::new(&config(CachingStrategy::InMemory), None)
        .await
        .unwrap();
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = calls.clone();
    cache
        .register_loader(
            "test",
            std::sync::Arc::new(tickmesh_cache::loader_fn(move |_key| {
                let counter = counter.clone();
                async move {
                    counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    Err::<Option<bytes::Bytes>, _>("store is down".into())
                }
            })),
        )
        .unwrap();
    let calls_out = join_all((0..100).map(|_| {
        let cache = cache.clone();
        tokio::spawn(async move { cache.get_or_load("test", "k").await })
    }))
    .await;
    for result in calls_out {
        let err = result.unwrap().unwrap_err();
        assert_eq!(err.class(), tickmesh_cache::ErrorClass::Unavailable);
    }
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
    // The next call tries again.
    assert!(cache.get_or_load("test", "k").await.is_err());
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2);
}
