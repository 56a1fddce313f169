//! The Python SDK (`clients/python`, the `tickmesh` package installed into the test venv by
//! scripts/test.sh) as a user runs it: its pytest suite against `tickmesh up` (GOOG's daily bars
//! through `ingest_candles` and back through `candles` equal to the CSV, typed errors,
//! indicators equal to TA-Lib's), every python block of its README run against a live mesh, a
//! live stream that survives a restart of the mesh, and `mypy --strict` over a user script and
//! the package.

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tickmesh_proto::v1::ingestion_service_client::IngestionServiceClient;
use tickmesh_proto::v1::{IngestCandlesRequest, Interval};

use crate::support::{
    Process, VENV_HINT, against_mesh, candle, channel, describe, in_repo, line_channel, program,
    readme_blocks, run, scratch_file,
};

const HINT: &str = "the tickmesh package and its test tools are missing from the test venv: run scripts/test.sh --install-only";

fn python() -> std::path::PathBuf {
    program("python3", VENV_HINT)
}

/// The venv's python with the `tickmesh` package importable, or a panic saying how to get it.
fn sdk_python() -> std::path::PathBuf {
    let python = python();
    let output = run(Command::new(&python).args(["-c", "import tickmesh, pytest, mypy"]));
    assert!(output.status.success(), "{HINT}: {}", describe(&output));
    python
}

#[test]
fn python_sdk_suite_passes_against_tickmesh_up() {
    let python = sdk_python();
    let mesh = Process::start(&["up", "--base-port", "0"], |_| {});
    let mut pytest = Command::new(python);
    pytest
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .arg(in_repo("clients/python/tests/test_live.py"));
    let output = run(against_mesh(&mut pytest, &mesh));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "pytest clients/python/tests/test_live.py: {}\n--- mesh log\n{}",
        describe(&output),
        mesh.log()
    );
    // Every test ran: none skipped (talib missing would skip the indicator test) or deselected.
    assert!(
        stdout.contains("17 passed") && !stdout.contains("skipped"),
        "{stdout}"
    );
}

/// Every python block of clients/python/README.md, run by tests/test_readme.py in order against
/// `tickmesh up` on an empty store. The blocks use the default addresses
/// (`Client("127.0.0.1:7404")` alone, ingestion and computation found by the README's port
/// rule), so this mesh runs on consecutive ports from a free base port, not `--base-port 0`
/// (any ports): the rule is then exercised for real and the test only swaps the default base
/// for the free one.
#[test]
fn python_readme_blocks_run_against_tickmesh_up() {
    let python = sdk_python();
    let base = free_base_port().to_string();
    let mesh = Process::start(&["up", "--base-port", &base], |_| {});
    let mut pytest = Command::new(python);
    pytest
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .arg(in_repo("clients/python/tests/test_readme.py"));
    let output = run(against_mesh(&mut pytest, &mesh));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "pytest clients/python/tests/test_readme.py: {}\n--- mesh log\n{}",
        describe(&output),
        mesh.log()
    );
    // Counted here from the README itself, not from what pytest collected: one test per python
    // block, plus the two checks of the file (every fence labelled; every block ran). None
    // skipped or deselected.
    let blocks = readme_blocks("clients/python/README.md", "python");
    let passed = format!("{} passed", blocks + 2);
    assert!(
        stdout.lines().any(|line| line.starts_with(&passed)) && !stdout.contains("skipped"),
        "want {passed} ({blocks} README blocks):\n{stdout}"
    );
}

#[test]
fn python_user_script_and_package_pass_mypy_strict() {
    let python = sdk_python();
    let output = run(Command::new(python)
        .args(["-m", "mypy", "--strict", "--no-incremental", "--cache-dir"])
        .arg(scratch_file("mypy-cache"))
        .arg(in_repo("clients/python/tests/typed_usage.py"))
        .arg(in_repo("clients/python/src/tickmesh")));
    assert!(
        output.status.success(),
        "mypy --strict: {}",
        describe(&output)
    );
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("Success: no issues found"),
        "{}",
        describe(&output)
    );
}

/// A base port whose four ports, and the dashboard's port before them (`tickmesh up`'s
/// layout), are free right now (the mesh must come back on the same addresses for the
/// subscriber to reconnect to).
pub fn free_base_port() -> u16 {
    for _ in 0..50 {
        let first = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = first.local_addr().unwrap().port();
        if !(1025..=u16::MAX - 4).contains(&base) {
            continue;
        }
        let rest: Vec<_> = [base - 1, base + 1, base + 2, base + 3]
            .into_iter()
            .map(|port| TcpListener::bind(("127.0.0.1", port)))
            .collect();
        if rest.iter().all(Result::is_ok) {
            return base;
        }
    }
    panic!("no five consecutive free ports on 127.0.0.1");
}

