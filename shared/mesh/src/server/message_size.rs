//! Oversized messages get RESOURCE_EXHAUSTED, as gRPC's status code guide says, not the
//! OUT_OF_RANGE tonic's decoder reports. The limit itself is `server.max_message_bytes`, set on
//! every generated server; this layer only corrects the code of the refusal.
//! Hand-written: it rewrites a status tonic produced, which no shipped layer does.

use std::future::Future;
use std::pin::Pin;

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

impl<S: GrpcService<B>, B> OnCall<S, B> for MessageSizeLayer {
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn call(&self, inner: &mut S, request: http::Request<B>) -> Self::Future {
        let call = inner.call(request);
        Box::pin(async move {
            let mut response = call.await?;
            let headers = response.headers_mut();
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
            Ok(response)
        })
    }
}

/// The start of what tonic's decoder says when a message is over the limit, as it appears in
/// the percent-encoded `grpc-message` header (spaces are encoded).
const TOO_LARGE_ENCODED: &[u8] = b"Error,%20decoded%20message%20length%20too%20large";

#[cfg(test)]
mod tests {
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
