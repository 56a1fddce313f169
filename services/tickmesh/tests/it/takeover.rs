//! Reliability regression tests (issue 15): a computation replica that dies holding bus entries
//! loses none of the signals they carry, whoever takes them over, and leaves no consumer behind.

use std::ffi::OsString;
use std::process::Command;
use std::time::{Duration, Instant};

use prost::Message;
use tickmesh_proto::v1::computation_service_client::ComputationServiceClient;
use tickmesh_proto::v1::ingestion_service_client::IngestionServiceClient;
use tickmesh_proto::v1::{
    Candle, ComputeIndicatorsRequest, IndicatorKind, IndicatorSpec, IngestCandlesRequest, Interval,
    Signal,
};
use tickmesh_testkit::{Postgres, Redis};

use crate::support::{self, Process, channel};

const MINUTE: i64 = 60_000_000;
/// 2026-01-01 00:00 UTC.
const T0: i64 = 1_767_225_600_000_000;
const SYMBOLS: usize = 20;
/// Bars stored before the computation group exists: history only, nobody evaluates them.
const HISTORY: i64 = 60;
/// Bars after the one the dead replica holds.
const LATER: i64 = 5;
const GROUP: &str = "computation";
const DEAD: &str = "replica-that-died";
/// How long an entry may stay un-acked before the survivor claims it (`bus.claim_idle`). Long
/// enough that the survivor reads the later bars first (it is resumed well within it), short
/// enough to keep the test quick.
const CLAIM_IDLE: Duration = Duration::from_secs(2);
/// `bus.consumer_idle_limit`: longer than a live consumer's longest quiet spell (a 500 ms read).
const CONSUMER_IDLE_LIMIT: Duration = Duration::from_secs(2);

fn symbol(s: usize) -> String {
    format!("TAKE{s:02}")
}

/// Bar `n` of symbol `s`: closes that wander, so the strategies have something to say.
fn bar(s: usize, n: i64) -> Candle {
    let close = 100.0 + s as f64 + 6.0 * (n as f64 * 0.37 + s as f64).sin() + 0.03 * n as f64;
    support::candle(
        &symbol(s),
        Interval::Interval1m,
        T0 + n * MINUTE,
        [close - 0.4, close + 1.0, close - 1.0, close],
        10.0 + n as f64,
    )
}

