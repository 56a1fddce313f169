//! The server stack of a real `tickmesh serve` process: API keys and scopes, per-caller rate
//! limits, message size limits, and the refusal to run without auth on a public address.

use std::ffi::OsString;
use std::io::Write;
use std::time::Duration;

use tickmesh_proto::v1::config_service_client::ConfigServiceClient;
use tickmesh_proto::v1::ingestion_service_client::IngestionServiceClient;
use tickmesh_proto::v1::{
    GetConfigRequest, IngestTickBatchRequest, ReplaySourceRequest, Side, Tick,
};
use tonic::metadata::MetadataValue;
use tonic::{Code, Request};
use tonic_types::StatusExt;

use crate::support::{self, Process, channel, health, run, serve_ingestion, tickmesh};

const FEEDER_KEY: &str = "feeder-key-7f3a9c1e55d2";
const VIEWER_KEY: &str = "viewer-key-0b8e4d6a19f7";
const ADMIN_KEY: &str = "admin-key-c4f1a7e2903b";

fn ticks(n: i64) -> Vec<Tick> {
    (0..n)
        .map(|i| {
            support::tick(
                "ETH-USD",
                1_709_251_200_000_000 + i * 1_000,
                format!("t{i}"),
                3_000.0 + i as f64,
                1.0,
                Side::Buy,
            )
        })
        .collect()
}

fn with_key<T>(message: T, key: Option<&str>) -> Request<T> {
    let mut request = Request::new(message);
    if let Some(key) = key {
        let value: MetadataValue<_> = format!("Bearer {key}").parse().unwrap();
        request.metadata_mut().insert("authorization", value);
    }
    request
}

/// An ingestion service with auth on and three keys in a mounted-secret style file.
fn secured(extra: &[(&str, OsString)]) -> (Process, tempfile::NamedTempFile) {
    let mut keys = tempfile::NamedTempFile::new().unwrap();
    writeln!(
        keys,
        "# name scopes key\nfeeder write {FEEDER_KEY}\nviewer read {VIEWER_KEY}\nops admin {ADMIN_KEY}"
    )
    .unwrap();
    let mut env = vec![
        ("TICKMESH_AUTH__ENABLED", OsString::from("true")),
        (
            "TICKMESH_AUTH__KEYS_FILE",
            keys.path().as_os_str().to_owned(),
        ),
    ];
    env.extend(extra.iter().cloned());
    (serve_ingestion(&env), keys)
}

#[tokio::test]
async fn api_keys_and_scopes_decide_who_may_call_what() {
    let (process, _keys) = secured(&[]);
    let addr = &process.addrs["ingestion"];
    let mut ingest = IngestionServiceClient::new(channel(addr).await);
    let batch = || IngestTickBatchRequest {
        ticks: ticks(3),
        ..Default::default()
    };

    let missing = ingest
        .ingest_tick_batch(with_key(batch(), None))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::Unauthenticated, "{missing:?}");
    let unknown = ingest
        .ingest_tick_batch(with_key(batch(), Some("not-a-key-at-all-000")))
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::Unauthenticated, "{unknown:?}");
    let read_only = ingest
        .ingest_tick_batch(with_key(batch(), Some(VIEWER_KEY)))
        .await
        .unwrap_err();
    assert_eq!(read_only.code(), Code::PermissionDenied, "{read_only:?}");
    assert!(
        read_only.message().contains("needs write"),
        "{}",
        read_only.message()
    );

    let stored = ingest
        .ingest_tick_batch(with_key(batch(), Some(FEEDER_KEY)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stored.summary.unwrap().stored, 3);

    // `x-api-key` works too, and admin covers write.
    let mut request = Request::new(batch());
    request
        .metadata_mut()
        .insert("x-api-key", ADMIN_KEY.parse().unwrap());
    ingest.ingest_tick_batch(request).await.unwrap();

    // ReplaySource needs admin: write is not enough.
    let replay = ingest
        .replay_source(with_key(ReplaySourceRequest::default(), Some(FEEDER_KEY)))
        .await
        .unwrap_err();
    assert_eq!(replay.code(), Code::PermissionDenied, "{replay:?}");

    // Reading config needs read; health needs no key at all.
    let mut config = ConfigServiceClient::new(channel(addr).await);
    config
        .get_config(with_key(GetConfigRequest {}, Some(VIEWER_KEY)))
        .await
        .unwrap();
    let anonymous = config.get_config(GetConfigRequest {}).await.unwrap_err();
    assert_eq!(anonymous.code(), Code::Unauthenticated);
    health(addr, "").await;

    // Keys never reach the logs.
    let log = process.log();
    for key in [FEEDER_KEY, VIEWER_KEY, ADMIN_KEY] {
        assert!(!log.contains(key), "a key leaked into the log:\n{log}");
    }
}

