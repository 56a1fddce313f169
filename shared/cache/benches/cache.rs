#![allow(clippy::unwrap_used, missing_docs)]
//! Cache benchmarks, each against its raw baseline in the same run:
//!
//! - `l1_hit/*`: `Cache::get` answered by L1 vs moka used directly with the same key and value.
//! - `l2_hit/*`: `Cache::get` answered by Redis (DISTRIBUTED, no L1) vs a raw `GET` of the same
//!   value over the same bb8 pool.
//! - `codec/*`: encode and decode time of protobuf, MessagePack and the custom binary (sizes
//!   printed before).
//! - Zipf(1.0) over 100,000 keys with L1 at 5 % of the keys: L1 and overall hit rate vs a plain
//!   LRU of the same size (printed; runs unless a filter excludes `zipf`).
//!
//! Redis comes from tickmesh-testkit (a throwaway `redis-server`).

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::Criterion;
use tickmesh_cache::codec::{
    BinaryCodec, CacheValue, Codec, LatestPriceRecord, MessagePackCodec, ProtobufCodec,
};
use tickmesh_cache::{Cache, SetOptions, loader_fn};
use tickmesh_proto::v1::{
    CachePolicy, CachingStrategy, Candle, EvictionPolicy, PerformanceOptimizationConfig, Signal,
    StrategyVote,
};
use tickmesh_testkit::Redis;
use tokio::runtime::Runtime;

const KEYS: usize = 1000;
const VALUE_BYTES: usize = 100;

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let redis = Redis::start().expect("redis-server starts (apt-get install redis-server)");
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30)
        .configure_from_args();
    l1_hit(&mut c, &rt);
    l2_hit(&mut c, &rt, &redis);
    codecs(&mut c);
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    if filters.is_empty() || filters.iter().any(|f| "zipf".contains(f.as_str())) {
        zipf(&rt, &redis);
    }
    c.final_summary();
}

fn secs(s: u64) -> Option<prost_types::Duration> {
    Some(prost_types::Duration {
        seconds: s as i64,
        nanos: 0,
    })
}

fn bench_config(
    strategy: CachingStrategy,
    eviction: EvictionPolicy,
) -> PerformanceOptimizationConfig {
    let mut config = tickmesh_config::defaults();
    config.caching_strategy = strategy as i32;
    let policy = CachePolicy {
        eviction: eviction as i32,
        ttl: secs(3600),
        tti: None,
        write_through: true,
        refresh_ahead_fraction: 0.2,
        adaptive_ttl: false,
    };
    let cache = config.cache.as_mut().unwrap();
    // One policy for everything: one L1 segment with the whole budget.
    cache.namespaces.clear();
    cache.default_policy = Some(policy);
    cache.namespaces.insert("bench".into(), policy);
    config
}

fn keys() -> Vec<String> {
    (0..KEYS).map(|i| format!("key-{i:04}")).collect()
}

fn l1_hit(c: &mut Criterion, rt: &Runtime) {
    let value = Bytes::from(vec![42u8; VALUE_BYTES]);
    let keys = keys();
    let cache = rt.block_on(async {
        let cache = Cache::new(
            &bench_config(CachingStrategy::InMemory, EvictionPolicy::TinyLfu),
            None,
        )
        .await
        .unwrap();
        for key in &keys {
            cache
                .set("bench", key, value.clone(), SetOptions::default())
                .await
                .unwrap();
        }
        cache
    });
    let moka: moka::future::Cache<String, Bytes> = moka::future::Cache::new(100_000);

    // moka configured like L1 (per-entry expiry, weigher, eviction listener), to show how much
    // of the difference is moka's own per-entry bookkeeping.
    let moka_like_l1: moka::future::Cache<String, (Bytes, Instant)> =
        moka::future::Cache::builder()
            .max_capacity(1 << 30)
            .expire_after(PerEntry)
            .weigher(|_, v: &(Bytes, Instant)| v.0.len() as u32)
            .eviction_listener(|_, _, _| {})
            .build();
    rt.block_on(async {
        let expires = Instant::now() + Duration::from_secs(3600);
        for key in &keys {
            moka.insert(key.clone(), value.clone()).await;
            moka_like_l1
                .insert(key.clone(), (value.clone(), expires))
                .await;
        }
    });

    // Interleaved rounds, so load from other processes hits both sides alike.
    let (mut t_moka, mut t_like, mut t_cache) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    const BLOCK: usize = 20_000;
    rt.block_on(async {
        for _ in 0..40 {
            let start = Instant::now();
            for i in 0..BLOCK {
                black_box(moka.get(keys[i % KEYS].as_str()).await.unwrap());
            }
            t_moka += start.elapsed();
            let start = Instant::now();
            for i in 0..BLOCK {
                black_box(moka_like_l1.get(keys[i % KEYS].as_str()).await.unwrap());
            }
            t_like += start.elapsed();
            let start = Instant::now();
            for i in 0..BLOCK {
                black_box(cache.get("bench", &keys[i % KEYS]).await.unwrap().unwrap());
            }
            t_cache += start.elapsed();
        }
    });
    let per = |t: Duration| t.as_nanos() as f64 / (40 * BLOCK) as f64;
    println!(
        "paired l1_hit: moka_direct {:.0} ns, moka_like_l1 {:.0} ns, cache_get {:.0} ns; \
         cache/moka_direct {:.2}x, cache/moka_like_l1 {:.2}x",
        per(t_moka),
        per(t_like),
        per(t_cache),
        per(t_cache) / per(t_moka),
        per(t_cache) / per(t_like)
    );

    let mut group = c.benchmark_group("l1_hit");
    group.bench_function("moka_like_l1", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for i in 0..iters as usize {
                    black_box(moka_like_l1.get(keys[i % KEYS].as_str()).await.unwrap());
                }
                start.elapsed()
            })
        })
    });
    group.bench_function("moka_direct", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for i in 0..iters as usize {
                    black_box(moka.get(keys[i % KEYS].as_str()).await.unwrap());
                }
                start.elapsed()
            })
        })
    });
    group.bench_function("cache_get", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for i in 0..iters as usize {
                    black_box(cache.get("bench", &keys[i % KEYS]).await.unwrap().unwrap());
                }
                start.elapsed()
            })
        })
    });
    group.finish();
}

