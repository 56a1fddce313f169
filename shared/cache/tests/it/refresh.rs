//! Refresh-ahead: a key read steadily never misses, because reads late in its TTL reload it in
//! the background.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tickmesh_cache::{Cache, Tier};
use tickmesh_proto::v1::{CachingStrategy, EvictionPolicy};

use crate::helpers::*;

const TTL: f64 = 0.5;
const RUN: Duration = Duration::from_secs(3);

async fn read_steadily(cache: &Cache, source: &Counting) -> HashMap<Tier, usize> {
    let mut tiers = HashMap::new();
    let start = Instant::now();
    while start.elapsed() < RUN {
        let hit = cache.get_or_load("hot", "BTC-USD").await.unwrap().unwrap();
        *tiers.entry(hit.tier).or_insert(0) += 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let stats = cache.stats();
    let hot = stats
        .namespaces
        .iter()
        .find(|n| n.namespace == "hot")
        .unwrap();
    println!(
        "refresh-ahead over {RUN:?} with a {TTL}s TTL: {tiers:?}, {} loads ({} background refreshes), hit rate {:.3}",
        source.calls(),
        hot.refreshes,
        hot.hit_rate
    );
    tiers
}

fn hot_config(strategy: CachingStrategy) -> tickmesh_proto::v1::PerformanceOptimizationConfig {
    let mut config = config(strategy);
    with_namespace(
        &mut config,
        "hot",
        policy(EvictionPolicy::TinyLfu, TTL, 0.5),
    );
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hot_key_never_misses_in_memory() {
    let cache = Cache::new(&hot_config(CachingStrategy::InMemory), None)
        .await
        .unwrap();
    let source = Counting::new(Duration::from_millis(5));
    cache.register_loader("hot", source.loader()).unwrap();
    let tiers = read_steadily(&cache, &source).await;
    // Only the very first read loads; every later one is a hit.
    assert_eq!(tiers.get(&Tier::Source), Some(&1));
    assert_eq!(tiers.get(&Tier::L2), None);
    // Six TTLs went by: the key was refreshed about once per half TTL.
    assert!(source.calls() >= 5, "{} loads", source.calls());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hot_key_never_misses_with_redis_and_other_processes_refresh_it_once() {
    let redis = redis().await;
    let (a, b) = (
        Cache::new(&hot_config(CachingStrategy::MultiLayer), Some(&redis.url()))
            .await
            .unwrap(),
        Cache::new(&hot_config(CachingStrategy::MultiLayer), Some(&redis.url()))
            .await
            .unwrap(),
    );
    let source = Counting::new(Duration::from_millis(5));
    a.register_loader("hot", source.loader()).unwrap();
    b.register_loader("hot", source.loader()).unwrap();
    let (ta, tb) = tokio::join!(read_steadily(&a, &source), read_steadily(&b, &source));
    let sources =
        ta.get(&Tier::Source).copied().unwrap_or(0) + tb.get(&Tier::Source).copied().unwrap_or(0);
    assert_eq!(sources, 1, "a: {ta:?}, b: {tb:?}");
    // Two processes reading the same key do not refresh it twice as often.
    let ttls = RUN.as_secs_f64() / TTL;
    assert!(
        (source.calls() as f64) < ttls * 2.0 + 2.0,
        "{} loads over {ttls} TTLs",
        source.calls()
    );
    assert!(source.calls() >= 5);
}