#[tokio::test]
async fn each_caller_has_its_own_rate_limit_with_retry_info() {
    let (process, _keys) = secured(&[
        (
            "TICKMESH_RATE_LIMITS__DEFAULT_CALLER__RATE_PER_SECOND",
            OsString::from("0.5"),
        ),
        (
            "TICKMESH_RATE_LIMITS__DEFAULT_CALLER__BURST",
            OsString::from("3"),
        ),
    ]);
    let addr = &process.addrs["ingestion"];
    let mut config = ConfigServiceClient::new(channel(addr).await);
    for _ in 0..3 {
        config
            .get_config(with_key(GetConfigRequest {}, Some(VIEWER_KEY)))
            .await
            .unwrap();
    }
    let limited = config
        .get_config(with_key(GetConfigRequest {}, Some(VIEWER_KEY)))
        .await
        .unwrap_err();
    assert_eq!(limited.code(), Code::ResourceExhausted, "{limited:?}");
    let retry = limited
        .get_details_retry_info()
        .and_then(|info| info.retry_delay)
        .expect("RESOURCE_EXHAUSTED carries a RetryInfo with a delay");
    // At 0.5 tokens/s the next token is at most 2 s away.
    assert!(
        retry > Duration::ZERO && retry <= Duration::from_secs(2),
        "{retry:?}"
    );
    assert!(
        limited.message().contains("viewer"),
        "{}",
        limited.message()
    );

    // Another caller is not held back by the first one's bucket.
    config
        .get_config(with_key(GetConfigRequest {}, Some(ADMIN_KEY)))
        .await
        .unwrap();
    // Health checks are never rate limited.
    for _ in 0..5 {
        health(addr, "").await;
    }
}

#[tokio::test]
async fn an_oversized_request_is_resource_exhausted_and_the_connection_stays_up() {
    let process =
        serve_ingestion(&[("TICKMESH_SERVER__MAX_MESSAGE_BYTES", OsString::from("2048"))]);
    let addr = &process.addrs["ingestion"];
    let mut ingest = IngestionServiceClient::new(channel(addr).await);
    let big = IngestTickBatchRequest {
        ticks: ticks(200),
        ..Default::default()
    };
    assert!(prost::Message::encoded_len(&big) > 2048);
    let err = ingest.ingest_tick_batch(big).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("limit"), "{}", err.message());
    // The same connection still serves a request within the limit.
    let small = ingest
        .ingest_tick_batch(IngestTickBatchRequest {
            ticks: ticks(5),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(small.summary.unwrap().stored, 5);
}

#[test]
fn auth_off_is_refused_on_a_public_address() {
    let output = run(tickmesh().args(["serve", "--target", "query", "--listen", "0.0.0.0:0"]));
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("not a loopback address"), "{stderr}");
}

mod tls {
    use super::*;
    use tickmesh_testkit::TlsFiles;
    use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

    fn tls_env(files: &TlsFiles, mutual: bool) -> Vec<(&'static str, OsString)> {
        let mut env = vec![
            (
                "TICKMESH_TLS__CERT_FILE",
                files.server_cert.clone().into_os_string(),
            ),
            (
                "TICKMESH_TLS__KEY_FILE",
                files.server_key.clone().into_os_string(),
            ),
        ];
        if mutual {
            env.push((
                "TICKMESH_TLS__CLIENT_CA_FILE",
                files.ca.clone().into_os_string(),
            ));
        }
        env
    }

