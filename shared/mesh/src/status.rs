//! Statuses every service returns the same way.

/// UNIMPLEMENTED for an RPC whose logic belongs to a later piece of work, saying which.
pub fn not_yet(rpc: &str, scope: &str) -> tonic::Status {
    tonic::Status::unimplemented(format!(
        "{rpc} is part of the contract but not implemented yet ({scope})"
    ))
}
