#![allow(clippy::unwrap_used)]
//! The client stack against real gRPC servers on real sockets: a `ConfigService` whose answers
//! the test controls, so that failures, recoveries and new replicas happen on cue.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tickmesh_mesh::Shutdown;
use tickmesh_mesh::client::{ClientSettings, Dns, MeshChannel, StaticAddrs, connect};
use tickmesh_proto::v1::config_service_client::ConfigServiceClient;
use tickmesh_proto::v1::config_service_server::{ConfigService, ConfigServiceServer};
use tickmesh_proto::v1::{
    CircuitBreakerConfig, DiscoveryConfig, GetConfigRequest, GetConfigResponse,
    PerformanceOptimizationConfig, RetryConfig, UpdateConfigRequest, UpdateConfigResponse,
    WatchConfigRequest, WatchConfigResponse,
};
use tokio::net::TcpListener;
use tonic::{Code, Request, Response, Status};

/// A replica: fails the next `failures` calls with UNAVAILABLE (u32::MAX: every call).
#[derive(Default)]
struct Replica {
    failures: AtomicU32,
    calls: AtomicU32,
    /// GetConfig sleeps this many milliseconds before answering.
    delay_ms: AtomicU32,
}

#[derive(Clone)]
struct Fake(Arc<Replica>);

impl Fake {
    fn answer(&self) -> Result<(), Status> {
        self.0.calls.fetch_add(1, Ordering::SeqCst);
        let failing = self
            .0
            .failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| match n {
                0 => None,
                u32::MAX => Some(u32::MAX),
                n => Some(n - 1),
            })
            .is_ok();
        if failing {
            Err(Status::unavailable("replica is failing on purpose"))
        } else {
            Ok(())
        }
    }
}

#[tonic::async_trait]
impl ConfigService for Fake {
    async fn get_config(
        &self,
        _: Request<GetConfigRequest>,
    ) -> Result<Response<GetConfigResponse>, Status> {
        self.answer()?;
        let delay = self.0.delay_ms.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(u64::from(delay))).await;
        Ok(Response::new(GetConfigResponse::default()))
    }

    async fn update_config(
        &self,
        _: Request<UpdateConfigRequest>,
    ) -> Result<Response<UpdateConfigResponse>, Status> {
        self.answer()?;
        Ok(Response::new(UpdateConfigResponse::default()))
    }

    type WatchConfigStream = tokio_stream::Empty<Result<WatchConfigResponse, Status>>;

    async fn watch_config(
        &self,
        _: Request<WatchConfigRequest>,
    ) -> Result<Response<Self::WatchConfigStream>, Status> {
        Ok(Response::new(tokio_stream::empty()))
    }
}

async fn replica() -> (Arc<Replica>, SocketAddr) {
    let state = Arc::new(Replica::default());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tonic::transport::Server::builder()
        .add_service(ConfigServiceServer::new(Fake(state.clone())))
        .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener));
    tokio::spawn(server);
    (state, addr)
}

fn config(max_attempts: u32, failure_threshold: u32) -> PerformanceOptimizationConfig {
    PerformanceOptimizationConfig {
        retry: Some(RetryConfig {
            max_attempts,
            initial_backoff: Some(prost_types::Duration {
                seconds: 0,
                nanos: 1_000_000,
            }),
            max_backoff: Some(prost_types::Duration {
                seconds: 0,
                nanos: 5_000_000,
            }),
            backoff_multiplier: 2.0,
            budget_ratio: 0.1,
            budget_min_per_second: 1,
        }),
        circuit_breaker: Some(CircuitBreakerConfig {
            failure_threshold,
            success_threshold: 2,
            open_duration: Some(prost_types::Duration {
                seconds: 0,
                nanos: 300_000_000,
            }),
            probe_interval: None,
        }),
        discovery: Some(DiscoveryConfig {
            resolve_interval: Some(prost_types::Duration {
                seconds: 0,
                nanos: 50_000_000,
            }),
        }),
        ..Default::default()
    }
}

