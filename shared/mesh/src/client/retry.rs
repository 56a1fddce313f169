//! Retries of idempotent unary calls that failed with UNAVAILABLE (or reached no replica):
//! tower's `Retry` with [`RetryPolicy`] (exponential backoff with jitter, within a retry
//! budget), over a request whose body was buffered so that it can be sent again.

use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use tickmesh_config::std_duration;
use tonic::body::Body;
use tower::BoxError;
use tower::retry::budget::{Budget, TpsBudget};
use tower::util::MapRequest;
use tracing::debug;

use super::breaker::CircuitOpen;
use super::{BoxFuture, header_code};
use crate::layer::GrpcService;
use crate::methods::Entry;

/// A request body as the retry layer holds it: buffered when the call may be sent again,
/// passed through untouched when it may not.
#[derive(Debug)]
pub enum Buffered {
    /// The whole body of a retryable unary call (one message, bounded by the size limit).
    Bytes(Bytes),
    /// The body of a call that is sent once.
    Once(tonic::body::Body),
}

fn unbuffer(request: http::Request<Buffered>) -> http::Request<tonic::body::Body> {
    request.map(|body| match body {
        Buffered::Bytes(bytes) => tonic::body::Body::new(http_body_util::Full::new(bytes)),
        Buffered::Once(body) => body,
    })
}

/// Random numbers for the jitter of one client stack.
///
/// Why not the clock: clients that failed together read nearly the same time, so their jitter
/// agreed and they retried together. `RandomState`'s SipHash keys come from the operating
/// system's random source (per thread, then stepped for each new state), so every client draws
/// its own sequence by hashing a counter; that is plenty for spreading retries, and needs no
/// `rand` crate.
#[derive(Clone, Debug)]
struct Jitter {
    keys: RandomState,
    draws: Arc<AtomicU64>,
}

impl Jitter {
    fn new() -> Self {
        Self {
            keys: RandomState::new(),
            draws: Arc::default(),
        }
    }

    /// A number in [0, 1).
    fn next(&self) -> f64 {
        let draw = self.draws.fetch_add(1, Ordering::Relaxed);
        // The top 53 bits: exactly what an f64 in [0, 1) can hold.
        (self.keys.hash_one(draw) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// When and how often a failed call is sent again. Tower clones the policy for each call, so
/// `retries` counts the retries of one call, while the budget and the jitter's draws are shared
/// by every call of the client stack.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    max_attempts: u32,
    initial_backoff: Duration,
    max_backoff: Duration,
    multiplier: f64,
    budget: Arc<TpsBudget>,
    jitter: Jitter,
    retries: u32,
    /// Where retries and spent budgets are counted.
    metrics: Option<crate::telemetry::metrics::PeerMetrics>,
}

impl RetryPolicy {
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
            jitter: Jitter::new(),
            retries: 0,
            metrics: None,
        }
    }

    /// The longest wait before retry number `retry` (0 for the first): the initial backoff
    /// grown by the multiplier, capped at the maximum.
    pub fn max_backoff(&self, retry: u32) -> Duration {
        let base = self.initial_backoff.as_secs_f64() * self.multiplier.powi(retry as i32);
        Duration::from_secs_f64(base.min(self.max_backoff.as_secs_f64()))
    }

    /// The wait before retry number `retry`: a random point in [50 %, 100 %] of
    /// [`max_backoff`](Self::max_backoff), so that clients that failed together do not retry
    /// together.
    pub fn backoff(&self, retry: u32) -> Duration {
        self.max_backoff(retry)
            .mul_f64(0.5 + 0.5 * self.jitter.next())
    }
}

impl tower::retry::Policy<http::Request<Buffered>, http::Response<tonic::body::Body>, BoxError>
    for RetryPolicy
{
    type Future = tokio::time::Sleep;

    fn retry(
        &mut self,
        request: &mut http::Request<Buffered>,
        result: &mut Result<http::Response<tonic::body::Body>, BoxError>,
    ) -> Option<Self::Future> {
        if self.retries + 1 >= self.max_attempts {
            return None;
        }
        let transient = match result {
            Ok(response) => {
                response.extensions().get::<CircuitOpen>().is_none()
                    && header_code(response) == Some(tonic::Code::Unavailable)
            }
            // Could not reach the replica: nothing was processed.
            Err(_) => true,
        };
        if !transient {
            return None;
        }
        if !self.budget.withdraw() {
            if let Some(m) = &self.metrics {
                m.budget_exhausted.inc();
            }
            debug!(
                path = request.uri().path(),
                "retry budget spent; not retrying"
            );
            return None;
        }
        let wait = self.backoff(self.retries);
        self.retries += 1;
        if let Some(m) = &self.metrics {
            m.retries.inc();
        }
        Some(tokio::time::sleep(wait))
    }

    fn clone_request(
        &mut self,
        request: &http::Request<Buffered>,
    ) -> Option<http::Request<Buffered>> {
        let Buffered::Bytes(bytes) = request.body() else {
            return None;
        };
        let mut clone = http::Request::new(Buffered::Bytes(bytes.clone()));
        *clone.method_mut() = request.method().clone();
        *clone.uri_mut() = request.uri().clone();
        *clone.version_mut() = request.version();
        *clone.headers_mut() = request.headers().clone();
        *clone.extensions_mut() = request.extensions().clone();
        Some(clone)
    }
}

