//! The client stack: how one tickmesh service calls another.
//!
//! Outermost first: a client span whose context goes out as `traceparent`; retries of
//! idempotent unary calls on UNAVAILABLE, with exponential backoff and a retry budget; a circuit
//! breaker per peer; the default deadline; then power-of-two-choices balancing (least pending
//! requests of two random replicas) over the addresses the peer's host name resolves to,
//! re-resolved every `discovery.resolve_interval` so that new pods get traffic. A headless
//! Kubernetes service resolves to one address per pod.

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use tickmesh_config::std_duration;
use tickmesh_proto::v1::PerformanceOptimizationConfig;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tower::balance::p2c::Balance;
use tower::buffer::Buffer;
use tower::discover::Change;
use tower::load::{CompleteOnResponse, PendingRequestsDiscover};
use tower::retry::budget::{Budget, TpsBudget};
use tower::util::BoxCloneSyncService;
use tower::{BoxError, ServiceBuilder, ServiceExt};
use tracing::{debug, info, warn};

use crate::Shutdown;
use crate::breaker::{BreakerState, CircuitBreaker};
use crate::methods::MethodTable;
use crate::trace::ClientTraceLayer;

/// A channel to a peer service with the whole client stack; hand it to a generated client
/// (`QueryServiceClient::new(channel)`).
pub type MeshChannel = BoxCloneSyncService<
    http::Request<tonic::body::Body>,
    http::Response<tonic::body::Body>,
    CallError,
>;

/// Why a call through a [`MeshChannel`] produced no response (tonic turns it into a status by
/// looking through its sources: a transport failure becomes UNAVAILABLE).
#[derive(Debug)]
pub struct CallError(BoxError);

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for CallError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}

/// Where the addresses of a peer's replicas come from.
pub trait Resolve: Send + Sync + 'static {
    /// The current addresses.
    fn resolve(
        &self,
    ) -> Pin<Box<dyn Future<Output = std::io::Result<Vec<SocketAddr>>> + Send + '_>>;
}

/// Resolution of `host:port` through the system resolver (DNS; `/etc/hosts`).
#[derive(Debug, Clone)]
pub struct Dns {
    host: String,
    port: u16,
}

impl Dns {
    /// Resolves `host` and serves on `port`.
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        Self {
            host: host.into(),
            port,
        }
    }
}

impl Resolve for Dns {
    fn resolve(
        &self,
    ) -> Pin<Box<dyn Future<Output = std::io::Result<Vec<SocketAddr>>> + Send + '_>> {
        Box::pin(async move {
            let mut addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((self.host.as_str(), self.port))
                    .await?
                    .collect();
            addrs.sort();
            addrs.dedup();
            Ok(addrs)
        })
    }
}

/// A fixed set of addresses that can be changed at run time (tests, static peers).
#[derive(Debug, Clone, Default)]
pub struct StaticAddrs(Arc<Mutex<Vec<SocketAddr>>>);

impl StaticAddrs {
    /// Starts with `addrs`.
    pub fn new(addrs: Vec<SocketAddr>) -> Self {
        Self(Arc::new(Mutex::new(addrs)))
    }

    /// Replaces the addresses; the next resolution sees them.
    pub fn set(&self, addrs: Vec<SocketAddr>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = addrs;
    }
}

impl Resolve for StaticAddrs {
    fn resolve(
        &self,
    ) -> Pin<Box<dyn Future<Output = std::io::Result<Vec<SocketAddr>>> + Send + '_>> {
        let addrs = self.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
        Box::pin(std::future::ready(Ok(addrs)))
    }
}

/// Settings of one client stack, from the configuration.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    /// Name of the peer in logs and breaker messages (e.g. `tickmesh.v1.ComputationService`).
    pub peer: String,
    /// Host name the peer's certificate must carry (default: `tls.server_name`, else
    /// `localhost`).
    pub server_name: Option<String>,
    /// Where the breaker's state is exported (`tickmesh_circuit_state{peer}`).
    pub metrics: Option<crate::Metrics>,
    /// Configuration changes (`ConfigHandle::subscribe`): the breaker's thresholds follow them.
    pub updates: Option<tokio::sync::watch::Receiver<crate::ConfigSnapshot>>,
    config: Arc<PerformanceOptimizationConfig>,
}