struct PerEntry;

impl moka::Expiry<String, (Bytes, Instant)> for PerEntry {
    fn expire_after_create(
        &self,
        _: &String,
        v: &(Bytes, Instant),
        at: Instant,
    ) -> Option<Duration> {
        Some(v.1.saturating_duration_since(at))
    }
}

fn l2_hit(c: &mut Criterion, rt: &Runtime, redis: &Redis) {
    let value = Bytes::from(vec![42u8; VALUE_BYTES]);
    let keys = keys();
    let cache = rt.block_on(async {
        let cache = Cache::new(
            &bench_config(CachingStrategy::Distributed, EvictionPolicy::TinyLfu),
            Some(&redis.url()),
        )
        .await
        .unwrap();
        for key in &keys {
            cache
                .set("bench", key, value.clone(), SetOptions::default())
                .await
                .unwrap();
        }
        cache
    });
    let pool = cache.redis_pool().unwrap();
    let raw_keys: Vec<String> = keys
        .iter()
        .map(|k| format!("tickmesh:cache:bench:{k}"))
        .collect();

    let (mut t_raw, mut t_cache) = (Duration::ZERO, Duration::ZERO);
    const ROUNDS: usize = 20;
    const BLOCK: usize = 500;
    rt.block_on(async {
        for _ in 0..ROUNDS {
            let start = Instant::now();
            for i in 0..BLOCK {
                let mut conn = pool.get().await.unwrap();
                let v: Option<Bytes> = redis::cmd("GET")
                    .arg(&raw_keys[i % KEYS])
                    .query_async(&mut **conn)
                    .await
                    .unwrap();
                black_box(v.unwrap());
            }
            t_raw += start.elapsed();
            let start = Instant::now();
            for i in 0..BLOCK {
                black_box(cache.get("bench", &keys[i % KEYS]).await.unwrap().unwrap());
            }
            t_cache += start.elapsed();
        }
    });
    let per = |t: Duration| t.as_nanos() as f64 / 1000.0 / (ROUNDS * BLOCK) as f64;
    println!(
        "paired l2_hit: raw_get_same_pool {:.1} us, cache_get {:.1} us; cache/raw {:.2}x",
        per(t_raw),
        per(t_cache),
        per(t_cache) / per(t_raw)
    );

    let mut group = c.benchmark_group("l2_hit");
    group.bench_function("raw_get_same_pool", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for i in 0..iters as usize {
                    let mut conn = pool.get().await.unwrap();
                    let v: Option<Bytes> = redis::cmd("GET")
                        .arg(&raw_keys[i % KEYS])
                        .query_async(&mut **conn)
                        .await
                        .unwrap();
                    black_box(v.unwrap());
                }
                start.elapsed()
            })
        })
    });
    group.bench_function("cache_get", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for i in 0..iters as usize {
                    black_box(cache.get("bench", &keys[i % KEYS]).await.unwrap().unwrap());
                }
                start.elapsed()
            })
        })
    });
    group.finish();
    rt.block_on(cache.shutdown());
}

