//! Serving one tickmesh service on a bound listener, with health, reflection and config, behind
//! the server stack (one layer per module below, outermost first in [`serve`]).

pub mod auth;
pub mod config_service;
pub mod config_watch;
pub mod connections;
pub mod deadline;
pub mod drain;
pub mod health;
pub mod message_size;
pub mod peer;
pub mod rate_limit;
pub mod shed;
pub mod streams;
pub mod web;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tickmesh_config::std_duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tonic::service::Routes;
use tonic::transport::Server;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;
use tracing::{info, warn};

use tower::ServiceBuilder;

use crate::methods::ClassifyLayer;
use crate::telemetry::trace::ServerTraceLayer;
use crate::{ConfigHandle, Metrics, Shutdown};
use auth::{AuthLayer, Keys};
use deadline::{BodyTimeoutLayer, DefaultDeadlineLayer};
use drain::{DrainLayer, InFlight};
use message_size::MessageSizeLayer;
use rate_limit::RateLimitLayer;
use shed::ShedLayer;
use streams::StreamLimitLayer;

/// How long a draining server keeps its listener at least, so that health checks see
/// NOT_SERVING rather than a refused connection.
pub const DRAIN_LINGER: Duration = Duration::from_millis(500);

/// Why a service could not be served.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The reflection service could not be built from the descriptor sets.
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The listener has no local address.
    #[error("listener: {0}")]
    Listener(#[from] std::io::Error),
    /// The server stopped with an error.
    #[error("server: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// Calls still running at the end of the grace period were cut off.
    #[error("{service}: {calls} calls cut off at the end of the grace period")]
    CutOff {
        /// The service.
        service: &'static str,
        /// Calls whose handlers were still running.
        calls: usize,
    },
    /// The server task panicked or was cancelled.
    #[error("server task: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// The API keys could not be loaded.
    #[error("{0}")]
    Keys(#[from] auth::KeysError),
    /// The TLS settings are incomplete or a certificate file could not be read.
    #[error("tls: {0}")]
    Tls(String),
    /// Auth is off and the listener is reachable from other hosts.
    #[error(
        "auth.enabled is false but {0} is not a loopback address; configure API keys \
         (auth.keys_file) or bind to 127.0.0.1"
    )]
    AuthOffInPublic(SocketAddr),
}

/// A tickmesh service ready to be served: its full gRPC name and its tonic routes.
pub struct Service {
    /// Full gRPC name, e.g. `tickmesh.v1.QueryService`; health reports under it.
    pub name: &'static str,
    /// The service's routes (health, reflection and config are added by [`serve`]).
    pub routes: Routes,
    /// The dashboard and gRPC-Web, served next to this service behind the same stack.
    pub web: Option<web::Web>,
}

impl Service {
    /// A service from its generated tonic server.
    pub fn new<S>(name: &'static str, server: S) -> Self
    where
        S: tonic::server::NamedService
            + tower_service::Service<
                http::Request<tonic::body::Body>,
                Response = http::Response<tonic::body::Body>,
                Error = std::convert::Infallible,
            > + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        Self {
            name,
            routes: Routes::new(server),
            web: None,
        }
    }
}

/// A service being served.
#[derive(Debug)]
pub struct Running {
    name: &'static str,
    addr: SocketAddr,
    health: HealthReporter,
    shutdown: Shutdown,
    grace: Duration,
    in_flight: InFlight,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
    web: Option<web::RunningWeb>,
}

impl Running {
    /// The address the service listens on (the real port when it was bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The dashboard's address, when this service serves it.
    pub fn web_addr(&self) -> Option<SocketAddr> {
        self.web.as_ref().map(|w| w.addr)
    }

    /// The service's full gRPC name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The health reporter of this server.
    pub fn health(&self) -> &HealthReporter {
        &self.health
    }

    /// Runs until the shutdown signal has fired and in-flight calls have drained; calls still
    /// running when the grace period ends are cut off.
    pub async fn wait(self) -> Result<(), ServeError> {
        let Running {
            name,
            shutdown,
            grace,
            in_flight,
            mut task,
            web,
            ..
        } = self;
        if let Some(web) = web {
            // The page's server stops with the signal; its open streams end with the drain.
            tokio::spawn(async move {
                let _ = web.task.await;
            });
        }
        let deadline = async {
            shutdown.wait().await;
            let started = Instant::now();
            tokio::time::sleep(grace).await;
            started
        };
        tokio::select! {
            result = &mut task => {
                result??;
                info!(service = name, "stopped");
                Ok(())
            }
            started = deadline => {
                let calls = in_flight.count();
                task.abort();
                warn!(service = name, calls, grace_ms = started.elapsed().as_millis() as u64,
                    "grace period over, cutting off calls still in flight");
                // A cut call may have left its client unsure of what was stored: exit non-zero.
                Err(ServeError::CutOff { service: name, calls })
            }
        }
    }
}

