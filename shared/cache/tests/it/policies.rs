//! Namespace policies: TTL per entry, adaptive TTL, eviction, warming, stats.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tickmesh_cache::{Cache, SetOptions, Tier, loader_fn};
use tickmesh_proto::v1::{CachePolicy, CachingStrategy, EvictionPolicy};

use crate::helpers::*;

#[tokio::test]
async fn each_entry_has_its_own_ttl() {
    let cache = Cache::new(&config(CachingStrategy::InMemory), None)
        .await
        .unwrap();
    let short = SetOptions {
        ttl: Some(Duration::from_millis(100)),
        ..Default::default()
    };
    let stored = cache
        .set("test", "short", Bytes::from_static(b"s"), short)
        .await
        .unwrap();
    assert_eq!(stored.ttl, Duration::from_millis(100));
    let stored = cache
        .set(
            "test",
            "long",
            Bytes::from_static(b"l"),
            SetOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(stored.ttl, Duration::from_secs(60));
    let hit = cache.get("test", "short").await.unwrap().unwrap();
    assert!(hit.ttl_remaining() <= Duration::from_millis(100));
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(cache.get("test", "short").await.unwrap().is_none());
    assert!(cache.get("test", "long").await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l2_keeps_the_ttl_and_l1_copies_expire_with_it() {
    let redis = redis().await;
    let (a, b) = (multi_layer(&redis).await, multi_layer(&redis).await);
    let opts = SetOptions {
        ttl: Some(Duration::from_millis(300)),
        ..Default::default()
    };
    a.set("test", "k", Bytes::from_static(b"v"), opts)
        .await
        .unwrap();
    let pttl: i64 = redis
        .command(&["PTTL", "tickmesh:cache:test:k"])
        .unwrap()
        .parse()
        .unwrap();
    assert!((200..=300).contains(&pttl), "{pttl}");
    let hit = b.get("test", "k").await.unwrap().unwrap();
    assert_eq!(hit.tier, Tier::L2);
    assert!(hit.ttl_remaining() <= Duration::from_millis(300));
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert!(
        b.get("test", "k").await.unwrap().is_none(),
        "b's L1 copy expired with L2"
    );
}

#[tokio::test]
async fn adaptive_namespaces_follow_the_symbol() {
    let mut config = config(CachingStrategy::InMemory);
    with_namespace(
        &mut config,
        "prices",
        CachePolicy {
            adaptive_ttl: true,
            ..policy(EvictionPolicy::TinyLfu, 5.0, 0.0)
        },
    );
    let cache = Cache::new(&config, None).await.unwrap();
    let ttl = |key: &'static str, volatility: Option<f64>| {
        cache.ttl_for(
            "prices",
            key,
            SetOptions {
                volatility,
                ..Default::default()
            },
        )
    };
    // Crypto: volatility decides (defaults: 2 s volatile, 30 s calm, threshold 1 %).
    assert_eq!(ttl("BTC-USD", Some(0.05)).unwrap(), Duration::from_secs(2));
    assert_eq!(
        ttl("BTC-USD", Some(0.001)).unwrap(),
        Duration::from_secs(30)
    );
    // Measured from recorded prices when not given: calm.
    for i in 0..30 {
        cache.record_price("ETH-USD", 2000.0 + f64::from(i % 2));
    }
    assert_eq!(ttl("ETH-USD", None).unwrap(), Duration::from_secs(30));
    // Stocks follow XNYS hours: 5 s open, up to an hour closed.
    let aapl = ttl("AAPL/1m", None).unwrap();
    assert!(
        aapl == Duration::from_secs(5) || aapl >= Duration::from_secs(5),
        "{aapl:?}"
    );
    // An explicit TTL wins.
    let fixed = cache
        .ttl_for(
            "prices",
            "BTC-USD",
            SetOptions {
                ttl: Some(Duration::from_secs(9)),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(fixed, Duration::from_secs(9));
}

#[tokio::test]
async fn a_full_ttl_policy_namespace_refuses_new_entries() {
    let mut config = config(CachingStrategy::InMemory);
    // Everything in one TTL-policy segment of 10 entries.
    config.cache.as_mut().unwrap().l1_max_entries = 10;
    config.cache.as_mut().unwrap().l1_max_bytes = 10 * 4096;
    config.cache.as_mut().unwrap().namespaces.clear();
    config.cache.as_mut().unwrap().default_policy = Some(policy(EvictionPolicy::Ttl, 60.0, 0.0));
    with_namespace(&mut config, "test", policy(EvictionPolicy::Ttl, 60.0, 0.0));
    let cache = Cache::new(&config, None).await.unwrap();
    let mut refused = 0;
    for i in 0..20 {
        let stored = cache
            .set(
                "test",
                &format!("k{i}"),
                Bytes::from_static(b"v"),
                SetOptions::default(),
            )
            .await
            .unwrap();
        if !stored.l1 {
            refused += 1;
        }
        cache.run_pending_tasks().await;
    }
    assert_eq!(refused, 10);
    // The first ten stayed.
    for i in 0..10 {
        assert!(
            cache.get("test", &format!("k{i}")).await.unwrap().is_some(),
            "k{i}"
        );
    }
    let stats = cache.stats();
    assert_eq!(
        stats
            .namespaces
            .iter()
            .find(|n| n.namespace == "test")
            .unwrap()
            .l1_refused,
        10
    );
}

#[tokio::test]
async fn l1_is_bounded_by_entries_and_bytes() {
    let mut config = config(CachingStrategy::InMemory);
    config.cache.as_mut().unwrap().namespaces.clear();
    config.cache.as_mut().unwrap().default_policy = Some(policy(EvictionPolicy::Lru, 60.0, 0.0));
    with_namespace(&mut config, "test", policy(EvictionPolicy::Lru, 60.0, 0.0));
    config.cache.as_mut().unwrap().l1_max_entries = 100;
    config.cache.as_mut().unwrap().l1_max_bytes = 1 << 20;
    config.cache.as_mut().unwrap().max_value_bytes = 1 << 20;
    let cache = Cache::new(&config, None).await.unwrap();
    // Small values: the entry bound holds.
    for i in 0..500 {
        cache
            .set(
                "test",
                &format!("k{i}"),
                Bytes::from_static(b"v"),
                SetOptions::default(),
            )
            .await
            .unwrap();
    }
    cache.run_pending_tasks().await;
    let stats = cache.stats();
    assert!(stats.l1_entries <= 100, "{} entries", stats.l1_entries);
    let ns = stats
        .namespaces
        .iter()
        .find(|n| n.namespace == "test")
        .unwrap();
    assert!(ns.l1.evictions >= 400);
    // Large values: the byte bound holds.
    let big = Bytes::from(vec![7u8; 64 * 1024]);
    for i in 0..100 {
        cache
            .set(
                "test",
                &format!("big{i}"),
                big.clone(),
                SetOptions::default(),
            )
            .await
            .unwrap();
    }
    cache.run_pending_tasks().await;
    let stats = cache.stats();
    assert!(
        stats.l1_memory_bytes <= 1 << 20,
        "{} bytes",
        stats.l1_memory_bytes
    );
    assert!(stats.l1_entries <= 16, "{} entries", stats.l1_entries);
}

#[tokio::test]
async fn time_to_idle_drops_entries_nobody_reads() {
    let mut config = config(CachingStrategy::InMemory);
    with_namespace(
        &mut config,
        "idle",
        CachePolicy {
            tti: secs_f(0.2),
            ..policy(EvictionPolicy::TinyLfu, 60.0, 0.0)
        },
    );
    let cache = Cache::new(&config, None).await.unwrap();
    for key in ["read", "idle"] {
        cache
            .set("idle", key, Bytes::from_static(b"v"), SetOptions::default())
            .await
            .unwrap();
    }
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(cache.get("idle", "read").await.unwrap().is_some());
    }
    assert!(cache.get("idle", "idle").await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warming_loads_the_loaders_set_and_reports_progress() {
    let redis = redis().await;
    let cache = multi_layer(&redis).await;
    let keys: Vec<String> = (0..40).map(|i| format!("w{i}")).collect();
    let loader =
        loader_fn(|key: String| async move { Ok((key != "w13").then(|| Bytes::from(key))) })
            .with_warm_keys(keys.clone());
    cache.register_loader("test", Arc::new(loader)).unwrap();
    let progress = Mutex::new(Vec::new());
    let report = cache
        .warm("test", Vec::new(), |done, total| {
            progress.lock().unwrap().push((done, total))
        })
        .await
        .unwrap();
    assert_eq!(
        (report.total, report.loaded, report.missing, report.failed),
        (40, 39, 1, 0)
    );
    let progress = progress.into_inner().unwrap();
    assert_eq!(progress.first(), Some(&(0, 40)));
    assert_eq!(progress.last(), Some(&(40, 40)));
    assert_eq!(progress.len(), 41);
    assert_eq!(
        cache.get("test", "w0").await.unwrap().unwrap().tier,
        Tier::L1
    );
    assert_eq!(redis.command(&["DBSIZE"]).unwrap(), "39");
    // Given keys instead of the warm set.
    let report = cache
        .warm("test", vec!["x1".into(), "x2".into()], |_, _| {})
        .await
        .unwrap();
    assert_eq!(report.loaded, 2);
}

#[tokio::test]
async fn stats_count_hits_misses_and_loads_per_tier() {
    let cache = Cache::new(&config(CachingStrategy::InMemory), None)
        .await
        .unwrap();
    let source = Counting::new(Duration::from_millis(2));
    cache.register_loader("test", source.loader()).unwrap();
    for _ in 0..10 {
        cache.get_or_load("test", "k").await.unwrap();
    }
    assert!(cache.get("test", "absent").await.unwrap().is_none());
    cache.run_pending_tasks().await;
    let stats = cache.stats();
    let ns = stats
        .namespaces
        .iter()
        .find(|n| n.namespace == "test")
        .unwrap();
    assert_eq!(ns.requests, 11);
    assert_eq!((ns.l1.hits, ns.l1.misses), (9, 2));
    assert_eq!(ns.loads, 1);
    assert!(ns.average_load_time_us >= 2000.0);
    assert!((ns.hit_rate - 9.0 / 11.0).abs() < 1e-9);
    assert_eq!(ns.l1_entries, 1);
    assert!(ns.l1_memory_bytes > 0);
    assert!(!stats.l2_available);
    let proto = stats.to_proto();
    assert_eq!(proto.l1_entries, 1);
    let pns = proto
        .namespaces
        .iter()
        .find(|n| n.namespace == "test")
        .unwrap();
    assert_eq!(pns.l1.unwrap().hits, 9);
}
