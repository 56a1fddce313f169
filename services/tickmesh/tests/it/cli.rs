//! `tickmesh` as a user runs it: up, serve, config, signals.

use std::process::Command;
use std::time::Duration;

use tickmesh_proto::v1::GetConfigRequest;
use tickmesh_proto::v1::config_service_client::ConfigServiceClient;
use tokio_stream::StreamExt;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::support::{Process, SERVICES, channel, describe, health, run, tickmesh};

#[tokio::test]
async fn up_serves_all_four_services_as_serving() {
    let mesh = Process::start(&["up", "--base-port", "0"], |_| {});
    // The four services and the dashboard (web.rs tests it).
    assert_eq!(
        mesh.addrs.keys().collect::<Vec<_>>(),
        ["caching", "computation", "ingestion", "query", "web"],
        "{:?}",
        mesh.addrs
    );
    for (target, service) in SERVICES {
        let addr = mesh.addr(target);
        assert_eq!(
            health(addr, "").await,
            ServingStatus::Serving,
            "{target} \"\""
        );
        assert_eq!(
            health(addr, service).await,
            ServingStatus::Serving,
            "{target}"
        );
        // A port serves its own service only.
        for (other, other_service) in SERVICES {
            if other != target {
                let mut client = HealthClient::new(channel(addr).await);
                let err = client
                    .check(HealthCheckRequest {
                        service: other_service.to_owned(),
                    })
                    .await
                    .unwrap_err();
                assert_eq!(
                    err.code(),
                    tonic::Code::NotFound,
                    "{other} on {target}'s port"
                );
            }
        }
    }
}

// Multi-threaded, so that the client connections answer the server's GOAWAY while this thread
// waits for the process to exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_flips_health_first_ends_streams_cleanly_and_exits_zero() {
    let mut mesh = Process::start(&["up", "--base-port", "0"], |_| {});
    let addr = mesh.addr("query").to_owned();

    let mut health = HealthClient::new(channel(&addr).await);
    let mut statuses = health
        .watch(HealthCheckRequest {
            service: "tickmesh.v1.QueryService".to_owned(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = statuses.next().await.unwrap().unwrap();
    assert_eq!(first.status, ServingStatus::Serving as i32);

    let mut config = ConfigServiceClient::new(channel(&addr).await);
    let mut watch = config
        .watch_config(tickmesh_proto::v1::WatchConfigRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(watch.next().await.unwrap().unwrap().version, 1);

    mesh.terminate();

    let next = tokio::time::timeout(Duration::from_secs(10), statuses.next())
        .await
        .expect("a health update after SIGTERM");
    assert_eq!(
        next.expect("the health watch still open").unwrap().status,
        ServingStatus::NotServing as i32,
        "readiness goes NOT_SERVING before the server closes"
    );
    // Both watch streams then end with OK rather than holding up the drain until they are cut.
    let end = tokio::time::timeout(Duration::from_secs(10), statuses.next())
        .await
        .expect("the health watch stream ends after NOT_SERVING");
    assert!(end.is_none(), "expected a clean end of stream, got {end:?}");
    let end = tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .expect("the config watch stream ends after SIGTERM");
    assert!(end.is_none(), "expected a clean end of stream, got {end:?}");

    let status = mesh.wait_exit(Duration::from_secs(15));
    assert_eq!(status.code(), Some(0), "{}", mesh.log());
    let log = mesh.log();
    assert!(log.contains("\"signal\":\"SIGTERM\""), "{log}");
    assert!(log.contains("all services stopped"), "{log}");
    assert!(
        !log.contains("grace period over"),
        "open streams must not hold the drain until the grace period cuts them: {log}"
    );
}

#[tokio::test]
async fn serve_runs_one_target_with_its_config_from_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tickmesh.toml");
    std::fs::write(&file, "[circuit_breaker]\nfailure_threshold = 9\n").unwrap();
    let mesh = Process::start(
        &["serve", "--target", "caching", "--listen", "127.0.0.1:0"],
        |c| {
            c.env("TICKMESH_CONFIG", &file)
                .env("TICKMESH_RETRY__MAX_ATTEMPTS", "4");
        },
    );
    assert_eq!(mesh.addrs.keys().collect::<Vec<_>>(), ["caching"]);
    let addr = mesh.addr("caching");
    assert_eq!(
        health(addr, "tickmesh.v1.CachingService").await,
        ServingStatus::Serving
    );
    let mut client = ConfigServiceClient::new(channel(addr).await);
    let response = client
        .get_config(GetConfigRequest {})
        .await
        .unwrap()
        .into_inner();
    let config = response.config.unwrap();
    assert_eq!(config.circuit_breaker.unwrap().failure_threshold, 9);
    assert_eq!(config.retry.unwrap().max_attempts, 4);
    assert_eq!(response.version, 1);
    assert!(
        response.source.contains("tickmesh.toml"),
        "{}",
        response.source
    );
}

/// `/metrics` takes no key, so `serve` keeps it off the network unless asked (issue 20, item 6):
/// without `--metrics-addr` it listens on 127.0.0.1:9400, or, when another process on this
/// machine has that port, exits saying it cannot listen there. Never on a public address.
#[test]
fn serve_keeps_metrics_on_loopback_by_default() {
    let mut process = Process::spawn(
        &["serve", "--target", "ingestion", "--listen", "127.0.0.1:0"],
        |c| {
            c.env_remove("TICKMESH_METRICS_ADDR");
        },
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = process.child.try_wait().unwrap() {
            let log = process.log();
            assert!(
                !status.success() && log.contains("cannot listen on 127.0.0.1:9400 for metrics"),
                "{status}: {log}"
            );
            return;
        }
        if process.log().contains("\"serving\"") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{}", process.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    process.wait_ready(Duration::from_secs(30));
    assert_eq!(process.metrics, "127.0.0.1:9400");
    assert!(crate::support::scrape(&process.metrics).contains("tickmesh_"));
}

#[test]
fn an_invalid_setting_stops_start_up_naming_the_field() {
    let output = run(tickmesh()
        .args(["up", "--base-port", "0"])
        .env("TICKMESH_CIRCUIT_BREAKER__FAILURE_THRESHOLD", "0"));
    assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("circuit_breaker.failure_threshold"),
        "{stderr}"
    );
}

#[test]
fn config_check_names_the_bad_field_and_accepts_what_config_print_writes() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "server:\n  max_message_bytes: 10\n").unwrap();
    let output = run(tickmesh().args(["config", "check"]).arg(&bad));
    assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("server.max_message_bytes"),
        "{}",
        describe(&output)
    );

    let printed = run(tickmesh().args(["config", "print"]));
    assert!(printed.status.success(), "{}", describe(&printed));
    let good = dir.path().join("printed.yaml");
    std::fs::write(&good, &printed.stdout).unwrap();
    let output = run(tickmesh().args(["config", "check"]).arg(&good));
    assert!(output.status.success(), "{}", describe(&output));

    let json = run(tickmesh().args(["config", "print", "--format", "json"]));
    let value: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(value["circuit_breaker"]["open_duration"], "60s");
}