fn client(
    config: PerformanceOptimizationConfig,
    addrs: &StaticAddrs,
) -> ConfigServiceClient<MeshChannel> {
    let settings = ClientSettings::new("tickmesh.v1.ConfigService", Arc::new(config));
    ConfigServiceClient::new(connect(&settings, addrs.clone(), &Shutdown::new()).unwrap())
}

#[tokio::test]
async fn a_transient_unavailable_is_retried_and_succeeds() {
    let (replica, addr) = replica().await;
    replica.failures.store(2, Ordering::SeqCst);
    let mut client = client(config(3, 100), &StaticAddrs::new(vec![addr]));
    client.get_config(GetConfigRequest {}).await.unwrap();
    assert_eq!(
        replica.calls.load(Ordering::SeqCst),
        3,
        "two failures, then the success"
    );
}

#[tokio::test]
async fn a_non_idempotent_call_is_not_retried() {
    let (replica, addr) = replica().await;
    replica.failures.store(1, Ordering::SeqCst);
    let mut client = client(config(3, 100), &StaticAddrs::new(vec![addr]));
    let err = client
        .update_config(UpdateConfigRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert_eq!(
        replica.calls.load(Ordering::SeqCst),
        1,
        "UpdateConfig is sent once"
    );
}

#[tokio::test]
async fn the_retry_budget_stops_a_retry_storm() {
    let (replica, addr) = replica().await;
    replica.failures.store(u32::MAX, Ordering::SeqCst);
    // Up to 5 attempts per call, but retries may only be 10 % of calls (+1/s).
    let metrics = tickmesh_mesh::Metrics::new();
    let mut settings =
        ClientSettings::new("tickmesh.v1.ConfigService", Arc::new(config(5, 100_000)));
    settings.metrics = Some(metrics.clone());
    let mut client = ConfigServiceClient::new(
        connect(&settings, StaticAddrs::new(vec![addr]), &Shutdown::new()).unwrap(),
    );
    let calls = 200;
    for _ in 0..calls {
        let err = client.get_config(GetConfigRequest {}).await.unwrap_err();
        assert_eq!(err.code(), Code::Unavailable);
    }
    let sent = replica.calls.load(Ordering::SeqCst);
    // Without a budget: 1000 attempts. With it: the calls, plus at most 10 % plus the
    // per-second allowance (the budget starts with up to 10 s of it).
    assert!(sent >= calls, "{sent} attempts for {calls} calls");
    assert!(
        sent <= calls + calls / 10 + 12,
        "{sent} attempts for {calls} calls: a retry storm"
    );
    // The retries sent and the ones the budget refused are counted.
    let text = metrics.encode();
    let value = |name: &str| -> u32 {
        let prefix = format!("{name}{{peer=\"tickmesh.v1.ConfigService\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in\n{text}"))
    };
    assert_eq!(value("tickmesh_client_retries_total"), sent - calls);
    assert!(value("tickmesh_client_retry_budget_exhausted_total") >= calls - (sent - calls));
}

