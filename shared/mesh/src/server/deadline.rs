//! The server-side deadlines. A caller's `grpc-timeout` is honoured by tonic itself
//! (DEADLINE_EXCEEDED when it passes), up to `server.max_timeout`: a longer one is cut to that;
//! a unary call that sets none gets `server.default_timeout` instead, so no call can hold a slot
//! forever. A unary call's request message must arrive within `server.request_body_timeout`
//! of its headers ([`BodyTimeoutLayer`]). Streams are left alone: a long `IngestTicks` or a
//! live subscription is not a stuck call.
//! Hand-written: tower's `Timeout` fails the call with an error (tonic would report UNKNOWN)
//! and applies to every call, streams included.

use std::future::Future;
use std::pin::Pin;

use futures_util::future::Either;
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

impl<S: GrpcService<B>, B> OnCall<S, B> for DefaultDeadlineLayer {
    // The inner call as it is when the caller set a deadline, else boxed with the default.
    type Future =
        Either<S::Future, Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>>;

    fn call(&self, inner: &mut S, mut request: http::Request<B>) -> Self::Future {
        let unary = Entry::of(&request).unary();
        if let (true, Some(max)) = (unary, self.max) {
            let asked = request.headers().get("grpc-timeout").map(|value| {
                value
                    .to_str()
                    .ok()
                    .and_then(parse_grpc_timeout)
                    .unwrap_or(Duration::MAX)
            });
            // Too long, or not a timeout at all: the ceiling (tonic would ignore a bad value).
            if asked.is_some_and(|asked| asked > max) {
                let ceiling = format!("{}m", max.as_millis().min(99_999_999));
                if let Ok(value) = http::HeaderValue::from_str(&ceiling) {
                    request.headers_mut().insert("grpc-timeout", value);
                }
            }
        }
        if self.timeout.is_zero() || !unary || request.headers().contains_key("grpc-timeout") {
            return Either::Left(inner.call(request));
        }
        let timeout = self.timeout;
        let call = inner.call(request);
        Either::Right(Box::pin(async move {
            match tokio::time::timeout(timeout, call).await {
                Ok(response) => response,
                Err(_) => Ok(Refusal::ServerDeadline { timeout }.into_http()),
            }
        }))
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
    use super::parse_grpc_timeout;
    use std::time::Duration;

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