/// Serves `service` on `listener` (bound by the caller, so the address is known before the
/// first call) with `grpc.health.v1.Health` (for "" and the service name), reflection v1 and
/// v1alpha, and `tickmesh.v1.ConfigService`. When `shutdown` fires, health goes NOT_SERVING and
/// the server drains.
pub async fn serve(
    service: Service,
    listener: TcpListener,
    config: &ConfigHandle,
    metrics: &Metrics,
    shutdown: &Shutdown,
) -> Result<Running, ServeError> {
    let addr = listener.local_addr()?;
    let Service {
        name,
        routes: service_routes,
        web,
    } = service;
    let current = config.current();
    let settings = current.config.server.unwrap_or_default();
    let keys = Keys::load(&current.config.auth.clone().unwrap_or_default())?;
    if !keys.enabled() {
        if !addr.ip().is_loopback() {
            return Err(ServeError::AuthOffInPublic(addr));
        }
        warn!(service = name, %addr, "auth is off: API keys are not checked (loopback address only)");
    }

    let health = HealthReporter::new();
    let health_service = health::DrainingHealth::server(health.clone(), shutdown);
    health
        .set_service_status(name, ServingStatus::Serving)
        .await;
    health
        .set_service_status(
            tickmesh_proto::service_names::CONFIG,
            ServingStatus::Serving,
        )
        .await;
    // The dashboard's address answers health for this service and for the others it reaches
    // (`tickmesh up`: they run in this process, serve and drain with it), with a reporter of
    // its own: this service's port keeps answering for itself only.
    let web_health = match &web {
        Some(w) => {
            let reporter = HealthReporter::new();
            let names = [name, tickmesh_proto::service_names::CONFIG]
                .into_iter()
                .chain(w.extra.iter().map(|(n, _)| *n));
            for service in names {
                reporter
                    .set_service_status(service, ServingStatus::Serving)
                    .await;
            }
            let extra: Vec<&'static str> = w.extra.iter().map(|(n, _)| *n).collect();
            Some((reporter, extra))
        }
        None => None,
    };

    let advertised = [
        name,
        tickmesh_proto::service_names::CONFIG,
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    ];
    let reflection = || {
        advertised.iter().fold(
            tonic_reflection::server::Builder::configure()
                .include_reflection_service(false)
                .register_encoded_file_descriptor_set(tickmesh_proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(
                    tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
                ),
            |builder, service| builder.with_service_name(*service),
        )
    };
    let web_routes = web_health.as_ref().map(|(reporter, _)| {
        service_routes
            .clone()
            .add_service(health::DrainingHealth::server(reporter.clone(), shutdown))
            .add_service(config_service::server(config, shutdown))
    });
    let routes = service_routes
        .add_service(health_service)
        .add_service(reflection().build_v1()?)
        .add_service(reflection().build_v1alpha()?)
        .add_service(config_service::server(config, shutdown));

    let in_flight = InFlight::default();
    let drain = {
        let health = health.clone();
        let shutdown = shutdown.clone();
        let in_flight = in_flight.clone();
        let grace = std_duration(settings.shutdown_grace_period.as_ref());
        async move {
            shutdown.wait().await;
            let started = Instant::now();
            // Readiness first, so balancers stop sending before the listener closes.
            let ours = ["", name, tickmesh_proto::service_names::CONFIG];
            for service in ours {
                health
                    .set_service_status(service, ServingStatus::NotServing)
                    .await;
            }
            if let Some((reporter, extra)) = &web_health {
                for service in ours.iter().chain(extra.iter()) {
                    reporter
                        .set_service_status(*service, ServingStatus::NotServing)
                        .await;
                }
            }
            info!(service = name, "draining in-flight calls");
            // The listener stays open while calls run (new ones are refused with UNAVAILABLE,
            // health answers NOT_SERVING), at least DRAIN_LINGER, at most the grace period.
            while started.elapsed() < grace
                && (in_flight.count() > 0 || started.elapsed() < DRAIN_LINGER.min(grace))
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };

    // Server::tcp_nodelay only applies to listeners tonic binds itself; ours is bound by the
    // caller, so nodelay is set by its incoming stream. Without it, small responses wait on
    // delayed ACKs (40 ms stalls). The same stream caps connections and times out handshakes.
    let or = |value: Option<&prost_types::Duration>, default: Duration| match value {
        Some(d) => std_duration(Some(d)),
        None => default,
    };
    let count = |value: u32, default: usize| match value {
        0 => default,
        n => n as usize,
    };
    let handshake = or(settings.handshake_timeout.as_ref(), Duration::from_secs(5));
    let incoming = connections::incoming(
        listener,
        connections::Limits {
            max: count(settings.max_connections, 4096),
            per_peer: count(settings.max_connections_per_peer, 512),
            handshake,
        },
    );
    // No Server::timeout: tonic applies it to whole calls, streams included, so it would cut
    // a long IngestTicks stream. The caller's grpc-timeout is still honoured by tonic; unary
    // calls without one get server.default_timeout from DefaultDeadlineLayer.
    // The server stack, outermost first. Each request is classified once, first, and every
    // layer behind reads its entry. Metrics sit outside auth so that refused calls are
    // counted; the message-size fix is innermost so every layer sees the corrected code.
    let stack = ServiceBuilder::new()
        .layer(ClassifyLayer)
        .layer(ServerTraceLayer)
        .layer(metrics.layer())
        .layer(AuthLayer::new(keys))
        .layer(RateLimitLayer::new(config))
        .layer(ShedLayer::new(
            settings.concurrency_limit as usize,
            match settings.caller_concurrency_share {
                0.0 => 0.5,
                share => share,
            },
        ))
        .layer(StreamLimitLayer::new(
            count(settings.caller_stream_limit, 256),
            count(settings.watch_stream_limit, 16),
        ))
        .layer(
            DefaultDeadlineLayer::new(std_duration(settings.default_timeout.as_ref()))
                .with_max(or(settings.max_timeout.as_ref(), Duration::from_secs(300))),
        )
        .layer(BodyTimeoutLayer::new(or(
            settings.request_body_timeout.as_ref(),
            Duration::from_secs(10),
        )))
        .layer(MessageSizeLayer)
        .layer(DrainLayer::new(shutdown, &in_flight));
    let web = match web {
        Some(mut web) => {
            let extra = std::mem::take(&mut web.extra)
                .into_iter()
                .map(|(name, routes)| (name, stack.clone().service(routes.prepare())))
                .collect();
            let grpc = stack.clone().service(
                web_routes
                    .clone()
                    .unwrap_or_else(|| routes.clone())
                    .prepare(),
            );
            Some(web::spawn(web, grpc, extra, shutdown)?)
        }
        None => None,
    };
    let mut builder = Server::builder();
    if let Some(tls) = crate::tls::server_config(&current.config.tls.clone().unwrap_or_default())? {
        // Our incoming stream sees only the first bytes of a TLS handshake (a ClientHello
        // arms nothing after it); tonic's acceptor bounds the whole handshake, each in its own
        // task, so one that stalls mid-way is dropped after server.handshake_timeout.
        let tls = if handshake.is_zero() {
            tls
        } else {
            tls.timeout(handshake)
        };
        builder = builder.tls_config(tls)?;
        info!(service = name, "TLS on");
    }
    let server = builder
        .layer(stack)
        .max_connection_age(std_duration(settings.max_connection_age.as_ref()))
        .max_concurrent_streams(count(settings.max_concurrent_streams, 256) as u32)
        .http2_keepalive_interval(Some(or(
            settings.keepalive_interval.as_ref(),
            Duration::from_secs(30),
        )))
        .http2_keepalive_timeout(Some(or(
            settings.keepalive_timeout.as_ref(),
            Duration::from_secs(10),
        )))
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming, drain);
    let task = tokio::spawn(server);
    info!(service = name, %addr, "serving");

    Ok(Running {
        name,
        addr,
        health,
        shutdown: shutdown.clone(),
        grace: std_duration(settings.shutdown_grace_period.as_ref()),
        in_flight,
        task,
        web,
    })
}