fn candles() -> Vec<Candle> {
    let mut price = 60_000.0;
    (0..500)
        .map(|i| {
            let open = price;
            price *= 1.0 + ((i * 7919 % 200) as f64 - 100.0) / 100_000.0;
            Candle {
                symbol: "BTC-USD".into(),
                interval: 2,
                open_time_us: 1_767_225_600_000_000 + i * 60_000_000,
                open,
                high: open.max(price) * 1.0004,
                low: open.min(price) * 0.9996,
                close: price,
                volume: 12.5 + (i % 17) as f64 * 0.731,
                trade_count: 300 + (i as u64 * 31) % 250,
                closed: true,
            }
        })
        .collect()
}

fn price() -> LatestPriceRecord {
    LatestPriceRecord {
        symbol: "BTC-USD".into(),
        price: 60_123.45,
        time_us: 1_767_225_600_123_456,
        size: 0.0125,
    }
}

fn signal() -> Signal {
    Signal {
        symbol: "AAPL".into(),
        interval: 2,
        time_us: 1_767_225_600_000_000,
        strategy: 5,
        action: 1,
        confidence: 0.72,
        price: 191.37,
        indicators: HashMap::from([
            ("rsi_14".to_owned(), 28.4),
            ("macd".to_owned(), -0.53),
            ("macd_signal".to_owned(), -0.61),
            ("bb_upper".to_owned(), 195.2),
            ("bb_lower".to_owned(), 188.9),
            ("sma_50".to_owned(), 190.1),
        ]),
        votes: (1..=4)
            .map(|s| StrategyVote {
                strategy: s,
                action: 1,
                strength: 0.5 + f64::from(s) / 10.0,
            })
            .collect(),
    }
}

fn codecs(c: &mut Criterion) {
    codec_group(c, "candles_500", &candles());
    codec_group(c, "latest_price", &price());
    codec_group(c, "signal", &signal());
}

fn codec_group<T: CacheValue + PartialEq + std::fmt::Debug>(
    c: &mut Criterion,
    name: &str,
    value: &T,
) {
    let codecs: [(&str, Arc<dyn Codec<T>>); 3] = [
        ("protobuf", Arc::new(ProtobufCodec)),
        ("messagepack", Arc::new(MessagePackCodec)),
        ("custom_binary", Arc::new(BinaryCodec)),
    ];
    let base = codecs[0].1.encode(value).unwrap().len();
    for (format, codec) in &codecs {
        let bytes = codec.encode(value).unwrap();
        assert_eq!(&codec.decode(&bytes).unwrap(), value);
        println!(
            "codec size {name}/{format}: {} bytes ({:.2}x protobuf)",
            bytes.len(),
            bytes.len() as f64 / base as f64
        );
    }
    let mut group = c.benchmark_group(format!("codec_{name}"));
    for (format, codec) in &codecs {
        group.bench_function(format!("encode/{format}"), |b| {
            b.iter(|| black_box(codec.encode(black_box(value)).unwrap()))
        });
        let bytes = codec.encode(value).unwrap();
        group.bench_function(format!("decode/{format}"), |b| {
            b.iter(|| black_box(codec.decode(black_box(&bytes)).unwrap()))
        });
    }
    group.finish();
}

/// SplitMix64: small, fast, good enough to drive a workload.
struct SplitMix(u64);

impl SplitMix {
    fn next_f64(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Zipf(s) over ranks 0..n by inverting the CDF (binary search).
struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    fn new(n: usize, s: f64) -> Self {
        let mut cdf = Vec::with_capacity(n);
        let mut total = 0.0;
        for k in 1..=n {
            total += 1.0 / (k as f64).powf(s);
            cdf.push(total);
        }
        for p in &mut cdf {
            *p /= total;
        }
        Self { cdf }
    }

    fn sample(&self, rng: &mut SplitMix) -> u32 {
        let u = rng.next_f64();
        self.cdf.partition_point(|&p| p < u).min(self.cdf.len() - 1) as u32
    }
}

/// A plain LRU of key ids: a hash map into an intrusive doubly-linked list.
struct Lru {
    capacity: usize,
    map: HashMap<u32, usize>,
    nodes: Vec<(u32, usize, usize)>,
    head: usize,
    tail: usize,
}

const NIL: usize = usize::MAX;

impl Lru {
    fn new(capacity: usize) -> Self {
        Self {
            capacity,
            map: HashMap::with_capacity(capacity),
            nodes: Vec::with_capacity(capacity),
            head: NIL,
            tail: NIL,
        }
    }

    fn unlink(&mut self, i: usize) {
        let (_, prev, next) = self.nodes[i];
        if prev == NIL {
            self.head = next
        } else {
            self.nodes[prev].2 = next
        }
        if next == NIL {
            self.tail = prev
        } else {
            self.nodes[next].1 = prev
        }
    }

    fn push_front(&mut self, i: usize) {
        self.nodes[i].1 = NIL;
        self.nodes[i].2 = self.head;
        if self.head != NIL {
            self.nodes[self.head].1 = i;
        }
        self.head = i;
        if self.tail == NIL {
            self.tail = i;
        }
    }

