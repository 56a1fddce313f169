//! Distributed tracing across processes: one client call to the query service, which calls the
//! computation service in another process, is one trace with correct parent links, as received
//! by an OTLP receiver written for the test (Python, on the reference OTLP protos); and a JSON
//! log line written inside a request carries that request's trace and span ids.

use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tickmesh_proto::v1::ingestion_service_client::IngestionServiceClient;
use tickmesh_proto::v1::query_service_client::QueryServiceClient;
use tickmesh_proto::v1::{
    GetIndicatorsRequest, IndicatorKind, IndicatorSpec, IngestCandlesRequest, Interval,
};
use tonic::Request;

use crate::support::{Process, VENV_HINT, channel, program, scratch_file};

/// The Python OTLP receiver; its spans arrive on the channel as JSON values.
pub(crate) struct Receiver {
    child: Child,
    pub(crate) port: u16,
    spans: mpsc::Receiver<serde_json::Value>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn receiver() -> Receiver {
    let python = program("python3", VENV_HINT);
    let script = crate::support::in_repo("services/tickmesh/tests/it/otlp_receiver.py");
    let mut child = Command::new(python)
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().and_then(Result::ok).unwrap_or_default();
    let port = first
        .strip_prefix("PORT ")
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| {
            panic!("the OTLP receiver did not start (said {first:?}); needs grpcio and opentelemetry-proto: {VENV_HINT}")
        });
    let (tx, spans) = mpsc::channel();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            if let Ok(span) = serde_json::from_str(&line) {
                let _ = tx.send(span);
            }
        }
    });
    Receiver { child, port, spans }
}

fn traced(target: &str, store: &std::path::Path, otlp: u16, extra: &[(&str, OsString)]) -> Process {
    Process::start(
        &["serve", "--target", target, "--listen", "127.0.0.1:0"],
        |c| {
            c.env("TICKMESH_STORE_URL", format!("sqlite:{}", store.display()))
                .env(
                    "OTEL_EXPORTER_OTLP_ENDPOINT",
                    format!("http://127.0.0.1:{otlp}"),
                )
                .env("OTEL_BSP_SCHEDULE_DELAY", "50")
                .envs(extra.iter().map(|(k, v)| (*k, v)));
        },
    )
}

/// The first exported server span (kind 2) of an IngestCandles call, within 10 s.
fn ingest_candles_server_span(otlp: &Receiver) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let span = otlp
            .spans
            .recv_timeout(Duration::from_millis(500))
            .unwrap_or_else(|e| panic!("no IngestCandles server span ({e})"));
        if span["name"] == "tickmesh.v1.IngestionService/IngestCandles" && span["kind"] == 2 {
            return span;
        }
        assert!(Instant::now() < deadline, "no IngestCandles server span");
    }
}

