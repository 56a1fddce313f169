//! Why the mesh answered a call itself, as typed errors, and the one place they become a
//! [`tonic::Status`] with their details: `google.rpc.RetryInfo` on every refusal worth retrying
//! (rate limit, load shedding, open circuit), `google.rpc.BadRequest` for a bad field.

use std::sync::Arc;
use std::time::Duration;

use tickmesh_proto::v1::Scope;
use tonic::Code;
use tonic_types::{ErrorDetails, StatusExt};

use crate::methods::scope_name;

/// A call the mesh refused or gave up on, before or instead of the service's answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The call presents no API key.
    #[error("missing API key: send metadata `authorization: Bearer <key>` or `x-api-key`")]
    MissingKey,
    /// The call presents a key nobody holds.
    #[error("unknown API key")]
    UnknownKey,
    /// The caller's scope does not cover the one the method declares.
    #[error(
        "caller {caller} has scope {}; {method} needs {}",
        scope_name(*has),
        scope_name(*needs)
    )]
    PermissionDenied {
        /// The key holder.
        caller: Arc<str>,
        /// The holder's widest scope.
        has: Scope,
        /// The method, `package.Service/Method`.
        method: String,
        /// The scope the method needs.
        needs: Scope,
    },
    /// The caller is over its rate limit.
    #[error(
        "rate limit of caller {caller} exceeded; retry in {} ms",
        retry_after.as_millis().max(1)
    )]
    RateLimited {
        /// The key holder.
        caller: Arc<str>,
        /// When the next token is there.
        retry_after: Duration,
    },
    /// The server has as many calls in flight as it takes.
    #[error("server busy: {limit} calls in flight (server.concurrency_limit); retry with backoff")]
    Overloaded {
        /// `server.concurrency_limit`.
        limit: usize,
    },
    /// The caller holds its whole share of the server's call slots.
    #[error(
        "caller {caller} has {limit} calls in flight, its share of this server \
         (server.caller_concurrency_share); retry with backoff"
    )]
    CallerBusy {
        /// The key holder, or the client's address when auth is off.
        caller: Arc<str>,
        /// The share, in calls.
        limit: usize,
    },
    /// The caller has as many server streams open as it may.
    #[error("caller {caller} has {limit} streams open ({setting}); close one first")]
    TooManyStreams {
        /// The key holder, or the client's address.
        caller: Arc<str>,
        /// The limit.
        limit: usize,
        /// The setting that sets it.
        setting: &'static str,
    },
    /// A unary call's request message did not arrive in time after its headers.
    #[error(
        "the request message did not arrive within {timeout:?} of the call's headers \
         (server.request_body_timeout)"
    )]
    BodyTimeout {
        /// `server.request_body_timeout`.
        timeout: Duration,
    },
    /// The server is shutting down: the call is not started.
    #[error("server is shutting down: retry (another replica takes the call)")]
    Draining,
    /// The client's circuit to the peer is open.
    #[error("circuit to {peer} is open; next probe in {} ms", retry_after.as_millis())]
    BreakerOpen {
        /// The peer.
        peer: Arc<str>,
        /// When the breaker lets a probe through.
        retry_after: Duration,
    },
    /// A unary call without a deadline ran past the server's default one.
    #[error(
        "the call set no deadline and ran past the server's default of {timeout:?} \
         (server.default_timeout)"
    )]
    ServerDeadline {
        /// `server.default_timeout`.
        timeout: Duration,
    },
    /// A unary call asked for a deadline longer than the server allows and ran past that.
    #[error(
        "the call asked for a deadline over the server's ceiling of {max:?} \
         (server.max_timeout) and ran past the ceiling"
    )]
    DeadlineCeiling {
        /// `server.max_timeout`.
        max: Duration,
    },
    /// A unary call without a deadline got no answer within the client's default one.
    #[error("no answer within the default deadline of {timeout:?}")]
    ClientDeadline {
        /// `server.default_timeout` of the calling process.
        timeout: Duration,
    },
    /// A request field is invalid.
    #[error("{field}: {reason}")]
    BadField {
        /// The field's path in the request.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The RPC is in the contract but its logic belongs to a later piece of work.
    #[error("{rpc} is part of the contract but not implemented yet ({scope})")]
    NotYet {
        /// The RPC.
        rpc: String,
        /// The work it belongs to.
        scope: String,
    },
}

