//! `GetCandles` with `bar` (resampling at query time) against pandas `resample` on real data:
//! GOOG daily bars (from the `backtesting` package) to weeks (one spans a month end), months and
//! epoch-aligned 2-day bars; EURUSD hourly bars to 4-hour bars, New York days and weeks (the
//! data crosses the DST changes of 2017) and months; made-up 15-minute bars to XNYS sessions
//! and New York days around 2017-11-05. The reference is computed by `resample_reference.py`;
//! values equal within 1e-12 relative. And the bad requests, each a clear INVALID_ARGUMENT.

use std::process::Command;

use tickmesh_proto::v1::ingestion_service_client::IngestionServiceClient;
use tickmesh_proto::v1::query_service_client::QueryServiceClient;
use tickmesh_proto::v1::{
    Candle, GetCandlesRequest, GetIndicatorsRequest, IndicatorKind, IndicatorSpec,
    IngestCandlesRequest, Interval,
};
use tonic::Code;
use tonic_types::StatusExt;

use crate::support::{Process, VENV_HINT, channel, describe, in_repo, program, run};

fn reference() -> serde_json::Value {
    let python = program("python3", VENV_HINT);
    let output =
        run(Command::new(python).arg(in_repo("services/tickmesh/tests/it/resample_reference.py")));
    assert!(
        output.status.success(),
        "resample_reference.py (needs pandas and backtesting in the test venv: {VENV_HINT}): {}",
        describe(&output)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

fn close_to(got: f64, want: f64) -> bool {
    got == want || (got - want).abs() <= 1e-12 * want.abs().max(got.abs())
}

async fn all_bars(
    query: &mut QueryServiceClient<tonic::transport::Channel>,
    mut request: GetCandlesRequest,
) -> (Vec<Candle>, usize) {
    let (mut bars, mut pages) = (Vec::new(), 0);
    loop {
        let page = query
            .get_candles(request.clone())
            .await
            .unwrap_or_else(|e| panic!("{request:?}: {e:?}"))
            .into_inner();
        pages += 1;
        assert!(page.candles.len() <= request.page_size as usize);
        bars.extend(page.candles);
        if page.next_page_token.is_empty() {
            return (bars, pages);
        }
        request.page_token = page.next_page_token;
    }
}

fn violated_field(status: &tonic::Status) -> String {
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let details = status.get_error_details();
    let bad = details.bad_request().expect("field violations");
    bad.field_violations[0].field.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resampled_bars_equal_pandas_on_goog_eurusd_and_a_dst_change() {
    let reference = reference();
    let mesh = Process::start(&["up", "--base-port", "0"], |_| {});
    let mut ingest = IngestionServiceClient::new(channel(mesh.addr("ingestion")).await);
    let mut query = QueryServiceClient::new(channel(mesh.addr("query")).await);
    for (symbol, input) in reference["input"].as_object().unwrap() {
        let interval = Interval::from_str_name(input["interval"].as_str().unwrap()).unwrap();
        let candles: Vec<Candle> = input["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|row| {
                let v: Vec<f64> = row.as_array().unwrap()[1..]
                    .iter()
                    .map(|x| x.as_f64().unwrap())
                    .collect();
                crate::support::candle(
                    symbol,
                    interval,
                    row[0].as_i64().unwrap(),
                    [v[0], v[1], v[2], v[3]],
                    v[4],
                )
            })
            .collect();
        for batch in candles.chunks(1_000) {
            let summary = ingest
                .ingest_candles(IngestCandlesRequest {
                    candles: batch.to_vec(),
                    source: String::new(),
                })
                .await
                .unwrap()
                .into_inner()
                .summary
                .unwrap();
            assert_eq!(summary.stored as usize, batch.len(), "{summary:?}");
        }
    }

    for case in reference["cases"].as_array().unwrap() {
        let text = |k: &str| case[k].as_str().unwrap().to_owned();
        let request = GetCandlesRequest {
            symbol: text("symbol"),
            bar: text("bar"),
            time_zone: text("time_zone"),
            session: text("session"),
            page_size: 100,
            ..GetCandlesRequest::default()
        };
        let name = format!("{request:?}");
        let (got, pages) = all_bars(&mut query, request).await;
        let want = case["bars"].as_array().unwrap();
        assert_eq!(got.len(), want.len(), "{name}: bar count");
        assert_eq!(pages, want.len().div_ceil(100).max(1), "{name}: pages");
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            let w = w.as_array().unwrap();
            assert_eq!(
                g.open_time_us,
                w[0].as_i64().unwrap(),
                "{name}: bar {i} label"
            );
            let values = [g.open, g.high, g.low, g.close, g.volume];
            for (k, value) in values.iter().enumerate() {
                let want = w[k + 1].as_f64().unwrap();
                assert!(
                    close_to(*value, want),
                    "{name}: bar {i} field {k}: {value} vs {want}"
                );
            }
            assert!(g.closed, "{name}: bar {i} of the past is closed");
        }
    }

    // The source is named in the answer: GOOG's weeks come from its daily bars.
    let week = query
        .get_candles(GetCandlesRequest {
            symbol: "GOOG".into(),
            bar: "1w".into(),
            page_size: 1,
            ..GetCandlesRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(week.source_interval, Interval::Interval1d as i32);

    // Indicators over resampled bars, through GetIndicators (the computation service), equal
    // TA-Lib over pandas' bars: the last 50 points, twice (the repeat from the cache).
    for case in reference["indicators"].as_array().unwrap() {
        let kind = match case["kind"].as_str().unwrap() {
            "RSI" => IndicatorKind::Rsi,
            _ => IndicatorKind::Sma,
        };
        let request = GetIndicatorsRequest {
            symbol: case["symbol"].as_str().unwrap().into(),
            bar: case["bar"].as_str().unwrap().into(),
            time_zone: case["time_zone"].as_str().unwrap().into(),
            indicators: vec![IndicatorSpec {
                kind: kind as i32,
                period: case["period"].as_u64().unwrap() as u32,
                ..IndicatorSpec::default()
            }],
            limit: 50,
            ..GetIndicatorsRequest::default()
        };
        let name = format!("{request:?}");
        let times: Vec<i64> = case["time_us"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_i64().unwrap())
            .collect();
        let values: Vec<f64> = case["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap_or(f64::NAN))
            .collect();
        for round in 0..2 {
            let answer = query
                .get_indicators(request.clone())
                .await
                .unwrap_or_else(|e| panic!("{name}: {e:?}"))
                .into_inner();
            assert_eq!(answer.cache_hit, round == 1, "{name}");
            let series = &answer.series[0];
            assert_eq!(series.bar, request.bar);
            assert_eq!(series.time_us, times[times.len() - 50..], "{name}");
            for (got, want) in series.outputs[0]
                .values
                .iter()
                .zip(&values[values.len() - 50..])
            {
                assert!(close_to(*got, *want), "{name}: {got} vs TA-Lib {want}");
            }
        }
    }

    // Bad requests: each names its field.
    let bad =
        |symbol: &str, bar: &str, tz: &str, session: &str, interval: Interval| GetCandlesRequest {
            symbol: symbol.into(),
            bar: bar.into(),
            time_zone: tz.into(),
            session: session.into(),
            interval: interval as i32,
            ..GetCandlesRequest::default()
        };
    let none = Interval::Unspecified;
    for (request, field) in [
        (bad("GOOG", "7x", "", "", none), "bar"),
        (bad("GOOG", "0d", "", "", none), "bar"),
        (bad("GOOG", "2w", "", "", none), "bar"),
        (bad("GOOG", "1w", "", "", Interval::Interval1d), "interval"),
        // Hourly bars cannot be made from daily ones.
        (bad("GOOG", "4h", "", "", none), "bar"),
        // 09:30 is not on the hour: EURUSD's hourly bars straddle the XNYS open.
        (bad("EURUSD", "1d", "", "XNYS", none), "bar"),
        (bad("GOOG", "1d", "", "XLON", none), "session"),
        (bad("GOOG", "1d", "Mars/Olympus", "", none), "time_zone"),
        (
            bad("GOOG", "1d", "America/New_York", "XNYS", none),
            "session",
        ),
        (bad("GOOG", "4h", "America/New_York", "", none), "bar"),
        (
            bad("GOOG", "", "America/New_York", "", Interval::Interval1d),
            "time_zone",
        ),
    ] {
        let name = format!("{request:?}");
        let status = query.get_candles(request).await.unwrap_err();
        assert_eq!(violated_field(&status), field, "{name}: {status:?}");
    }
}
