//! The server-side deadlines. A caller's `grpc-timeout` is honoured by tonic itself
//! (DEADLINE_EXCEEDED when it passes), up to `server.max_timeout`: past that, this layer ends
//! the call (tonic reads the header before any layer of ours could shorten it);
//! a unary call that sets none gets `server.default_timeout` instead, so no call can hold a slot
//! forever. A unary call's request message must arrive within `server.request_body_timeout`
//! of its headers ([`BodyTimeoutLayer`]). Streams are left alone: a long `IngestTicks` or a
//! live subscription is not a stuck call.
//! Hand-written: tower's `Timeout` fails the call with an error (tonic would report UNKNOWN)
//! and applies to every call, streams included.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use crate::layer::{GrpcService, Layered, OnCall};
use crate::methods::Entry;
use crate::status::Refusal;

/// Applies a default deadline to unary calls without one, and a ceiling to those with one.
#[derive(Clone, Debug)]
pub struct DefaultDeadlineLayer {
    timeout: Duration,
    max: Option<Duration>,
}

impl DefaultDeadlineLayer {
    /// Unary calls without `grpc-timeout` end after `timeout` (zero: no default).
    pub fn new(timeout: Duration) -> Self {
        Self { timeout, max: None }
    }

    /// Unary calls that ask for more than `max` get `max`.
    pub fn with_max(mut self, max: Duration) -> Self {
        self.max = (!max.is_zero()).then_some(max);
        self
    }
}

/// A `grpc-timeout` value (1-8 digits and a unit) as a duration.
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

impl<S> tower::Layer<S> for DefaultDeadlineLayer {
    type Service = Layered<Self, S>;

    fn layer(&self, inner: S) -> Self::Service {
        Layered::new(self.clone(), inner)
    }
}

impl<S, B> OnCall<S, B> for DefaultDeadlineLayer
where
    S: GrpcService<B>,
    S::Future: Unpin,
{
    // No box of its own: the inner call, with a timer made only if it has to be waited for.
    type Future = Bounded<S::Future>;

    fn call(&self, inner: &mut S, request: http::Request<B>) -> Self::Future {
        let bound = if Entry::of(&request).unary() {
            match request.headers().get("grpc-timeout") {
                // tonic's own timer runs from the header, read before this layer; a longer one
                // than the ceiling (or one that is not a timeout at all, which tonic ignores)
                // is cut here.
                Some(value) => self.max.and_then(|max| {
                    let asked = value.to_str().ok().and_then(parse_grpc_timeout);
                    asked.is_none_or(|asked| asked > max).then_some((max, true))
                }),
                None => (!self.timeout.is_zero()).then_some((self.timeout, false)),
            }
        } else {
            None
        };
        Bounded {
            call: inner.call(request),
            bound: bound.map(|(after, ceiling)| Bound {
                after,
                ceiling,
                timer: None,
            }),
        }
    }
}

/// A call that ends with its refusal when its bound passes first.
pub struct Bounded<F> {
    call: F,
    bound: Option<Bound>,
}

struct Bound {
    after: Duration,
    /// The caller asked for longer than `server.max_timeout` (else: it asked for nothing).
    ceiling: bool,
    /// Armed at the first poll that finds the call not done: most unary calls answer at once.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<F, E> Future for Bounded<F>
where
    F: Future<Output = Result<http::Response<tonic::body::Body>, E>> + Unpin,
{
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        if let Poll::Ready(output) = Pin::new(&mut self.call).poll(cx) {
            return Poll::Ready(output);
        }
        let Some(bound) = self.bound.as_mut() else {
            return Poll::Pending;
        };
        let after = bound.after;
        let timer = bound
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(after)));
        std::task::ready!(timer.as_mut().poll(cx));
        let refusal = if bound.ceiling {
            Refusal::DeadlineCeiling { max: after }
        } else {
            Refusal::ServerDeadline { timeout: after }
        };
        Poll::Ready(Ok(refusal.into_http()))
    }
}

/// Ends a unary call whose request message has not fully arrived `timeout` after its headers
/// (a client that sends headers and then nothing would otherwise hold its slot until its
/// deadline).
#[derive(Clone, Debug)]
pub struct BodyTimeoutLayer {
    timeout: Duration,
}

impl BodyTimeoutLayer {
    /// `timeout` zero: no bound.
    pub fn new(timeout: Duration) -> Self {
        Self { timeout }
    }
}

impl<S> tower::Layer<S> for BodyTimeoutLayer {
    type Service = Layered<Self, S>;

