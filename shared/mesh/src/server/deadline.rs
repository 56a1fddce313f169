//! The server-side default deadline. A caller's `grpc-timeout` is honoured by tonic itself
//! (DEADLINE_EXCEEDED when it passes); a unary call that sets none gets `server.default_timeout`
//! instead, so no call can hold a slot forever. Streams are left alone: a long `IngestTicks`
//! or a live subscription is not a stuck call.
//! Hand-written: tower's `Timeout` fails the call with an error (tonic would report UNKNOWN)
//! and applies to every call, streams included.

use std::future::Future;
use std::pin::Pin;

use futures_util::future::Either;
use std::time::Duration;

use crate::layer::{GrpcService, Layered, OnCall};
use crate::methods::Entry;
use crate::status::Refusal;

/// Applies a default deadline to unary calls without one.
#[derive(Clone, Debug)]
pub struct DefaultDeadlineLayer {
    timeout: Duration,
}

impl DefaultDeadlineLayer {
    /// Unary calls without `grpc-timeout` end after `timeout` (zero: no default).
    pub fn new(timeout: Duration) -> Self {
        Self { timeout }
    }
}

impl<S> tower::Layer<S> for DefaultDeadlineLayer {
    type Service = Layered<Self, S>;

    fn layer(&self, inner: S) -> Self::Service {
        Layered::new(self.clone(), inner)
    }
}

impl<S: GrpcService<B>, B> OnCall<S, B> for DefaultDeadlineLayer {
    // The inner call as it is when the caller set a deadline, else boxed with the default.
    type Future =
        Either<S::Future, Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>>;

    fn call(&self, inner: &mut S, request: http::Request<B>) -> Self::Future {
        let unary = Entry::of(&request).unary();
        if self.timeout.is_zero() || !unary || request.headers().contains_key("grpc-timeout") {
            return Either::Left(inner.call(request));
        }
        let timeout = self.timeout;
        let call = inner.call(request);
        Either::Right(Box::pin(async move {
            match tokio::time::timeout(timeout, call).await {
                Ok(response) => response,
                Err(_) => Ok(Refusal::ServerDeadline { timeout }.into_http()),
            }
        }))
    }
}
