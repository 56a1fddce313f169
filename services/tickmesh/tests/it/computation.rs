//! The computation service end to end: real GOOG daily candles replayed through ingestion,
//! indicators computed by the service and compared with TA-Lib's on the same closes, signals on
//! demand and from the bus, portfolio weights against the closed-form two-asset answer, and
//! bad input.

use std::process::Command;
use std::time::{Duration, Instant};

use tickmesh_proto::v1::computation_service_client::ComputationServiceClient;
use tickmesh_proto::v1::ingestion_service_client::IngestionServiceClient;
use tickmesh_proto::v1::{
    BatchSignalsRequest, Candle, ComputeIndicatorsRequest, GenerateSignalsRequest, IndicatorKind,
    IndicatorSpec, IngestCandlesRequest, Interval, OptimizePortfolioRequest, PortfolioObjective,
    SignalAction, Strategy,
};
use tonic::Code;
use tonic_types::StatusExt;

use crate::support::{self, Process, VENV_HINT, channel, describe, program, run, scrape, tickmesh};

const DAY: i64 = 86_400_000_000;

fn python(args: &[&str]) -> String {
    let output = run(Command::new(program("python3", VENV_HINT)).args(args));
    assert!(
        output.status.success(),
        "python failed (needs ta-lib, pandas and backtesting in the test venv: {VENV_HINT}): {}",
        describe(&output)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn goog_csv() -> String {
    support::goog_csv().display().to_string()
}

/// (open time, close) of every GOOG row, parsed from the CSV.
fn goog_closes(csv: &str) -> Vec<(i64, f64)> {
    std::fs::read_to_string(csv)
        .unwrap()
        .lines()
        .skip(1)
        .filter(|l| !l.is_empty())
        .map(|line| {
            let fields: Vec<&str> = line.split(',').collect();
            let date: Vec<i64> = fields[0][..10]
                .split('-')
                .map(|p| p.parse().unwrap())
                .collect();
            let days =
                tickmesh_store::time::days_from_civil(date[0], date[1] as u32, date[2] as u32);
            (days * DAY, fields[4].parse().unwrap())
        })
        .collect()
}

/// `tickmesh up` with GOOG daily candles replayed into it.
fn mesh_with_goog() -> (Process, String) {
    let mesh = Process::start(&["up", "--base-port", "0"], |_| {});
    let csv = goog_csv();
    let output = run(tickmesh()
        .args(["replay", "--symbol", "GOOG", "--batch", "500", "--target"])
        .arg(mesh.addr("ingestion"))
        .arg(&csv));
    assert!(output.status.success(), "{}", describe(&output));
    (mesh, csv)
}

fn spec(kind: IndicatorKind, period: u32) -> IndicatorSpec {
    IndicatorSpec {
        kind: kind as i32,
        period,
        ..Default::default()
    }
}

fn assert_close(name: &str, ours: &[f64], reference: &serde_json::Value) {
    let reference = reference.as_array().unwrap();
    assert_eq!(ours.len(), reference.len(), "{name}: length");
    for (i, (a, b)) in ours.iter().zip(reference).enumerate() {
        match b.as_f64() {
            None => assert!(a.is_nan(), "{name}[{i}]: {a} where TA-Lib has no value"),
            Some(b) => assert!(
                (a - b).abs() <= 1e-9 * b.abs().max(1e-12),
                "{name}[{i}]: {a} vs TA-Lib {b}"
            ),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn indicators_over_stored_goog_candles_equal_talib() {
    let (mesh, _csv) = mesh_with_goog();
    let script = crate::support::in_repo("services/tickmesh/tests/it/talib_goog.py");
    let reference: serde_json::Value =
        serde_json::from_str(&python(&[script.to_str().unwrap()])).unwrap();
    let mut client = ComputationServiceClient::new(channel(mesh.addr("computation")).await);
    let response = client
        .compute_indicators(ComputeIndicatorsRequest {
            symbols: vec!["GOOG".into(), "NOPE".into()],
            interval: Interval::Interval1d as i32,
            indicators: vec![
                spec(IndicatorKind::Sma, 20),
                spec(IndicatorKind::Ema, 0), // TA-Lib's default period, 30
                spec(IndicatorKind::Rsi, 14),
                IndicatorSpec {
                    kind: IndicatorKind::Macd as i32,
                    fast_period: 12,
                    slow_period: 26,
                    signal_period: 9,
                    ..Default::default()
                },
                IndicatorSpec {
                    kind: IndicatorKind::Bbands as i32,
                    period: 20,
                    deviations: 2.0,
                    ..Default::default()
                },
                spec(IndicatorKind::Atr, 14),
            ],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.errors.len(), 1, "{:?}", response.errors);
    assert_eq!(response.errors[0].symbol, "NOPE");
    assert_eq!(response.series.len(), 6);
    let rows = reference["rows"].as_u64().unwrap() as usize;
    for series in &response.series {
        assert_eq!(series.symbol, "GOOG");
        assert_eq!(series.time_us.len(), rows);
        assert!(
            series.time_us.windows(2).all(|w| w[0] < w[1]),
            "oldest first"
        );
    }
    let output = |i: usize, name: &str| {
        response.series[i]
            .outputs
            .iter()
            .find(|o| o.name == name)
            .unwrap_or_else(|| panic!("no output {name} in {:?}", response.series[i].spec))
            .values
            .clone()
    };
    assert_close("SMA(20)", &output(0, "value"), &reference["sma_20"]);
    assert_eq!(
        response.series[1].spec.unwrap().period,
        30,
        "the default is echoed"
    );
    assert_close("EMA(30)", &output(1, "value"), &reference["ema_30"]);
    assert_close("RSI(14)", &output(2, "value"), &reference["rsi_14"]);
    assert_close("MACD", &output(3, "macd"), &reference["macd"]);
    assert_close(
        "MACD signal",
        &output(3, "signal"),
        &reference["macd_signal"],
    );
    assert_close("MACD hist", &output(3, "hist"), &reference["macd_hist"]);
    assert_close("BBANDS upper", &output(4, "upper"), &reference["bb_upper"]);
    assert_close("BBANDS lower", &output(4, "lower"), &reference["bb_lower"]);
    assert_close("ATR(14)", &output(5, "value"), &reference["atr_14"]);
    assert_eq!(response.series[0].lookback, 19);

    // A limited answer: the last 5 points, warmed up on the bars before them, equal TA-Lib's
    // last 5 over the whole history.
    let limited = client
        .compute_indicators(ComputeIndicatorsRequest {
            symbols: vec!["GOOG".into()],
            interval: Interval::Interval1d as i32,
            indicators: vec![spec(IndicatorKind::Rsi, 14)],
            limit: 5,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let values = &limited.series[0].outputs[0].values;
    let reference_rsi = reference["rsi_14"].as_array().unwrap();
    assert_eq!(values.len(), 5);
    assert_eq!(limited.series[0].lookback, 0);
    assert_close(
        "RSI(14), last 5",
        values,
        &serde_json::Value::Array(reference_rsi[reference_rsi.len() - 5..].to_vec()),
    );

    // Bad input: clear statuses naming the field, or the symbol that cannot be served.
    let bad = |indicators: Vec<IndicatorSpec>| ComputeIndicatorsRequest {
        symbols: vec!["GOOG".into()],
        interval: Interval::Interval1d as i32,
        indicators,
        ..Default::default()
    };
    let err = client
        .compute_indicators(bad(vec![spec(IndicatorKind::Unspecified, 5)]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let violations = err.get_details_bad_request().unwrap().field_violations;
    assert_eq!(violations[0].field, "indicators[0].kind");
    let macd_backwards = IndicatorSpec {
        kind: IndicatorKind::Macd as i32,
        fast_period: 26,
        slow_period: 12,
        ..Default::default()
    };
    let err = client
        .compute_indicators(bad(vec![macd_backwards]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    let too_long = client
        .compute_indicators(bad(vec![spec(IndicatorKind::Sma, rows as u32 + 10)]))
        .await
        .unwrap()
        .into_inner();
    assert!(too_long.series.is_empty());
    assert!(
        too_long.errors[0].reason.contains("not enough history"),
        "{:?}",
        too_long.errors
    );
    let err = client
        .compute_indicators(ComputeIndicatorsRequest {
            symbols: vec!["GOOG".into()],
            indicators: vec![spec(IndicatorKind::Sma, 5)],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "no interval: {err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signals_come_from_the_bus_on_demand_and_skip_unchanged_prices() {
    let (mesh, csv) = mesh_with_goog();
    let closes = goog_closes(&csv);
    let outcome = |text: &str, outcome: &str| {
        text.lines()
            .find(|l| l.starts_with(&format!("tickmesh_signals_total{{outcome=\"{outcome}\"}}")))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // The replayed candles closed, went out on the bus, and the signal worker evaluated every
    // bar after the strategies' warm-up once (computed, or skipped as unchanged).
    let lookback = tickmesh_indicators::signals::SignalEngine::new(
        &tickmesh_indicators::signals::Params::default(),
    )
    .unwrap()
    .lookback();
    let expected = (closes.len() - lookback) as f64;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = scrape(&mesh.metrics);
        let done = outcome(&text, "computed") + outcome(&text, "skipped");
        if done >= expected {
            assert_eq!(done, expected, "each bar evaluated once");
            assert!(outcome(&text, "computed") > 0.0 && outcome(&text, "skipped") > 0.0);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{done} of {expected} bars evaluated from the bus:\n{}",
            mesh.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The worker wrote GOOG's newest signal through to the cache: the caching service answers
    // from L1 (a value loaded from the store would come from the source tier).
    let mut caching = tickmesh_proto::v1::caching_service_client::CachingServiceClient::new(
        channel(mesh.addr("caching")).await,
    );
    let cached = caching
        .get(tickmesh_proto::v1::GetRequest {
            namespace: "signals".into(),
            key: format!("GOOG/{}", Interval::Interval1d as i32),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(cached.found);
    assert_eq!(cached.tier, tickmesh_proto::v1::CacheTier::L1 as i32);
    // Typed in the contract: no codec needed to read it.
    let Some(tickmesh_proto::v1::cache_value::Kind::Signal(cached)) =
        cached.typed.and_then(|v| v.kind)
    else {
        panic!("the cached value is a signal");
    };
    assert_eq!(cached.symbol, "GOOG");

    let mut client = ComputationServiceClient::new(channel(mesh.addr("computation")).await);
    let signal = client
        .generate_signals(GenerateSignalsRequest {
            symbol: "GOOG".into(),
            interval: Interval::Interval1d as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .signal
        .unwrap();
    let (last_time, last_close) = *closes.last().unwrap();
    assert_eq!(signal.time_us, last_time);
    assert_eq!(signal.price, last_close);
    assert_eq!(signal.strategy, Strategy::Combined as i32);
    assert!((0.0..=1.0).contains(&signal.confidence));
    assert_ne!(signal.action, SignalAction::Unspecified as i32);
    assert_eq!(signal.votes.len(), 4, "{signal:?}");
    assert_eq!(signal.indicators["close"], last_close);
    assert!(
        signal.indicators.contains_key("rsi_14"),
        "{:?}",
        signal.indicators
    );

    // Nothing moved since that signal: the batch skips GOOG and its signal stands.
    let batch = client
        .batch_signals(BatchSignalsRequest {
            symbols: vec!["GOOG".into(), "NOPE".into()],
            interval: Interval::Interval1d as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(batch.skipped, 1);
    assert_eq!(batch.signals.len(), 1);
    assert_eq!(batch.signals[0].time_us, signal.time_us);
    assert_eq!(batch.errors.len(), 1);
    assert_eq!(batch.errors[0].symbol, "NOPE");

    let err = client
        .generate_signals(GenerateSignalsRequest {
            symbol: "NOPE".into(),
            interval: Interval::Interval1d as i32,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn portfolio_weights_equal_the_closed_form_two_asset_minimum_variance() {
    let (mesh, csv) = mesh_with_goog();
    let closes = goog_closes(&csv);
    // A second asset on the same days: a deterministic wobble around a slow trend.
    let other: Vec<Candle> = closes
        .iter()
        .enumerate()
        .map(|(i, &(time, _))| {
            let t = i as f64;
            let close =
                50.0 * (0.0004 * t + 0.03 * (t * 0.7).sin() + 0.02 * (t * 0.13).cos()).exp();
            support::candle(
                "WOBBLE",
                Interval::Interval1d,
                time,
                [close, close * 1.01, close * 0.99, close],
                1000.0,
            )
        })
        .collect();
    let mut ingest = IngestionServiceClient::new(channel(mesh.addr("ingestion")).await);
    for chunk in other.chunks(1000) {
        ingest
            .ingest_candles(IngestCandlesRequest {
                candles: chunk.to_vec(),
                source: "test".into(),
            })
            .await
            .unwrap();
    }

    let lookback = 250usize;
    let mut client = ComputationServiceClient::new(channel(mesh.addr("computation")).await);
    let request = |symbols: Vec<&str>, lookback: u32| OptimizePortfolioRequest {
        symbols: symbols.into_iter().map(String::from).collect(),
        interval: Interval::Interval1d as i32,
        lookback_bars: lookback,
        objective: PortfolioObjective::MinVariance as i32,
        ..Default::default()
    };
    let response = client
        .optimize_portfolio(request(vec!["GOOG", "WOBBLE"], lookback as u32))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.observations as usize, lookback);

    // The analytic answer from the same closes: w1 = (s2² − s12) / (s1² + s2² − 2 s12).
    let returns =
        |closes: Vec<f64>| -> Vec<f64> { closes.windows(2).map(|w| (w[1] / w[0]).ln()).collect() };
    let tail = closes.len() - lookback - 1;
    let r1 = returns(closes[tail..].iter().map(|c| c.1).collect());
    let r2 = returns(other[tail..].iter().map(|c| c.close).collect());
    let mean = |r: &[f64]| r.iter().sum::<f64>() / r.len() as f64;
    let cov = |a: &[f64], b: &[f64]| {
        let (ma, mb) = (mean(a), mean(b));
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - ma) * (y - mb))
            .sum::<f64>()
            / (a.len() - 1) as f64
    };
    let (s11, s22, s12) = (cov(&r1, &r1), cov(&r2, &r2), cov(&r1, &r2));
    let w1 = ((s22 - s12) / (s11 + s22 - 2.0 * s12)).clamp(0.0, 1.0);
    let weights: Vec<f64> = response.weights.iter().map(|w| w.weight).collect();
    assert!(
        (weights[0] - w1).abs() < 1e-9,
        "GOOG weight {} vs closed form {w1}",
        weights[0]
    );
    assert!((weights.iter().sum::<f64>() - 1.0).abs() < 1e-12);

    // Bad input: one asset, a lookback longer than the history, an identical (singular) pair.
    let err = client
        .optimize_portfolio(request(vec!["GOOG"], 100))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    let err = client
        .optimize_portfolio(request(vec!["GOOG", "WOBBLE"], closes.len() as u32 + 5))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    let twin: Vec<Candle> = other
        .iter()
        .map(|c| Candle {
            symbol: "TWIN".into(),
            ..c.clone()
        })
        .collect();
    for chunk in twin.chunks(1000) {
        ingest
            .ingest_candles(IngestCandlesRequest {
                candles: chunk.to_vec(),
                source: "test".into(),
            })
            .await
            .unwrap();
    }
    let err = client
        .optimize_portfolio(request(vec!["WOBBLE", "TWIN"], 100))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message().contains("singular") || err.message().contains("collinear"),
        "{}",
        err.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_computation_processes_split_the_bus_and_evaluate_each_bar_once() {
    let redis = tickmesh_testkit::Redis::start().expect("a throwaway Redis");
    let store = crate::support::scratch_file("shared.db");
    std::fs::create_dir_all(store.parent().unwrap()).unwrap();
    let shared = |target: &str| {
        let url = redis.url();
        let store = format!("sqlite:{}", store.display());
        Process::start(
            &["serve", "--target", target, "--listen", "127.0.0.1:0"],
            move |c| {
                c.env("TICKMESH_BUS_URL", url)
                    .env("TICKMESH_STORE_URL", store);
            },
        )
    };
    let ingestion = shared("ingestion");
    let workers = [shared("computation"), shared("computation")];
    let evaluations = |p: &Process| {
        let text = scrape(&p.metrics);
        ["computed", "skipped"]
            .iter()
            .map(|outcome| {
                text.lines()
                    .find(|l| {
                        l.starts_with(&format!("tickmesh_signals_total{{outcome=\"{outcome}\"}}"))
                    })
                    .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                    .unwrap_or(0.0)
            })
            .sum::<f64>()
    };

    // Writes of one symbol each, every one a bus event holding 60 closed daily bars: every bar
    // after the strategies' warm-up yields exactly one evaluation, in one of the two processes.
    // Rounds of 20 symbols go out until both processes have taken work (which one takes an
    // event is up to Redis and timing).
    let lookback = tickmesh_indicators::signals::SignalEngine::new(
        &tickmesh_indicators::signals::Params::default(),
    )
    .unwrap()
    .lookback();
    let per_symbol = (60 - lookback) as f64;
    let mut ingest = IngestionServiceClient::new(channel(ingestion.addr("ingestion")).await);
    let mut symbols = 0usize;
    let mut counts = vec![0.0; 2];
    for round in 0..5 {
        for s in (round * 20)..(round * 20 + 20) {
            let candles: Vec<Candle> = (0..60)
                .map(|d| {
                    let close = 100.0 + s as f64 + 10.0 * ((d as f64) * 0.3 + s as f64).sin();
                    support::candle(
                        &format!("SYM{s}"),
                        Interval::Interval1d,
                        1_700_006_400_000_000 + d * DAY,
                        [close, close + 1.0, close - 1.0, close],
                        10.0,
                    )
                })
                .collect();
            ingest
                .ingest_candles(IngestCandlesRequest {
                    candles,
                    source: "test".into(),
                })
                .await
                .unwrap();
            symbols += 1;
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        let expected = symbols as f64 * per_symbol;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let total: f64 = workers.iter().map(evaluations).sum();
            if total >= expected {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "only {total} of {expected} evaluations"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Give a duplicate the chance to show up before counting.
        tokio::time::sleep(Duration::from_millis(500)).await;
        counts = workers.iter().map(evaluations).collect();
        assert_eq!(
            counts.iter().sum::<f64>(),
            expected,
            "each bar once: {counts:?}"
        );
        if counts.iter().all(|&c| c > 0.0) {
            break;
        }
    }
    assert!(
        counts.iter().all(|&c| c > 0.0),
        "both processes took work: {counts:?}"
    );
}

/// `n` daily candles of `symbol` that are not closed: stored, usable by the on-demand RPCs,
/// but not evaluated by the bus worker (it evaluates closed bars only).
fn open_daily_candles(symbol: &str, n: i64) -> Vec<Candle> {
    const T0: i64 = 1_700_006_400_000_000; // a UTC midnight
    (0..n)
        .map(|d| {
            let close = 100.0 + (d as f64 * 0.41).sin() * 7.0 + d as f64 * 0.05;
            Candle {
                closed: false,
                ..support::candle(
                    symbol,
                    Interval::Interval1d,
                    T0 + d * DAY,
                    [close - 0.5, close + 1.0, close - 1.0, close],
                    1_000.0,
                )
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signals_stored_while_redis_is_down_reach_a_connected_subscriber_exactly_once() {
    use tickmesh_proto::v1::query_service_client::QueryServiceClient;
    use tickmesh_proto::v1::{EventKind, StreamMarketDataRequest, market_event::Payload};

    let mut redis = tickmesh_testkit::Redis::start().expect("a throwaway Redis");
    let mesh = Process::start(&["up", "--base-port", "0"], |c| {
        c.env("TICKMESH_BUS_URL", redis.url());
    });
    let symbols = ["OUTBOX-A", "OUTBOX-B", "OUTBOX-C"];
    let mut ingest = IngestionServiceClient::new(channel(mesh.addr("ingestion")).await);
    for symbol in symbols {
        ingest
            .ingest_candles(IngestCandlesRequest {
                candles: open_daily_candles(symbol, 120),
                source: "t".into(),
            })
            .await
            .unwrap();
    }
    let mut stream = QueryServiceClient::new(channel(mesh.addr("query")).await)
        .stream_market_data(StreamMarketDataRequest {
            symbols: symbols.iter().map(|s| s.to_string()).collect(),
            kinds: vec![EventKind::Signal as i32],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();

    // The bus goes away; the signals computed now are stored (the store is SQLite) ...
    tokio::task::block_in_place(|| redis.stop());
    let response = ComputationServiceClient::new(channel(mesh.addr("computation")).await)
        .batch_signals(BatchSignalsRequest {
            symbols: symbols.iter().map(|s| s.to_string()).collect(),
            interval: Interval::Interval1d as i32,
            ..Default::default()
        })
        .await
        .expect("signals do not depend on the bus being up")
        .into_inner();
    assert_eq!(response.signals.len(), symbols.len(), "{response:?}");
    assert_eq!(response.skipped, 0);

    // ... and reach the subscriber once the bus is back, each exactly once.
    tokio::task::block_in_place(|| redis.restart()).unwrap();
    let mut seen = std::collections::HashMap::<String, u32>::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.len() < symbols.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        let message = tokio::time::timeout(left, stream.message())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "signals received: {seen:?} of {}; log:\n{}",
                    symbols.len(),
                    mesh.log()
                )
            })
            .expect("the stream stays up through the outage")
            .expect("the stream does not end");
        let event = message.event.unwrap();
        assert!(matches!(event.payload, Some(Payload::Signal(_))));
        *seen.entry(event.event_id).or_default() += 1;
    }
    // Nothing arrives twice (at least once on the bus, deduplicated by event id before it
    // reaches a subscriber) and nothing else arrives.
    if let Ok(Ok(Some(extra))) =
        tokio::time::timeout(Duration::from_secs(2), stream.message()).await
    {
        panic!("a signal arrived again or unasked for: {extra:?} (seen {seen:?})");
    }
    assert!(seen.values().all(|&n| n == 1), "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_auth_on_the_signal_write_through_carries_the_peer_key() {
    use std::io::Write;
    use tickmesh_proto::v1::caching_service_client::CachingServiceClient;
    use tickmesh_proto::v1::{CacheTier, GetRequest, cache_value::Kind};

    const FEEDER: &str = "feeder-key-5e1f0a7c93b2";
    const VIEWER: &str = "viewer-key-a04c7d2e61f8";
    const COMPUTATION: &str = "computation-key-77c2e9b4d105";
    let mut keys = tempfile::NamedTempFile::new().unwrap();
    writeln!(
        keys,
        "feeder write {FEEDER}\nviewer read {VIEWER}\ncomputation write {COMPUTATION}"
    )
    .unwrap();
    let mesh = Process::start(&["up", "--base-port", "0"], |c| {
        c.env("TICKMESH_AUTH__ENABLED", "true")
            .env("TICKMESH_AUTH__KEYS_FILE", keys.path())
            .env("TICKMESH_AUTH__PEER_KEY_NAME", "computation");
    });
    fn keyed<T>(message: T, key: &str) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {key}").parse().unwrap());
        request
    }
    let candles: Vec<Candle> = (0..80)
        .map(|d| {
            let close = 100.0 + 8.0 * (d as f64 * 0.35).sin();
            support::candle(
                "AUTHED",
                Interval::Interval1d,
                1_700_006_400_000_000 + d * DAY,
                [close, close + 1.0, close - 1.0, close],
                10.0,
            )
        })
        .collect();
    IngestionServiceClient::new(channel(mesh.addr("ingestion")).await)
        .ingest_candles(keyed(
            IngestCandlesRequest {
                candles,
                source: "t".into(),
            },
            FEEDER,
        ))
        .await
        .unwrap();
    // The worker's newest signal reaches the caching service's L1 through its Set, with the
    // peer key (a refused Set would leave only the store loader to answer, from the source).
    let mut caching = CachingServiceClient::new(channel(mesh.addr("caching")).await);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = caching
            .get(keyed(
                GetRequest {
                    namespace: "signals".into(),
                    key: format!("AUTHED/{}", Interval::Interval1d as i32),
                },
                VIEWER,
            ))
            .await
            .unwrap()
            .into_inner();
        if got.found && got.tier == CacheTier::L1 as i32 {
            let Some(Kind::Signal(signal)) = got.typed.and_then(|v| v.kind) else {
                panic!("the cached value is a signal");
            };
            assert_eq!(signal.symbol, "AUTHED");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no signal written through: {got:?}\n{}",
            mesh.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        !mesh.log().contains("signal not written through"),
        "{}",
        mesh.log()
    );
}

#[test]
fn a_peer_key_name_without_such_a_key_stops_start_up_naming_the_field() {
    use std::io::Write;
    let mut keys = tempfile::NamedTempFile::new().unwrap();
    writeln!(keys, "viewer read viewer-key-a04c7d2e61f8").unwrap();
    let output = run(tickmesh()
        .args([
            "serve",
            "--target",
            "computation",
            "--listen",
            "127.0.0.1:0",
        ])
        .env("TICKMESH_AUTH__ENABLED", "true")
        .env("TICKMESH_AUTH__KEYS_FILE", keys.path())
        .env("TICKMESH_AUTH__PEER_KEY_NAME", "viewer"));
    assert!(!output.status.success(), "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("auth.peer_key_name \"viewer\"") && stderr.contains("write scope"),
        "{}",
        describe(&output)
    );
}