    fn layer(&self, inner: S) -> Self::Service {
        Layered::new(self.clone(), inner)
    }
}

impl<S: GrpcService<tonic::body::Body>> OnCall<S, tonic::body::Body> for BodyTimeoutLayer {
    type Future = S::Future;

    fn call(&self, inner: &mut S, request: http::Request<tonic::body::Body>) -> Self::Future {
        if self.timeout.is_zero() || !Entry::of(&request).unary() {
            return inner.call(request);
        }
        let timeout = self.timeout;
        let request = request.map(|body| {
            tonic::body::Body::new(TimedBody {
                body,
                deadline: tokio::time::Instant::now() + timeout,
                timer: None,
                timeout,
                done: false,
            })
        });
        inner.call(request)
    }
}

/// A request body that fails with DEADLINE_EXCEEDED once its timer fires before its end. The
/// timer is made only when the body has to be waited for: a unary request has usually arrived
/// whole with its headers, and then costs no timer at all.
struct TimedBody {
    body: tonic::body::Body,
    deadline: tokio::time::Instant,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    timeout: Duration,
    done: bool,
}

impl http_body::Body for TimedBody {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        use std::task::Poll;
        if self.done {
            return Pin::new(&mut self.body).poll_frame(cx);
        }
        match Pin::new(&mut self.body).poll_frame(cx) {
            Poll::Ready(None) => {
                self.done = true;
                Poll::Ready(None)
            }
            Poll::Ready(Some(frame)) => Poll::Ready(Some(frame)),
            Poll::Pending => {
                let deadline = self.deadline;
                let fired = self
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)))
                    .as_mut()
                    .poll(cx);
                match fired {
                    Poll::Ready(()) => {
                        self.done = true;
                        let timeout = self.timeout;
                        Poll::Ready(Some(Err(Refusal::BodyTimeout { timeout }.into())))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A handler that never answers, behind the layer with a 50 ms default and a 200 ms ceiling.
    fn stuck() -> impl tower::Service<
        http::Request<()>,
        Response = http::Response<tonic::body::Body>,
        Error = std::convert::Infallible,
        Future: Unpin,
    > {
        let layer = DefaultDeadlineLayer::new(Duration::from_millis(50))
            .with_max(Duration::from_millis(200));
        tower::Layer::layer(
            &layer,
            tower::service_fn(|_: http::Request<()>| {
                std::future::pending::<
                    Result<http::Response<tonic::body::Body>, std::convert::Infallible>,
                >()
            }),
        )
    }

    async fn status_after(timeout: Option<&str>) -> (String, Duration) {
        let mut request = http::Request::builder().uri("/tickmesh.v1.QueryService/GetCandles");
        if let Some(t) = timeout {
            request = request.header("grpc-timeout", t);
        }
        let started = std::time::Instant::now();
        let response = tower::ServiceExt::oneshot(stuck(), request.body(()).unwrap())
            .await
            .unwrap();
        let status = tonic::Status::from_header_map(response.headers()).unwrap();
        (
            format!("{:?}: {}", status.code(), status.message()),
            started.elapsed(),
        )
    }

    #[tokio::test]
    async fn a_call_without_a_deadline_ends_at_the_default_and_a_longer_one_at_the_ceiling() {
        let (status, after) = status_after(None).await;
        assert!(
            status.contains("DeadlineExceeded") && status.contains("default_timeout"),
            "{status}"
        );
        assert!(after >= Duration::from_millis(50), "{after:?}");
        // 1,000 s asked, 200 ms allowed (tonic's own timer would only fire at 1,000 s).
        let (status, after) = status_after(Some("1000S")).await;
        assert!(
            status.contains("DeadlineExceeded") && status.contains("max_timeout"),
            "{status}"
        );
        assert!(after >= Duration::from_millis(200), "{after:?}");
        // Not a timeout tonic understands: the ceiling too.
        let (status, after) = status_after(Some("soon")).await;
        assert!(status.contains("max_timeout"), "{status}");
        assert!(after >= Duration::from_millis(200), "{after:?}");
    }

    #[test]
    fn grpc_timeouts_parse_as_the_spec_writes_them() {
        assert_eq!(parse_grpc_timeout("100m"), Some(Duration::from_millis(100)));
        assert_eq!(parse_grpc_timeout("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(
            parse_grpc_timeout("99999999S"),
            Some(Duration::from_secs(99_999_999))
        );
        for bad in ["", "m", "123456789m", "10x", "-1S", "1.5S"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad}");
        }
    }
}
