//! Statuses every service returns the same way.

/// UNIMPLEMENTED for an RPC whose logic belongs to a later piece of work, saying which.
pub fn not_yet(rpc: &str, scope: &str) -> tonic::Status {
    tonic::Status::unimplemented(format!(
        "{rpc} is part of the contract but not implemented yet ({scope})"
    ))
}

/// INVALID_ARGUMENT naming one request field, with a `google.rpc.BadRequest` field violation.
pub fn bad_field(field: impl Into<String>, reason: impl Into<String>) -> tonic::Status {
    use tonic_types::{ErrorDetails, StatusExt};
    let (field, reason) = (field.into(), reason.into());
    let mut details = ErrorDetails::new();
    details.add_bad_request_violation(&field, &reason);
    tonic::Status::with_error_details(
        tonic::Code::InvalidArgument,
        format!("{field}: {reason}"),
        details,
    )
}