impl ClientSettings {
    /// Settings for calls to `peer` under `config`.
    pub fn new(peer: impl Into<String>, config: Arc<PerformanceOptimizationConfig>) -> Self {
        Self {
            peer: peer.into(),
            server_name: None,
            metrics: None,
            updates: None,
            config,
        }
    }

    /// The client side of `tls`: `None` (plaintext) unless `ca_file` is set; this process's
    /// certificate goes along when `cert_file` and `key_file` are set (mTLS).
    pub fn tls(&self) -> Result<Option<ClientTlsConfig>, crate::ServeError> {
        let tls = self.config.tls.clone().unwrap_or_default();
        if tls.ca_file.is_empty() {
            return Ok(None);
        }
        let name = self
            .server_name
            .clone()
            .or_else(|| (!tls.server_name.is_empty()).then(|| tls.server_name.clone()))
            .unwrap_or_else(|| "localhost".to_owned());
        let mut config = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(crate::serve::read_pem(
                "tls.ca_file",
                &tls.ca_file,
            )?))
            .domain_name(name);
        if !tls.cert_file.is_empty() && !tls.key_file.is_empty() {
            config = config.identity(Identity::from_pem(
                crate::serve::read_pem("tls.cert_file", &tls.cert_file)?,
                crate::serve::read_pem("tls.key_file", &tls.key_file)?,
            ));
        }
        Ok(Some(config))
    }
}

/// Builds the client stack to a peer whose replicas `resolver` finds. The resolver task stops
/// on `shutdown` or when every clone of the channel is gone.
///
/// Fails only when TLS is configured and its files cannot be read.
pub fn connect(
    settings: &ClientSettings,
    resolver: impl Resolve,
    shutdown: &Shutdown,
) -> Result<MeshChannel, crate::ServeError> {
    let tls = settings.tls()?;
    let config = &settings.config;
    let interval = std_duration(
        config
            .discovery
            .as_ref()
            .and_then(|d| d.resolve_interval.as_ref()),
    )
    .max(Duration::from_millis(10));
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(resolve_loop(
        settings.peer.clone(),
        resolver,
        interval,
        tls,
        tx,
        shutdown.clone(),
    ));
    let discover = PendingRequestsDiscover::new(
        ReceiverStream::new(rx).map(Ok::<_, Infallible>),
        CompleteOnResponse::default(),
    );
    let balanced = Buffer::new(Balance::new(discover), 1024);

    let retry = config.retry.unwrap_or_default();
    let breaker = config.circuit_breaker.unwrap_or_default();
    let server = config.server.unwrap_or_default();
    let breaker = BreakerLayer::new(&settings.peer, &breaker, settings.metrics.as_ref());
    if let Some(updates) = settings.updates.clone() {
        tokio::spawn(follow_breaker_config(
            updates,
            breaker.breaker.clone(),
            shutdown.clone(),
        ));
    }
    let stack = ServiceBuilder::new()
        .layer(ClientTraceLayer)
        .layer(RetryLayer::new(&retry))
        .layer(breaker)
        .layer(DeadlineLayer::new(std_duration(
            server.default_timeout.as_ref(),
        )))
        .service(balanced)
        .map_err(CallError);
    Ok(BoxCloneSyncService::new(stack))
}

/// Applies every configuration change to `breaker`'s thresholds until `shutdown`.
async fn follow_breaker_config(
    mut updates: tokio::sync::watch::Receiver<crate::ConfigSnapshot>,
    breaker: Arc<Mutex<CircuitBreaker>>,
    shutdown: Shutdown,
) {
    loop {
        tokio::select! {
            () = shutdown.wait() => return,
            changed = updates.changed() => if changed.is_err() { return },
        }
        let config = updates
            .borrow_and_update()
            .config
            .circuit_breaker
            .unwrap_or_default();
        breaker
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .reconfigure(&config);
    }
}

