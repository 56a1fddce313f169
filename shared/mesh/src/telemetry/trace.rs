//! Distributed tracing of gRPC calls.
//!
//! Server side, [`ServerTraceLayer`] opens one span per RPC whose parent is the W3C
//! `traceparent`/`tracestate` of the incoming metadata, with the attributes of the stable
//! OpenTelemetry RPC conventions (v1.38 and later): `rpc.system.name`, `rpc.method`
//! (`package.Service/Method`), `rpc.response.status_code` (the code's name). tickmesh emitted
//! the older experimental ones (`rpc.system`, `rpc.service`, `rpc.grpc.status_code`) before
//! 0.2; as the conventions' migration plan describes, `OTEL_SEMCONV_STABILITY_OPT_IN=rpc/dup`
//! emits those too (where both define `rpc.method`, the stable value wins). Unlike the plan's
//! default, the stable names are the default here: tickmesh is before its 1.0. Client side, [`ClientTraceLayer`] opens a
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

/// Whether `OTEL_SEMCONV_STABILITY_OPT_IN` asks for the old RPC attributes next to the stable
/// ones (`rpc/dup` in its comma-separated list).
fn duplicate_old_attributes() -> bool {
    static DUP: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *DUP.get_or_init(|| {
        std::env::var("OTEL_SEMCONV_STABILITY_OPT_IN")
            .is_ok_and(|v| v.split(',').any(|item| item.trim() == "rpc/dup"))
    })
}

/// The span of one RPC at `path`, on the `server` or the client side.
fn rpc_span(path: &str, server: bool) -> tracing::Span {
    let full = path.trim_start_matches('/');
    let kind = if server { "server" } else { "client" };
    // Span names are static in `tracing`: one call site per name and attribute set.
    match (server, duplicate_old_attributes()) {
        (true, false) => tracing::info_span!(
            target: RPC_TARGET,
            "grpc.server",
            otel.name = %full,
            otel.kind = kind,
            otel.status_code = tracing::field::Empty,
            rpc.system.name = "grpc",
            rpc.method = %full,
            rpc.response.status_code = tracing::field::Empty,
        ),
        (false, false) => tracing::info_span!(
            target: RPC_TARGET,
            "grpc.client",
            otel.name = %full,
            otel.kind = kind,
            otel.status_code = tracing::field::Empty,
            rpc.system.name = "grpc",
            rpc.method = %full,
            rpc.response.status_code = tracing::field::Empty,
        ),
        (_, true) => {
            let (service, _) = rpc_names(path);
            tracing::info_span!(
                target: RPC_TARGET,
                "grpc",
                otel.name = %full,
                otel.kind = kind,
                otel.status_code = tracing::field::Empty,
                rpc.system.name = "grpc",
                rpc.method = %full,
                rpc.response.status_code = tracing::field::Empty,
                rpc.system = "grpc",
                rpc.service = %service,
                rpc.grpc.status_code = tracing::field::Empty,
            )
        }
    }
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
    span.record(
        "rpc.response.status_code",
        super::metrics::code_name(&code.to_string()),
    );
    if duplicate_old_attributes() {
        span.record("rpc.grpc.status_code", code);
    }
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
        let span = rpc_span(path, true);
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
        let span = rpc_span(&path, false);
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