impl Refusal {
    /// The gRPC status code of the refusal.
    pub fn code(&self) -> Code {
        match self {
            Self::MissingKey | Self::UnknownKey => Code::Unauthenticated,
            Self::PermissionDenied { .. } => Code::PermissionDenied,
            Self::RateLimited { .. } | Self::CallerBusy { .. } | Self::TooManyStreams { .. } => {
                Code::ResourceExhausted
            }
            Self::BodyTimeout { .. } => Code::DeadlineExceeded,
            Self::Overloaded { .. } | Self::BreakerOpen { .. } | Self::Draining => {
                Code::Unavailable
            }
            Self::ServerDeadline { .. }
            | Self::DeadlineCeiling { .. }
            | Self::ClientDeadline { .. } => Code::DeadlineExceeded,
            Self::BadField { .. } => Code::InvalidArgument,
            Self::NotYet { .. } => Code::Unimplemented,
        }
    }

    /// The refusal as a response with its status in the headers (trailers-only).
    pub fn into_http(self) -> http::Response<tonic::body::Body> {
        tonic::Status::from(self).into_http()
    }
}

impl From<Refusal> for tonic::Status {
    fn from(refusal: Refusal) -> Self {
        let code = refusal.code();
        let message = refusal.to_string();
        let details = match &refusal {
            Refusal::RateLimited { retry_after, .. } | Refusal::BreakerOpen { retry_after, .. } => {
                ErrorDetails::with_retry_info(Some(*retry_after))
            }
            // No better hint than "with backoff": when a slot frees up depends on other calls.
            Refusal::Overloaded { .. } | Refusal::CallerBusy { .. } | Refusal::Draining => {
                ErrorDetails::with_retry_info(None)
            }
            Refusal::BadField { field, reason } => {
                let mut details = ErrorDetails::new();
                details.add_bad_request_violation(field, reason);
                details
            }
            _ => return tonic::Status::new(code, message),
        };
        tonic::Status::with_error_details(code, message, details)
    }
}

/// UNIMPLEMENTED for an RPC whose logic belongs to a later piece of work, saying which.
pub fn not_yet(rpc: &str, scope: &str) -> tonic::Status {
    Refusal::NotYet {
        rpc: rpc.to_owned(),
        scope: scope.to_owned(),
    }
    .into()
}

/// INVALID_ARGUMENT naming one request field, with a `google.rpc.BadRequest` field violation.
pub fn bad_field(field: impl Into<String>, reason: impl Into<String>) -> tonic::Status {
    Refusal::BadField {
        field: field.into(),
        reason: reason.into(),
    }
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_retryable_refusal_carries_retry_info() {
        let retryable = [
            Refusal::RateLimited {
                caller: Arc::from("feed"),
                retry_after: Duration::from_millis(40),
            },
            Refusal::Overloaded { limit: 8 },
            Refusal::BreakerOpen {
                peer: Arc::from("tickmesh.v1.QueryService"),
                retry_after: Duration::from_millis(250),
            },
        ];
        for refusal in retryable {
            let status = tonic::Status::from(refusal.clone());
            assert_eq!(status.code(), refusal.code());
            assert_eq!(status.message(), refusal.to_string());
            assert!(status.get_details_retry_info().is_some(), "{refusal:?}");
        }
        let limited = tonic::Status::from(Refusal::RateLimited {
            caller: Arc::from("feed"),
            retry_after: Duration::from_millis(40),
        });
        assert_eq!(
            limited.message(),
            "rate limit of caller feed exceeded; retry in 40 ms"
        );
        assert_eq!(
            limited.get_details_retry_info().and_then(|r| r.retry_delay),
            Some(Duration::from_millis(40))
        );
        let denied = tonic::Status::from(Refusal::MissingKey);
        assert_eq!(denied.code(), Code::Unauthenticated);
        assert!(denied.get_details_retry_info().is_none());
    }

    #[test]
    fn a_bad_field_carries_a_field_violation() {
        let status = bad_field("symbol", "must not be empty");
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(status.message(), "symbol: must not be empty");
        let violations = status
            .get_details_bad_request()
            .map(|b| b.field_violations)
            .unwrap_or_default();
        assert_eq!(violations.len(), 1);
        assert_eq!(violations[0].field, "symbol");
        assert_eq!(violations[0].description, "must not be empty");
    }

    #[test]
    fn a_permission_refusal_names_both_scopes() {
        let refusal = Refusal::PermissionDenied {
            caller: Arc::from("dash"),
            has: Scope::Read,
            method: "tickmesh.v1.ConfigService/UpdateConfig".into(),
            needs: Scope::Admin,
        };
        assert_eq!(
            refusal.to_string(),
            "caller dash has scope read; tickmesh.v1.ConfigService/UpdateConfig needs admin"
        );
        assert_eq!(refusal.code(), Code::PermissionDenied);
    }
}