const DAY_US: i64 = 86_400_000_000;
/// 2021-01-01T00:00:00Z.
const T0: i64 = 1_609_459_200_000_000;

async fn ingest_days(addr: &str, days: std::ops::Range<i64>) {
    let candles = days
        .map(|d| {
            let p = 100.0 + d as f64;
            candle(
                "RSM",
                Interval::Interval1d,
                T0 + d * DAY_US,
                [p, p + 1.0, p - 1.0, p + 0.5],
                1000.0,
            )
        })
        .collect();
    let summary = IngestionServiceClient::new(channel(addr).await)
        .ingest_candles(IngestCandlesRequest {
            candles,
            source: "sdk-test".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .summary
        .unwrap();
    assert_eq!(summary.rejected_count, 0, "{summary:?}");
}

/// Receives the subscriber's next JSON line, at most `limit`.
fn next_line(lines: &mpsc::Receiver<String>, limit: Duration) -> serde_json::Value {
    let line = lines
        .recv_timeout(limit)
        .unwrap_or_else(|e| panic!("no line from the subscriber in {limit:?}: {e}"));
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_stream_survives_a_restart_of_the_mesh_without_gaps_or_duplicates() {
    let python = sdk_python();
    stream_survives_a_restart(|| {
        let mut command = Command::new(&python);
        command.arg(in_repo("clients/python/tests/stream_resume.py"));
        command
    })
    .await;
}

/// A subscriber (`subscriber()` then `QUERY_ADDR SYMBOL RESUME_FROM_US COUNT`, printing
/// `{"ready": true}` and then one JSON line per candle event: id, time_us, historical) follows
/// "RSM" through a restart of the whole mesh: days 0-9 stored before it comes, 10-14 live,
/// then SIGTERM and a new mesh on the same store and ports, and days 15-29 after. It must get
/// every day once, in order, without a duplicate.
pub async fn stream_survives_a_restart(subscriber: impl Fn() -> Command) {
    let base = free_base_port().to_string();
    let store = format!("sqlite:{}", scratch_file("store.db").display());
    let start = |store: &str| {
        let store = store.to_owned();
        Process::start(&["up", "--base-port", &base], move |c| {
            c.env("TICKMESH_STORE_URL", store);
        })
    };
    let mut mesh = start(&store);
    let query = mesh.addr("query").to_owned();
    let ingestion = mesh.addr("ingestion").to_owned();

    // Days 0-9 stored before the subscriber comes: it gets them replayed from T0.
    ingest_days(&ingestion, 0..10).await;
    let mut subscriber = subscriber()
        .args([&query, "RSM", &T0.to_string(), "30"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = line_channel(subscriber.stdout.take().unwrap());
    // Python with grpcio and pandas imports in ~1 s, Node faster; 30 s leaves room on a loaded
    // 2-core box.
    let limit = Duration::from_secs(30);
    assert_eq!(next_line(&lines, limit)["ready"], true);
    let mut events = Vec::new();
    while events.len() < 10 {
        events.push(next_line(&lines, limit));
    }
    // Days 10-14 live, then the whole mesh restarts (SIGTERM: its streams end with OK) on the
    // same store and ports.
    ingest_days(&ingestion, 10..15).await;
    while events.len() < 15 {
        events.push(next_line(&lines, limit));
    }
    mesh.terminate();
    mesh.wait_exit(Duration::from_secs(20));
    let down_at = Instant::now();
    mesh = start(&store);
    // Days 15-29 after the restart: the subscriber, reconnecting with backoff (at most 2 s
    // apart), gets those it was not connected for from the store and the rest live.
    ingest_days(mesh.addr("ingestion"), 15..30).await;
    while events.len() < 30 {
        events.push(next_line(&lines, limit));
    }
    let recovered = down_at.elapsed();
    let status = subscriber.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut subscriber.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(status.success(), "subscriber: {status}\n{stderr}");

    let times: Vec<i64> = events
        .iter()
        .map(|e| e["time_us"].as_i64().unwrap())
        .collect();
    let want: Vec<i64> = (0..30).map(|d| T0 + d * DAY_US).collect();
    assert_eq!(times, want, "every day once, in order: {events:?}");
    let mut ids: Vec<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 30, "no event twice: {events:?}");
    assert!(
        events[..10].iter().all(|e| e["historical"] == true),
        "{events:?}"
    );
    assert!(
        events[10..15].iter().all(|e| e["historical"] == false),
        "{events:?}"
    );
    eprintln!("stream resumed; all 30 days received {recovered:?} after the restart began");
}
