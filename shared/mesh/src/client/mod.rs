//! The client stack: how one tickmesh service calls another.
//!
//! Outermost first: the request is classified once ([`crate::methods::ClassifyLayer`]); a
//! client span whose context goes out as `traceparent`; retries of idempotent unary calls on
//! UNAVAILABLE, with jittered exponential backoff and a retry budget ([`retry`]); a circuit
//! breaker per peer ([`breaker`]); the default deadline ([`deadline`]); then
//! power-of-two-choices balancing over the addresses the peer's host name resolves to,
//! re-resolved every `discovery.resolve_interval` so that new pods get traffic ([`balance`],
//! [`resolve`]).

pub mod balance;
pub mod breaker;
pub mod deadline;
pub mod resolve;
pub mod retry;

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tickmesh_config::std_duration;
use tickmesh_proto::v1::PerformanceOptimizationConfig;
use tickmesh_resilience::breaker::CircuitBreaker;
use tonic::transport::ClientTlsConfig;
use tower::util::BoxCloneSyncService;
use tower::{BoxError, ServiceBuilder, ServiceExt};

use crate::Shutdown;
use crate::methods::ClassifyLayer;
use crate::telemetry::trace::ClientTraceLayer;
use breaker::BreakerLayer;
use deadline::DeadlineLayer;
use retry::RetryLayer;

pub use resolve::{Dns, Resolve, StaticAddrs, StaticPeers};

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

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

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

/// Settings of one client stack, from the configuration.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    /// Name of the peer in logs and breaker messages (e.g. `tickmesh.v1.ComputationService`).
    pub peer: String,
    /// Host name the peer's certificate must carry (default: `tls.server_name`, else
    /// `localhost`).
    pub server_name: Option<String>,
    /// Where the stack's metrics go: call durations, retries, spent budgets, breaker state and
    /// transitions (`rpc_client_call_duration_seconds`, `tickmesh_client_*{peer}`).
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
        crate::tls::client_config(
            &self.config.tls.clone().unwrap_or_default(),
            self.server_name.as_deref(),
        )
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
    let balanced = balance::balanced(
        settings.peer.clone(),
        resolver,
        interval,
        tls,
        shutdown.clone(),
    );

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
    let peer_metrics = settings.metrics.as_ref().map(|m| m.peer(&settings.peer));
    let measured = settings.metrics.as_ref().map(crate::Metrics::client_layer);
    let stack = ServiceBuilder::new()
        .layer(ClassifyLayer)
        .layer(ClientTraceLayer)
        .option_layer(measured)
        .layer(RetryLayer::new(&retry, peer_metrics))
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
