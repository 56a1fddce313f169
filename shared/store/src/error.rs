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
}

impl StoreError {
    /// Whether retrying the same operation later may succeed (the database went away).
    pub fn is_transient(&self) -> bool {
        use diesel::result::DatabaseErrorKind as Kind;
        match self {
            Self::Unavailable(_) => true,
            Self::Query(diesel::result::Error::DatabaseError(kind, info)) => {
                matches!(kind, Kind::ClosedConnection | Kind::SerializationFailure)
                    // diesel reports these as Unknown; PostgreSQL's messages are stable
                    // (SQLSTATE 40P01, 57P01, 57P03).
                    || [
                        "deadlock detected",
                        "terminating connection due to administrator command",
                        "the database system is starting up",
                        "the database system is shutting down",
                    ]
                    .iter()
                    .any(|m| info.message().contains(m))
            }
            Self::Query(diesel::result::Error::BrokenTransactionManager) => true,
            _ => false,
        }
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
