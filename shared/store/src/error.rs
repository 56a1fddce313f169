//! Errors of the store.

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The URL names no backend we know (the scheme is kept, the rest may hold a password).
    #[error("unsupported store url scheme {0:?}: use postgres://... or sqlite:PATH")]
    UnsupportedUrl(String),
    /// No connection could be had in time: the database is down or overloaded. Retryable.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A statement failed.
    #[error("store query failed: {0}")]
    Query(#[from] diesel::result::Error),
    /// Migrations could not be applied.
    #[error("store migration failed: {0}")]
    Migration(String),
    /// The failure of a read this caller shared with others (see `FreshReads`).
    #[error("{0}")]
    Shared(std::sync::Arc<StoreError>),
}

/// Messages of PostgreSQL (SQLSTATE 40P01, 57P01, 57P02, 57P03) that diesel reports as
/// `Unknown`: the server is going away or coming back, or chose this transaction to abort.
const TRANSIENT_SERVER_MESSAGES: [&str; 7] = [
    "deadlock detected",
    "terminating connection due to administrator command",
    "terminating connection due to immediate shutdown command",
    "terminating connection because of crash of another server process",
    "the database system is starting up",
    "the database system is shutting down",
    "the database system is in recovery mode",
];

/// How diesel-async reports a connection that died under a statement: tokio-postgres errors
/// without an SQLSTATE become `UnableToSendCommand` with tokio-postgres' text, e.g.
/// "connection closed" (the socket is gone) or "error communicating with the server: ..."
/// (an I/O error). Other errors of that kind (a parameter that does not serialise) are not
/// about the connection and stay permanent.
const CONNECTION_LOST_MESSAGES: [&str; 4] = [
    "connection closed",
    "error communicating with the server",
    "timeout waiting for server",
    "error connecting to server",
];

impl StoreError {
    /// Whether retrying the same operation later may succeed (the database went away, or
    /// the connection died in the middle of the batch: it was rolled back, or, if the commit
    /// itself was cut off, possibly committed, which an idempotent retry makes harmless).
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Unavailable(_) => true,
            Self::Query(e) => query_error_is_transient(e),
            Self::Shared(e) => e.is_transient(),
            _ => false,
        }
    }
}

fn query_error_is_transient(error: &diesel::result::Error) -> bool {
    use diesel::result::{DatabaseErrorKind as Kind, Error};
    match error {
        Error::DatabaseError(Kind::ClosedConnection | Kind::SerializationFailure, _) => true,
        Error::DatabaseError(Kind::UnableToSendCommand, info) => CONNECTION_LOST_MESSAGES
            .iter()
            .any(|m| info.message().starts_with(m)),
        Error::DatabaseError(_, info) => TRANSIENT_SERVER_MESSAGES
            .iter()
            .any(|m| info.message().contains(m)),
        Error::BrokenTransactionManager => true,
        Error::RollbackErrorOnCommit { commit_error, .. } => query_error_is_transient(commit_error),
        _ => false,
    }
}

impl<E: std::error::Error + 'static> From<bb8::RunError<E>> for StoreError {
    fn from(e: bb8::RunError<E>) -> Self {
        match e {
            bb8::RunError::TimedOut => Self::Unavailable("no connection within the timeout".into()),
            bb8::RunError::User(e) => Self::Unavailable(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use diesel::result::{DatabaseErrorKind as Kind, Error};

    fn db(kind: Kind, message: &str) -> StoreError {
        StoreError::Query(Error::DatabaseError(kind, Box::new(message.to_owned())))
    }

    #[test]
    fn a_connection_closed_under_a_batch_is_transient() {
        // What diesel-async returns when PostgreSQL goes away mid-transaction.
        assert!(db(Kind::UnableToSendCommand, "connection closed").is_transient());
        assert!(
            db(
                Kind::UnableToSendCommand,
                "error communicating with the server: Connection reset by peer (os error 104)"
            )
            .is_transient()
        );
        assert!(db(Kind::ClosedConnection, "server closed the connection").is_transient());
        assert!(StoreError::Query(Error::BrokenTransactionManager).is_transient());
    }

    #[test]
    fn a_server_shutting_down_or_crashing_is_transient() {
        for message in TRANSIENT_SERVER_MESSAGES {
            assert!(db(Kind::Unknown, message).is_transient(), "{message}");
        }
        assert!(db(Kind::SerializationFailure, "could not serialize access").is_transient());
        assert!(StoreError::Unavailable("no connection within the timeout".into()).is_transient());
    }

    #[test]
    fn a_commit_cut_off_by_a_lost_connection_is_transient() {
        let lost = Error::RollbackErrorOnCommit {
            commit_error: Box::new(Error::DatabaseError(
                Kind::UnableToSendCommand,
                Box::new("connection closed".to_owned()),
            )),
            rollback_error: Box::new(Error::BrokenTransactionManager),
        };
        assert!(StoreError::Query(lost).is_transient());
    }

    #[test]
    fn bad_statements_and_data_are_not_transient() {
        assert!(!db(Kind::UniqueViolation, "duplicate key value").is_transient());
        assert!(!db(Kind::UnableToSendCommand, "error serializing parameter 2").is_transient());
        assert!(!db(Kind::Unknown, "syntax error at or near \"SELEC\"").is_transient());
        assert!(!StoreError::Query(Error::NotFound).is_transient());
        assert!(!StoreError::Migration("bad".into()).is_transient());
        assert!(!StoreError::UnsupportedUrl("mysql".into()).is_transient());
    }
}
