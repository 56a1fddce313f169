//! Accepting connections with limits: at most `server.max_connections` open per server and
//! `server.max_connections_per_peer` per client address (a connection past either is closed
//! at once); a connection that has not sent its HTTP/2 preface (or, with TLS, started its
//! handshake) within `server.handshake_timeout` is closed (the rest of a TLS handshake is
//! bounded by tonic's acceptor with the same timeout); an accept that fails for want of
//! file descriptors or memory (EMFILE, ENFILE, ENOBUFS, ENOMEM) backs off instead of spinning.
//! Each kind of refusal is logged at most once per [`LOG_EVERY`], with how many there were.
//! Hand-written: tonic's own incoming stream has none of these.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tonic::transport::server::{Connected, TcpConnectInfo};
use tracing::warn;

/// Bytes a client sends first on HTTP/2: the 24-byte preface and a SETTINGS frame header.
const FIRST_BYTES: usize = 24 + 9;
/// First wait after an accept failed for want of resources; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(10);
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// How often one kind of refusal is logged at most.
pub const LOG_EVERY: Duration = Duration::from_secs(10);

/// The limits of one server's connections.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Open connections (0: no limit).
    pub max: usize,
    /// Open connections from one address (0: no limit).
    pub per_peer: usize,
    /// Time to the first bytes of HTTP/2 (zero: none).
    pub handshake: Duration,
}

/// A log line at most every [`LOG_EVERY`], saying how many events it stands for.
#[derive(Debug)]
struct Quiet {
    what: &'static str,
    state: Mutex<(Option<Instant>, u64)>,
}

impl Quiet {
    const fn new(what: &'static str) -> Self {
        Self {
            what,
            state: Mutex::new((None, 0)),
        }
    }

    fn note(&self, addr: SocketAddr, detail: &dyn std::fmt::Display) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.1 += 1;
        let due = state.0.is_none_or(|last| last.elapsed() >= LOG_EVERY);
        if due {
            let count = std::mem::take(&mut state.1);
            state.0 = Some(Instant::now());
            drop(state);
            warn!(listener = %addr, count, detail = %detail, "{}", self.what);
        }
    }
}

/// What a server's connections share: the counts and the quiet logs.
#[derive(Debug)]
struct Shared {
    limits: Limits,
    local: SocketAddr,
    open: Mutex<(usize, HashMap<IpAddr, usize>)>,
    refused: Quiet,
    timed_out: Quiet,
    accept_failed: Quiet,
}

/// The connections of `listener`, with the limits, for `Server::serve_with_incoming_shutdown`.
pub fn incoming(
    listener: TcpListener,
    limits: Limits,
) -> impl futures_util::Stream<Item = io::Result<Conn>> + Send + 'static {
    let local = listener
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    let shared = Arc::new(Shared {
        limits,
        local,
        open: Mutex::new((0, HashMap::new())),
        refused: Quiet::new(
            "connections refused: over server.max_connections or max_connections_per_peer",
        ),
        timed_out: Quiet::new(
            "connections closed: no HTTP/2 preface within server.handshake_timeout",
        ),
        accept_failed: Quiet::new("accepting connections failed; backing off"),
    });
    futures_util::stream::unfold(
        (listener, shared, FIRST_BACKOFF),
        |(listener, shared, mut backoff)| async move {
            loop {
                match listener.accept().await {
                    Ok((stream, peer)) => {
                        backoff = FIRST_BACKOFF;
                        let Some(slot) = Slot::take(&shared, peer.ip()) else {
                            shared.refused.note(shared.local, &peer);
                            drop(stream);
                            continue;
                        };
                        let _ = stream.set_nodelay(true);
                        let conn = Conn::new(stream, peer, slot, &shared);
                        return Some((Ok(conn), (listener, shared, backoff)));
                    }
                    Err(e) if out_of_resources(&e) => {
                        shared.accept_failed.note(shared.local, &e);
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                    // The client went away between SYN and accept: nothing to do.
                    Err(_) => {}
                }
            }
        },
    )
}

/// EMFILE, ENFILE, ENOBUFS, ENOMEM: accepting again at once would fail again at once.
fn out_of_resources(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(23 | 24 | 105 | 12)) || e.kind() == io::ErrorKind::OutOfMemory
}

/// A connection's place in the counts.
#[derive(Debug)]
struct Slot {
    ip: IpAddr,
    shared: Arc<Shared>,
}

impl Slot {
    fn take(shared: &Arc<Shared>, ip: IpAddr) -> Option<Slot> {
        let limits = shared.limits;
        let mut open = shared.open.lock().unwrap_or_else(|e| e.into_inner());
        let from_peer = open.1.get(&ip).copied().unwrap_or(0);
        if (limits.max > 0 && open.0 >= limits.max)
            || (limits.per_peer > 0 && from_peer >= limits.per_peer)
        {
            return None;
        }
        open.0 += 1;
        *open.1.entry(ip).or_insert(0) += 1;
        Some(Slot {
            ip,
            shared: shared.clone(),
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.shared.open.lock().unwrap_or_else(|e| e.into_inner());
        open.0 = open.0.saturating_sub(1);
        if let Some(n) = open.1.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.1.remove(&self.ip);
            }
        }
    }
}

/// An accepted connection: counted while it lives, closed if its first bytes are late.
pub struct Conn {
    stream: TcpStream,
    peer: SocketAddr,
    local: Option<SocketAddr>,
    _slot: Slot,
    /// Armed until the first bytes of HTTP/2 are in.
    handshake: Option<Pin<Box<tokio::time::Sleep>>>,
    read: usize,
    shared: Arc<Shared>,
}

impl Conn {
    fn new(stream: TcpStream, peer: SocketAddr, slot: Slot, shared: &Arc<Shared>) -> Self {
        let handshake = shared.limits.handshake;
        Self {
            local: stream.local_addr().ok(),
            stream,
            peer,
            _slot: slot,
            handshake: (!handshake.is_zero()).then(|| Box::pin(tokio::time::sleep(handshake))),
            read: 0,
            shared: shared.clone(),
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if self.handshake.is_none() {
            return polled;
        }
        if let Poll::Ready(Ok(())) = &polled {
            self.read += buf.filled().len() - before;
            if self.read >= FIRST_BYTES {
                self.handshake = None;
            }
            return polled;
        }
        if polled.is_pending()
            && let Some(timer) = self.handshake.as_mut()
            && timer.as_mut().poll(cx).is_ready()
        {
            let (local, peer) = (self.shared.local, self.peer);
            self.shared.timed_out.note(local, &peer);
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no HTTP/2 preface within server.handshake_timeout",
            )));
        }
        polled
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

impl Connected for Conn {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        TcpConnectInfo {
            local_addr: self.local,
            remote_addr: Some(self.peer),
        }
    }
}