#[test]
fn a_taken_port_fails_start_up_with_a_clear_message() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let output = run(tickmesh().args(["serve", "--target", "query", "--listen", &addr]));
    assert!(!output.status.success(), "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cannot listen on") && stderr.contains(&addr),
        "{stderr}"
    );
}

/// Parses Prometheus text with the reference Python parser and returns the number of calls
/// answered (`rpc_server_call_duration_seconds_count`) for (service, `package.Service/Method`,
/// status code name), failing if the text does not parse.
pub(crate) fn requests_total(text: &str, service: &str, method: &str, code: &str) -> f64 {
    use std::io::Write;
    const PARSE: &str = r#"
import sys
from prometheus_client.parser import text_string_to_metric_families
service, method, code = sys.argv[1:4]
total = 0.0
for family in text_string_to_metric_families(sys.stdin.read()):
    for sample in family.samples:
        if sample.name == "rpc_server_call_duration_seconds_count" and sample.labels == {"rpc_system_name": "grpc", "rpc_service": service, "rpc_method": method, "rpc_response_status_code": code}:
            total += sample.value
print(total)
"#;
    let python = crate::support::program(
        "python",
        "create the test venv: python3 -m venv .venv && .venv/bin/pip install -r scripts/requirements-test.txt",
    );
    let mut child = std::process::Command::new(python)
        .args(["-c", PARSE, service, method, code])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "metrics do not parse: {}",
        describe(&output)
    );
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn metrics_parse_as_prometheus_text_and_count_calls_by_method_and_code() {
    const GET_CONFIG: &str = "tickmesh.v1.ConfigService/GetConfig";
    let mesh = Process::start(&["up", "--base-port", "0"], |_| {});
    let before = crate::support::scrape(&mesh.metrics);
    let service = "tickmesh.v1.ConfigService";
    let ok_before = requests_total(&before, service, GET_CONFIG, "OK");
    let mut client = ConfigServiceClient::new(channel(mesh.addr("query")).await);
    for _ in 0..3 {
        client.get_config(GetConfigRequest {}).await.unwrap();
    }
    // An update without values is INVALID_ARGUMENT, code 3.
    client
        .update_config(tickmesh_proto::v1::UpdateConfigRequest::default())
        .await
        .unwrap_err();
    let after = crate::support::scrape(&mesh.metrics);
    assert_eq!(
        requests_total(&after, service, GET_CONFIG, "OK") - ok_before,
        3.0
    );
    assert_eq!(
        requests_total(
            &after,
            service,
            "tickmesh.v1.ConfigService/UpdateConfig",
            "INVALID_ARGUMENT"
        ),
        1.0
    );
    for name in [
        "rpc_server_call_duration_seconds_bucket",
        "rpc_server_call_duration_seconds_sum",
        "tickmesh_rpc_server_active_calls",
    ] {
        assert!(after.contains(name), "{name} missing:\n{after}");
    }
    // The process metrics under the standard names, with values /proc backs up.
    let value = |name: &str| -> f64 {
        after
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} missing:\n{after}"))
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let status = std::fs::read_to_string(format!("/proc/{}/status", mesh.child.id())).unwrap();
    let vm_rss_kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .unwrap()
        .trim()
        .trim_end_matches(" kB")
        .parse()
        .unwrap();
    let rss = value("process_resident_memory_bytes");
    assert!(
        (rss / 1024.0 - vm_rss_kib).abs() < vm_rss_kib * 0.5,
        "process_resident_memory_bytes {rss} vs VmRSS {vm_rss_kib} kB"
    );
    assert!(value("process_cpu_seconds_total") > 0.0, "{after}");
    assert!(value("process_open_fds") >= 3.0, "{after}");
    assert!(
        value("process_max_fds") >= value("process_open_fds"),
        "{after}"
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let started = value("process_start_time_seconds");
    assert!(
        started <= now && now - started < 600.0,
        "started {started}, now {now}"
    );
    // Sub-millisecond buckets exist for the latency histogram.
    assert!(after.contains("le=\"0.0005\""), "{after}");
}

#[tokio::test]
async fn metrics_pass_promtool_and_openmetrics_is_served_when_asked() {
    use std::io::Write;
    let promtool = crate::support::program(
        "promtool",
        "install Prometheus' promtool with `apt-get install prometheus` (scripts/test.sh --install-only does)",
    );
    let mesh = Process::start(&["up", "--base-port", "0"], |_| {});
    // Some traffic, so the call counters and histograms have series.
    let mut client = ConfigServiceClient::new(channel(mesh.addr("query")).await);
    client.get_config(GetConfigRequest {}).await.unwrap();
    let text = crate::support::scrape(&mesh.metrics);
    let mut check = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    check
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = check.wait_with_output().unwrap();
    // promtool prints a line per problem (a counter without help text, a bad name, ...).
    assert!(
        output.status.success() && output.stdout.is_empty() && output.stderr.is_empty(),
        "promtool check metrics: {}\n--- scraped\n{text}",
        describe(&output)
    );
    // Every counter is declared under its sample name, with help text.
    assert!(
        text.contains("# TYPE tickmesh_ingestion_rows_total counter"),
        "{text}"
    );
    assert!(!text.contains("# EOF"), "{text}");
    // A scraper asking for OpenMetrics (Prometheus does) gets it.
    let (_, headers, body) = crate::support::http(
        &mesh.metrics,
        "GET /metrics HTTP/1.1\r\nAccept: application/openmetrics-text;version=1.0.0,text/plain;q=0.5",
        b"",
    );
    let kind = crate::support::header(&headers, "content-type").unwrap_or_default();
    assert!(kind.starts_with("application/openmetrics-text"), "{kind}");
    let body = String::from_utf8(body).unwrap();
    assert!(
        body.contains("# TYPE tickmesh_ingestion_rows counter")
            && body.contains("# UNIT rpc_server_call_duration_seconds seconds"),
        "{body}"
    );
    assert!(body.trim_end().ends_with("# EOF"), "{body}");
}

#[test]
fn demo_runs_the_whole_mesh_on_a_synthetic_market_and_draws_a_chart() {
    let dir = tempfile::tempdir().unwrap();
    let chart = dir.path().join("chart.svg");
    let output = run(tickmesh()
        .args(["--log", "error", "demo", "--synthetic", "--chart"])
        .arg(&chart)
        .current_dir(dir.path()));
    assert!(output.status.success(), "{}", describe(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("SYNTHETIC"),
        "the synthetic market says so:\n{stdout}"
    );
    for symbol in ["SYN-ALPHA", "SYN-BETA", "SYN-GAMMA"] {
        let row = stdout
            .lines()
            .find(|l| l.starts_with(symbol))
            .unwrap_or_else(|| panic!("no row for {symbol}:\n{stdout}"));
        let cells: Vec<&str> = row.split_whitespace().collect();
        // symbol, "SYNTHETIC", "random", "walk", bars, last price, ...
        assert_eq!(cells[4], "1500", "{row}");
        assert!(cells[5].parse::<f64>().unwrap() > 0.0, "{row}");
    }
    assert!(stdout.contains("p50") && stdout.contains("p99"), "{stdout}");
    let svg = std::fs::read_to_string(&chart).unwrap();
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    assert!(svg.matches("<rect").count() > 100, "candles are drawn");
    // A valid image: librsvg renders it to a PNG of the SVG's size.
    let png = dir.path().join("chart.png");
    let rendered = Command::new("rsvg-convert")
        .arg("-o")
        .arg(&png)
        .arg(&chart)
        .output()
        .unwrap_or_else(|e| {
            panic!("rsvg-convert not runnable ({e}): apt-get install librsvg2-bin")
        });
    assert!(rendered.status.success(), "{}", describe(&rendered));
    let png = std::fs::read(&png).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "a PNG");
    // IHDR: width and height, big-endian, at bytes 16..24.
    let width = u32::from_be_bytes(png[16..20].try_into().unwrap());
    let height = u32::from_be_bytes(png[20..24].try_into().unwrap());
    assert!(width >= 400 && height >= 300, "{width}x{height}");
}
