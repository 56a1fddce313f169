//! Every error of the ingestion service becomes a `tonic::Status` here, in one place.

use tickmesh_store::StoreError;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::validate::Violation;

/// Field violations listed in one status; the message says how many there were in all.
const MAX_VIOLATIONS_IN_STATUS: usize = 100;

/// How long a client should wait before retrying a batch the store could not take.
const STORE_RETRY_DELAY: std::time::Duration = std::time::Duration::from_secs(1);

/// A store failure: UNAVAILABLE with a `RetryInfo` when the database went away, even in the
/// middle of the batch (the batch was not committed and retrying it is safe, writes being
/// idempotent), INTERNAL otherwise.
pub fn from_store(error: StoreError) -> Status {
    if error.is_transient() {
        Status::with_error_details(
            Code::Unavailable,
            format!("{error}; the batch was not committed, retry it (writes are idempotent)"),
            ErrorDetails::with_retry_info(Some(STORE_RETRY_DELAY)),
        )
    } else {
        tracing::error!(error = %error, "store write failed");
        Status::internal(format!("{error}; the batch was not committed"))
    }
}

/// INVALID_ARGUMENT for a batch in which no row is valid, with a field violation per row.
pub fn nothing_valid(list: &str, violations: &[Violation]) -> Status {
    if violations.is_empty() {
        return bad_request(
            list.to_owned(),
            "must hold at least one row".into(),
            format!("no {list} in the request"),
        );
    }
    let mut details = ErrorDetails::new();
    for v in violations.iter().take(MAX_VIOLATIONS_IN_STATUS) {
        details.add_bad_request_violation(format!("{list}[{}].{}", v.row, v.field), &v.reason);
    }
    let first = &violations[0];
    Status::with_error_details(
        Code::InvalidArgument,
        format!(
            "none of the {} {list} is valid, nothing was stored; first: {list}[{}].{} {}",
            violations.len(),
            first.row,
            first.field,
            first.reason
        ),
        details,
    )
}

/// INVALID_ARGUMENT for a batch over the configured size limit.
pub fn too_many(list: &str, rows: usize, max: usize) -> Status {
    bad_request(
        list.to_owned(),
        format!("at most {max} rows per batch (ingestion.max_batch_rows)"),
        format!("batch of {rows} {list} is over the limit of {max}; split it, nothing was stored"),
    )
}

fn bad_request(field: String, description: String, message: String) -> Status {
    let mut details = ErrorDetails::new();
    details.add_bad_request_violation(field, description);
    Status::with_error_details(Code::InvalidArgument, message, details)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transient_store_failure_is_unavailable_with_retry_info() {
        // StoreError::is_transient's own tests cover a connection lost mid-batch.
        let status = from_store(StoreError::Unavailable("connection closed".into()));
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        assert!(status.message().contains("not committed"), "{status:?}");
        let retry = status.get_error_details().retry_info().cloned();
        assert_eq!(retry.and_then(|r| r.retry_delay), Some(STORE_RETRY_DELAY));
    }

    #[test]
    fn a_permanent_store_failure_is_internal() {
        let status = from_store(StoreError::Migration("bad".into()));
        assert_eq!(status.code(), Code::Internal);
    }
}
