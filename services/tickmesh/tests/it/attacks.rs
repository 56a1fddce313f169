//! What one client can do to a process (issue 20), each against a real `tickmesh up`.

use std::str::FromStr;

use http::uri::PathAndQuery;
use tonic_prost::ProstCodec;

use crate::cli::requests_total;
use crate::support::{Process, channel, rss, scrape};

/// Calls at made-up paths, on one connection, as a client without a key could send them.
const MADE_UP_PATHS: usize = 2_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn made_up_paths_count_under_one_series_and_metrics_stay_bounded() {
    let mesh = Process::start(&["up", "--base-port", "0"], |_| {});
    let addr = mesh.addr("query").to_owned();
    let mut grpc = tonic::client::Grpc::new(channel(&addr).await);
    let before = scrape(&mesh.metrics);
    let padding = "x".repeat(1_000);
    for i in 0..MADE_UP_PATHS {
        grpc.ready().await.unwrap();
        let path = PathAndQuery::from_str(&format!("/evil.v{i}.{padding}/M{i}")).unwrap();
        let status = grpc
            .unary(
                tonic::Request::new(()),
                path,
                ProstCodec::<(), ()>::default(),
            )
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unimplemented, "{status:?}");
    }
    let after = scrape(&mesh.metrics);
    // Every made-up call is counted, under the one series.
    assert_eq!(
        requests_total(&after, "unknown", "unknown", "UNIMPLEMENTED"),
        MADE_UP_PATHS as f64
    );
    assert!(!after.contains("evil.v"), "no made-up path reaches a label");
    // Each made-up path used to add ~20 series of ~1 KB of labels (40 MB here); now the
    // exposition grows by the unknown series alone (in-flight, latency buckets, two counters).
    let grown = after.len().saturating_sub(before.len());
    assert!(
        grown < 16 * 1024,
        "/metrics grew by {grown} bytes for {MADE_UP_PATHS} made-up paths"
    );
}

const MALLORY: &str = "mallory-key-0123456789abcdef";
const ALICE: &str = "alice-key-0123456789abcdef";

const FEEDER: &str = "feeder-key-0123456789abcdef";

/// `tickmesh up` with auth on and two read keys (mallory attacks, alice is the victim), with a
/// price of GOOG ingested so that the victim's `GetLatestPrices` finds one.
async fn secured_up(env: &[(&str, &str)]) -> (Process, tempfile::NamedTempFile) {
    use std::io::Write;
    use tickmesh_proto::v1::ingestion_service_client::IngestionServiceClient;
    let mut keys = tempfile::NamedTempFile::new().unwrap();
    writeln!(
        keys,
        "mallory read {MALLORY}\nalice read {ALICE}\nfeeder write {FEEDER}"
    )
    .unwrap();
    let path = keys.path().to_owned();
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let process = Process::start(&["up", "--base-port", "0"], |c| {
        c.env("TICKMESH_AUTH__ENABLED", "true")
            .env("TICKMESH_AUTH__KEYS_FILE", &path)
            .envs(env);
    });
    let mut ingestion = IngestionServiceClient::new(channel(process.addr("ingestion")).await);
    let tick = crate::support::tick(
        "GOOG",
        1_709_251_200_000_000,
        "1".into(),
        140.5,
        10.0,
        tickmesh_proto::v1::Side::Buy,
    );
    let request = tickmesh_proto::v1::IngestTickBatchRequest {
        ticks: vec![tick],
        ..Default::default()
    };
    ingestion
        .ingest_tick_batch(keyed(request, FEEDER))
        .await
        .expect("the victim's price is stored");
    (process, keys)
}

fn keyed<T>(message: T, key: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    request
}

