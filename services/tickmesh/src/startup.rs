//! Start-up without its dependencies: `serve` and `up` bind their ports at once and answer
//! health while PostgreSQL or Redis is still unreachable, so Kubernetes keeps the pod (liveness
//! passes, readiness gates traffic) instead of restarting it in a loop.
//!
//! While it waits, a process answers on each service port:
//! - `grpc.health.v1.Health`: SERVING for the whole server (`""`: the process is alive) and
//!   NOT_SERVING for each service name (readiness: no traffic yet), with reflection v1 of it
//!   (so `grpcurl` works);
//! - every other call: UNAVAILABLE, naming the dependency and the address it waits for.
//!
//! It retries each unreachable dependency with a growing backoff (0.5 s doubling to 10 s),
//! logging which one at which address, and hands the same listeners to the real servers once
//! every dependency is reachable. An error that waiting will not fix (a bad URL, a failed
//! migration) still stops the process.

use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::{Either, Ready, ready};
use tickmesh_mesh::Shutdown;
use tickmesh_mesh::layer::{Layered, OnCall};
use tickmesh_mesh::server::health::DrainingHealth;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tonic::transport::Server;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;
use tracing::{info, warn};

use crate::app::Target;

/// First wait before a dependency is tried again.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// Longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// How long the waiting servers may take to close their connections once the real servers are
/// about to take the listeners (a client watching health keeps its connection open).
const HANDOVER: Duration = Duration::from_secs(1);

/// A dependency a process cannot serve without.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dependency {
    /// The store (`--store-url`).
    Store,
    /// The market-event bus (`--bus-url`).
    Bus,
}

impl fmt::Display for Dependency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Dependency::Store => "store",
            Dependency::Bus => "bus",
        })
    }
}

/// Where a URL points, without its credentials or path: `host:port` of `postgres://` and
/// `redis://` URLs (the scheme's default port when none is given), the file of a `sqlite:` URL.
pub fn address_of(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url
            .strip_prefix("sqlite:")
            .map_or_else(|| "(unrecognised url)".to_owned(), str::to_owned);
    };
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let has_port = match host_port.rsplit_once(':') {
        // An IPv6 literal without a port ends in `]`.
        Some((_, port)) => !port.ends_with(']') && !port.is_empty(),
        None => false,
    };
    let host_port = if host_port.is_empty() {
        "localhost"
    } else {
        host_port
    };
    let default_port = match scheme {
        "postgres" | "postgresql" => Some(5432),
        "redis" => Some(6379),
        "rediss" => Some(6380),
        _ => None,
    };
    match (has_port, default_port) {
        (false, Some(port)) => format!("{host_port}:{port}"),
        _ => host_port.to_owned(),
    }
}

/// What the waiting servers say to calls, and what the process waits for.
#[derive(Clone, Default)]
struct Reason(Arc<Mutex<String>>);

