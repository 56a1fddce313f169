//! The client-side default deadline: unary calls without one get `server.default_timeout`, sent
//! as `grpc-timeout` so that the peer stops working on it too.
//! Hand-written: tower's `Timeout` neither sends `grpc-timeout` nor answers with a status (its
//! `Elapsed` error would reach the caller as UNKNOWN), and it would cut streams too.

use std::time::Duration;

use tonic::body::Body;
use tower::BoxError;

use super::BoxFuture;
use crate::layer::{GrpcService, Layered, OnCall};
use crate::methods::Entry;
use crate::status::Refusal;

/// Gives unary calls without a deadline the default one.
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
    type Service = Layered<Self, S>;

    fn layer(&self, inner: S) -> Self::Service {
        Layered::new(self.clone(), inner)
    }
}

impl<S: GrpcService<Body, Error = BoxError>> OnCall<S, Body> for DeadlineLayer {
    type Future = BoxFuture<Result<S::Response, BoxError>>;

    fn call(&self, inner: &mut S, mut request: http::Request<Body>) -> Self::Future {
        let unary = Entry::of(&request).unary();
        if self.timeout.is_zero() || !unary || request.headers().contains_key("grpc-timeout") {
            return Box::pin(inner.call(request));
        }
        let timeout = self.timeout;
        if let Ok(value) = http::HeaderValue::from_str(&format!("{}m", timeout.as_millis())) {
            request.headers_mut().insert("grpc-timeout", value);
        }
        let call = inner.call(request);
        Box::pin(async move {
            match tokio::time::timeout(timeout, call).await {
                Ok(result) => result,
                Err(_) => Ok(Refusal::ClientDeadline { timeout }.into_http()),
            }
        })
    }
}
