//! The dashboard's address: the page's files and gRPC-Web on one origin.
//!
//! Browsers cannot speak gRPC (HTTP/2 with trailers, from `fetch`), so the page calls the
//! query service with gRPC-Web over HTTP/1.1. One listener serves both: `GET` of a file the
//! binary embeds answers with it (no key needed: the page must load to ask for one), anything
//! else goes through [`tonic_web`]'s translation into the very server stack of the service it
//! rides on (classification, tracing, metrics, auth, limits, drain), so a browser's call is
//! checked and counted like any other. CORS is off (same origin) unless origins are listed in
//! `web.cors_allowed_origins`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body as AxumBody;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tonic::service::Routes;
use tower::{Service, ServiceExt};
use tracing::{info, warn};

use crate::Shutdown;

/// One embedded file of the page: its path ("/index.html", "/assets/main-1a2b.js"), media type
/// and bytes.
#[derive(Debug, Clone, Copy)]
pub struct Asset {
    /// Path under "/", as the browser asks for it.
    pub path: &'static str,
    /// `Content-Type`.
    pub content_type: &'static str,
    /// The file.
    pub body: &'static [u8],
}

/// What a service's server needs to serve the dashboard next to it.
pub struct Web {
    /// The bound listener of the dashboard's address.
    pub listener: TcpListener,
    /// The page's files; "/" answers with "/index.html".
    pub assets: &'static [Asset],
    /// More services reachable by gRPC-Web from the page, by full name (in `tickmesh up`, the
    /// caching and computation services of the same process, for the mesh panel).
    pub extra: Vec<(&'static str, Routes)>,
    /// Origins allowed to call from other pages ("*": any); empty: same origin only.
    pub cors_allowed_origins: Vec<String>,
}

/// The dashboard being served.
#[derive(Debug)]
pub struct RunningWeb {
    /// Its address (the real port when bound to port 0).
    pub addr: SocketAddr,
    /// The server task; it ends once the shutdown signal fired and open calls finished.
    pub task: JoinHandle<()>,
}

struct Cors {
    any: bool,
    origins: Vec<String>,
}

impl Cors {
    /// Whether a page of `origin` may call; a request from the dashboard's own origin needs no
    /// CORS header (`Host` is where the browser sent it).
    fn allows(&self, origin: &str) -> bool {
        self.any || self.origins.iter().any(|o| o == origin)
    }
}

fn same_origin(origin: &str, headers: &HeaderMap) -> bool {
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let without_scheme = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    matches!((host, without_scheme), (Some(h), Some(o)) if h.eq_ignore_ascii_case(o))
}

/// The headers a gRPC-Web client sends and reads (connect-web, grpc-web).
const ALLOW_HEADERS: &str = "authorization, content-type, x-grpc-web, x-user-agent, grpc-timeout, \
                             connect-protocol-version, connect-timeout-ms";
const EXPOSE_HEADERS: &str = "grpc-status, grpc-message, grpc-status-details-bin";

fn asset_response(asset: &Asset, head: bool) -> Response<AxumBody> {
    // Hashed bundle files never change; index.html names them, so it must be revalidated.
    let cache = if asset.path.starts_with("/assets/") {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    let body = if head {
        AxumBody::empty()
    } else {
        AxumBody::from(Bytes::from_static(asset.body))
    };
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

fn plain(status: StatusCode, text: &'static str) -> Response<AxumBody> {
    let mut response = Response::new(AxumBody::from(text));
    *response.status_mut() = status;
    response
}

/// Serves the dashboard on `web.listener`: the assets, and gRPC-Web into `grpc` (the service's
/// routes behind its server stack) or, for a path of a service in `extra` (by full name), into
/// that one. Stops when `shutdown` fires.
pub fn spawn<S, E>(
    web: Web,
    grpc: S,
    extra: Vec<(&'static str, S)>,
    shutdown: &Shutdown,
) -> std::io::Result<RunningWeb>
where
    S: Service<Request<tonic::body::Body>, Response = Response<tonic::body::Body>, Error = E>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    E: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
{
    let addr = web.listener.local_addr()?;
    let assets = web.assets;
    let cors = Arc::new(Cors {
        any: web.cors_allowed_origins.iter().any(|o| o == "*"),
        origins: web.cors_allowed_origins,
    });
    let grpc_web = tonic_web::GrpcWebLayer::new();
    let translated = tower::Layer::layer(&grpc_web, grpc);
    let extra: Arc<Vec<(String, _)>> = Arc::new(
        extra
            .into_iter()
            .map(|(name, service)| (format!("/{name}/"), tower::Layer::layer(&grpc_web, service)))
            .collect(),
    );
    let handler = tower::service_fn(move |request: Request<AxumBody>| {
        let cors = cors.clone();
        let path = request.uri().path();
        let service = extra
            .iter()
            .find(|(prefix, _)| path.starts_with(prefix.as_str()))
            .map_or_else(|| translated.clone(), |(_, s)| s.clone());
        async move { Ok::<_, Infallible>(dispatch(request, assets, &cors, service).await) }
    });
    let router = axum::Router::new().fallback_service(handler);
    let stop = shutdown.clone();
    let task = tokio::spawn(async move {
        let served = axum::serve(web.listener, router)
            .with_graceful_shutdown(async move { stop.wait().await })
            .await;
        if let Err(e) = served {
            warn!(error = %e, "dashboard server stopped");
        }
    });
    info!(%addr, "dashboard serving (the page and gRPC-Web)");
    Ok(RunningWeb { addr, task })
}

async fn dispatch<S, E>(
    request: Request<AxumBody>,
    assets: &'static [Asset],
    cors: &Cors,
    grpc: S,
) -> Response<AxumBody>
where
    S: Service<Request<AxumBody>, Response = Response<tonic::body::Body>, Error = E>,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let method = request.method().clone();
    if method == Method::GET || method == Method::HEAD {
        let path = match request.uri().path() {
            "/" => "/index.html",
            other => other,
        };
        return match assets.iter().find(|a| a.path == path) {
            Some(asset) => asset_response(asset, method == Method::HEAD),
            None => plain(StatusCode::NOT_FOUND, "not found\n"),
        };
    }
    let origin = request
        .headers()
        .get(header::ORIGIN)
        .and_then(|o| o.to_str().ok())
        .map(str::to_owned);
    let cross = origin
        .as_deref()
        .filter(|o| !same_origin(o, request.headers()));
    if method == Method::OPTIONS {
        // A preflight: only for a listed origin.
        return match cross {
            Some(origin) if cors.allows(origin) => {
                let mut response = plain(StatusCode::NO_CONTENT, "");
                let headers = response.headers_mut();
                allow(headers, origin);
                headers.insert(
                    header::ACCESS_CONTROL_ALLOW_METHODS,
                    HeaderValue::from_static("POST, OPTIONS"),
                );
                headers.insert(
                    header::ACCESS_CONTROL_ALLOW_HEADERS,
                    HeaderValue::from_static(ALLOW_HEADERS),
                );
                headers.insert(
                    header::ACCESS_CONTROL_MAX_AGE,
                    HeaderValue::from_static("600"),
                );
                response
            }
            _ => plain(StatusCode::FORBIDDEN, "origin not allowed\n"),
        };
    }
    let allowed_cross = cross.filter(|o| cors.allows(o)).map(str::to_owned);
    if cross.is_some() && allowed_cross.is_none() {
        // The browser would not let the page read the answer; refuse before doing the work.
        return plain(StatusCode::FORBIDDEN, "origin not allowed\n");
    }
    let response = match grpc.oneshot(request).await {
        Ok(response) => response.map(AxumBody::new),
        Err(e) => {
            let e: Box<dyn std::error::Error + Send + Sync> = e.into();
            tonic::Status::internal(e.to_string()).into_http::<AxumBody>()
        }
    };
    let mut response = response;
    if let Some(origin) = allowed_cross {
        allow(response.headers_mut(), &origin);
        response.headers_mut().insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static(EXPOSE_HEADERS),
        );
    }
    response
}

fn allow(headers: &mut HeaderMap, origin: &str) {
    if let Ok(value) = HeaderValue::from_str(origin) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
        headers.insert(header::VARY, HeaderValue::from_static("origin"));
    }
}