impl Reason {
    fn set(&self, text: String) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = text;
    }

    fn get(&self) -> String {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Health answers, every other call UNAVAILABLE with the reason.
#[derive(Clone)]
struct Unavailable(Reason);

impl<S, B> OnCall<S, B> for Unavailable
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
{
    type Future = Either<S::Future, Ready<Result<S::Response, S::Error>>>;

    fn call(&self, inner: &mut S, request: http::Request<B>) -> Self::Future {
        let path = request.uri().path();
        if path.starts_with("/grpc.health.v1.Health/")
            || path.starts_with("/grpc.reflection.v1.ServerReflection/")
            || path.starts_with("/grpc.reflection.v1alpha.ServerReflection/")
        {
            return Either::Left(inner.call(request));
        }
        let status =
            tonic::Status::unavailable(format!("not serving yet: {}; retry later", self.0.get()));
        Either::Right(ready(Ok(status.into_http())))
    }
}

/// The listeners of a process while it waits for its dependencies.
pub struct Waiting {
    listeners: Vec<(Target, Arc<TcpListener>)>,
    servers: Vec<JoinHandle<()>>,
    stop: Shutdown,
    reason: Reason,
    since: Instant,
}

impl Waiting {
    /// Starts answering health (and UNAVAILABLE) on every listener.
    pub async fn start(listeners: Vec<(Target, TcpListener)>) -> Waiting {
        let stop = Shutdown::new();
        let reason = Reason::default();
        reason.set("connecting to its dependencies".to_owned());
        let mut kept = Vec::with_capacity(listeners.len());
        let mut servers = Vec::with_capacity(listeners.len());
        for (target, listener) in listeners {
            let listener = Arc::new(listener);
            let health = HealthReporter::new();
            health
                .set_service_status(target.service_name(), ServingStatus::NotServing)
                .await;
            let server = Server::builder()
                .layer(tower::layer::layer_fn({
                    let reason = reason.clone();
                    move |inner| Layered::new(Unavailable(reason.clone()), inner)
                }))
                .add_service(DrainingHealth::server(health, &stop))
                .add_service(
                    reflection()
                        .build_v1()
                        .unwrap_or_else(|e| unreachable!("the health descriptors are valid: {e}")),
                )
                .add_service(
                    reflection()
                        .build_v1alpha()
                        .unwrap_or_else(|e| unreachable!("the health descriptors are valid: {e}")),
                )
                .serve_with_incoming_shutdown(incoming(listener.clone()), {
                    let stop = stop.clone();
                    async move { stop.wait().await }
                });
            servers.push(tokio::spawn(async move {
                if let Err(e) = server.await {
                    warn!(error = %e, "the waiting server stopped with an error");
                }
            }));
            kept.push((target, listener));
        }
        Waiting {
            listeners: kept,
            servers,
            stop,
            reason,
            since: Instant::now(),
        }
    }

    /// Tries `attempt` until it succeeds, retrying while its error is transient and `shutdown`
    /// has not fired (`Ok(None)` then). Each failure is logged with the dependency and its
    /// address; the first success after a failure is logged too.
    pub async fn reach<T, E, F, Fut>(
        &self,
        dependency: Dependency,
        url: &str,
        shutdown: &Shutdown,
        is_transient: impl Fn(&E) -> bool,
        mut attempt: F,
    ) -> Result<Option<T>, E>
    where
        E: fmt::Display,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let address = address_of(url);
        let mut backoff = FIRST_BACKOFF;
        let mut failures = 0u32;
        loop {
            let error = tokio::select! {
                () = shutdown.wait() => return Ok(None),
                result = attempt() => match result {
                    Ok(value) => {
                        if failures > 0 {
                            info!(%dependency, %address, failures,
                                waited_ms = self.since.elapsed().as_millis() as u64,
                                "dependency reachable");
                        }
                        return Ok(Some(value));
                    }
                    Err(e) if is_transient(&e) => e,
                    Err(e) => return Err(e),
                },
            };
            failures += 1;
            self.reason.set(format!(
                "waiting for the {dependency} at {address} ({error})"
            ));
            warn!(%dependency, %address, error = %error, retry_in_ms = backoff.as_millis() as u64,
                failures, "dependency unreachable; health says NOT_SERVING until it is reachable");
            tokio::select! {
                () = shutdown.wait() => return Ok(None),
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Stops answering and gives the listeners back, for the real servers.
    pub async fn finish(self) -> Vec<(Target, TcpListener)> {
        self.stop.trigger();
        for mut server in self.servers {
            // A client's open connection (a health watch) may hold the graceful stop; it is cut
            // after a moment, and the client reconnects to the real server.
            if tokio::time::timeout(HANDOVER, &mut server).await.is_err() {
                server.abort();
                let _ = server.await;
            }
        }
        self.listeners
            .into_iter()
            .map(|(target, listener)| {
                let listener = Arc::try_unwrap(listener)
                    .unwrap_or_else(|_| unreachable!("the waiting servers have stopped"));
                (target, listener)
            })
            .collect()
    }
}

/// Reflection (v1 and v1alpha) of the health service, so grpcurl can ask for health while the
/// process waits.
fn reflection() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
}

/// The connections of a listener that stays with its owner.
fn incoming(
    listener: Arc<TcpListener>,
) -> impl futures_util::Stream<Item = std::io::Result<TcpStream>> + Send + 'static {
    futures_util::stream::unfold(listener, |listener| async move {
        let accepted = listener.accept().await.map(|(stream, _)| {
            // As the real servers do: no 40 ms delayed-ACK stalls on small answers.
            let _ = stream.set_nodelay(true);
            stream
        });
        Some((accepted, listener))
    })
}

#[cfg(test)]
mod tests {
    use super::address_of;

    #[test]
    fn an_address_has_no_credentials_and_a_port() {
        assert_eq!(
            address_of("postgres://tickmesh:secret@db.example:5433/tickmesh?sslmode=disable"),
            "db.example:5433"
        );
        assert_eq!(address_of("postgresql://u@db/x"), "db:5432");
        assert_eq!(address_of("redis://127.0.0.1:6390/"), "127.0.0.1:6390");
        assert_eq!(address_of("redis://:pw@cache"), "cache:6379");
        assert_eq!(address_of("redis://[::1]:7000/0"), "[::1]:7000");
        assert_eq!(address_of("redis://[::1]"), "[::1]:6379");
        assert_eq!(address_of("sqlite:data/t.db"), "data/t.db");
    }
}
