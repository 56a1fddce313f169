//! Errors of the bus.

use bb8_redis::bb8;
use redis::{ErrorKind, RedisError, RetryMethod, ServerErrorKind};

/// Why a bus operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BusError {
    /// The Redis URL could not be understood.
    #[error("invalid redis url: {0}")]
    InvalidUrl(String),
    /// Redis could not be reached or did not answer in time. Retryable.
    #[error("bus unavailable: {0}")]
    Unavailable(String),
    /// Redis refused a command for a reason retrying will not fix.
    #[error("bus command failed: {0}")]
    Command(String),
    /// A delivery id passed to `ack` is not a stream id (`<number>-<number>`).
    #[error("invalid delivery id {0:?}")]
    InvalidId(String),
}

impl BusError {
    /// Whether retrying the same operation later may succeed (Redis went away or is busy).
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

impl From<RedisError> for BusError {
    fn from(err: RedisError) -> Self {
        let transient = err.is_io_error()
            || matches!(err.retry_method(), RetryMethod::WaitAndRetry)
            // A replica that has not been promoted yet answers READONLY during a failover.
            || err.kind() == ErrorKind::Server(ServerErrorKind::ReadOnly);
        if transient {
            Self::Unavailable(err.to_string())
        } else {
            Self::Command(err.to_string())
        }
    }
}

impl From<bb8::RunError<RedisError>> for BusError {
    fn from(err: bb8::RunError<RedisError>) -> Self {
        match err {
            bb8::RunError::TimedOut => {
                Self::Unavailable("no redis connection within the timeout".into())
            }
            // Whatever kept bb8 from connecting (refused, reset, DNS) is about reaching Redis.
            bb8::RunError::User(err) => Self::Unavailable(err.to_string()),
        }
    }
}

/// Checks that `id` looks like a stream id, `<milliseconds>-<sequence>`, as Redis requires.
pub(crate) fn parse_id(id: &str) -> Result<(u64, u64), BusError> {
    id.split_once('-')
        .and_then(|(ms, seq)| Some((ms.parse().ok()?, seq.parse().ok()?)))
        .ok_or_else(|| BusError::InvalidId(id.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_id_has_two_numbers() {
        assert_eq!(parse_id("1700000000000-3"), Ok((1_700_000_000_000, 3)));
        assert!(parse_id("17").is_err());
        assert!(parse_id("a-1").is_err());
        assert!(parse_id("1-").is_err());
    }

    #[test]
    fn only_unavailable_is_transient() {
        assert!(BusError::Unavailable("down".into()).is_transient());
        assert!(!BusError::Command("WRONGTYPE".into()).is_transient());
        assert!(!BusError::InvalidId("x".into()).is_transient());
    }

    #[test]
    fn an_io_error_is_transient() {
        let io = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert!(BusError::from(RedisError::from(io)).is_transient());
    }
}
