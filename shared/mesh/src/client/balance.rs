//! Power-of-two-choices balancing (tower's `p2c::Balance`, least pending requests of two random
//! replicas) over a channel per resolved replica, re-resolved every `discovery.resolve_interval`
//! so that new pods get traffic and gone ones stop getting it. HTTP/2 keeps one connection
//! open, so kube-proxy alone would balance nothing.

use std::collections::HashSet;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tower::BoxError;
use tower::balance::p2c::Balance;
use tower::buffer::Buffer;
use tower::discover::Change;
use tower::load::{CompleteOnResponse, PendingRequestsDiscover};
use tracing::{info, warn};

use super::resolve::Resolve;
use crate::Shutdown;

/// Requests waiting for a replica to be ready, beyond which callers wait themselves.
const QUEUE: usize = 1024;

/// The balanced service over `peer`'s replicas as `resolver` finds them. The resolver task
/// stops on `shutdown` or when every clone of the service is gone.
pub fn balanced(
    peer: String,
    resolver: impl Resolve,
    interval: Duration,
    tls: Option<ClientTlsConfig>,
    shutdown: Shutdown,
) -> impl tower::Service<
    http::Request<tonic::body::Body>,
    Response = http::Response<tonic::body::Body>,
    Error = BoxError,
    Future = impl Future<Output = Result<http::Response<tonic::body::Body>, BoxError>> + Send,
> + Clone
+ Send
+ Sync
+ 'static {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(resolve_loop(peer, resolver, interval, tls, tx, shutdown));
    let discover = PendingRequestsDiscover::new(
        ReceiverStream::new(rx).map(Ok::<_, Infallible>),
        CompleteOnResponse::default(),
    );
    Buffer::new(Balance::new(discover), QUEUE)
}

/// A lazily connecting channel to one replica.
fn channel(addr: SocketAddr, tls: Option<&ClientTlsConfig>) -> Result<Channel, BoxError> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut endpoint = Endpoint::from_shared(format!("{scheme}://{addr}"))?;
    if let Some(tls) = tls {
        endpoint = endpoint.tls_config(tls.clone())?;
    }
    Ok(endpoint
        .connect_timeout(Duration::from_secs(1))
        .tcp_nodelay(true)
        .connect_lazy())
}

/// Resolves the peer every `interval` and tells the balancer which replicas came and went.
async fn resolve_loop(
    peer: String,
    resolver: impl Resolve,
    interval: Duration,
    tls: Option<ClientTlsConfig>,
    tx: mpsc::Sender<Change<SocketAddr, Channel>>,
    shutdown: Shutdown,
) {
    let mut current: HashSet<SocketAddr> = HashSet::new();
    loop {
        match resolver.resolve().await {
            Ok(addrs) => {
                let next: HashSet<SocketAddr> = addrs.into_iter().collect();
                if next.is_empty() {
                    warn!(peer, "no address resolved; keeping the known replicas");
                } else {
                    for gone in current.difference(&next) {
                        info!(peer, addr = %gone, "replica gone");
                        if tx.send(Change::Remove(*gone)).await.is_err() {
                            return;
                        }
                    }
                    for new in next.difference(&current) {
                        let channel = match channel(*new, tls.as_ref()) {
                            Ok(channel) => channel,
                            Err(e) => {
                                warn!(peer, addr = %new, error = %e, "replica's endpoint rejected");
                                continue;
                            }
                        };
                        info!(peer, addr = %new, "replica added");
                        if tx.send(Change::Insert(*new, channel)).await.is_err() {
                            return;
                        }
                    }
                    current = next;
                }
            }
            Err(e) => {
                warn!(peer, error = %e, "resolving the peer failed; keeping the known replicas")
            }
        }
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = tx.closed() => return,
            () = shutdown.wait() => return,
        }
    }
}