#[tokio::test]
async fn the_breaker_opens_fails_fast_and_closes_after_recovery() {
    let (replica, addr) = replica().await;
    replica.failures.store(u32::MAX, Ordering::SeqCst);
    // No retries, so every call is one attempt; the circuit opens after 3 failures.
    let metrics = tickmesh_mesh::Metrics::new();
    let mut settings = ClientSettings::new("tickmesh.v1.ConfigService", Arc::new(config(1, 3)));
    settings.metrics = Some(metrics.clone());
    let channel = connect(&settings, StaticAddrs::new(vec![addr]), &Shutdown::new()).unwrap();
    let mut client = ConfigServiceClient::new(channel);
    let state = |metrics: &tickmesh_mesh::Metrics| {
        let text = metrics.encode();
        text.lines()
            .find(|l| {
                l.starts_with("tickmesh_client_breaker_state{peer=\"tickmesh.v1.ConfigService\"}")
            })
            .map(|l| l.rsplit(' ').next().unwrap_or("").to_owned())
            .unwrap_or_else(|| panic!("no circuit state in\n{text}"))
    };
    for _ in 0..3 {
        let err = client.get_config(GetConfigRequest {}).await.unwrap_err();
        assert_eq!(err.message(), "replica is failing on purpose");
    }
    for _ in 0..10 {
        let err = client.get_config(GetConfigRequest {}).await.unwrap_err();
        assert_eq!(err.code(), Code::Unavailable);
        assert!(
            err.message()
                .contains("circuit to tickmesh.v1.ConfigService is open"),
            "{}",
            err.message()
        );
    }
    assert_eq!(
        replica.calls.load(Ordering::SeqCst),
        3,
        "an open circuit sends nothing"
    );

    // The replica recovers; after the open period a probe goes through and closes the circuit.
    replica.failures.store(0, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(350)).await;
    for _ in 0..5 {
        client.get_config(GetConfigRequest {}).await.unwrap();
    }
    assert_eq!(replica.calls.load(Ordering::SeqCst), 8);
    assert_eq!(state(&metrics), "0", "closed is exported as 0");
    // Each transition counted once, by the state entered.
    let text = metrics.encode();
    for (to, times) in [("open", 1), ("half_open", 1), ("closed", 1)] {
        let line = format!(
            "tickmesh_client_breaker_transitions_total{{peer=\"tickmesh.v1.ConfigService\",state=\"{to}\"}} {times}"
        );
        assert!(text.contains(&line), "no `{line}` in\n{text}");
    }
    // Closed again: it takes 3 new failures to open it.
    replica.failures.store(2, Ordering::SeqCst);
    for _ in 0..2 {
        let err = client.get_config(GetConfigRequest {}).await.unwrap_err();
        assert_eq!(err.message(), "replica is failing on purpose");
    }
    client.get_config(GetConfigRequest {}).await.unwrap();
}