// Multi-threaded, so that the client's connection task answers the server's GOAWAY while this
// thread waits for the processes to exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_call_across_two_processes_is_one_trace() {
    let otlp = receiver();
    let store = scratch_file("traced.db");
    std::fs::create_dir_all(store.parent().unwrap()).unwrap();
    let mut computation = traced("computation", &store, otlp.port, &[]);
    let mut query = traced(
        "query",
        &store,
        otlp.port,
        &[(
            "TICKMESH_COMPUTATION_ADDR",
            computation.addr("computation").into(),
        )],
    );

    // The caller's own trace context: every span must join this trace.
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let mut request = Request::new(GetIndicatorsRequest {
        symbol: "BTC-USD".into(),
        interval: Interval::Interval1m as i32,
        indicators: vec![IndicatorSpec {
            kind: IndicatorKind::Sma as i32,
            period: 3,
            ..Default::default()
        }],
        ..Default::default()
    });
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{trace_id}-{caller_span}-01").parse().unwrap(),
    );
    let mut client = QueryServiceClient::new(channel(query.addr("query")).await);
    // The answer itself does not matter here (the store is empty); the call crossing does.
    let _ = client.get_indicators(request).await;

    // SIGTERM flushes pending spans before exit.
    for process in [&mut query, &mut computation] {
        process.terminate();
        assert!(
            process.wait_exit(Duration::from_secs(15)).success(),
            "{}",
            process.log()
        );
    }

    let mut spans = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while spans.len() < 3 && Instant::now() < deadline {
        if let Ok(span) = otlp.spans.recv_timeout(Duration::from_millis(200)) {
            spans.push(span);
        }
    }
    let find = |service: &str, name: &str, kind: i64| {
        spans
            .iter()
            .find(|s| s["service"] == service && s["name"] == name && s["kind"] == kind)
            .unwrap_or_else(|| panic!("no {service} span {name} of kind {kind} in {spans:#?}"))
            .clone()
    };
    // OTLP span kinds: 2 server, 3 client.
    let query_server = find(
        "tickmesh-query",
        "tickmesh.v1.QueryService/GetIndicators",
        2,
    );
    let query_client = find(
        "tickmesh-query",
        "tickmesh.v1.ComputationService/ComputeIndicators",
        3,
    );
    let computation_server = find(
        "tickmesh-computation",
        "tickmesh.v1.ComputationService/ComputeIndicators",
        2,
    );
    for span in [&query_server, &query_client, &computation_server] {
        assert_eq!(span["trace_id"], trace_id, "{span:#}");
        // The stable OpenTelemetry RPC attributes; the old ones only with rpc/dup.
        assert_eq!(span["attributes"]["rpc.system.name"], "grpc", "{span:#}");
        // The status by name, as the conventions have it.
        let code = span["attributes"]["rpc.response.status_code"]
            .as_str()
            .unwrap_or_default();
        assert!(
            !code.is_empty() && code.chars().all(|c| c.is_ascii_uppercase() || c == '_'),
            "{span:#}"
        );
        assert!(span["attributes"].get("rpc.system").is_none(), "{span:#}");
    }
    assert_eq!(query_server["parent_span_id"], caller_span);
    assert_eq!(query_client["parent_span_id"], query_server["span_id"]);
    assert_eq!(
        computation_server["parent_span_id"],
        query_client["span_id"]
    );
    assert_eq!(
        computation_server["attributes"]["rpc.method"],
        "tickmesh.v1.ComputationService/ComputeIndicators"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_line_written_inside_a_request_carries_its_trace_and_span_ids() {
    let otlp = receiver();
    let store = scratch_file("logged.db");
    std::fs::create_dir_all(store.parent().unwrap()).unwrap();
    let mut ingestion = traced("ingestion", &store, otlp.port, &[]);
    let trace_id = "0af7651916cd43dd8448eb211c80319c";
    let mut request = Request::new(IngestCandlesRequest {
        candles: vec![crate::support::candle(
            "LOG-USD",
            Interval::Interval1d,
            1_609_459_200_000_000,
            [1.0, 2.0, 0.5, 1.5],
            10.0,
        )],
        source: "trace-log-test".into(),
    });
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{trace_id}-b7ad6b7169203331-01")
            .parse()
            .unwrap(),
    );
    let mut client = IngestionServiceClient::new(channel(ingestion.addr("ingestion")).await);
    client.ingest_candles(request).await.unwrap();
    ingestion.terminate();
    assert!(ingestion.wait_exit(Duration::from_secs(15)).success());

    // The server span of the call, as exported.
    let server = ingest_candles_server_span(&otlp);
    assert_eq!(server["trace_id"], trace_id, "{server:#}");
    // The handler's "write committed" line: same trace, the server span's id.
    let log = ingestion.log();
    let line = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|l| l["message"] == "write committed" && l["source"] == "trace-log-test")
        .unwrap_or_else(|| panic!("no \"write committed\" line in:\n{log}"));
    assert_eq!(line["trace_id"], trace_id, "{line}");
    assert_eq!(line["span_id"], server["span_id"], "{line}");
    // A line outside any request has none.
    let startup = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|l| l["message"] == "serving")
        .unwrap_or_else(|| panic!("no \"serving\" line in:\n{log}"));
    assert!(startup.get("trace_id").is_none(), "{startup}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn semconv_opt_in_rpc_dup_adds_the_old_attributes_next_to_the_stable_ones() {
    let otlp = receiver();
    let store = scratch_file("dup.db");
    std::fs::create_dir_all(store.parent().unwrap()).unwrap();
    let mut ingestion = traced(
        "ingestion",
        &store,
        otlp.port,
        &[("OTEL_SEMCONV_STABILITY_OPT_IN", "http,rpc/dup".into())],
    );
    let mut client = IngestionServiceClient::new(channel(ingestion.addr("ingestion")).await);
    // Nothing valid in it: INVALID_ARGUMENT, code 3.
    client
        .ingest_candles(IngestCandlesRequest {
            candles: vec![crate::support::candle(
                "DUP-USD",
                Interval::Interval1d,
                7,
                [1.0, 2.0, 0.5, 1.5],
                10.0,
            )],
            source: "dup".into(),
        })
        .await
        .unwrap_err();
    ingestion.terminate();
    assert!(ingestion.wait_exit(Duration::from_secs(15)).success());
    let server = ingest_candles_server_span(&otlp);
    let attributes = &server["attributes"];
    assert_eq!(attributes["rpc.system.name"], "grpc", "{server:#}");
    assert_eq!(
        attributes["rpc.response.status_code"], "INVALID_ARGUMENT",
        "{server:#}"
    );
    assert_eq!(attributes["rpc.system"], "grpc", "{server:#}");
    assert_eq!(
        attributes["rpc.service"], "tickmesh.v1.IngestionService",
        "{server:#}"
    );
    assert_eq!(attributes["rpc.grpc.status_code"], 3, "{server:#}");
    assert_eq!(
        attributes["rpc.method"], "tickmesh.v1.IngestionService/IngestCandles",
        "{server:#}"
    );
}
