//! The one error type of the testkit.

use std::process::ExitStatus;
use std::time::Duration;

/// Everything that can go wrong while starting, driving or stopping a throwaway server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A program the tests need is not installed; `hint` says how to install it.
    #[error(
        "{name} not found: {hint} (or run scripts/test.sh, which installs everything the tests need)"
    )]
    MissingBinary {
        /// The program that was looked for, e.g. `redis-server`.
        name: String,
        /// How to install it, e.g. ``install it with `apt-get install redis-server` ``.
        hint: String,
    },
    /// An operating-system call failed.
    #[error("{context}: {source}")]
    Io {
        /// What the testkit was doing.
        context: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A helper program (initdb, psql, ...) exited unsuccessfully.
    #[error("`{command}` failed ({status}): {stderr}")]
    CommandFailed {
        /// The command line, for the reader.
        command: String,
        /// How it exited.
        status: ExitStatus,
        /// What it printed on stderr (stdout if stderr was empty), trimmed.
        stderr: String,
    },
    /// A server exited before it accepted connections.
    #[error("{server} exited during startup ({status}); log tail:\n{log}")]
    Exited {
        /// Which server, e.g. `postgres`.
        server: &'static str,
        /// How it exited.
        status: ExitStatus,
        /// The last lines it logged.
        log: String,
    },
    /// A server did not accept connections in time.
    #[error("{server} did not accept connections within {waited:?}; log tail:\n{log}")]
    NotReady {
        /// Which server, e.g. `redis-server`.
        server: &'static str,
        /// How long the testkit waited.
        waited: Duration,
        /// The last lines it logged.
        log: String,
    },
    /// Running as root, and there is no unprivileged user to run PostgreSQL as.
    #[error(
        "running as root and neither the `postgres` nor the `nobody` user exists to run postgres as"
    )]
    NoUnprivilegedUser,
    /// Redis answered a command with an error reply.
    #[error("redis replied with an error: {0}")]
    RedisReply(String),
    /// Redis sent something that is not a RESP reply (or hung up).
    #[error("malformed redis reply: {0}")]
    RedisProtocol(String),
}

impl Error {
    /// Wraps an `io::Error` with what the testkit was doing.
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let context = context.into();
        move |source| Error::Io { context, source }
    }
}