/// `n` victim calls (GetLatestPrices with alice's key), each with a deadline, alternating
/// between the attacked process at `addr` and, when given, an unattacked `control` process of the
/// same configuration: the failures (of the attacked process) and the 99th percentiles of the
/// latencies of each. The two sets of calls are interleaved, so both see the same moments of the
/// machine: the noise of other tests on the two shared cores lands on both alike.
async fn victim(
    addr: &str,
    control: Option<&str>,
    n: usize,
) -> (
    Vec<tonic::Status>,
    std::time::Duration,
    Option<std::time::Duration>,
) {
    use tickmesh_proto::v1::GetLatestPricesRequest;
    use tickmesh_proto::v1::query_service_client::QueryServiceClient;
    let mut client = QueryServiceClient::new(channel(addr).await);
    let mut control = match control {
        Some(control) => Some(QueryServiceClient::new(channel(control).await)),
        None => None,
    };
    let request = || {
        let mut request = keyed(
            GetLatestPricesRequest {
                symbols: vec!["GOOG".into()],
            },
            ALICE,
        );
        request.set_timeout(std::time::Duration::from_secs(5));
        request
    };
    let mut failures = Vec::new();
    let mut latencies = Vec::with_capacity(n);
    let mut control_latencies = Vec::with_capacity(n);
    for _ in 0..n {
        let started = std::time::Instant::now();
        if let Err(status) = client.get_latest_prices(request()).await {
            failures.push(status);
        }
        latencies.push(started.elapsed());
        if let Some(control) = control.as_mut() {
            let started = std::time::Instant::now();
            control
                .get_latest_prices(request())
                .await
                .expect("the control process serves");
            control_latencies.push(started.elapsed());
        }
    }
    let p99 = |mut latencies: Vec<std::time::Duration>| {
        latencies.sort();
        latencies[(latencies.len() * 99 / 100).min(latencies.len() - 1)]
    };
    let control = (!control_latencies.is_empty()).then(|| p99(control_latencies));
    (failures, p99(latencies), control)
}

/// The victim's p99 under attack may be 3x its baseline; below 5 ms a busy 2-core machine's
/// scheduling noise is larger than any effect of the attack.
fn within_3x(attacked: std::time::Duration, baseline: std::time::Duration) -> bool {
    attacked <= 3 * baseline.max(std::time::Duration::from_millis(5))
}

/// The victim's p99 while an attack is held, within 3x of the p99 of the same calls to an
/// unattacked `control` process, interleaved with them. Measured up to [`ROUNDS`] times a quarter
/// second apart; one round within 3x (with the attack still held, as `held` reports) shows that
/// the attack does not slow the victim. Every round must be free of refusals. `baseline` (the
/// victim's p99 before the attack) is reported with a failure.
///
/// Why a control and not the baseline alone: the whole suite runs on two shared cores, and a
/// neighbouring test's burst has slowed the victim 4-6x for six rounds (1.5 s) with an attack
/// that costs the process nothing; the control sees the same burst.
async fn victim_unhurt(
    addr: &str,
    control: &str,
    baseline: std::time::Duration,
    held: impl Fn() -> bool,
) {
    let mut rounds = Vec::new();
    for round in 0..ROUNDS {
        if round > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        }
        let (failures, attacked, control) = victim(addr, Some(control), 200).await;
        let control = control.expect("a control was measured");
        assert!(failures.is_empty(), "the victim was refused: {failures:?}");
        assert!(
            held(),
            "the attack ended before the victim was measured: p99 (attacked, control) {rounds:?}, then {attacked:?}, baseline {baseline:?}"
        );
        rounds.push((attacked, control));
        if within_3x(attacked, control) {
            return;
        }
    }
    panic!(
        "victim p99 (attacked, control) {rounds:?} in {ROUNDS} rounds under attack, {baseline:?} before"
    );
}

