//! Configuration changes without a restart: `UpdateConfig` (admin scope, field masks, version
//! checks, invalid values refused) and the config file swapped the way Kubernetes updates a
//! mounted ConfigMap (a symlink flip).

use std::ffi::OsString;
use std::io::Write;
use std::time::Duration;

use tickmesh_proto::v1::config_service_client::ConfigServiceClient;
use tickmesh_proto::v1::{
    CircuitBreakerConfig, GetConfigRequest, PerformanceOptimizationConfig, RateLimitConfig, Side,
    TokenBucket, UpdateConfigRequest, WatchConfigRequest,
};
use tonic::{Code, Request};

use crate::support::{self, Process, channel, serve_ingestion};

const ADMIN: &str = "admin-key-aa11bb22cc33dd44";
const VIEWER: &str = "viewer-key-ee55ff66aa77bb88";

fn keyed<T>(message: T, key: &str) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("x-api-key", key.parse().unwrap());
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_config_changes_limits_at_once_and_refuses_bad_values() {
    let mut keys = tempfile::NamedTempFile::new().unwrap();
    writeln!(keys, "ops admin {ADMIN}\nviewer read {VIEWER}").unwrap();
    let process = serve_ingestion(&[
        ("TICKMESH_AUTH__ENABLED", OsString::from("true")),
        (
            "TICKMESH_AUTH__KEYS_FILE",
            keys.path().as_os_str().to_owned(),
        ),
    ]);
    let mut client = ConfigServiceClient::new(channel(process.addr("ingestion")).await);
    let update = |config, paths: &[&str], expected_version| UpdateConfigRequest {
        config: Some(config),
        update_mask: Some(prost_types::FieldMask {
            paths: paths.iter().map(|p| (*p).to_owned()).collect(),
        }),
        expected_version,
    };
    let tight = PerformanceOptimizationConfig {
        rate_limits: Some(RateLimitConfig {
            default_caller: Some(TokenBucket {
                rate_per_second: 0.1,
                burst: 2,
            }),
            ..Default::default()
        }),
        ..Default::default()
    };

    // Only admin may change it.
    let err = client
        .update_config(keyed(
            update(tight.clone(), &["rate_limits.default_caller"], 0),
            VIEWER,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    // A stale version is refused.
    let err = client
        .update_config(keyed(
            update(tight.clone(), &["rate_limits.default_caller"], 7),
            ADMIN,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Aborted, "{err:?}");
    // An invalid value is refused and the running configuration stays.
    let broken = PerformanceOptimizationConfig {
        circuit_breaker: Some(CircuitBreakerConfig {
            failure_threshold: 0,
            ..Default::default()
        }),
        ..Default::default()
    };
    let err = client
        .update_config(keyed(update(broken, &["circuit_breaker"], 0), ADMIN))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains("circuit_breaker"),
        "{}",
        err.message()
    );
    let before = client
        .get_config(keyed(GetConfigRequest {}, VIEWER))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(before.version, 1);

    // The mask changes just that field; the new limit applies to the next call.
    let updated = client
        .update_config(keyed(
            update(tight, &["rate_limits.default_caller"], 1),
            ADMIN,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(updated.version, 2);
    let config = updated.config.unwrap();
    assert_eq!(config.rate_limits.unwrap().default_caller.unwrap().burst, 2);
    assert_eq!(
        config.circuit_breaker,
        before.config.unwrap().circuit_breaker,
        "untouched"
    );
    let mut limited = None;
    for _ in 0..4 {
        if let Err(e) = client.get_config(keyed(GetConfigRequest {}, VIEWER)).await {
            limited = Some(e);
            break;
        }
    }
    assert_eq!(limited.map(|e| e.code()), Some(Code::ResourceExhausted));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swapped_config_file_is_reloaded_and_a_bad_one_is_refused() {
    // The layout of a mounted ConfigMap: config.yaml -> ..data/config.yaml, ..data -> v1.
    let dir = tempfile::tempdir().unwrap();
    let write_version = |name: &str, body: &str| {
        std::fs::create_dir_all(dir.path().join(name)).unwrap();
        std::fs::write(dir.path().join(name).join("config.yaml"), body).unwrap();
    };
    let flip = |name: &str| {
        let tmp = dir.path().join("..data_tmp");
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(name, &tmp).unwrap();
        std::fs::rename(&tmp, dir.path().join("..data")).unwrap();
    };
    write_version(
        "v1",
        "processing:\n  skip_unchanged_threshold_percent: 0.5\n",
    );
    flip("v1");
    std::os::unix::fs::symlink("..data/config.yaml", dir.path().join("config.yaml")).unwrap();
    let file = dir.path().join("config.yaml");
    let process = Process::start(
        &[
            "serve",
            "--target",
            "computation",
            "--listen",
            "127.0.0.1:0",
        ],
        |c| {
            c.arg("--config").arg(&file);
        },
    );
    let mut client = ConfigServiceClient::new(channel(process.addr("computation")).await);
    let mut watch = client
        .watch_config(WatchConfigRequest {})
        .await
        .unwrap()
        .into_inner();
    let first = watch.message().await.unwrap().unwrap();
    assert_eq!(first.version, 1);

    write_version(
        "v2",
        "processing:\n  skip_unchanged_threshold_percent: 1.25\n",
    );
    flip("v2");
    let next = tokio::time::timeout(Duration::from_secs(10), watch.message())
        .await
        .expect("the change is noticed within seconds")
        .unwrap()
        .unwrap();
    assert_eq!(next.version, 2);
    assert_eq!(
        next.config
            .unwrap()
            .processing
            .unwrap()
            .skip_unchanged_threshold_percent,
        1.25
    );

    write_version(
        "v3",
        "processing:\n  skip_unchanged_threshold_percent: -4\n",
    );
    flip("v3");
    let quiet = tokio::time::timeout(Duration::from_secs(3), watch.message()).await;
    assert!(
        quiet.is_err(),
        "an invalid file must not become the configuration: {quiet:?}"
    );
    let now = client
        .get_config(GetConfigRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(now.version, 2);
    assert!(
        process.log().contains("reloaded configuration rejected"),
        "{}",
        process.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_filter_changes_without_a_restart_and_a_bad_one_is_refused() {
    use tickmesh_proto::v1::IngestTickBatchRequest;
    use tickmesh_proto::v1::ingestion_service_client::IngestionServiceClient;

    let mut keys = tempfile::NamedTempFile::new().unwrap();
    writeln!(keys, "ops admin {ADMIN}").unwrap();
    let process = serve_ingestion(&[
        ("TICKMESH_AUTH__ENABLED", OsString::from("true")),
        (
            "TICKMESH_AUTH__KEYS_FILE",
            keys.path().as_os_str().to_owned(),
        ),
        ("TICKMESH_LOG", OsString::from("warn")),
    ]);
    let addr = process.addr("ingestion").to_owned();
    let mut config = ConfigServiceClient::new(channel(&addr).await);
    let mut ingestion = IngestionServiceClient::new(channel(&addr).await);
    let mut n = 0;
    let mut write = async || {
        n += 1;
        ingestion
            .ingest_tick_batch(keyed(
                IngestTickBatchRequest {
                    ticks: vec![support::tick(
                        "LOGS",
                        1_736_121_600_000_000 + n,
                        n.to_string(),
                        1.0,
                        1.0,
                        Side::Buy,
                    )],
                    source: "test".into(),
                },
                ADMIN,
            ))
            .await
            .unwrap();
    };
    // The store's phase timings are debug lines: not logged at "warn".
    const PHASES: &str = "tick write phases";
    write().await;
    assert!(!process.log().contains(PHASES), "{}", process.log());

    let set = |filter: &str| UpdateConfigRequest {
        config: Some(PerformanceOptimizationConfig {
            log_filter: filter.to_owned(),
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["log_filter".to_owned()],
        }),
        expected_version: 0,
    };
    let err = config
        .update_config(keyed(set("tickmesh_store=loud"), ADMIN))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("log_filter"), "{}", err.message());

    config
        .update_config(keyed(set("warn,tickmesh_store=debug"), ADMIN))
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !process.log().contains(PHASES) {
        assert!(
            std::time::Instant::now() < deadline,
            "no debug line after the change:\n{}",
            process.log()
        );
        write().await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
