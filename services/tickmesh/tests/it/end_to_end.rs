//! The whole mesh as four processes on real PostgreSQL and Redis (the test kit's): GOOG daily
//! candles replayed through ingestion come back page by page exactly as stored, signals appear,
//! a subscriber that started before the replay receives every closed candle in order, a
//! resumed subscriber sees no gap and no duplicate, and a Python client built from the generated
//! stubs pages and streams.

use std::process::Command;
use std::time::{Duration, Instant};

use tickmesh_proto::v1::query_service_client::QueryServiceClient;
use tickmesh_proto::v1::{
    EventKind, GetCandlesRequest, GetSignalsRequest, Interval, StreamMarketDataRequest,
    market_event::Payload,
};

use crate::support::{FourProcesses, VENV_HINT, channel, describe, program, run, tickmesh};

fn goog_rows() -> (std::path::PathBuf, Vec<(i64, [f64; 5])>) {
    let path = crate::support::goog_csv();
    let rows = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .skip(1)
        .filter(|l| !l.is_empty())
        .map(|line| {
            let f: Vec<&str> = line.split(',').collect();
            let d: Vec<i64> = f[0][..10].split('-').map(|p| p.parse().unwrap()).collect();
            let days = tickmesh_store::time::days_from_civil(d[0], d[1] as u32, d[2] as u32);
            let v: Vec<f64> = f[1..6].iter().map(|x| x.parse().unwrap()).collect();
            (days * 86_400_000_000, [v[0], v[1], v[2], v[3], v[4]])
        })
        .collect();
    (path, rows)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_processes_on_postgres_and_redis_serve_the_replayed_market() {
    let pg = tickmesh_testkit::Postgres::start().expect("a throwaway PostgreSQL");
    let redis = tickmesh_testkit::Redis::start().expect("a throwaway Redis");
    let mesh = FourProcesses::start(&pg, &redis);
    let (ingestion, computation, query) = (&mesh.ingestion, &mesh.computation, &mesh.query);
    let mut client = QueryServiceClient::new(channel(query.addr("query")).await);

    // A live subscriber from before the replay.
    let mut live = client
        .stream_market_data(StreamMarketDataRequest {
            symbols: vec!["GOOG".into()],
            kinds: vec![EventKind::Candle as i32],
            intervals: vec![Interval::Interval1d as i32],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    // Let the query process's bus subscription exist before the first event.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let (csv, rows) = goog_rows();
    let output = run(tickmesh()
        .args(["replay", "--symbol", "GOOG", "--batch", "300", "--target"])
        .arg(ingestion.addr("ingestion"))
        .arg(&csv));
    assert!(output.status.success(), "{}", describe(&output));

    // Every closed candle, in order, to the live subscriber.
    let mut seen = Vec::new();
    while seen.len() < rows.len() {
        let item = tokio::time::timeout(Duration::from_secs(30), live.message())
            .await
            .expect("the live stream keeps delivering")
            .unwrap()
            .unwrap();
        assert!(!item.historical);
        let Some(Payload::Candle(candle)) = item.event.unwrap().payload else {
            panic!("only candles were asked for");
        };
        seen.push(candle.open_time_us);
    }
    let expected: Vec<i64> = rows.iter().map(|r| r.0).collect();
    assert_eq!(seen, expected, "every replayed bar live, once, in order");

    // Pages hold the rows exactly as stored (the CSV is the reference).
    let (mut paged, mut token) = (Vec::new(), String::new());
    loop {
        let page = client
            .get_candles(GetCandlesRequest {
                symbol: "GOOG".into(),
                interval: Interval::Interval1d as i32,
                page_size: 500,
                page_token: token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        paged.extend(page.candles);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(paged.len(), rows.len());
    for (candle, (time, v)) in paged.iter().zip(&rows) {
        assert_eq!(candle.open_time_us, *time);
        assert_eq!(
            [
                candle.open,
                candle.high,
                candle.low,
                candle.close,
                candle.volume
            ],
            *v
        );
    }

    // Signals computed from the bus appear.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let signals = client
            .get_signals(GetSignalsRequest {
                symbols: vec!["GOOG".into()],
                page_size: 10,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        if !signals.signals.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no signal:\n{}",
            computation.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A Python client from the generated stubs: pages, then a stream resumed at bar 2000
    // (history only here: nothing new arrives), with no gap and no duplicate.
    let resume = rows[2000].0;
    let tail = rows.len() - 2000;
    let output = run(Command::new(program("python3", VENV_HINT))
        .arg(crate::support::in_repo(
            "services/tickmesh/tests/it/query_client.py",
        ))
        .arg(query.addr("query"))
        .arg("GOOG")
        .arg(resume.to_string())
        .arg(tail.to_string()));
    assert!(output.status.success(), "{}", describe(&output));
    let seen: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let candles: Vec<i64> = serde_json::from_value(seen["candles"].clone()).unwrap();
    assert_eq!(candles, expected);
    assert_eq!(seen["pages"], rows.len().div_ceil(250));
    let streamed: Vec<i64> = serde_json::from_value(seen["streamed"].clone()).unwrap();
    assert_eq!(streamed, expected[2000..].to_vec());
}