#[tokio::test]
async fn the_breaker_thresholds_follow_a_configuration_change() {
    let (replica, addr) = replica().await;
    replica.failures.store(u32::MAX, Ordering::SeqCst);
    let mut loaded = tickmesh_config::load(None, std::iter::empty()).unwrap();
    loaded.config.retry.get_or_insert_default().max_attempts = 1;
    loaded
        .config
        .circuit_breaker
        .get_or_insert_default()
        .failure_threshold = 100;
    let handle = tickmesh_mesh::ConfigHandle::new(loaded);
    let mut settings =
        ClientSettings::new("tickmesh.v1.ConfigService", handle.current().config.clone());
    settings.updates = Some(handle.subscribe());
    let channel = connect(&settings, StaticAddrs::new(vec![addr]), &Shutdown::new()).unwrap();
    let mut client = ConfigServiceClient::new(channel);
    // Threshold 100: five failures leave the circuit closed.
    for _ in 0..5 {
        let err = client.get_config(GetConfigRequest {}).await.unwrap_err();
        assert_eq!(err.message(), "replica is failing on purpose");
    }
    // Threshold 2 from now on (as `UpdateConfig` or a reloaded file would set it).
    let mut next = (*handle.current().config).clone();
    next.circuit_breaker
        .get_or_insert_default()
        .failure_threshold = 2;
    handle.replace(next, "test").unwrap();
    let mut opened = None;
    for attempt in 0..50 {
        let err = client.get_config(GetConfigRequest {}).await.unwrap_err();
        if err.message().contains("is open") {
            opened = Some(attempt);
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        opened.is_some(),
        "the circuit never opened under the new threshold"
    );
    let sent = replica.calls.load(Ordering::SeqCst);
    for _ in 0..5 {
        client.get_config(GetConfigRequest {}).await.unwrap_err();
    }
    assert_eq!(
        replica.calls.load(Ordering::SeqCst),
        sent,
        "an open circuit sends nothing"
    );
}

#[tokio::test]
async fn re_resolution_sends_traffic_to_a_new_replica_and_p2c_spreads_it() {
    let (first, first_addr) = replica().await;
    let (second, second_addr) = replica().await;
    let addrs = StaticAddrs::new(vec![first_addr]);
    let mut client = client(config(1, 100), &addrs);
    for _ in 0..20 {
        client.get_config(GetConfigRequest {}).await.unwrap();
    }
    assert_eq!(first.calls.load(Ordering::SeqCst), 20);
    assert_eq!(second.calls.load(Ordering::SeqCst), 0);

    // A scale-up: the name now resolves to two replicas; within a few intervals both serve.
    addrs.set(vec![first_addr, second_addr]);
    let mut waited = Duration::ZERO;
    while second.calls.load(Ordering::SeqCst) == 0 {
        assert!(
            waited < Duration::from_secs(10),
            "the new replica never got a call"
        );
        client.get_config(GetConfigRequest {}).await.unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
        waited += Duration::from_millis(10);
    }
    let before = (
        first.calls.load(Ordering::SeqCst),
        second.calls.load(Ordering::SeqCst),
    );
    for _ in 0..200 {
        client.get_config(GetConfigRequest {}).await.unwrap();
    }
    let first_share = first.calls.load(Ordering::SeqCst) - before.0;
    let second_share = second.calls.load(Ordering::SeqCst) - before.1;
    assert_eq!(first_share + second_share, 200);
    assert!(
        first_share >= 40 && second_share >= 40,
        "unbalanced: {first_share} / {second_share}"
    );

    // A scale-down: the gone replica stops getting calls.
    addrs.set(vec![second_addr]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let gone_before = first.calls.load(Ordering::SeqCst);
    for _ in 0..50 {
        client.get_config(GetConfigRequest {}).await.unwrap();
    }
    assert_eq!(first.calls.load(Ordering::SeqCst), gone_before);
}

#[tokio::test]
async fn dns_names_resolve_through_the_system_resolver() {
    let (replica, addr) = replica().await;
    let settings = ClientSettings::new("tickmesh.v1.ConfigService", Arc::new(config(1, 100)));
    // "localhost" may also resolve to ::1, where nothing listens; a call that lands there
    // fails to connect, so retry the calls as a real idempotent call would be.
    let channel = connect(
        &settings,
        Dns::new("localhost", addr.port()),
        &Shutdown::new(),
    )
    .unwrap();
    let mut client = ConfigServiceClient::new(channel);
    let mut ok = 0;
    for _ in 0..20 {
        if client.get_config(GetConfigRequest {}).await.is_ok() {
            ok += 1;
        }
    }
    assert!(ok > 0, "no call reached the replica through DNS");
    assert_eq!(replica.calls.load(Ordering::SeqCst), ok);
}

#[tokio::test]
async fn the_server_default_deadline_ends_unary_calls_that_set_none() {
    let state = Arc::new(Replica::default());
    state.delay_ms.store(30_000, Ordering::SeqCst);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tonic::transport::Server::builder()
        .layer(tickmesh_mesh::server::deadline::DefaultDeadlineLayer::new(
            Duration::from_millis(200),
        ))
        .add_service(ConfigServiceServer::new(Fake(state.clone())))
        .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener));
    tokio::spawn(server);
    // A bare tonic client: no client-side deadline of any kind.
    let mut client = ConfigServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let err = client.get_config(GetConfigRequest {}).await.unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded);
    assert!(
        err.message().contains("server.default_timeout"),
        "{}",
        err.message()
    );

    // A caller's own, longer deadline wins over the default: the call is not cut at 200 ms.
    // (Client and server both time it out at 400 ms; whichever is first names the code.)
    let mut request = Request::new(GetConfigRequest {});
    request.set_timeout(Duration::from_millis(400));
    let started = std::time::Instant::now();
    let err = client.get_config(request).await.unwrap_err();
    assert!(
        matches!(err.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{err:?}"
    );
    assert!(
        !err.message().contains("server.default_timeout"),
        "{}",
        err.message()
    );
    assert!(started.elapsed() >= Duration::from_millis(400));
    state.delay_ms.store(0, Ordering::SeqCst);
    client.get_config(GetConfigRequest {}).await.unwrap();
}
