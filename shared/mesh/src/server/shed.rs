//! Load shedding: past `server.concurrency_limit` calls in flight on a server, a new call is
//! refused at once with UNAVAILABLE instead of queueing without bound. Health checks are never
//! refused (a busy pod is not a dead one). A call counts until its response headers go out:
//! all of a unary or client-streaming call, the set-up of a server stream.
//! Hand-written: tower's `LoadShed` over a `ConcurrencyLimit` takes a permit in `poll_ready`,
//! before the request is seen, so it could not let health checks through.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use futures_util::future::{Either, Ready, ready};

use crate::layer::{GrpcService, Layered, OnCall};
use crate::methods::Entry;
use crate::status::Refusal;

/// The layer of one server.
#[derive(Clone, Debug)]
pub struct ShedLayer {
    limit: usize,
    in_flight: Arc<AtomicUsize>,
}

impl ShedLayer {
    /// Refuses calls beyond `limit` in flight.
    pub fn new(limit: usize) -> Self {
        Self {
            limit: limit.max(1),
            in_flight: Arc::new(AtomicUsize::new(0)),
        }
    }
}

impl<S> tower::Layer<S> for ShedLayer {
    type Service = Layered<Self, S>;

    fn layer(&self, inner: S) -> Self::Service {
        Layered::new(self.clone(), inner)
    }
}

/// Gives the slot back however the call ends (including cancellation).
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl<S, B> OnCall<S, B> for ShedLayer
where
    S: GrpcService<B>,
    S::Future: Unpin,
{
    // No box of its own: the inner call holding its slot, or the refusal.
    type Future = Either<Holding<S::Future>, Ready<Result<S::Response, S::Error>>>;

    fn call(&self, inner: &mut S, request: http::Request<B>) -> Self::Future {
        if Entry::of(&request).health {
            return Either::Left(Holding {
                call: inner.call(request),
                _slot: None,
            });
        }
        let before = self.in_flight.fetch_add(1, Ordering::AcqRel);
        let slot = Slot(self.in_flight.clone());
        if before >= self.limit {
            drop(slot);
            let refusal = Refusal::Overloaded { limit: self.limit };
            return Either::Right(ready(Ok(refusal.into_http())));
        }
        Either::Left(Holding {
            call: inner.call(request),
            _slot: Some(slot),
        })
    }
}

/// A call that holds its in-flight slot until it is done (or dropped).
pub struct Holding<F> {
    call: F,
    _slot: Option<Slot>,
}

impl<F: Future + Unpin> Future for Holding<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let output = std::task::ready!(Pin::new(&mut self.call).poll(cx));
        // Done: the slot is free for the next call, even while the response body streams.
        self._slot = None;
        Poll::Ready(output)
    }
}
