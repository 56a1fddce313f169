//! Configuration changes while running: namespace policies and the Redis timeout apply to the
//! next operation, and settings built at start are reported as needing a restart.

use std::time::Duration;

use bytes::Bytes;
use tickmesh_cache::{Cache, SetOptions, Tier};
use tickmesh_config::ConfigHandle;
use tickmesh_config::LoadedConfig;
use tickmesh_proto::v1::{
    CachingStrategy, DependencyManagementApproach, EvictionPolicy, PerformanceOptimizationConfig,
};

use crate::helpers::*;

fn set_ttl(config: &mut PerformanceOptimizationConfig, namespace: &str, seconds: f64) {
    config
        .cache
        .as_mut()
        .unwrap()
        .namespaces
        .get_mut(namespace)
        .unwrap()
        .ttl = secs_f(seconds);
}

#[tokio::test]
async fn a_changed_ttl_applies_to_the_next_write_and_keeps_earlier_entries() {
    let mut config = config(CachingStrategy::InMemory);
    let cache = Cache::new(&config, None).await.unwrap();
    let before = cache
        .set(
            "test",
            "old",
            Bytes::from_static(b"o"),
            SetOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(before.ttl, Duration::from_secs(60));

    set_ttl(&mut config, "test", 5.0);
    let outcome = cache.apply_config(&config).unwrap();
    assert!(outcome.needs_restart.is_empty(), "{outcome:?}");
    assert_eq!(cache.policy("test").unwrap().ttl, Duration::from_secs(5));
    let after = cache
        .set(
            "test",
            "new",
            Bytes::from_static(b"n"),
            SetOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(after.ttl, Duration::from_secs(5));
    let hit = cache.get("test", "new").await.unwrap().unwrap();
    assert_eq!(hit.tier, Tier::L1);
    assert!(hit.ttl_remaining() <= Duration::from_secs(5));
    // An entry written before the change keeps the TTL it was written with.
    let old = cache.get("test", "old").await.unwrap().unwrap();
    assert!(old.ttl_remaining() > Duration::from_secs(5), "{old:?}");
}

#[tokio::test]
async fn settings_built_at_start_are_reported_and_keep_their_running_value() {
    let mut config = config(CachingStrategy::InMemory);
    let cache = Cache::new(&config, None).await.unwrap();
    let l1_entries = config.cache.as_ref().unwrap().l1_max_entries;
    config.cache.as_mut().unwrap().l1_max_entries = l1_entries + 1;
    // `test` lives in the TinyLFU segment; LRU exists too (the `candles` default namespace).
    config
        .cache
        .as_mut()
        .unwrap()
        .namespaces
        .get_mut("test")
        .unwrap()
        .eviction = EvictionPolicy::Lru as i32;
    set_ttl(&mut config, "test", 7.0);
    let outcome = cache.apply_config(&config).unwrap();
    assert!(
        outcome
            .needs_restart
            .contains(&"cache.l1_max_entries".to_owned()),
        "{outcome:?}"
    );
    assert!(
        outcome
            .needs_restart
            .contains(&"cache.namespaces.test.eviction".to_owned()),
        "{outcome:?}"
    );
    // The rest of the policy changed; the eviction stayed.
    let policy = cache.policy("test").unwrap();
    assert_eq!(policy.ttl, Duration::from_secs(7));
    assert_eq!(policy.eviction, tickmesh_cache::Eviction::TinyLfu);
}

#[tokio::test]
async fn namespaces_added_to_the_configuration_appear_and_removed_ones_fall_back_to_the_default() {
    let mut config = config(CachingStrategy::InMemory);
    let cache = Cache::new(&config, None).await.unwrap();
    assert!(cache.policy("fresh").is_err());
    with_namespace(
        &mut config,
        "fresh",
        policy(EvictionPolicy::TinyLfu, 3.0, 0.0),
    );
    config.cache.as_mut().unwrap().namespaces.remove("test");
    cache.apply_config(&config).unwrap();
    let stored = cache
        .set(
            "fresh",
            "k",
            Bytes::from_static(b"v"),
            SetOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(stored.ttl, Duration::from_secs(3));
    let default_ttl = tickmesh_config::std_duration(
        config
            .cache
            .as_ref()
            .unwrap()
            .default_policy
            .as_ref()
            .unwrap()
            .ttl
            .as_ref(),
    );
    assert_eq!(cache.policy("test").unwrap().ttl, default_ttl);
}

#[tokio::test]
async fn an_invalid_configuration_changes_nothing() {
    let mut config = config(CachingStrategy::InMemory);
    let cache = Cache::new(&config, None).await.unwrap();
    set_ttl(&mut config, "test", 9.0);
    config
        .cache
        .as_mut()
        .unwrap()
        .namespaces
        .get_mut("test")
        .unwrap()
        .refresh_ahead_fraction = 1.5;
    assert!(cache.apply_config(&config).is_err());
    assert_eq!(cache.policy("test").unwrap().ttl, Duration::from_secs(60));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_following_a_config_handle_takes_ttl_and_redis_timeout_changes() {
    let redis = redis().await;
    let mut config = config(CachingStrategy::MultiLayer);
    // Validation wants a dependency approach that allows Redis.
    config.dependency_management = DependencyManagementApproach::SelectiveImport as i32;
    let handle = ConfigHandle::new(LoadedConfig {
        config: config.clone(),
        source: "test".into(),
    });
    let cache = Cache::new(&config, Some(&redis.url())).await.unwrap();
    cache.follow_config(handle.subscribe());
    assert_eq!(
        cache.redis_timeout(),
        Some(tickmesh_cache::DEFAULT_REDIS_TIMEOUT)
    );

    set_ttl(&mut config, "test", 4.0);
    config.cache.as_mut().unwrap().redis_timeout = secs_f(0.75);
    handle.replace(config, "update").unwrap();
    eventually(
        Duration::from_secs(10),
        "the change reaches the cache",
        || cache.policy("test").unwrap().ttl == Duration::from_secs(4),
    )
    .await;
    assert_eq!(cache.redis_timeout(), Some(Duration::from_millis(750)));

    // The new TTL is what Redis keeps too: another process reading it from L2 sees it.
    let stored = cache
        .set("test", "k", Bytes::from_static(b"v"), SetOptions::default())
        .await
        .unwrap();
    assert_eq!(stored.ttl, Duration::from_secs(4));
    assert!(stored.l2, "Redis answers");
    let other = multi_layer(&redis).await;
    let hit = other.get("test", "k").await.unwrap().unwrap();
    assert_eq!(hit.tier, Tier::L2);
    assert!(hit.ttl_remaining() <= Duration::from_secs(4), "{hit:?}");
    // Still working through Redis with the new timeout.
    let value = other.get("test", "k").await.unwrap().unwrap();
    assert_eq!(value.value, Bytes::from_static(b"v"));
    cache.shutdown().await;
    other.shutdown().await;
}