async fn resolve_loop(
    peer: String,
    resolver: impl Resolve,
    interval: Duration,
    tls: Option<ClientTlsConfig>,
    tx: mpsc::Sender<Change<SocketAddr, Channel>>,
    shutdown: Shutdown,
) {
    let mut current: HashSet<SocketAddr> = HashSet::new();
    loop {
        match resolver.resolve().await {
            Ok(addrs) => {
                let next: HashSet<SocketAddr> = addrs.into_iter().collect();
                if next.is_empty() {
                    warn!(peer, "no address resolved; keeping the known replicas");
                } else {
                    for gone in current.difference(&next) {
                        info!(peer, addr = %gone, "replica gone");
                        if tx.send(Change::Remove(*gone)).await.is_err() {
                            return;
                        }
                    }
                    for new in next.difference(&current) {
                        let scheme = if tls.is_some() { "https" } else { "http" };
                        let Ok(mut endpoint) = Endpoint::from_shared(format!("{scheme}://{new}"))
                        else {
                            continue;
                        };
                        if let Some(tls) = &tls {
                            match endpoint.tls_config(tls.clone()) {
                                Ok(with_tls) => endpoint = with_tls,
                                Err(e) => {
                                    warn!(peer, error = %e, "TLS settings rejected");
                                    continue;
                                }
                            }
                        }
                        let channel = endpoint
                            .connect_timeout(Duration::from_secs(1))
                            .tcp_nodelay(true)
                            .connect_lazy();
                        info!(peer, addr = %new, "replica added");
                        if tx.send(Change::Insert(*new, channel)).await.is_err() {
                            return;
                        }
                    }
                    current = next;
                }
            }
            Err(e) => {
                warn!(peer, error = %e, "resolving the peer failed; keeping the known replicas")
            }
        }
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = tx.closed() => return,
            () = shutdown.wait() => return,
        }
    }
}

/// The gRPC status code of a response whose status is in its headers (a trailers-only error).
fn header_code(response: &http::Response<tonic::body::Body>) -> Option<tonic::Code> {
    let code = response
        .headers()
        .get("grpc-status")?
        .to_str()
        .ok()?
        .parse::<i32>()
        .ok()?;
    Some(tonic::Code::from_i32(code))
}

/// Marks a response the breaker produced itself, so that retries leave it alone.
#[derive(Debug, Clone, Copy)]
struct CircuitOpen;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Retries idempotent unary calls that failed with UNAVAILABLE (or could not reach a replica).
#[derive(Clone)]
pub struct RetryLayer {
    max_attempts: u32,
    initial_backoff: Duration,
    max_backoff: Duration,
    multiplier: f64,
    budget: Arc<TpsBudget>,
}

impl std::fmt::Debug for RetryLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetryLayer")
            .field("max_attempts", &self.max_attempts)
            .finish()
    }
}

impl RetryLayer {
    /// Retries as `retry` says, within its budget.
    pub fn new(retry: &tickmesh_proto::v1::RetryConfig) -> Self {
        Self {
            max_attempts: retry.max_attempts.max(1),
            initial_backoff: std_duration(retry.initial_backoff.as_ref()),
            max_backoff: std_duration(retry.max_backoff.as_ref()),
            multiplier: retry.backoff_multiplier.max(1.0),
            budget: Arc::new(TpsBudget::new(
                Duration::from_secs(10),
                retry.budget_min_per_second,
                retry.budget_ratio.clamp(0.0, 1000.0) as f32,
            )),
        }
    }

