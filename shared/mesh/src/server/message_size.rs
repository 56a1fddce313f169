//! Oversized messages get RESOURCE_EXHAUSTED, as gRPC's status code guide says, not the
//! OUT_OF_RANGE tonic's decoder reports. The limit itself is `server.max_message_bytes`, set on
//! every generated server; this layer only corrects the code of the refusal.
//! It also bounds what a refusal sends back: a `grpc-message` longer than
//! [`MAX_STATUS_MESSAGE`] bytes is cut, and `grpc-status-details-bin` over [`MAX_DETAILS`] is
//! dropped, so no input a handler quotes can make a response header of megabytes.
//! Hand-written: it rewrites a status tonic produced, which no shipped layer does.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::layer::{GrpcService, Layered, OnCall};

/// Rewrites the status of oversized requests.
#[derive(Clone, Copy, Debug, Default)]
pub struct MessageSizeLayer;

impl<S> tower::Layer<S> for MessageSizeLayer {
    type Service = Layered<Self, S>;

    fn layer(&self, inner: S) -> Self::Service {
        Layered::new(*self, inner)
    }
}

impl<S, B> OnCall<S, B> for MessageSizeLayer
where
    S: GrpcService<B>,
    S::Future: Unpin,
{
    // No box of its own: the inner call, its response's headers corrected when it is ready.
    type Future = Corrected<S::Future>;

    fn call(&self, inner: &mut S, request: http::Request<B>) -> Self::Future {
        Corrected {
            call: inner.call(request),
        }
    }
}

/// A call whose response headers [`correct`] goes over once they are ready.
pub struct Corrected<F> {
    call: F,
}

impl<F, E> Future for Corrected<F>
where
    F: Future<Output = Result<http::Response<tonic::body::Body>, E>> + Unpin,
{
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut response = std::task::ready!(Pin::new(&mut self.call).poll(cx))?;
        correct(response.headers_mut());
        Poll::Ready(Ok(response))
    }
}

/// RESOURCE_EXHAUSTED for tonic's "message too large", and the status bounded.
fn correct(headers: &mut http::HeaderMap) {
    // An answer with its status in the headers is a refusal (trailers-only); an answer that
    // carries messages has its status in the trailers, which no handler fills from input.
    if !headers.contains_key("grpc-status") {
        return;
    }
    let oversized = headers
        .get("grpc-status")
        .is_some_and(|s| s.as_bytes() == b"11")
        && headers
            .get("grpc-message")
            .is_some_and(|m| m.as_bytes().starts_with(TOO_LARGE_ENCODED));
    if oversized {
        headers.insert(
            "grpc-status",
            http::HeaderValue::from_static("8"), // RESOURCE_EXHAUSTED
        );
    }
    bound_status(headers);
}

/// Longest `grpc-message` sent, in (percent-encoded) bytes.
pub const MAX_STATUS_MESSAGE: usize = 1024;
/// Largest `grpc-status-details-bin` sent, in (base64) bytes.
pub const MAX_DETAILS: usize = 16 * 1024;

/// Cuts an overlong status message (never inside a `%XX` escape) and drops overlong details.
fn bound_status(headers: &mut http::HeaderMap) {
    if let Some(message) = headers.get("grpc-message")
        && message.len() > MAX_STATUS_MESSAGE
    {
        let bytes = message.as_bytes();
        let mut cut = MAX_STATUS_MESSAGE;
        // An escape is three bytes; back off if the cut falls in one.
        if let Some(percent) = bytes[cut.saturating_sub(2)..cut]
            .iter()
            .rposition(|b| *b == b'%')
        {
            cut = cut - 2 + percent;
        }
        let mut bounded = bytes[..cut].to_vec();
        bounded.extend_from_slice(b"...%20(cut)");
        if let Ok(value) = http::HeaderValue::from_bytes(&bounded) {
            headers.insert("grpc-message", value);
        }
    }
    if headers
        .get("grpc-status-details-bin")
        .is_some_and(|details| details.len() > MAX_DETAILS)
    {
        headers.remove("grpc-status-details-bin");
    }
}

/// The start of what tonic's decoder says when a message is over the limit, as it appears in
/// the percent-encoded `grpc-message` header (spaces are encoded).
const TOO_LARGE_ENCODED: &[u8] = b"Error,%20decoded%20message%20length%20too%20large";

#[cfg(test)]
mod tests {
    #[test]
    fn a_long_status_message_is_cut_outside_an_escape() {
        let status = tonic::Status::invalid_argument(format!(
            "price {} is not a number",
            "é".repeat(100_000)
        ));
        let mut response = status.into_http::<tonic::body::Body>();
        super::bound_status(response.headers_mut());
        let message = response.headers()["grpc-message"].as_bytes().to_vec();
        assert!(
            message.len() <= super::MAX_STATUS_MESSAGE + 16,
            "{}",
            message.len()
        );
        let text = String::from_utf8(message).unwrap();
        assert!(text.ends_with("...%20(cut)"), "{text}");
        // Still valid percent-encoding: every % starts a full escape.
        let body = text.trim_end_matches("...%20(cut)");
        for (i, _) in body.match_indices('%') {
            assert!(i + 3 <= body.len(), "{body}");
        }
    }

    #[test]
    fn the_encoded_prefix_is_what_tonic_sends() {
        let status = tonic::Status::out_of_range(
            "Error, decoded message length too large: found 9 bytes, the limit is: 4 bytes",
        );
        let response = status.into_http::<tonic::body::Body>();
        let message = response
            .headers()
            .get("grpc-message")
            .map(|m| m.as_bytes().to_vec());
        let message = message.unwrap_or_default();
        assert!(
            message.starts_with(super::TOO_LARGE_ENCODED),
            "{}",
            String::from_utf8_lossy(&message)
        );
    }
}