    async fn tls_channel(
        addr: &str,
        files: &TlsFiles,
        client_cert: bool,
    ) -> Result<Channel, tonic::transport::Error> {
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(std::fs::read(&files.ca).unwrap()))
            .domain_name("localhost");
        if client_cert {
            tls = tls.identity(Identity::from_pem(
                std::fs::read(&files.client_cert).unwrap(),
                std::fs::read(&files.client_key).unwrap(),
            ));
        }
        Channel::from_shared(format!("https://{addr}"))
            .unwrap()
            .tls_config(tls)?
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
    }

    async fn get_config(channel: Channel) -> Result<(), tonic::Status> {
        ConfigServiceClient::new(channel)
            .get_config(GetConfigRequest {})
            .await
            .map(|_| ())
    }

    #[tokio::test]
    async fn tls_serves_verified_clients_and_refuses_plaintext() {
        let files = TlsFiles::generate().unwrap();
        let process = serve_ingestion(&tls_env(&files, false));
        let addr = &process.addrs["ingestion"];
        get_config(tls_channel(addr, &files, false).await.unwrap())
            .await
            .unwrap();
        // A plaintext client gets no gRPC answer from a TLS port.
        let plain = Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(5))
            .connect()
            .await;
        if let Ok(plain) = plain {
            assert!(get_config(plain).await.is_err());
        }
    }

    /// A TLS handshake that stops after its first bytes (a record announcing a 512-byte
    /// ClientHello, 64 bytes of it sent) is closed after server.handshake_timeout: the
    /// connection's own timer sees only the first bytes, tonic's acceptor the whole handshake.
    /// A real TLS client is served meanwhile.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_tls_handshake_that_stalls_mid_way_is_closed_after_the_handshake_timeout() {
        use tokio::io::AsyncWriteExt;
        let files = TlsFiles::generate().unwrap();
        let mut env = tls_env(&files, false);
        env.push(("TICKMESH_SERVER__HANDSHAKE_TIMEOUT", "1s".into()));
        let process = serve_ingestion(&env);
        let addr = process.addrs["ingestion"].clone();
        let mut stalled = Vec::new();
        for _ in 0..20 {
            let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
            // Record: handshake (22), TLS 1.0, 512 bytes; ClientHello (1) of 508, TLS 1.2.
            let mut first = vec![
                0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
            ];
            first.resize(5 + 64, 0x2a);
            stream.write_all(&first).await.unwrap();
            stalled.push(stream);
        }
        get_config(tls_channel(&addr, &files, false).await.unwrap())
            .await
            .unwrap();
        for stream in &mut stalled {
            assert!(
                crate::attacks::closed_within(stream, Duration::from_secs(6)).await,
                "a TLS handshake stalled after its first bytes is still open"
            );
        }
        get_config(tls_channel(&addr, &files, false).await.unwrap())
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn mtls_requires_a_client_certificate_signed_by_the_ca() {
        let files = TlsFiles::generate().unwrap();
        let process = serve_ingestion(&tls_env(&files, true));
        let addr = &process.addrs["ingestion"];
        get_config(tls_channel(addr, &files, true).await.unwrap())
            .await
            .unwrap();
        let without = match tls_channel(addr, &files, false).await {
            Ok(channel) => get_config(channel).await.is_err(),
            Err(_) => true,
        };
        assert!(
            without,
            "a client without a certificate was served under mTLS"
        );
    }
}

#[test]
fn replay_sends_its_api_key() {
    let (process, _keys) = secured(&[]);
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("bars.csv");
    std::fs::write(
        &csv,
        "Date,Open,High,Low,Close,Volume\n2024-01-02,10,11,9,10.5,100\n2024-01-03,10.5,12,10,11,200\n",
    )
    .unwrap();
    let replay = |key: Option<&str>| {
        let mut command = crate::support::tickmesh();
        command
            .args([
                "replay",
                "--symbol",
                "KEYED",
                "--target",
                &process.addrs["ingestion"],
            ])
            .arg(&csv);
        if let Some(key) = key {
            command.env("TICKMESH_API_KEY", key);
        }
        run(&mut command)
    };
    let refused = replay(None);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("API key"),
        "{}",
        crate::support::describe(&refused)
    );
    let accepted = replay(Some(FEEDER_KEY));
    assert!(
        accepted.status.success(),
        "{}",
        crate::support::describe(&accepted)
    );
    assert!(String::from_utf8_lossy(&accepted.stdout).contains("2 stored"));
}
