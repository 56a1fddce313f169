//! Distributed tracing of gRPC calls.
//!
//! Server side, [`ServerTraceLayer`] opens one span per RPC with the standard RPC attributes
//! (`rpc.system`, `rpc.service`, `rpc.method`, `rpc.grpc.status_code`) whose parent is the W3C
//! `traceparent`/`tracestate` of the incoming metadata. Client side, [`ClientTraceLayer`] opens a
//! client span and writes its context into the outgoing metadata, so one user call that crosses
//! services is one trace. Spans go to OTLP when [`super::logging`] installed an exporter, and
//! cost next to nothing when it did not.
//! Hand-written: tower-http's trace layer knows neither W3C propagation nor the RPC attributes.

use std::future::Future;
use std::pin::Pin;

use futures_util::future::Either;
use opentelemetry::propagation::{Extractor, Injector};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::layer::{GrpcService, Layered, OnCall};
use crate::methods::Entry;

/// Target of the per-RPC spans. They go to OTLP; the log output leaves them out unless the log
/// filter asks for them (`--log info,tickmesh_rpc=info`), so a busy server does not pay for
/// formatting a span per call.
pub const RPC_TARGET: &str = "tickmesh_rpc";

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

struct HeaderInjector<'a>(&'a mut http::HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(key.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

/// `(service, method)` of a gRPC request path.
fn rpc_names(path: &str) -> (&str, &str) {
    let path = path.trim_start_matches('/');
    path.split_once('/').unwrap_or((path, ""))
}

/// The gRPC status code a response carries in its headers (trailers-only responses; a
/// response that streams a body reports OK here).
fn status_code(response: &http::Response<tonic::body::Body>) -> i64 {
    response
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn record_status(span: &tracing::Span, code: i64) {
    span.record("rpc.grpc.status_code", code);
    if code != 0 {
        span.record("otel.status_code", "ERROR");
    }
}

/// One server span per RPC, child of the caller's trace context.
#[derive(Clone, Copy, Debug, Default)]
pub struct ServerTraceLayer;

impl<S> tower::Layer<S> for ServerTraceLayer {
    type Service = Layered<Self, S>;

    fn layer(&self, inner: S) -> Self::Service {
        Layered::new(*self, inner)
    }
}

impl<S: GrpcService<B>, B> OnCall<S, B> for ServerTraceLayer {
    // The inner call as it is when nobody records the span, else boxed with it.
    type Future =
        Either<S::Future, Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>>;

    fn call(&self, inner: &mut S, request: http::Request<B>) -> Self::Future {
        let path = request.uri().path();
        // Probes and reflection would drown the real traffic.
        if Entry::of(&request).open {
            return Either::Left(inner.call(request));
        }
        let (service, method) = rpc_names(path);
        let span = tracing::info_span!(
            target: RPC_TARGET,
            "grpc.server",
            otel.name = %path.trim_start_matches('/'),
            otel.kind = "server",
            otel.status_code = tracing::field::Empty,
            rpc.system = "grpc",
            rpc.service = %service,
            rpc.method = %method,
            rpc.grpc.status_code = tracing::field::Empty,
        );
        // Nobody records RPC spans (no OTLP, and the log filter leaves them out).
        if span.is_disabled() {
            return Either::Left(inner.call(request));
        }
        let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
            propagator.extract(&HeaderExtractor(request.headers()))
        });
        // Fails only when no OpenTelemetry layer is installed: then there is nothing to link.
        let _ = span.set_parent(parent);
        let call = inner.call(request).instrument(span.clone());
        Either::Right(Box::pin(async move {
            let response = call.await;
            if let Ok(response) = &response {
                record_status(&span, status_code(response));
            }
            response
        }))
    }
}

/// One client span per outgoing RPC; its context goes out as `traceparent` metadata.
#[derive(Clone, Copy, Debug, Default)]
pub struct ClientTraceLayer;

impl<S> tower::Layer<S> for ClientTraceLayer {
    type Service = Layered<Self, S>;

    fn layer(&self, inner: S) -> Self::Service {
        Layered::new(*self, inner)
    }
}

impl<S: GrpcService<B>, B> OnCall<S, B> for ClientTraceLayer {
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn call(&self, inner: &mut S, mut request: http::Request<B>) -> Self::Future {
        let path = request.uri().path().to_owned();
        let (service, method) = rpc_names(&path);
        let span = tracing::info_span!(
            target: RPC_TARGET,
            "grpc.client",
            otel.name = %path.trim_start_matches('/'),
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
            rpc.system = "grpc",
            rpc.service = %service,
            rpc.method = %method,
            rpc.grpc.status_code = tracing::field::Empty,
        );
        let context = span.context();
        opentelemetry::global::get_text_map_propagator(|propagator| {
            propagator.inject_context(&context, &mut HeaderInjector(request.headers_mut()));
        });
        let call = inner.call(request).instrument(span.clone());
        Box::pin(async move {
            let response = call.await;
            if let Ok(response) = &response {
                record_status(&span, status_code(response));
            }
            response
        })
    }
}
