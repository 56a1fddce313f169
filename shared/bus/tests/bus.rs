#![allow(clippy::unwrap_used)]
//! The bus, the same cases against the in-process log and a real, throwaway Redis.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use tickmesh_bus::{Bus, BusError, Delivery, Subscription};
use tickmesh_testkit::Redis;

const KEY: &str = "tickmesh:test:events";
const CLAIM_IDLE: Duration = Duration::from_millis(200);
/// Long enough for a delivery to become claimable.
const PAST_CLAIM_IDLE: Duration = Duration::from_millis(400);
/// How long a read may wait for events that were published already.
const PATIENCE: Duration = Duration::from_secs(5);
/// How long a read waits when nothing is expected.
const BRIEF: Duration = Duration::from_millis(100);

/// A bus and, for Redis, the server it runs on (stopped and removed when dropped).
struct Harness {
    bus: Bus,
    redis: Option<Redis>,
}

async fn in_process() -> Harness {
    Harness {
        bus: Bus::in_process(1024),
        redis: None,
    }
}

async fn redis() -> Harness {
    redis_with_max_len(10_000).await
}

async fn redis_with_max_len(max_len: usize) -> Harness {
    let redis = tokio::task::spawn_blocking(Redis::start)
        .await
        .unwrap()
        .expect("redis-server starts (install it with `apt-get install redis-server`)");
    let bus = Bus::redis(&redis.url(), KEY, max_len).await.unwrap();
    Harness {
        bus,
        redis: Some(redis),
    }
}

fn events(name: &str, range: std::ops::Range<usize>) -> Vec<Vec<u8>> {
    range.map(|i| format!("{name}-{i}").into_bytes()).collect()
}

fn ids(batch: &[Delivery]) -> Vec<String> {
    batch.iter().map(|d| d.id.clone()).collect()
}

/// Reads until `n` deliveries arrived (failing after `PATIENCE`), without acking.
async fn read(sub: &mut Subscription, n: usize) -> Vec<Delivery> {
    let deadline = Instant::now() + PATIENCE;
    let mut got = Vec::new();
    while got.len() < n {
        assert!(
            Instant::now() < deadline,
            "{} of {n} deliveries within {PATIENCE:?}",
            got.len()
        );
        got.extend(sub.next_batch(n - got.len(), BRIEF).await.unwrap());
    }
    assert_eq!(got.len(), n, "more deliveries than asked for");
    got
}

/// Asserts that nothing is delivered within a brief wait.
async fn assert_nothing(sub: &mut Subscription) {
    let batch = sub.next_batch(100, BRIEF).await.unwrap();
    assert!(batch.is_empty(), "unexpected deliveries: {batch:?}");
}

/// Generates one test per backend for each case.
macro_rules! on_both {
    ($($case:ident),* $(,)?) => {
        mod in_process_bus {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let harness = super::in_process().await;
                    super::$case(&harness.bus).await;
                }
            )*
        }
        mod redis_bus {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let harness = super::redis().await;
                    super::$case(&harness.bus).await;
                    drop(harness.redis);
                }
            )*
        }
    };
}

on_both!(
    two_groups_each_receive_every_event_in_publish_order,
    two_consumers_of_a_group_split_the_events,
    an_unacked_delivery_of_a_departed_consumer_goes_to_another_after_claim_idle,
    acked_events_are_not_delivered_again,
    a_new_group_starts_at_the_end,
    ids_that_are_not_stream_ids_are_refused,
    a_group_that_leaves_is_removed_with_its_backlog,
);