    fn backoff(&self, retry: u32) -> Duration {
        let base = self.initial_backoff.as_secs_f64() * self.multiplier.powi(retry as i32);
        let capped = base.min(self.max_backoff.as_secs_f64());
        // Jitter in [50 %, 100 %] so that clients that failed together do not retry together.
        let nanos = Instant::now().elapsed().subsec_nanos() ^ std::process::id();
        let jitter = 0.5 + f64::from(nanos % 1000) / 2000.0;
        Duration::from_secs_f64(capped * jitter)
    }
}

impl<S> tower::Layer<S> for RetryLayer {
    type Service = Retry<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Retry {
            inner,
            policy: self.clone(),
        }
    }
}

/// The service [`RetryLayer`] makes.
#[derive(Clone, Debug)]
pub struct Retry<S> {
    inner: S,
    policy: RetryLayer,
}

impl<S> tower::Service<http::Request<tonic::body::Body>> for Retry<S>
where
    S: tower::Service<
            http::Request<tonic::body::Body>,
            Response = http::Response<tonic::body::Body>,
            Error = BoxError,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = BoxFuture<Result<S::Response, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let retriable = MethodTable::global()
            .get(request.uri().path())
            .is_some_and(|m| m.unary && m.idempotent);
        let policy = self.policy.clone();
        policy.budget.deposit();
        if !retriable || policy.max_attempts <= 1 {
            return Box::pin(self.inner.call(request));
        }
        // The service that was made ready is used for the first attempt; later attempts wait
        // for readiness of a clone.
        let ready = self.inner.clone();
        let mut first = std::mem::replace(&mut self.inner, ready);
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            // A unary request body is one message, bounded by the message size limit.
            let bytes = body.collect().await?.to_bytes();
            let attempt = |parts: &http::request::Parts| {
                let mut request = http::Request::from_parts(
                    parts.clone(),
                    tonic::body::Body::new(http_body_util::Full::new(bytes.clone())),
                );
                *request.extensions_mut() = parts.extensions.clone();
                request
            };
            let mut result = first.call(attempt(&parts)).await;
            for retry in 0..policy.max_attempts - 1 {
                let transient = match &result {
                    Ok(response) => {
                        response.extensions().get::<CircuitOpen>().is_none()
                            && header_code(response) == Some(tonic::Code::Unavailable)
                    }
                    // Could not reach the replica: nothing was processed.
                    Err(_) => true,
                };
                if !transient {
                    break;
                }
                if !policy.budget.withdraw() {
                    debug!(path = parts.uri.path(), "retry budget spent; not retrying");
                    break;
                }
                tokio::time::sleep(policy.backoff(retry)).await;
                let mut service = first.clone();
                std::future::poll_fn(|cx| service.poll_ready(cx)).await?;
                result = service.call(attempt(&parts)).await;
            }
            result
        })
    }
}

/// Fails calls fast while a peer keeps failing.
#[derive(Clone, Debug)]
pub struct BreakerLayer {
    peer: Arc<str>,
    breaker: Arc<Mutex<CircuitBreaker>>,
    gauge: Option<prometheus_client::metrics::gauge::Gauge>,
}

impl BreakerLayer {
    /// A breaker in front of `peer`, its state exported to `metrics` when given.
    pub fn new(
        peer: &str,
        config: &tickmesh_proto::v1::CircuitBreakerConfig,
        metrics: Option<&crate::Metrics>,
    ) -> Self {
        Self {
            peer: Arc::from(peer),
            breaker: Arc::new(Mutex::new(CircuitBreaker::new(peer, config))),
            gauge: metrics.map(|m| m.circuit_state(peer)),
        }
    }

    fn export(&self, state: BreakerState) {
        if let Some(gauge) = &self.gauge {
            gauge.set(match state {
                BreakerState::Closed => 0,
                BreakerState::HalfOpen { .. } => 1,
                BreakerState::Open { .. } => 2,
            });
        }
    }
}