    /// Whether `key` was cached; it is afterwards.
    fn access(&mut self, key: u32) -> bool {
        if let Some(&i) = self.map.get(&key) {
            self.unlink(i);
            self.push_front(i);
            return true;
        }
        let i = if self.nodes.len() < self.capacity {
            self.nodes.push((key, NIL, NIL));
            self.nodes.len() - 1
        } else {
            let victim = self.tail;
            self.unlink(victim);
            self.map.remove(&self.nodes[victim].0);
            self.nodes[victim].0 = key;
            victim
        };
        self.map.insert(key, i);
        self.push_front(i);
        false
    }
}

fn zipf(rt: &Runtime, redis: &Redis) {
    const N_KEYS: usize = 100_000;
    const L1_ENTRIES: u64 = (N_KEYS / 20) as u64;
    const WARMUP: usize = 1_000_000;
    const MEASURED: usize = 1_000_000;
    const WORKERS: usize = 8;

    let zipf = Zipf::new(N_KEYS, 1.0);
    let mut rng = SplitMix(0x5EED);
    let sequence: Vec<u32> = (0..WARMUP + MEASURED)
        .map(|_| zipf.sample(&mut rng))
        .collect();

    let mut lru = Lru::new(L1_ENTRIES as usize);
    let mut lru_hits = 0usize;
    for (i, &key) in sequence.iter().enumerate() {
        if lru.access(key) && i >= WARMUP {
            lru_hits += 1;
        }
    }

    let mut config = bench_config(CachingStrategy::MultiLayer, EvictionPolicy::TinyLfu);
    {
        let cache = config.cache.as_mut().unwrap();
        cache.l1_max_entries = L1_ENTRIES;
        // Small values: the entry bound is the one that binds.
        cache.l1_max_bytes = L1_ENTRIES * 1024;
        cache.namespaces.clear();
        cache
            .namespaces
            .insert("zipf".into(), cache.default_policy.unwrap());
    }
    let (l1_rate, overall_rate, loads, took) = rt.block_on(async {
        // A fresh database: nothing left from the other benches.
        let cache = Cache::new(&config, Some(&redis.url())).await.unwrap();
        let _ = redis.command(&["FLUSHALL"]);
        cache
            .register_loader(
                "zipf",
                Arc::new(loader_fn(|key: String| async move {
                    Ok(Some(Bytes::from(format!("{key}:{:0>24}", 0))))
                })),
            )
            .unwrap();
        let names: Arc<Vec<String>> = Arc::new((0..N_KEYS).map(|k| format!("k{k}")).collect());
        let sequence = Arc::new(sequence);
        let run = |from: usize, to: usize| {
            let (cache, names, sequence) = (cache.clone(), names.clone(), sequence.clone());
            async move {
                let chunk = (to - from).div_ceil(WORKERS);
                let tasks: Vec<_> = (0..WORKERS)
                    .map(|w| {
                        let (cache, names, sequence) =
                            (cache.clone(), names.clone(), sequence.clone());
                        tokio::spawn(async move {
                            let start = from + w * chunk;
                            for &key in &sequence[start..(start + chunk).min(to)] {
                                cache
                                    .get_or_load("zipf", &names[key as usize])
                                    .await
                                    .unwrap()
                                    .unwrap();
                            }
                        })
                    })
                    .collect();
                for task in tasks {
                    task.await.unwrap();
                }
            }
        };
        run(0, WARMUP).await;
        let before = cache
            .stats()
            .namespaces
            .into_iter()
            .find(|n| n.namespace == "zipf")
            .unwrap();
        let start = Instant::now();
        run(WARMUP, WARMUP + MEASURED).await;
        let took = start.elapsed();
        let after = cache
            .stats()
            .namespaces
            .into_iter()
            .find(|n| n.namespace == "zipf")
            .unwrap();
        let requests = (after.requests - before.requests) as f64;
        let l1 = (after.l1.hits - before.l1.hits) as f64 / requests;
        let overall =
            (after.l1.hits + after.l2.hits - before.l1.hits - before.l2.hits) as f64 / requests;
        cache.shutdown().await;
        (l1, overall, after.loads - before.loads, took)
    });
    let lru_rate = lru_hits as f64 / MEASURED as f64;
    println!(
        "zipf(1.0) over {N_KEYS} keys, L1 {L1_ENTRIES} entries, {MEASURED} requests after {WARMUP} warm-up \
         ({took:?}): cache L1 hit rate {l1_rate:.4}, overall {overall_rate:.4} ({loads} loads); \
         plain LRU {lru_rate:.4}; L1/LRU {:.3}x",
        l1_rate / lru_rate
    );
}