async fn a_group_that_leaves_is_removed_with_its_backlog(bus: &Bus) {
    let gone = bus.subscribe("gone", "g-1").await.unwrap();
    let mut stays = bus.subscribe("stays", "s-1").await.unwrap();
    bus.publish(events("old", 0..3)).await.unwrap();
    gone.leave().await.unwrap();
    // Had the group survived, a consumer joining it would get its three unread events; a new
    // group of the same name starts at the end instead.
    let mut again = bus.subscribe("gone", "g-2").await.unwrap();
    bus.publish(events("new", 0..2)).await.unwrap();
    let got = read(&mut again, 2).await;
    assert_eq!(
        got.iter().map(|d| d.body.clone()).collect::<Vec<_>>(),
        events("new", 0..2)
    );
    assert_nothing(&mut again).await;
    // Other groups are untouched.
    assert_eq!(read(&mut stays, 5).await.len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_process_a_group_that_leaves_no_longer_holds_the_log() {
    let bus = Bus::in_process(4);
    let sub = bus.subscribe("g", "c").await.unwrap();
    bus.publish(events("e", 0..4)).await.unwrap();
    sub.leave().await.unwrap();
    tokio::time::timeout(PATIENCE, bus.publish(events("e", 4..8)))
        .await
        .expect("the log has room once the only group left")
        .unwrap();
}

async fn two_groups_each_receive_every_event_in_publish_order(bus: &Bus) {
    let mut a = bus.subscribe("a", "a-1").await.unwrap();
    let mut b = bus.subscribe("b", "b-1").await.unwrap();
    let published = events("e", 0..30);
    bus.publish(published[..10].to_vec()).await.unwrap();
    bus.publish(Vec::new()).await.unwrap();
    bus.publish(published[10..].to_vec()).await.unwrap();

    let from_a = read(&mut a, 30).await;
    let from_b = read(&mut b, 30).await;
    let bodies = |batch: &[Delivery]| batch.iter().map(|d| d.body.clone()).collect::<Vec<_>>();
    assert_eq!(bodies(&from_a), published);
    assert_eq!(bodies(&from_b), published);
    assert_eq!(
        ids(&from_a),
        ids(&from_b),
        "an event has one id in every group"
    );
    a.ack(&ids(&from_a)).await.unwrap();
    b.ack(&ids(&from_b)).await.unwrap();
    assert_nothing(&mut a).await;
    assert_nothing(&mut b).await;
}

async fn two_consumers_of_a_group_split_the_events(bus: &Bus) {
    let mut one = bus.subscribe("g", "one").await.unwrap();
    let mut two = bus.subscribe("g", "two").await.unwrap();
    let published = events("e", 0..100);
    bus.publish(published.clone()).await.unwrap();

    let mut seen = Vec::new();
    let (mut by_one, mut by_two) = (0, 0);
    let deadline = Instant::now() + PATIENCE;
    while seen.len() < published.len() {
        assert!(
            Instant::now() < deadline,
            "only {} events within {PATIENCE:?}",
            seen.len()
        );
        for (sub, count) in [(&mut one, &mut by_one), (&mut two, &mut by_two)] {
            let batch = sub.next_batch(7, BRIEF).await.unwrap();
            *count += batch.len();
            sub.ack(&ids(&batch)).await.unwrap();
            seen.extend(batch.into_iter().map(|d| d.body));
        }
    }
    assert_eq!(seen.len(), 100, "every event delivered once");
    let distinct: HashSet<_> = seen.iter().collect();
    assert_eq!(
        distinct,
        published.iter().collect(),
        "no event twice, none missing"
    );
    assert!(by_one > 0 && by_two > 0, "split {by_one}/{by_two}");
    assert_eq!(by_one + by_two, 100);
    assert_nothing(&mut one).await;
    assert_nothing(&mut two).await;
}

async fn an_unacked_delivery_of_a_departed_consumer_goes_to_another_after_claim_idle(bus: &Bus) {
    let mut survivor = bus
        .subscribe("g", "survivor")
        .await
        .unwrap()
        .with_claim_idle(CLAIM_IDLE);
    let mut departed = bus
        .subscribe("g", "departed")
        .await
        .unwrap()
        .with_claim_idle(CLAIM_IDLE);
    let published = events("e", 0..5);
    bus.publish(published.clone()).await.unwrap();
    let lost = read(&mut departed, 5).await;
    drop(departed);

    // Not idle long enough yet: nobody gets them.
    assert_nothing(&mut survivor).await;
    tokio::time::sleep(PAST_CLAIM_IDLE).await;
    let claimed = read(&mut survivor, 5).await;
    assert_eq!(claimed, lost, "the same deliveries, same ids, same bodies");
    survivor.ack(&ids(&claimed)).await.unwrap();

    tokio::time::sleep(PAST_CLAIM_IDLE).await;
    assert_nothing(&mut survivor).await;
}

async fn acked_events_are_not_delivered_again(bus: &Bus) {
    let mut first = bus
        .subscribe("g", "first")
        .await
        .unwrap()
        .with_claim_idle(CLAIM_IDLE);
    bus.publish(events("e", 0..5)).await.unwrap();
    let got = read(&mut first, 5).await;
    first.ack(&ids(&got[..3])).await.unwrap();
    drop(first);

    let mut second = bus
        .subscribe("g", "second")
        .await
        .unwrap()
        .with_claim_idle(CLAIM_IDLE);
    tokio::time::sleep(PAST_CLAIM_IDLE).await;
    let again = read(&mut second, 2).await;
    assert_eq!(again, got[3..], "only the un-acked ones come again");
    second.ack(&ids(&again)).await.unwrap();
    tokio::time::sleep(PAST_CLAIM_IDLE).await;
    assert_nothing(&mut second).await;
}

async fn a_new_group_starts_at_the_end(bus: &Bus) {
    let mut early = bus.subscribe("early", "c").await.unwrap();
    bus.publish(events("before", 0..3)).await.unwrap();
    let mut late = bus.subscribe("late", "c").await.unwrap();
    bus.publish(events("after", 0..2)).await.unwrap();

    let from_late = read(&mut late, 2).await;
    assert_eq!(
        from_late.iter().map(|d| d.body.clone()).collect::<Vec<_>>(),
        events("after", 0..2)
    );
    assert_nothing(&mut late).await;
    assert_eq!(read(&mut early, 5).await.len(), 5);
}

async fn ids_that_are_not_stream_ids_are_refused(bus: &Bus) {
    let mut sub = bus.subscribe("g", "c").await.unwrap();
    let err = sub.ack(&["not-an-id".to_owned()]).await.unwrap_err();
    assert!(matches!(err, BusError::InvalidId(_)), "{err}");
    assert!(!err.is_transient());
    // A well-formed id the group never saw acks nothing, and is no error.
    sub.ack(&["12345-6".to_owned()]).await.unwrap();
    sub.ack(&[]).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_trims_the_stream_to_about_max_len() {
    let max_len = 1_000;
    let harness = redis_with_max_len(max_len).await;
    for batch in 0..10 {
        let start = batch * 1_000;
        harness
            .bus
            .publish(events("e", start..start + 1_000))
            .await
            .unwrap();
    }
    let redis = harness.redis.as_ref().unwrap();
    let len: usize = redis.command(&["XLEN", KEY]).unwrap().parse().unwrap();
    assert!(
        (max_len..2 * max_len).contains(&len),
        "XLEN {len} after 10000 XADDs with MAXLEN ~ {max_len}"
    );
}

/// The consumer names of `group` (`XINFO CONSUMERS`).
fn consumers(redis: &Redis, group: &str) -> Vec<String> {
    let text = redis.command(&["XINFO", "CONSUMERS", KEY, group]).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    lines
        .windows(2)
        .filter(|w| w[0] == "name")
        .map(|w| w[1].to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_removes_a_consumer_idle_past_the_limit_only_once_nothing_is_pending() {
    const LIMIT: Duration = Duration::from_millis(300);
    let harness = redis().await;
    let redis = harness.redis.as_ref().unwrap();
    let bus = &harness.bus;
    let mut live = bus
        .subscribe("g", "live")
        .await
        .unwrap()
        .with_claim_idle(CLAIM_IDLE)
        .with_consumer_idle_limit(LIMIT);
    let mut done = bus.subscribe("g", "done").await.unwrap();
    let mut holder = bus.subscribe("g", "holder").await.unwrap();
    bus.publish(events("e", 0..2)).await.unwrap();
    let finished = read(&mut done, 1).await;
    done.ack(&ids(&finished)).await.unwrap();
    let held = read(&mut holder, 1).await;
    // Both processes are gone: one with nothing pending, one holding an entry.
    drop((done, holder));
    assert_eq!(consumers(redis, "g"), ["done", "holder"]);

    // Sweeps run every half limit as `live` reads; `done` goes once idle past the limit, while
    // `holder` stays as long as it holds its entry, however idle. Before CLAIM_IDLE (200 ms)
    // nothing is claimed, after it `live` takes the held entry: read until then.
    let deadline = Instant::now() + PATIENCE;
    let mut claimed = Vec::new();
    while consumers(redis, "g").contains(&"done".to_owned()) {
        assert!(Instant::now() < deadline, "{:?}", consumers(redis, "g"));
        claimed.extend(live.next_batch(10, BRIEF).await.unwrap());
        if claimed.is_empty() {
            assert!(consumers(redis, "g").contains(&"holder".to_owned()));
        }
    }
    claimed.extend(read(&mut live, 1 - claimed.len().min(1)).await);
    assert_eq!(claimed, held, "the held entry was claimed, not dropped");
    live.ack(&ids(&claimed)).await.unwrap();
    // With nothing pending any more, `holder` goes too once past the limit; `live` stays.
    let deadline = Instant::now() + PATIENCE;
    while consumers(redis, "g").contains(&"holder".to_owned()) {
        assert!(Instant::now() < deadline, "{:?}", consumers(redis, "g"));
        assert_nothing(&mut live).await;
    }
    assert_eq!(consumers(redis, "g"), ["live"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_going_away_is_a_transient_error_and_its_return_is_noticed() {
    let Harness { bus, redis } = redis().await;
    let mut redis = redis.unwrap();
    let mut sub = bus
        .subscribe("g", "c")
        .await
        .unwrap()
        .with_claim_idle(CLAIM_IDLE);
    bus.publish(events("before", 0..1)).await.unwrap();
    assert_eq!(read(&mut sub, 1).await.len(), 1);

    tokio::task::block_in_place(|| redis.stop());
    let started = Instant::now();
    let err = bus.publish(events("down", 0..1)).await.unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "publish failed only after {:?}",
        started.elapsed()
    );
    let started = Instant::now();
    let err = sub.next_batch(10, BRIEF).await.unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
    let err = Bus::redis(&redis.url(), KEY, 100).await.unwrap_err();
    assert!(err.is_transient(), "{err}");

    tokio::task::block_in_place(|| redis.restart()).unwrap();
    // The pool drops its dead connections on checkout and connects anew.
    bus.publish(events("after", 0..3)).await.unwrap();
    // The restarted server lost the group; the subscription creates it again from the start
    // of the (new) stream, so what was published meanwhile is not skipped.
    let got = read(&mut sub, 3).await;
    assert_eq!(
        got.iter().map(|d| d.body.clone()).collect::<Vec<_>>(),
        events("after", 0..3)
    );
    sub.ack(&ids(&got)).await.unwrap();
    assert_nothing(&mut sub).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_refuses_a_bad_url() {
    let err = Bus::redis("http://nowhere", KEY, 100).await.unwrap_err();
    assert!(matches!(err, BusError::InvalidUrl(_)), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_process_publish_waits_while_the_log_is_full_and_resumes_after_acks() {
    let bus = Bus::in_process(4);
    let mut sub = bus.subscribe("g", "c").await.unwrap();
    bus.publish(events("e", 0..4)).await.unwrap();

    let blocked = tokio::time::timeout(Duration::from_millis(200), bus.publish(events("e", 4..5)));
    assert!(blocked.await.is_err(), "publish into a full log waits");

    let publisher = {
        let bus = bus.clone();
        tokio::spawn(async move { bus.publish(events("e", 4..6)).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!publisher.is_finished(), "still waiting for room");

    // Reading alone frees nothing: the log keeps what is not acked.
    let first = read(&mut sub, 4).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !publisher.is_finished(),
        "un-acked events still hold the log"
    );

    sub.ack(&ids(&first[..2])).await.unwrap();
    tokio::time::timeout(PATIENCE, publisher)
        .await
        .expect("publish resumes after acks")
        .unwrap()
        .unwrap();
    let rest = read(&mut sub, 2).await;
    assert_eq!(
        rest.iter().map(|d| d.body.clone()).collect::<Vec<_>>(),
        events("e", 4..6),
        "nothing was dropped, the timed-out publish added nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_process_publish_of_more_than_the_capacity_completes_as_consumers_ack() {
    let bus = Bus::in_process(3);
    let mut sub = bus.subscribe("g", "c").await.unwrap();
    let publisher = {
        let bus = bus.clone();
        tokio::spawn(async move { bus.publish(events("e", 0..10)).await })
    };
    let mut seen = Vec::new();
    while seen.len() < 10 {
        let batch = read(&mut sub, 1).await;
        sub.ack(&ids(&batch)).await.unwrap();
        seen.extend(batch.into_iter().map(|d| d.body));
    }
    assert_eq!(seen, events("e", 0..10));
    tokio::time::timeout(PATIENCE, publisher)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_process_publish_without_groups_does_not_wait() {
    let bus = Bus::in_process(2);
    tokio::time::timeout(PATIENCE, bus.publish(events("e", 0..10)))
        .await
        .expect("no group holds the log")
        .unwrap();
}