/// Retries idempotent unary calls as its [`RetryPolicy`] says.
#[derive(Clone, Debug)]
pub struct RetryLayer {
    policy: RetryPolicy,
}

impl RetryLayer {
    /// Retries as `retry` says, within its budget; counted in `metrics` when given.
    pub fn new(
        retry: &tickmesh_proto::v1::RetryConfig,
        metrics: Option<crate::telemetry::metrics::PeerMetrics>,
    ) -> Self {
        let mut policy = RetryPolicy::new(retry);
        policy.metrics = metrics;
        Self { policy }
    }
}

type Unbuffer = fn(http::Request<Buffered>) -> http::Request<tonic::body::Body>;

impl<S> tower::Layer<S> for RetryLayer {
    type Service = Retry<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Retry {
            inner: tower::retry::Retry::new(
                self.policy.clone(),
                MapRequest::new(inner, unbuffer as Unbuffer),
            ),
            policy: self.policy.clone(),
        }
    }
}

/// The service [`RetryLayer`] makes: buffers the body of a retryable call, then hands it to
/// tower's `Retry`.
///
/// Not a [`crate::layer::Layered`]: the service behind takes a buffered body, not the body
/// this one is given.
#[derive(Clone, Debug)]
pub struct Retry<S> {
    inner: tower::retry::Retry<RetryPolicy, MapRequest<S, Unbuffer>>,
    policy: RetryPolicy,
}

impl<S> tower::Service<http::Request<Body>> for Retry<S>
where
    S: GrpcService<Body, Error = BoxError> + Clone + Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = BoxFuture<Result<S::Response, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        // Every call earns the budget its share, retried or not.
        self.policy.budget.deposit();
        if !Entry::of(&request).retryable() || self.policy.max_attempts <= 1 {
            return Box::pin(self.inner.call(request.map(Buffered::Once)));
        }
        // The service that was made ready takes the call once its body is buffered.
        let ready = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, ready);
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            let bytes = body.collect().await?.to_bytes();
            inner
                .call(http::Request::from_parts(parts, Buffered::Bytes(bytes)))
                .await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tickmesh_proto::v1::RetryConfig;

    fn config() -> RetryConfig {
        RetryConfig {
            max_attempts: 5,
            initial_backoff: Some(prost_types::Duration {
                seconds: 0,
                nanos: 10_000_000,
            }),
            max_backoff: Some(prost_types::Duration {
                seconds: 0,
                nanos: 200_000_000,
            }),
            backoff_multiplier: 2.0,
            budget_ratio: 0.1,
            budget_min_per_second: 1,
        }
    }

    #[test]
    fn two_clients_back_off_differently_within_the_bounds() {
        // Two client stacks built at the same instant, as after a shared failure.
        let (one, two) = (RetryPolicy::new(&config()), RetryPolicy::new(&config()));
        let draws = |policy: &RetryPolicy| -> Vec<Duration> {
            (0..4)
                .cycle()
                .take(32)
                .map(|retry| policy.backoff(retry))
                .collect()
        };
        let (first, second) = (draws(&one), draws(&two));
        assert_ne!(first, second, "two clients drew the same backoffs");
        let same = first.iter().zip(&second).filter(|(a, b)| a == b).count();
        assert!(same <= 1, "{same} of 32 backoffs equal between the clients");
        for (i, wait) in first.iter().chain(&second).enumerate() {
            let cap = one.max_backoff(i as u32 % 4);
            assert!(
                // A nanosecond of slack for the float rounding of `mul_f64`.
                *wait + Duration::from_nanos(1) >= cap / 2 && *wait <= cap,
                "backoff {wait:?} outside [{:?}, {cap:?}]",
                cap / 2
            );
        }
        // One client's own draws vary too: the old jitter was nearly constant in a process.
        let firsts: std::collections::HashSet<_> = (0..16).map(|_| one.backoff(0)).collect();
        assert!(
            firsts.len() > 8,
            "only {} distinct first backoffs",
            firsts.len()
        );
    }

    #[test]
    fn backoff_grows_by_the_multiplier_up_to_the_cap() {
        let policy = RetryPolicy::new(&config());
        let millis = |retry| policy.max_backoff(retry).as_secs_f64() * 1000.0;
        for (retry, expected) in [(0, 10.0), (1, 20.0), (4, 160.0), (5, 200.0), (30, 200.0)] {
            let got = millis(retry);
            assert!((got - expected).abs() < 1e-6, "retry {retry}: {got} ms");
        }
    }
}
