//! Load shedding: past `server.concurrency_limit` calls in flight on a server, a new call is
//! refused at once with UNAVAILABLE instead of queueing without bound; past its share of them
//! (`server.caller_concurrency_share`; a caller is an API key, or a connection for calls
//! without a key), one caller's new call is refused with
//! RESOURCE_EXHAUSTED, so a single client cannot take every slot. Health checks are never
//! refused (a busy pod is not a dead one). A call counts until its response headers go out:
//! all of a unary or client-streaming call, the set-up of a server stream.
//! Hand-written: tower's `LoadShed` over a `ConcurrencyLimit` takes a permit in `poll_ready`,
//! before the request is seen, so it could not let health checks through.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures_util::future::{Either, Ready, ready};

use super::peer::CallerKey;
use crate::layer::{GrpcService, Layered, OnCall};
use crate::methods::Entry;
use crate::status::Refusal;

/// The layer of one server.
#[derive(Clone, Debug)]
pub struct ShedLayer {
    limit: usize,
    caller_limit: usize,
    in_flight: Arc<AtomicUsize>,
    by_caller: Arc<Mutex<HashMap<CallerKey, usize>>>,
}

impl ShedLayer {
    /// Refuses calls beyond `limit` in flight, and a caller's beyond `share` of `limit` (0: no
    /// share of its own, only the server's limit).
    pub fn new(limit: usize, share: f64) -> Self {
        let limit = limit.max(1);
        let caller_limit = match share {
            s if s > 0.0 && s < 1.0 => ((limit as f64 * s).ceil() as usize).max(1),
            _ => limit,
        };
        Self {
            limit,
            caller_limit,
            in_flight: Arc::new(AtomicUsize::new(0)),
            by_caller: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Takes one of the caller's slots, unless it holds its share.
    fn take(&self, caller: &CallerKey) -> Option<CallerSlot> {
        let mut counts = self.by_caller.lock().unwrap_or_else(|e| e.into_inner());
        let held = counts.entry(caller.clone()).or_insert(0);
        if *held >= self.caller_limit {
            return None;
        }
        *held += 1;
        Some(CallerSlot {
            caller: caller.clone(),
            counts: self.by_caller.clone(),
        })
    }
}

/// Gives a caller's slot back; a caller with none left is forgotten, so the map holds only
/// callers with calls in flight.
struct CallerSlot {
    caller: CallerKey,
    counts: Arc<Mutex<HashMap<CallerKey, usize>>>,
}

impl Drop for CallerSlot {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(held) = counts.get_mut(&self.caller) {
            *held -= 1;
            if *held == 0 {
                counts.remove(&self.caller);
            }
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
        // The server's limit first: a full server is UNAVAILABLE to everyone.
        let before = self.in_flight.fetch_add(1, Ordering::AcqRel);
        let slot = Slot(self.in_flight.clone());
        if before >= self.limit {
            drop(slot);
            let refusal = Refusal::Overloaded { limit: self.limit };
            return Either::Right(ready(Ok(refusal.into_http())));
        }
        let caller = super::peer::caller_key(&request);
        let Some(caller_slot) = self.take(&caller) else {
            drop(slot);
            let refusal = Refusal::CallerBusy {
                caller: Arc::from(caller.to_string()),
                limit: self.caller_limit,
            };
            return Either::Right(ready(Ok(refusal.into_http())));
        };
        Either::Left(Holding {
            call: inner.call(request),
            _slot: Some((slot, caller_slot)),
        })
    }
}

/// A call that holds its in-flight slot until it is done (or dropped).
pub struct Holding<F> {
    call: F,
    _slot: Option<(Slot, CallerSlot)>,
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
