//! The tower plumbing every hand-written layer of both stacks shares, written once: a layer is
//! a value (its settings and shared state) that says what it does with each call
//! ([`OnCall`]); [`Layered`] puts it in front of the service it wraps, waits for that service to
//! be ready and hands it each call.

use std::future::Future;
use std::task::{Context, Poll};

/// A gRPC service whose calls a layer may box or wait on in another task: it answers with a
/// gRPC response, and its calls and errors are `Send + 'static`.
pub trait GrpcService<B>:
    tower::Service<
        http::Request<B>,
        Response = http::Response<tonic::body::Body>,
        Future: Send + 'static,
        Error: Send + 'static,
    >
{
}

impl<S, B> GrpcService<B> for S where
    S: tower::Service<
            http::Request<B>,
            Response = http::Response<tonic::body::Body>,
            Future: Send + 'static,
            Error: Send + 'static,
        >
{
}

/// What a layer does with one call, given the service behind it (ready to take the call).
pub trait OnCall<S, B>
where
    S: tower::Service<http::Request<B>>,
{
    /// The call's outcome, as the service behind answers it or as the layer does.
    type Future: Future<Output = Result<S::Response, S::Error>>;

    /// Handles `request`: passes it on to `inner`, changed or not, or answers it.
    fn call(&self, inner: &mut S, request: http::Request<B>) -> Self::Future;
}

/// The service a layer `L` makes in front of `S`.
#[derive(Clone, Debug)]
pub struct Layered<L, S> {
    layer: L,
    inner: S,
}

impl<L, S> Layered<L, S> {
    /// `layer` in front of `inner`.
    pub fn new(layer: L, inner: S) -> Self {
        Self { layer, inner }
    }
}

impl<L, S, B> tower::Service<http::Request<B>> for Layered<L, S>
where
    S: tower::Service<http::Request<B>>,
    L: OnCall<S, B>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = L::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        self.layer.call(&mut self.inner, request)
    }
}