/// Rounds of the victim under a held attack.
const ROUNDS: usize = 6;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_holding_calls_open_leaves_the_other_callers_their_slots() {
    use tickmesh_proto::v1::{GetLatestPricesRequest, GetLatestPricesResponse};
    // 64 slots, a quarter of them per caller; a request message may take 6 s to arrive
    // (under the test channel's 10 s timeout; the victim is measured meanwhile).
    let env = [
        ("TICKMESH_SERVER__CONCURRENCY_LIMIT", "64"),
        ("TICKMESH_SERVER__CALLER_CONCURRENCY_SHARE", "0.25"),
        ("TICKMESH_SERVER__REQUEST_BODY_TIMEOUT", "6s"),
    ];
    let (mesh, _keys) = secured_up(&env).await;
    let (control, _control_keys) = secured_up(&env).await;
    let addr = mesh.addr("query").to_owned();
    let (failures, baseline, _) = victim(&addr, None, 200).await;
    assert!(failures.is_empty(), "{failures:?}");
    let rss_before = rss(mesh.child.id());
    let grpc = tonic::client::Grpc::new(channel(&addr).await);
    // 100 unary calls that send their headers (with an enormous deadline) and never a message.
    let mut held = Vec::new();
    for _ in 0..100 {
        let mut grpc = grpc.clone();
        held.push(tokio::spawn(async move {
            grpc.ready().await.unwrap();
            let mut request = keyed(
                futures_util::stream::pending::<GetLatestPricesRequest>(),
                MALLORY,
            );
            request
                .metadata_mut()
                .insert("grpc-timeout", "99999999S".parse().unwrap());
            let path = PathAndQuery::from_static("/tickmesh.v1.QueryService/GetLatestPrices");
            let codec = ProstCodec::<GetLatestPricesRequest, GetLatestPricesResponse>::default();
            let started = std::time::Instant::now();
            let status = grpc
                .client_streaming(request, path, codec)
                .await
                .unwrap_err();
            (status, started.elapsed())
        }));
    }
    // Let the attack take what it can, then the victim calls while it holds it.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    // The 16 calls within mallory's share are held (the other 84 were refused at once).
    victim_unhurt(&addr, control.addr("query"), baseline, || {
        held.iter().filter(|call| !call.is_finished()).count() == 16
    })
    .await;
    let grown = rss(mesh.child.id()).saturating_sub(rss_before);
    assert!(grown < 32 << 20, "RSS grew by {} MiB", grown >> 20);
    let mut codes = std::collections::BTreeMap::new();
    for call in held {
        let (status, took) = tokio::time::timeout(std::time::Duration::from_secs(30), call)
            .await
            .expect("every held call ends (request_body_timeout)")
            .unwrap();
        assert!(
            took < std::time::Duration::from_secs(20),
            "{status:?} after {took:?}"
        );
        *codes.entry(format!("{:?}", status.code())).or_insert(0) += 1;
    }
    // A quarter of 64 held until the body timeout, the rest refused as over the share.
    assert_eq!(
        codes,
        [
            ("DeadlineExceeded".to_owned(), 16),
            ("ResourceExhausted".to_owned(), 84)
        ]
        .into(),
        "{}",
        mesh.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_streams_and_keyless_health_watches_are_limited_per_caller() {
    use tickmesh_proto::v1::StreamMarketDataRequest;
    use tickmesh_proto::v1::query_service_client::QueryServiceClient;
    let env = [
        ("TICKMESH_SERVER__CALLER_STREAM_LIMIT", "8"),
        ("TICKMESH_SERVER__WATCH_STREAM_LIMIT", "4"),
    ];
    let (mesh, _keys) = secured_up(&env).await;
    let (control, _control_keys) = secured_up(&env).await;
    let addr = mesh.addr("query").to_owned();
    let mut query = QueryServiceClient::new(channel(&addr).await);
    let subscribe = || StreamMarketDataRequest {
        symbols: vec!["GOOG".into()],
        ..Default::default()
    };
    let mut open = Vec::new();
    let mut refused = Vec::new();
    for _ in 0..20 {
        match query.stream_market_data(keyed(subscribe(), MALLORY)).await {
            Ok(stream) => open.push(stream.into_inner()),
            Err(status) => refused.push(status),
        }
    }
    assert_eq!((open.len(), refused.len()), (8, 12), "{refused:?}");
    assert!(
        refused
            .iter()
            .all(|s| s.code() == tonic::Code::ResourceExhausted
                && s.message().contains("server.caller_stream_limit")),
        "{refused:?}"
    );
    // Another caller still gets a stream; mallory gets one again once one of hers ends.
    query
        .stream_market_data(keyed(subscribe(), ALICE))
        .await
        .expect("another caller is not limited by mallory's streams");
    drop(open.pop());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match query.stream_market_data(keyed(subscribe(), MALLORY)).await {
            Ok(stream) => {
                open.push(stream.into_inner());
                break;
            }
            Err(status) => {
                assert!(std::time::Instant::now() < deadline, "{status:?}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }

    // Health watches need no key: limited per address, however many connections carry them.
    let rss_before = rss(mesh.child.id());
    let (failures, baseline, _) = victim(&addr, None, 200).await;
    assert!(failures.is_empty(), "{failures:?}");
    let mut watches = Vec::new();
    let mut watch_refused = 0;
    for _ in 0..20 {
        let mut health = tonic_health::pb::health_client::HealthClient::new(channel(&addr).await);
        for _ in 0..100 {
            let request = tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            };
            match health.watch(request).await {
                Ok(stream) => watches.push(stream.into_inner()),
                Err(status) => {
                    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
                    watch_refused += 1;
                }
            }
        }
    }
    assert_eq!((watches.len(), watch_refused), (4, 1_996));
    victim_unhurt(&addr, control.addr("query"), baseline, || {
        watches.len() == 4
    })
    .await;
    let grown = rss(mesh.child.id()).saturating_sub(rss_before);
    assert!(
        grown < 32 << 20,
        "RSS grew by {} MiB for 2,000 watch attempts",
        grown >> 20
    );
    // Health checks themselves are never limited.
    assert_eq!(
        crate::support::health(&addr, "").await,
        tonic_health::pb::health_check_response::ServingStatus::Serving
    );
}

/// Whether the server closed `stream` within `limit` (a read sees EOF or an error).
pub(crate) async fn closed_within(
    stream: &mut tokio::net::TcpStream,
    limit: std::time::Duration,
) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            // The server's own SETTINGS frame: keep reading.
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_time_out_and_excess_ones_are_refused() {
    use tokio::io::AsyncWriteExt;
    let mesh = Process::start(&["up", "--base-port", "0"], |c| {
        c.env("TICKMESH_SERVER__HANDSHAKE_TIMEOUT", "1s")
            .env("TICKMESH_SERVER__MAX_CONNECTIONS_PER_PEER", "20");
    });
    let addr = mesh.addr("query").to_owned();
    // Half a preface, then nothing: closed after the handshake timeout.
    let mut half = Vec::new();
    for _ in 0..10 {
        let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
        stream.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
        half.push(stream);
    }
    for stream in &mut half {
        assert!(
            closed_within(stream, std::time::Duration::from_secs(10)).await,
            "a connection with half a preface is still open"
        );
    }
    drop(half);
    // 30 connections from one address with a cap of 20: the last 10 are closed at once.
    let mut silent = Vec::new();
    for _ in 0..30 {
        silent.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
    }
    let mut closed_at_once = 0;
    for stream in silent.iter_mut().skip(20) {
        closed_at_once +=
            usize::from(closed_within(stream, std::time::Duration::from_millis(500)).await);
    }
    assert_eq!(closed_at_once, 10, "{}", mesh.log());
    drop(silent);
    // Nothing to restart: a normal client is served once they are gone.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while crate::support::try_health(&addr, "").await.is_none() {
        assert!(std::time::Instant::now() < deadline, "{}", mesh.log());
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let log = mesh.log();
    let lines =
        log.matches("no HTTP/2 preface").count() + log.matches("connections refused").count();
    assert!(
        lines <= 4,
        "the refusals are logged once per 10 s, not per connection:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_out_of_file_descriptors_backs_off_logs_and_recovers() {
    let mesh = Process::start(&["up", "--base-port", "0"], |c| {
        // Handshakes may take their time here: the descriptors must stay taken.
        c.env("TICKMESH_SERVER__HANDSHAKE_TIMEOUT", "60s")
            .env("TICKMESH_SERVER__MAX_CONNECTIONS_PER_PEER", "4096");
    });
    let pid = mesh.child.id().to_string();
    let limited = std::process::Command::new("prlimit")
        .args(["--pid", &pid, "--nofile=256:256"])
        .status()
        .expect("prlimit (util-linux) is installed");
    assert!(limited.success());
    let addr = mesh.addr("query").to_owned();
    let mut hogs = Vec::new();
    for _ in 0..400 {
        // The kernel completes the handshake from the backlog even when accept fails.
        if let Ok(Ok(stream)) = tokio::time::timeout(
            std::time::Duration::from_millis(200),
            tokio::net::TcpStream::connect(&addr),
        )
        .await
        {
            hogs.push(stream);
        }
    }
    let cpu = |pid: &str| -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .unwrap()
            .1
            .split_whitespace()
            .collect();
        // utime and stime, in clock ticks (100 per second on Linux).
        (fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap()) / 100.0
    };
    let before = cpu(&pid);
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let spent = cpu(&pid) - before;
    // A busy accept loop burns a whole core (3 s here); backing off costs next to nothing.
    assert!(spent < 1.0, "{spent:.2} s of CPU in 3 s out of descriptors");
    let log = mesh.log();
    assert!(log.contains("accepting connections failed"), "{log}");
    assert!(
        log.matches("accepting connections failed").count() <= 2,
        "logged once per 10 s:\n{log}"
    );
    drop(hogs);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while crate::support::try_health(&addr, "").await.is_none() {
        assert!(std::time::Instant::now() < deadline, "{}", mesh.log());
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_bad_field_is_quoted_in_a_bounded_status() {
    use tickmesh_proto::v1::ReplaySourceRequest;
    use tickmesh_proto::v1::ingestion_service_client::IngestionServiceClient;
    let dir = tempfile::tempdir().unwrap();
    let huge = "x".repeat(4 * 1024 * 1024);
    std::fs::write(
        dir.path().join("big.csv"),
        format!("time,open,high,low,close,volume\n2024-01-02,{huge},1,1,1,1\n"),
    )
    .unwrap();
    let mesh = Process::start(&["up", "--base-port", "0"], |c| {
        c.env("TICKMESH_REPLAY_DIR", dir.path());
    });
    let mut client = IngestionServiceClient::new(channel(mesh.addr("ingestion")).await);
    let request = ReplaySourceRequest {
        source: "big".into(),
        symbol: "GOOG".into(),
        interval: tickmesh_proto::v1::Interval::Interval1d as i32,
        ..Default::default()
    };
    let outcome = match client.replay_source(request).await {
        Err(status) => status,
        Ok(stream) => {
            let mut stream = stream.into_inner();
            loop {
                match stream.message().await {
                    Ok(Some(_)) => continue,
                    Ok(None) => panic!("a row with a 4 MB price is not replayed"),
                    Err(status) => break status,
                }
            }
        }
    };
    assert!(outcome.message().contains("is not a number"), "{outcome:?}");
    assert!(
        outcome.message().len() < 2_048,
        "the status quotes {} bytes of input",
        outcome.message().len()
    );
}

/// One HTTP/2 frame: `kind`, `flags`, stream id and payload.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap();
    let mut bytes = len.to_be_bytes()[1..].to_vec();
    bytes.extend([kind, flags]);
    bytes.extend((stream & 0x7fff_ffff).to_be_bytes());
    bytes.extend(payload);
    bytes
}

const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const ACK: u8 = 0x1;

/// The client's preface and an empty SETTINGS frame.
fn preface() -> Vec<u8> {
    let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    bytes.extend(frame(SETTINGS, 0, 0, &[]));
    bytes
}

/// A hand-written HTTP/2 client on `stream` for `period`: it acknowledges the server's
/// SETTINGS and, when `answer_pings`, its PINGs. Whether the server closed the connection
/// in that time, and how many PINGs it sent.
async fn h2_peer(
    mut stream: tokio::net::TcpStream,
    answer_pings: bool,
    period: std::time::Duration,
) -> (bool, usize) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream.write_all(&preface()).await.unwrap();
    let deadline = tokio::time::Instant::now() + period;
    let (mut buf, mut pings) = (Vec::new(), 0);
    let mut chunk = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Err(_) => return (false, pings),
            Ok(Ok(0) | Err(_)) => return (true, pings),
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
        while buf.len() >= 9 {
            let len = usize::from(buf[0]) << 16 | usize::from(buf[1]) << 8 | usize::from(buf[2]);
            if buf.len() < 9 + len {
                break;
            }
            let (kind, flags) = (buf[3], buf[4]);
            let payload = buf[9..9 + len].to_vec();
            buf.drain(..9 + len);
            let reply = match (kind, flags & ACK) {
                (SETTINGS, 0) => Some(frame(SETTINGS, ACK, 0, &[])),
                (PING, 0) => {
                    pings += 1;
                    answer_pings.then(|| frame(PING, ACK, 0, &payload))
                }
                _ => None,
            };
            if let Some(reply) = reply
                && stream.write_all(&reply).await.is_err()
            {
                return (true, pings);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_stops_answering_pings_is_closed_and_one_that_answers_is_kept() {
    // A PING every second, a second to answer it.
    let mesh = Process::start(&["up", "--base-port", "0"], |c| {
        c.env("TICKMESH_SERVER__KEEPALIVE_INTERVAL", "1s")
            .env("TICKMESH_SERVER__KEEPALIVE_TIMEOUT", "1s");
    });
    let addr = mesh.addr("query").to_owned();
    let period = std::time::Duration::from_secs(6);
    let silent = tokio::spawn(h2_peer(
        tokio::net::TcpStream::connect(&addr).await.unwrap(),
        false,
        period,
    ));
    let answering = tokio::spawn(h2_peer(
        tokio::net::TcpStream::connect(&addr).await.unwrap(),
        true,
        period,
    ));
    let (silent, answering) = (silent.await.unwrap(), answering.await.unwrap());
    assert!(
        silent.0 && silent.1 >= 1,
        "a peer that never answers a PING: closed {}, {} PINGs",
        silent.0,
        silent.1
    );
    assert!(
        !answering.0 && answering.1 >= 3,
        "a peer that answers: closed {}, {} PINGs in {period:?}",
        answering.0,
        answering.1
    );
}

/// HTTP/2 rapid reset: streams opened and cancelled at once, as fast as a connection carries
/// them. h2 ends such a connection (GOAWAY ENHANCE_YOUR_CALM) and warns; the warnings are
/// counted, and reach the log at most once per 10 s whatever the number of connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_resets_cut_the_connection_and_log_once_not_per_connection() {
    use tokio::io::AsyncWriteExt;
    let mesh = Process::start(&["up", "--base-port", "0"], |_| {});
    let addr = mesh.addr("query").to_owned();
    let warnings = |text: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix("tickmesh_protocol_warnings_total "))
            .map_or(0.0, |v| v.trim().parse::<f64>().unwrap())
    };
    let counted_before = warnings(&scrape(&mesh.metrics));
    let warn_lines = |log: &str| log.lines().filter(|l| l.contains("\"WARN\"")).count();
    let logged_before = warn_lines(&mesh.log());
    // HEADERS (POST, http, "/", from HPACK's static table; END_HEADERS) then RST_STREAM
    // (CANCEL), 500 streams per connection, 40 connections.
    let mut burst = preface();
    for id in (1..1_000u32).step_by(2) {
        burst.extend(frame(0x1, 0x4, id, &[0x83, 0x86, 0x84]));
        burst.extend(frame(0x3, 0, id, &8u32.to_be_bytes()));
    }
    let mut cut = 0;
    for _ in 0..40 {
        let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
        // The server may cut the connection before the whole burst is written.
        let _ = stream.write_all(&burst).await;
        cut += usize::from(closed_within(&mut stream, std::time::Duration::from_secs(5)).await);
    }
    assert_eq!(cut, 40, "every rapid-reset connection is cut");
    let logged = warn_lines(&mesh.log()) - logged_before;
    assert!(
        logged <= 2,
        "{logged} warning lines logged for 40 cut connections:\n{}",
        mesh.log()
    );
    let counted = warnings(&scrape(&mesh.metrics)) - counted_before;
    assert!(
        counted >= 40.0,
        "{counted} protocol warnings counted for 40 cut connections"
    );
    // Nothing to restart: the next client is served.
    assert_eq!(
        crate::support::health(&addr, "").await,
        tonic_health::pb::health_check_response::ServingStatus::Serving
    );
}
