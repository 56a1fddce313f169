//! After a Redis outage: L2 comes back within seconds of Redis (the open circuit probes after a
//! short, growing wait, not after the whole `open_duration`), and no process keeps serving a
//! value that another one changed or invalidated while pub/sub was down.

use std::time::{Duration, Instant};

use bytes::Bytes;
use tickmesh_cache::{BreakerState, Cache, SetOptions, Tier};
use tickmesh_proto::v1::{CachingStrategy, CircuitBreakerConfig};

use crate::helpers::*;

/// The built-in breaker (60 s `open_duration`, 0.5 s first probe), with a lower failure threshold
/// so that the circuit opens within a second of Redis going away.
fn breaker_as_deployed() -> CircuitBreakerConfig {
    CircuitBreakerConfig {
        failure_threshold: 3,
        success_threshold: 2,
        open_duration: secs_f(60.0),
        probe_interval: secs_f(0.5),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l2_is_back_within_seconds_of_redis_although_the_circuit_may_stay_open_60_s() {
    let mut redis = redis().await;
    let mut config = config(CachingStrategy::MultiLayer);
    config.circuit_breaker = Some(breaker_as_deployed());
    let cache = Cache::new(&config, Some(&redis.url())).await.unwrap();
    assert!(cache.stats().l2_available);

    let stopped = Instant::now();
    tokio::task::block_in_place(|| redis.stop());
    // The health probe pings every 250 ms: three failures open the circuit within about a
    // second; 5 s leaves room for a slow machine.
    let opened = eventually(Duration::from_secs(5), "the circuit opens", || {
        matches!(cache.l2_circuit(), Some(BreakerState::Open { .. }))
    })
    .await;
    assert!(!cache.stats().l2_available);

    tokio::task::block_in_place(|| redis.restart()).unwrap();
    let restarted = Instant::now();
    // The circuit has been open for about a second (plus the restart), so the pending probe
    // wait is 0.5, 1 or 2 s; then two successful pings 250 ms apart close it: about 2.5 s at
    // worst. 5 s is generous for a noisy 2-core box and still far from the 60 s of
    // `open_duration`, which the old breaker waited whatever the outage.
    let back = eventually(Duration::from_secs(5), "L2 is available again", || {
        cache.stats().l2_available
    })
    .await;
    println!(
        "redis stopped; circuit open after {opened:?}; restarted after {:?}; L2 available {back:?} \
         after redis was back (open_duration 60 s)",
        restarted - stopped
    );
    // And it is really used again.
    cache
        .set(
            "test",
            "after",
            Bytes::from_static(b"x"),
            SetOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(
        redis
            .command(&["EXISTS", "tickmesh:cache:test:after"])
            .unwrap(),
        "1"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_made_while_redis_was_down_leaves_no_stale_copy_in_another_process() {
    let mut redis = redis().await;
    // The helpers' breaker (0.5 s fixed wait), so that this test is about the lost
    // invalidations, not about how soon the circuit closes.
    let (a, b) = (multi_layer(&redis).await, multi_layer(&redis).await);
    for (key, value) in [("AAPL", "v0"), ("MSFT", "m0")] {
        a.set(
            "test",
            key,
            Bytes::from_static(value.as_bytes()),
            SetOptions::default(),
        )
        .await
        .unwrap();
        hold_in_l1(&b, key, value).await;
    }
    // Redis keeps its data across the restart (as one with persistence, or a replica that takes
    // over, does), so the values from before the outage are still in L2 when it is back.
    assert_eq!(redis.command(&["SAVE"]).unwrap(), "OK");
    tokio::task::block_in_place(|| redis.stop());
    eventually(Duration::from_secs(5), "a's circuit opens", || {
        !a.l2_available()
    })
    .await;

    // With pub/sub down, a changes one key and invalidates another; b cannot hear of it.
    let stored = a
        .set(
            "test",
            "AAPL",
            Bytes::from_static(b"v1"),
            SetOptions::default(),
        )
        .await
        .unwrap();
    assert!(stored.l1 && !stored.l2);
    a.invalidate_key("test", "MSFT").await.unwrap();
    let during = b.get("test", "AAPL").await.unwrap().unwrap();
    assert_eq!(
        (during.value.as_ref(), during.tier),
        (&b"v0"[..], Tier::L1),
        "while Redis is down b answers from its L1 (the degraded mode)"
    );

    tokio::task::block_in_place(|| redis.restart()).unwrap();
    let back = Instant::now();
    assert_eq!(
        redis
            .command(&["EXISTS", "tickmesh:cache:test:AAPL"])
            .unwrap(),
        "1",
        "the old value survived the restart"
    );
    // Both circuits close within about a second of Redis (0.5 s wait, two pings 250 ms apart),
    // b resubscribes within its 1 s reconnection pause, and a's missed invalidations go out at
    // its next health probe (250 ms): about 2 s. 5 s leaves room for a slow machine.
    let limit = Duration::from_secs(5);
    let fresh = loop {
        let stale = stale_reads(&b).await;
        if stale.is_empty() {
            break back.elapsed();
        }
        assert!(
            back.elapsed() < limit,
            "{limit:?} after redis was back, b still serves {stale:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // And it stays that way: nothing brings the old values back.
    let watch = Instant::now();
    let mut reads = 0;
    while watch.elapsed() < Duration::from_secs(1) {
        let stale = stale_reads(&b).await;
        assert!(stale.is_empty(), "b serves {stale:?} again");
        reads += 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(b.l2_available() && a.l2_available());
    assert_eq!(
        redis
            .command(&[
                "EXISTS",
                "tickmesh:cache:test:AAPL",
                "tickmesh:cache:test:MSFT"
            ])
            .unwrap(),
        "0",
        "the missed invalidations reached L2 too"
    );
    println!(
        "stale values gone from b {fresh:?} after redis was back; {reads} fresh reads in the next second"
    );
}

/// Reads `key` from `cache` until it answers `value` from L1 (the write's own invalidation may
/// drop the first copy).
async fn hold_in_l1(cache: &Cache, key: &str, value: &str) {
    let start = Instant::now();
    loop {
        let hit = cache.get("test", key).await.unwrap().unwrap();
        assert_eq!(hit.value, value.as_bytes());
        if hit.tier == Tier::L1 {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{key} never stays in L1"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The keys for which `b` answers what they held before a's changes during the outage.
async fn stale_reads(b: &Cache) -> Vec<(String, Tier)> {
    let mut stale = Vec::new();
    for (key, old) in [("AAPL", "v0"), ("MSFT", "m0")] {
        if let Some(hit) = b.get("test", key).await.unwrap()
            && hit.value == old.as_bytes()
        {
            stale.push((key.to_owned(), hit.tier));
        }
    }
    stale
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidations_made_while_one_process_was_cut_off_from_redis_reach_the_others_later() {
    let redis = redis().await;
    // a reaches Redis through a link the test can cut (a network partition of one pod); b's
    // subscription stays up all along, so b never learns on its own that it missed anything.
    let link = Link::start(redis.port()).await;
    let config = config(CachingStrategy::MultiLayer);
    let a = Cache::new(&config, Some(&link.url())).await.unwrap();
    let b = multi_layer(&redis).await;
    for (key, value) in [("AAPL", "v0"), ("MSFT", "m0")] {
        a.set(
            "test",
            key,
            Bytes::from_static(value.as_bytes()),
            SetOptions::default(),
        )
        .await
        .unwrap();
        hold_in_l1(&b, key, value).await;
    }

    link.cut();
    eventually(Duration::from_secs(5), "a's circuit opens", || {
        !a.l2_available()
    })
    .await;
    let stored = a
        .set(
            "test",
            "AAPL",
            Bytes::from_static(b"v1"),
            SetOptions::default(),
        )
        .await
        .unwrap();
    assert!(stored.l1 && !stored.l2);
    a.invalidate_key("test", "MSFT").await.unwrap();
    assert!(b.l2_available(), "b still reaches Redis");
    assert_eq!(
        stale_reads(&b).await.len(),
        2,
        "b has not heard of a's changes"
    );

    link.mend();
    let mended = Instant::now();
    // a's circuit closes within about a second (0.5 s wait, two pings 250 ms apart) and its
    // next health probe (250 ms) sends what Redis missed: about 1.5 s; 5 s for a slow machine.
    let limit = Duration::from_secs(5);
    let fresh = loop {
        let stale = stale_reads(&b).await;
        if stale.is_empty() {
            break mended.elapsed();
        }
        assert!(
            mended.elapsed() < limit,
            "{limit:?} after a reached Redis again, b still serves {stale:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        redis
            .command(&[
                "EXISTS",
                "tickmesh:cache:test:AAPL",
                "tickmesh:cache:test:MSFT"
            ])
            .unwrap(),
        "0",
        "the old values are gone from Redis too"
    );
    println!("a's missed invalidations reached b {fresh:?} after the link was mended");
}

/// A TCP link to Redis that the test can cut (every connection through it is dropped and new
/// ones are refused) and mend.
struct Link {
    addr: std::net::SocketAddr,
    open: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Link {
    async fn start(port: u16) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (open, _) = tokio::sync::watch::channel(true);
        let state = open.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let mut up = state.subscribe();
                if !*up.borrow_and_update() {
                    continue;
                }
                tokio::spawn(async move {
                    let Ok(mut outbound) =
                        tokio::net::TcpStream::connect(("127.0.0.1", port)).await
                    else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = up.wait_for(|open| !open) => {}
                    }
                });
            }
        });
        Self { addr, open, task }
    }

    fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    fn cut(&self) {
        self.open.send_replace(false);
    }

    fn mend(&self) {
        self.open.send_replace(true);
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.task.abort();
    }
}
