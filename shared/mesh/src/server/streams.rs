//! Limits on open server streams: a caller may keep `server.caller_stream_limit` of them
//! (`StreamMarketData`, `WatchConfig`, `ReplaySource`) open at once, and one IP address
//! `server.watch_stream_limit` health watches, which need no key. A stream past its limit is
//! refused with RESOURCE_EXHAUSTED before it starts; a stream counts until its response body is
//! dropped (it ended, or the client went away).
//! Hand-written: the count must follow the response body, which no tower layer does.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures_util::future::{Either, Ready, ready};

use super::peer::{CallerKey, caller_key, peer_ip};
use crate::layer::{GrpcService, Layered, OnCall};
use crate::methods::Entry;
use crate::status::Refusal;

/// Open streams by who holds them.
type Counts = Arc<Mutex<HashMap<CallerKey, usize>>>;

/// The layer of one server.
#[derive(Clone, Debug)]
pub struct StreamLimitLayer {
    caller_limit: usize,
    watch_limit: usize,
    streams: Counts,
    watches: Counts,
}

impl StreamLimitLayer {
    /// At most `caller_limit` server streams per caller and `watch_limit` health watches per
    /// address (0: no limit).
    pub fn new(caller_limit: usize, watch_limit: usize) -> Self {
        Self {
            caller_limit,
            watch_limit,
            streams: Counts::default(),
            watches: Counts::default(),
        }
    }
}

impl<S> tower::Layer<S> for StreamLimitLayer {
    type Service = Layered<Self, S>;

    fn layer(&self, inner: S) -> Self::Service {
        Layered::new(self.clone(), inner)
    }
}

/// One open stream, given back when dropped.
struct Held {
    key: CallerKey,
    counts: Counts,
}

impl Held {
    /// A place for `key` under `limit`, or the key back when it has none left.
    fn take(counts: &Counts, key: CallerKey, limit: usize) -> Result<Held, CallerKey> {
        let mut map = counts.lock().unwrap_or_else(|e| e.into_inner());
        let open = map.entry(key.clone()).or_insert(0);
        if limit > 0 && *open >= limit {
            return Err(key);
        }
        *open += 1;
        Ok(Held {
            key,
            counts: counts.clone(),
        })
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut map = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(open) = map.get_mut(&self.key) {
            *open -= 1;
            if *open == 0 {
                map.remove(&self.key);
            }
        }
    }
}

impl<S, B> OnCall<S, B> for StreamLimitLayer
where
    S: GrpcService<B>,
    S::Future: Unpin,
{
    type Future =
        Either<Either<S::Future, Counted<S::Future>>, Ready<Result<S::Response, S::Error>>>;

    fn call(&self, inner: &mut S, request: http::Request<B>) -> Self::Future {
        let (counts, key, limit, setting) =
            if request.uri().path() == "/grpc.health.v1.Health/Watch" {
                let key = peer_ip(&request).map_or(CallerKey::Unknown, CallerKey::Address);
                (
                    &self.watches,
                    key,
                    self.watch_limit,
                    "server.watch_stream_limit",
                )
            } else if Entry::of(&request).server_streaming() {
                let key = caller_key(&request);
                (
                    &self.streams,
                    key,
                    self.caller_limit,
                    "server.caller_stream_limit",
                )
            } else {
                return Either::Left(Either::Left(inner.call(request)));
            };
        match Held::take(counts, key, limit) {
            Ok(held) => Either::Left(Either::Right(Counted {
                call: inner.call(request),
                held: Some(held),
            })),
            Err(caller) => {
                let refusal = Refusal::TooManyStreams {
                    caller: Arc::from(caller.to_string()),
                    limit,
                    setting,
                };
                Either::Right(ready(Ok(refusal.into_http())))
            }
        }
    }
}

/// A stream's call: the count moves into its response body once the headers are out.
pub struct Counted<F> {
    call: F,
    held: Option<Held>,
}

impl<F, E> std::future::Future for Counted<F>
where
    F: std::future::Future<Output = Result<http::Response<tonic::body::Body>, E>> + Unpin,
{
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let response = std::task::ready!(Pin::new(&mut self.call).poll(cx));
        let held = self.held.take();
        Poll::Ready(response.map(|response| {
            response.map(|body| tonic::body::Body::new(CountedBody { body, _held: held }))
        }))
    }
}

/// A response body that holds its stream's place in the count while it lives.
struct CountedBody {
    body: tonic::body::Body,
    _held: Option<Held>,
}

impl http_body::Body for CountedBody {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}