/// Polls `done` every 50 ms until it holds, failing with `what()` after `limit`.
fn wait_until(limit: Duration, mut done: impl FnMut() -> bool, what: impl Fn() -> String) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "after {limit:?}: {}", what());
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn signal(process: &Process, name: &str) {
    let status = Command::new("kill")
        .args([name, &process.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill {name}");
}

/// Entries of the computation group not acked yet (`XPENDING` summary).
fn pending(redis: &Redis) -> u64 {
    let summary = redis
        .command(&["XPENDING", tickmesh::app::BUS_STREAM, GROUP])
        .unwrap();
    summary.lines().next().unwrap().parse().unwrap()
}

/// The consumers of the computation group (`XINFO CONSUMERS`), empty while there is no group.
fn consumers(redis: &Redis) -> String {
    redis
        .command(&["XINFO", "CONSUMERS", tickmesh::app::BUS_STREAM, GROUP])
        .unwrap_or_default()
}

/// Waits until everything ingested so far is on the bus (ingestion's relay drained the outbox).
fn wait_published(pg: &Postgres) {
    // The relay publishes at once when woken, else every 250 ms; 10 s covers a slow box.
    wait_until(
        Duration::from_secs(10),
        || pg.psql("select count(*) from outbox").unwrap() == "0",
        || "the outbox is not drained".to_owned(),
    );
}

async fn ingest(client: &mut IngestionServiceClient<tonic::transport::Channel>, bars: Vec<Candle>) {
    client
        .ingest_candles(IngestCandlesRequest {
            candles: bars,
            source: "takeover".into(),
        })
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bar_held_by_a_dead_replica_gets_its_signals_from_the_survivor_exactly_once() {
    let pg = Postgres::start().expect("a throwaway PostgreSQL");
    let redis = Redis::start().expect("a throwaway Redis");
    let env: Vec<(&str, OsString)> = vec![
        ("TICKMESH_STORE_URL", pg.url().into()),
        ("TICKMESH_BUS_URL", redis.url().into()),
        // Every evaluated bar yields a signal: none is skipped as unchanged.
        (
            "TICKMESH_PROCESSING__SKIP_UNCHANGED_THRESHOLD_PERCENT",
            "0".into(),
        ),
        (
            "TICKMESH_BUS__CLAIM_IDLE",
            format!("{}s", CLAIM_IDLE.as_secs()).into(),
        ),
        (
            "TICKMESH_BUS__CONSUMER_IDLE_LIMIT",
            format!("{}s", CONSUMER_IDLE_LIMIT.as_secs()).into(),
        ),
    ];
    let serve = |target: &str| {
        let env = env.clone();
        Process::start(
            &["serve", "--target", target, "--listen", "127.0.0.1:0"],
            move |c| {
                c.envs(env.iter().map(|(k, v)| (*k, v)));
            },
        )
    };
    let ingestion = serve("ingestion");
    let mut client = IngestionServiceClient::new(channel(ingestion.addr("ingestion")).await);
    for s in 0..SYMBOLS {
        ingest(&mut client, (0..HISTORY).map(|n| bar(s, n)).collect()).await;
    }
    wait_published(&pg);
    // Ingestion relays the outbox (it asked first), so pausing computation below never holds
    // up publishing.
    wait_until(
        Duration::from_secs(10),
        || ingestion.log().contains("this process relays the outbox"),
        || ingestion.log(),
    );
    let computation = serve("computation");
    // The group exists once computation subscribed: from here on every event goes to it.
    wait_until(
        Duration::from_secs(10),
        || {
            redis
                .command(&["XINFO", "GROUPS", tickmesh::app::BUS_STREAM])
                .unwrap()
                .lines()
                .any(|l| l == GROUP)
        },
        || format!("computation never made its group: {}", computation.log()),
    );

    // Paused, the survivor cannot read: once its blocking read timed out (500 ms) Redis hands
    // every entry to whoever asks next, here the stand-in for a replica that then dies.
    signal(&computation, "-STOP");
    wait_until(
        Duration::from_secs(5),
        || {
            redis
                .command(&["INFO", "clients"])
                .unwrap()
                .contains("blocked_clients:0")
        },
        || "computation's read is still blocked".to_owned(),
    );
    ingest(&mut client, (0..SYMBOLS).map(|s| bar(s, HISTORY)).collect()).await;
    wait_published(&pg);
    redis
        .command(&[
            "XREADGROUP",
            "GROUP",
            GROUP,
            DEAD,
            "COUNT",
            "1000",
            "STREAMS",
            tickmesh::app::BUS_STREAM,
            ">",
        ])
        .unwrap();
    let held = redis
        .command(&[
            "XPENDING",
            tickmesh::app::BUS_STREAM,
            GROUP,
            "-",
            "+",
            "1000",
            DEAD,
        ])
        .unwrap();
    let held_ids: Vec<&str> = held.lines().step_by(4).collect();
    assert!(!held_ids.is_empty(), "the dead replica took bar {HISTORY}");
    for n in HISTORY + 1..=HISTORY + LATER {
        ingest(&mut client, (0..SYMBOLS).map(|s| bar(s, n)).collect()).await;
    }
    wait_published(&pg);
    // The dead replica's entries count as freshly read from here, so the survivor's first read
    // after it resumes gets the later bars: it sees bar HISTORY only in the store at first.
    for id in &held_ids {
        redis
            .command(&[
                "XCLAIM",
                tickmesh::app::BUS_STREAM,
                GROUP,
                DEAD,
                "0",
                id,
                "IDLE",
                "0",
                "JUSTID",
            ])
            .unwrap();
    }
    let held_at = Instant::now();
    signal(&computation, "-CONT");

    // Every bar since the group exists, of every symbol: exactly one signal row.
    let expected = SYMBOLS as i64 * (LATER + 1);
    let rows = || {
        pg.psql(&format!(
            "select count(*), count(distinct (symbol, interval_code, time_us)) from signals \
             where time_us >= {}",
            T0 + HISTORY * MINUTE
        ))
        .unwrap()
    };
    let per_bar = || {
        pg.psql(
            "select (time_us - 1767225600000000) / 60000000, count(*) from signals \
             group by time_us order by time_us",
        )
        .unwrap()
    };
    // The claim comes CLAIM_IDLE after the entries were last handed out, then one cycle of
    // store reads and writes: 20 s is far beyond that even on a loaded 2-core box, and still
    // short of the 30 s the claim used to take.
    wait_until(
        Duration::from_secs(20),
        || rows() == format!("{expected}|{expected}"),
        || {
            format!(
                "signal rows (total|distinct keys) {} of {expected}; per bar (bar|rows):\n{}\n\
                 pending {}\n{}",
                rows(),
                per_bar(),
                pending(&redis),
                computation.log()
            )
        },
    );
    let recovered = held_at.elapsed();
    assert!(
        recovered >= CLAIM_IDLE,
        "the held bar was taken over after {recovered:?}, before bus.claim_idle ({CLAIM_IDLE:?})"
    );
    eprintln!("held bar recovered {recovered:?} after the dead replica's last delivery");
    // The survivor counted what it claimed: the redeliveries an operator alerts on.
    let metrics = crate::support::scrape(&computation.metrics);
    let claimed: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("tickmesh_bus_redeliveries_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(claimed >= 1.0, "no redelivery counted:\n{metrics}");
    assert_eq!(
        pg.psql(&format!(
            "select count(*) from signals where time_us < {}",
            T0 + HISTORY * MINUTE
        ))
        .unwrap(),
        "0",
        "history bars are nobody's to evaluate"
    );
    wait_until(
        Duration::from_secs(10),
        || pending(&redis) == 0,
        || format!("{} entries still pending", pending(&redis)),
    );

    // The held bar was evaluated as of that bar, from the stored history up to it: its
    // indicators equal the batch computation's at that bar.
    let body = pg
        .psql(&format!(
            "select encode(body, 'hex') from signals where symbol = '{}' and time_us = {}",
            symbol(3),
            T0 + HISTORY * MINUTE
        ))
        .unwrap();
    let body: Vec<u8> = (0..body.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&body[i..i + 2], 16).unwrap())
        .collect();
    let stored = Signal::decode(body.as_slice()).unwrap();
    assert_eq!(stored.price, bar(3, HISTORY).close, "{stored:?}");
    let series = ComputationServiceClient::new(channel(computation.addr("computation")).await)
        .compute_indicators(ComputeIndicatorsRequest {
            symbols: vec![symbol(3)],
            interval: Interval::Interval1m as i32,
            indicators: vec![
                IndicatorSpec {
                    kind: IndicatorKind::Rsi as i32,
                    period: 14,
                    ..Default::default()
                },
                IndicatorSpec {
                    kind: IndicatorKind::Ema as i32,
                    period: 12,
                    ..Default::default()
                },
            ],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .series;
    for (series, name) in series.iter().zip(["rsi_14", "ema_12"]) {
        let at = series
            .time_us
            .iter()
            .position(|&t| t == T0 + HISTORY * MINUTE)
            .unwrap();
        let batch = series.outputs[0].values[at];
        let streamed = stored.indicators[name];
        assert!(
            (batch - streamed).abs() <= 1e-9 * batch.abs().max(1.0),
            "{name} at the held bar: stored {streamed}, batch {batch}"
        );
    }

    // The dead replica's consumer, idle past bus.consumer_idle_limit with nothing pending, is
    // removed at the next sweep (every half limit); the survivor keeps its own.
    wait_until(
        Duration::from_secs(15),
        || !consumers(&redis).lines().any(|l| l == DEAD),
        || {
            format!(
                "the dead consumer is still in the group:\n{}",
                consumers(&redis)
            )
        },
    );
    assert!(
        consumers(&redis)
            .lines()
            .any(|l| l.starts_with("computation-")),
        "the survivor's consumer stays: {}",
        consumers(&redis)
    );
}
