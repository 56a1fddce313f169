//! Errors of the store.

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The URL names no backend we know.
    #[error("unsupported store url {0:?}: use postgres://... or sqlite:PATH")]
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
        match self {
            Self::Unavailable(_) => true,
            Self::Query(diesel::result::Error::DatabaseError(kind, _)) => matches!(
                kind,
                diesel::result::DatabaseErrorKind::ClosedConnection
                    | diesel::result::DatabaseErrorKind::SerializationFailure
            ),
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
