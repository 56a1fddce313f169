//! A circuit breaker per peer: after `circuit_breaker.failure_threshold` failures in a row the
//! circuit opens and calls fail fast with UNAVAILABLE (and a `RetryInfo` saying when the next
//! probe goes) until a probe succeeds.
//! Hand-written: tower ships no circuit breaker; the state machine is
//! `tickmesh_resilience::CircuitBreaker`, shared with the cache and replay.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use tickmesh_resilience::breaker::{BreakerState, CircuitBreaker};
use tonic::body::Body;
use tower::BoxError;

use super::{BoxFuture, header_code};
use crate::layer::{GrpcService, Layered, OnCall};
use crate::status::Refusal;

/// Marks a response the breaker produced itself, so that retries leave it alone.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CircuitOpen;

/// Fails calls fast while a peer keeps failing.
#[derive(Clone, Debug)]
pub struct BreakerLayer {
    peer: Arc<str>,
    pub(crate) breaker: Arc<Mutex<CircuitBreaker>>,
    metrics: Option<crate::telemetry::metrics::PeerMetrics>,
    /// The state last exported (0 closed, 1 half-open, 2 open), to count transitions.
    exported: Arc<std::sync::atomic::AtomicI64>,
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
            metrics: metrics.map(|m| m.peer(peer)),
            exported: Arc::new(std::sync::atomic::AtomicI64::new(0)),
        }
    }

    /// The breaker's state now (for metrics and tests).
    pub fn state(&self) -> BreakerState {
        self.breaker
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .state()
    }

    fn export(&self, state: BreakerState) {
        let Some(metrics) = &self.metrics else {
            return;
        };
        let (value, name) = match state {
            BreakerState::Closed => (0, "closed"),
            BreakerState::HalfOpen { .. } => (1, "half_open"),
            BreakerState::Open { .. } => (2, "open"),
        };
        // Called under the breaker's lock: the swap sees every change once.
        let before = self
            .exported
            .swap(value, std::sync::atomic::Ordering::Relaxed);
        if before != value {
            metrics.breaker_entered(name, value);
        }
    }
}

impl<S> tower::Layer<S> for BreakerLayer {
    type Service = Layered<Self, S>;

    fn layer(&self, inner: S) -> Self::Service {
        Layered::new(self.clone(), inner)
    }
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

impl<S: GrpcService<Body, Error = BoxError>> OnCall<S, Body> for BreakerLayer {
    type Future = BoxFuture<Result<S::Response, BoxError>>;

    fn call(&self, inner: &mut S, request: http::Request<Body>) -> Self::Future {
        let admitted = {
            let mut breaker = self.breaker.lock().unwrap_or_else(|e| e.into_inner());
            let admitted = breaker.admit(Instant::now());
            self.export(breaker.state());
            admitted
        };
        if let Err(retry_after) = admitted {
            let mut response = Refusal::BreakerOpen {
                peer: self.peer.clone(),
                retry_after,
            }
            .into_http();
            response.extensions_mut().insert(CircuitOpen);
            return Box::pin(std::future::ready(Ok(response)));
        }
        let layer = self.clone();
        let call = inner.call(request);
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
