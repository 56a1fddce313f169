//! A real Prometheus (Debian's `prometheus`, its own data directory and port) scrapes the mesh
//! as four processes on PostgreSQL and Redis, with tracing on. After some traffic of every kind,
//! every PromQL expression of the Grafana dashboard, the alert rules and the custom-metrics
//! adapter returns data (scripts/promql_check.py, through Prometheus's HTTP API), the
//! operator metrics moved, and the latency histograms carry exemplars with trace ids.

use std::ffi::OsString;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tickmesh_proto::v1::computation_service_client::ComputationServiceClient;
use tickmesh_proto::v1::ingestion_service_client::IngestionServiceClient;
use tickmesh_proto::v1::query_service_client::QueryServiceClient;
use tickmesh_proto::v1::{
    BatchSignalsRequest, GetCandlesRequest, GetIndicatorsRequest, GetLatestPricesRequest,
    IndicatorKind, IndicatorSpec, IngestCandlesRequest, IngestTickBatchRequest, Interval,
    StreamMarketDataRequest,
};

use crate::support::{FourProcesses, Process, channel, describe, in_repo, program, run};

const DAY_US: i64 = 86_400_000_000;

/// Prometheus, killed on drop.
struct Prometheus {
    child: Child,
    url: String,
    _data: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The scrape configuration: each process a target labelled as Kubernetes would label its pod,
/// every second, and the shipped alert rules.
fn config(mesh: &FourProcesses) -> String {
    let target = |name: &str, p: &Process| {
        format!(
            "      - targets: ['{}']\n        labels: {{namespace: tickmesh, pod: tickmesh-{name}-0}}\n",
            p.metrics
        )
    };
    format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
         rule_files: ['{rules}']\n\
         scrape_configs:\n  - job_name: tickmesh\n    static_configs:\n{}{}{}{}",
        target("ingestion", &mesh.ingestion),
        target("computation", &mesh.computation),
        target("caching", &mesh.caching),
        target("query", &mesh.query),
        rules = in_repo("k8s/alerts/tickmesh-rules.yaml").display(),
    )
}