impl<S> tower::Layer<S> for BreakerLayer {
    type Service = Breaker<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Breaker {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service [`BreakerLayer`] makes.
#[derive(Clone, Debug)]
pub struct Breaker<S> {
    inner: S,
    layer: BreakerLayer,
}

/// Codes that say the peer (not the request) is in trouble.
fn is_peer_failure(code: tonic::Code) -> bool {
    matches!(
        code,
        tonic::Code::Unavailable
            | tonic::Code::DeadlineExceeded
            | tonic::Code::Internal
            | tonic::Code::Unknown
            | tonic::Code::DataLoss
    )
}

impl<S> tower::Service<http::Request<tonic::body::Body>> for Breaker<S>
where
    S: tower::Service<
            http::Request<tonic::body::Body>,
            Response = http::Response<tonic::body::Body>,
            Error = BoxError,
        >,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = BoxFuture<Result<S::Response, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let admitted = {
            let mut breaker = self.layer.breaker.lock().unwrap_or_else(|e| e.into_inner());
            let admitted = breaker.admit(Instant::now());
            self.layer.export(breaker.state());
            admitted
        };
        if let Err(wait) = admitted {
            let mut response = tonic::Status::unavailable(format!(
                "circuit to {} is open; next probe in {} ms",
                self.layer.peer,
                wait.as_millis()
            ))
            .into_http();
            response.extensions_mut().insert(CircuitOpen);
            return Box::pin(std::future::ready(Ok(response)));
        }
        let layer = self.layer.clone();
        let call = self.inner.call(request);
        Box::pin(async move {
            let result = call.await;
            let failed = match &result {
                Ok(response) => header_code(response).is_some_and(is_peer_failure),
                Err(_) => true,
            };
            let mut breaker = layer.breaker.lock().unwrap_or_else(|e| e.into_inner());
            if failed {
                breaker.failure(Instant::now());
            } else {
                breaker.success();
            }
            layer.export(breaker.state());
            result
        })
    }
}

impl BreakerLayer {
    /// The breaker's state now (for metrics and tests).
    pub fn state(&self) -> BreakerState {
        self.breaker
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .state()
    }
}

/// Gives unary calls without a deadline the default one, sent as `grpc-timeout` so that the
/// peer stops working on it too.
#[derive(Clone, Debug)]
pub struct DeadlineLayer {
    timeout: Duration,
}

impl DeadlineLayer {
    /// Unary calls without a deadline get `timeout` (zero: none).
    pub fn new(timeout: Duration) -> Self {
        Self { timeout }
    }
}

impl<S> tower::Layer<S> for DeadlineLayer {
    type Service = Deadline<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Deadline {
            inner,
            timeout: self.timeout,
        }
    }
}

/// The service [`DeadlineLayer`] makes.
#[derive(Clone, Debug)]
pub struct Deadline<S> {
    inner: S,
    timeout: Duration,
}

impl<S> tower::Service<http::Request<tonic::body::Body>> for Deadline<S>
where
    S: tower::Service<
            http::Request<tonic::body::Body>,
            Response = http::Response<tonic::body::Body>,
            Error = BoxError,
        >,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = BoxFuture<Result<S::Response, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<tonic::body::Body>) -> Self::Future {
        let unary = MethodTable::global()
            .get(request.uri().path())
            .is_some_and(|m| m.unary);
        if self.timeout.is_zero() || !unary || request.headers().contains_key("grpc-timeout") {
            return Box::pin(self.inner.call(request));
        }
        let timeout = self.timeout;
        if let Ok(value) = http::HeaderValue::from_str(&format!("{}m", timeout.as_millis())) {
            request.headers_mut().insert("grpc-timeout", value);
        }
        let call = self.inner.call(request);
        Box::pin(async move {
            match tokio::time::timeout(timeout, call).await {
                Ok(result) => result,
                Err(_) => Ok(tonic::Status::deadline_exceeded(format!(
                    "no answer within the default deadline of {timeout:?}"
                ))
                .into_http()),
            }
        })
    }
}

/// Addresses by peer, for a process that knows its peers statically (`tickmesh up`).
pub type StaticPeers = HashMap<String, StaticAddrs>;
