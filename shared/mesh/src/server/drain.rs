//! What handlers see of a draining server: every request of a call that streams carries a
//! [`Draining`] in its extensions, so a long call (a client stream) can stop taking new work at shutdown and end
//! with what it has done; and the server counts the calls whose handlers are still running, so
//! the ones cut off at the end of the grace period can be counted. Once draining, a new call
//! (other than health and reflection) is refused with UNAVAILABLE and `RetryInfo`, while the
//! listener stays open so that health checks see NOT_SERVING.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use futures_util::future::{Either, Ready, ready};

use crate::Shutdown;
use crate::layer::{GrpcService, Layered, OnCall};
use crate::methods::Entry;
use crate::status::Refusal;

/// The shutdown signal as a handler finds it in its request's extensions.
#[derive(Debug, Clone)]
pub struct Draining(Shutdown);

impl Draining {
    /// The signal of the server that received `request` (`None` outside [`crate::serve`]).
    pub fn of<T>(request: &tonic::Request<T>) -> Option<Draining> {
        request.extensions().get::<Draining>().cloned()
    }

    /// Whether the server has started draining.
    pub fn is_draining(&self) -> bool {
        self.0.is_triggered()
    }

    /// Resolves once the server starts draining.
    pub async fn wait(&self) {
        self.0.wait().await;
    }
}

/// Calls of one server whose handlers are still running.
#[derive(Debug, Clone, Default)]
pub struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    /// How many calls are running now.
    pub fn count(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

/// One running call, given back when its future ends or is dropped.
struct Counted(Arc<AtomicUsize>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The layer of one server: puts [`Draining`] into every request and counts running calls.
#[derive(Debug, Clone)]
pub struct DrainLayer {
    shutdown: Shutdown,
    in_flight: InFlight,
}

impl DrainLayer {
    /// The layer for a server that drains when `shutdown` fires.
    pub fn new(shutdown: &Shutdown, in_flight: &InFlight) -> Self {
        Self {
            shutdown: shutdown.clone(),
            in_flight: in_flight.clone(),
        }
    }
}

impl<S> tower::Layer<S> for DrainLayer {
    type Service = Layered<Self, S>;

    fn layer(&self, inner: S) -> Self::Service {
        Layered::new(self.clone(), inner)
    }
}

impl<S, B> OnCall<S, B> for DrainLayer
where
    S: GrpcService<B>,
    S::Future: Unpin,
{
    // No box of its own: the inner call counted while it runs, or the refusal.
    type Future = Either<Running<S::Future>, Ready<Result<S::Response, S::Error>>>;

    fn call(&self, inner: &mut S, mut request: http::Request<B>) -> Self::Future {
        let entry = Entry::of(&request);
        if self.shutdown.is_triggered() && !entry.open {
            return Either::Right(ready(Ok(Refusal::Draining.into_http())));
        }
        // A unary handler has nothing to wind down: only calls that stream get the signal.
        if !entry.unary() {
            request
                .extensions_mut()
                .insert(Draining(self.shutdown.clone()));
        }
        self.in_flight.0.fetch_add(1, Ordering::Relaxed);
        let counted = Counted(self.in_flight.0.clone());
        Either::Left(Running {
            call: inner.call(request),
            _counted: counted,
        })
    }
}

/// A call counted in flight until its handler is done (or the call is dropped).
pub struct Running<F> {
    call: F,
    _counted: Counted,
}

impl<F: Future + Unpin> Future for Running<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        Pin::new(&mut self.call).poll(cx)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn a_streamed_call_counts_while_its_handler_runs_and_sees_the_drain() {
        let shutdown = Shutdown::new();
        let in_flight = InFlight::default();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let rx = Arc::new(tokio::sync::Mutex::new(Some(rx)));
        let svc = tower::service_fn(move |req: http::Request<()>| {
            let rx = rx.clone();
            Box::pin(async move {
                let seen = req.extensions().get::<Draining>().is_some();
                let rx = rx.lock().await.take().unwrap();
                let _ = rx.await;
                let code = if seen { "0" } else { "13" };
                let mut response = http::Response::new(tonic::body::Body::empty());
                response
                    .headers_mut()
                    .insert("grpc-status", http::HeaderValue::from_static(code));
                Ok::<_, std::convert::Infallible>(response)
            })
        });
        let layer = DrainLayer::new(&shutdown, &in_flight);
        let mut svc = tower::Layer::layer(&layer, svc);
        let request = || {
            http::Request::builder()
                .uri("/tickmesh.v1.IngestionService/IngestTicks")
                .body(())
                .unwrap()
        };
        let call = tower::Service::call(&mut svc, request());
        assert_eq!(in_flight.count(), 1);
        let task = tokio::spawn(call);
        tx.send(()).unwrap();
        let response = task.await.unwrap().unwrap();
        assert_eq!(
            response.headers()["grpc-status"],
            "0",
            "no Draining in the extensions"
        );
        assert_eq!(in_flight.count(), 0);
        // Draining: a new call is refused at once, a health check still goes through.
        shutdown.trigger();
        let refused = tower::Service::call(&mut svc, request()).await.unwrap();
        assert_eq!(refused.headers()["grpc-status"], "14");
        assert_eq!(in_flight.count(), 0);
    }
}