fn start_prometheus(mesh: &FourProcesses) -> Prometheus {
    let binary = program(
        "prometheus",
        "install Prometheus with `apt-get install prometheus` (scripts/test.sh --install-only does)",
    );
    let data = tempfile::tempdir().unwrap();
    let file = data.path().join("prometheus.yml");
    std::fs::write(&file, config(mesh)).unwrap();
    let port = tickmesh_testkit::free_port();
    let child = Command::new(binary)
        .arg(format!("--config.file={}", file.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            data.path().join("tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--enable-feature=exemplar-storage")
        .arg("--log.level=warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Prometheus {
        child,
        url: format!("http://127.0.0.1:{port}"),
        _data: data,
    }
}

/// `GET path` on Prometheus's HTTP API, as JSON; `None` while it does not answer.
fn api(prometheus: &Prometheus, path_and_query: &str) -> Option<serde_json::Value> {
    let addr = prometheus.url.trim_start_matches("http://");
    // Not listening yet: say so instead of failing (the raw exchange would panic).
    std::net::TcpStream::connect(addr).ok()?;
    let (status, _, body) =
        crate::support::http(addr, &format!("GET {path_and_query} HTTP/1.1"), b"");
    (status == 200)
        .then(|| serde_json::from_slice(&body).ok())
        .flatten()
}

/// The samples of an instant query.
fn query(prometheus: &Prometheus, promql: &str) -> Vec<serde_json::Value> {
    let encoded: String = url_encode(promql);
    api(prometheus, &format!("/api/v1/query?query={encoded}"))
        .and_then(|v| v["data"]["result"].as_array().cloned())
        .unwrap_or_default()
}

fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The sum of an instant query's values.
fn value(prometheus: &Prometheus, promql: &str) -> f64 {
    query(prometheus, promql)
        .iter()
        .filter_map(|s| s["value"][1].as_str()?.parse::<f64>().ok())
        .filter(|v| v.is_finite())
        .sum()
}

fn goog_bars() -> Vec<tickmesh_proto::v1::Candle> {
    (0..120)
        .map(|i| {
            let close = 100.0 + (i as f64 * 0.3).sin() * 4.0 + i as f64 * 0.1;
            crate::support::candle(
                "PROM",
                Interval::Interval1d,
                19_500 * DAY_US + i * DAY_US,
                [close - 0.4, close + 1.0, close - 1.0, close],
                1_000.0 + i as f64,
            )
        })
        .collect()
}

/// One round of every kind of call the dashboard and the alerts read.
async fn traffic(mesh: &FourProcesses, round: i64) {
    let mut ingest = IngestionServiceClient::new(channel(mesh.ingestion.addr("ingestion")).await);
    let mut query = QueryServiceClient::new(channel(mesh.query.addr("query")).await);
    let mut computation =
        ComputationServiceClient::new(channel(mesh.computation.addr("computation")).await);
    // Stored the first time, duplicates after; one invalid row rejected each round.
    let mut bars = goog_bars();
    bars.push(crate::support::candle(
        "PROM",
        Interval::Interval1d,
        19_500 * DAY_US + 7,
        [1.0, 2.0, 0.5, 1.5],
        1.0,
    ));
    ingest
        .ingest_candles(IngestCandlesRequest {
            candles: bars,
            source: "prometheus-test".into(),
        })
        .await
        .unwrap();
    let now_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64;
    ingest
        .ingest_tick_batch(IngestTickBatchRequest {
            ticks: (0..20)
                .map(|i| {
                    crate::support::tick(
                        "PROM",
                        now_us - 1_000_000 + i,
                        format!("r{round}-{i}"),
                        100.0 + i as f64 * 0.01,
                        1.0,
                        tickmesh_proto::v1::Side::Buy,
                    )
                })
                .collect(),
            ..Default::default()
        })
        .await
        .unwrap();
    for _ in 0..5 {
        query
            .get_candles(GetCandlesRequest {
                symbol: "PROM".into(),
                interval: Interval::Interval1d as i32,
                page_size: 50,
                ..GetCandlesRequest::default()
            })
            .await
            .unwrap();
        query
            .get_indicators(GetIndicatorsRequest {
                symbol: "PROM".into(),
                interval: Interval::Interval1d as i32,
                indicators: vec![IndicatorSpec {
                    kind: IndicatorKind::Rsi as i32,
                    period: 14,
                    ..IndicatorSpec::default()
                }],
                limit: 20,
                ..GetIndicatorsRequest::default()
            })
            .await
            .unwrap();
        query
            .get_latest_prices(GetLatestPricesRequest {
                symbols: vec!["PROM".into()],
            })
            .await
            .unwrap();
    }
    // An error, for the error-rate panels: an unknown interval.
    query
        .get_candles(GetCandlesRequest {
            symbol: "PROM".into(),
            interval: 999,
            ..GetCandlesRequest::default()
        })
        .await
        .unwrap_err();
    computation
        .batch_signals(BatchSignalsRequest {
            symbols: vec!["PROM".into()],
            interval: Interval::Interval1d as i32,
            ..Default::default()
        })
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_four_processes_and_every_shipped_query_returns_data() {
    let python = program("python3", crate::support::VENV_HINT);
    let pg = tickmesh_testkit::Postgres::start().unwrap();
    let redis = tickmesh_testkit::Redis::start().unwrap();
    let otlp = crate::tracing::receiver();
    let env: Vec<(&str, OsString)> = vec![
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://127.0.0.1:{}", otlp.port).into(),
        ),
        ("OTEL_BSP_SCHEDULE_DELAY", "200".into()),
    ];
    let mesh = FourProcesses::start_with(&pg, &redis, &env);
    let prometheus = start_prometheus(&mesh);

    // A live subscriber, so that events are delivered and the stream gauge is up.
    let mut reader = QueryServiceClient::new(channel(mesh.query.addr("query")).await);
    let mut stream = reader
        .stream_market_data(StreamMarketDataRequest {
            symbols: vec!["PROM".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let subscriber = tokio::spawn(async move { while let Ok(Some(_)) = stream.message().await {} });

    // Every target up, then traffic for long enough that rates over [1m] have two scrapes.
    let deadline = Instant::now() + Duration::from_secs(60);
    while value(&prometheus, "sum(up{job=\"tickmesh\"})") < 4.0 {
        assert!(
            Instant::now() < deadline,
            "Prometheus did not scrape all four processes: {:?}\n{}",
            query(&prometheus, "up"),
            mesh.logs()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    for round in 0..6 {
        traffic(&mesh, round).await;
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    // The operator metrics moved (each checked through Prometheus, as an operator would).
    let moved = [
        (
            "rows stored",
            "sum(tickmesh_ingestion_rows_total{outcome=\"stored\"})",
        ),
        (
            "duplicates",
            "sum(tickmesh_ingestion_rows_total{outcome=\"duplicate\"})",
        ),
        (
            "rejected by field",
            "sum(tickmesh_ingestion_rejected_rows_total)",
        ),
        (
            "batch commits",
            "sum(tickmesh_ingestion_batch_commit_seconds_count)",
        ),
        (
            "store queries",
            "sum(tickmesh_store_query_duration_seconds_count{pod=\"tickmesh-query-0\"})",
        ),
        ("store pools", "sum(tickmesh_store_pool_connections)"),
        ("signal cycles", "sum(tickmesh_signal_cycle_seconds_count)"),
        (
            "indicator batches",
            "sum(tickmesh_indicator_batch_seconds_count)",
        ),
        (
            "events delivered",
            "sum(tickmesh_query_events_delivered_total)",
        ),
        (
            "L2 round trips",
            "sum(tickmesh_cache_l2_duration_seconds_count)",
        ),
        (
            "client calls",
            "sum(rpc_client_call_duration_seconds_count{pod=\"tickmesh-query-0\"})",
        ),
        (
            "server errors",
            "sum(rpc_server_call_duration_seconds_count{rpc_response_status_code=\"INVALID_ARGUMENT\"})",
        ),
        ("streams", "sum(tickmesh_query_active_streams)"),
    ];
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let still: Vec<&str> = moved
            .iter()
            .filter(|(_, q)| value(&prometheus, q) <= 0.0)
            .map(|(name, _)| *name)
            .collect();
        if still.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "these did not move: {still:?}\n{}",
            mesh.logs()
        );
        traffic(&mesh, 100).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        value(&prometheus, "sum(tickmesh_bus_consumer_lag)") >= 0.0
            && !query(&prometheus, "tickmesh_bus_consumer_lag").is_empty(),
        "no consumer lag series"
    );

    // Every expression the dashboard, the alert rules and the adapter ship returns data.
    let check = run(Command::new(&python)
        .arg(in_repo("scripts/promql_check.py"))
        .args(["--prometheus", &prometheus.url]));
    assert!(
        check.status.success(),
        "scripts/promql_check.py: {}",
        describe(&check)
    );

    // Latency buckets carry exemplars with the trace of a sampled call.
    let end = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let exemplars = api(
        &prometheus,
        &format!(
            "/api/v1/query_exemplars?query={}&start={}&end={}",
            url_encode(
                "rpc_server_call_duration_seconds_bucket{rpc_service=\"tickmesh.v1.QueryService\"}"
            ),
            end - 600.0,
            end + 1.0
        ),
    )
    .expect("query_exemplars answers");
    let trace_ids: Vec<String> = exemplars["data"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|series| series["exemplars"].as_array().cloned().unwrap_or_default())
        .filter_map(|e| e["labels"]["trace_id"].as_str().map(str::to_owned))
        .collect();
    assert!(
        !trace_ids.is_empty() && trace_ids.iter().all(|t| t.len() == 32),
        "no exemplars with trace ids: {exemplars:#}"
    );
    subscriber.abort();
}
