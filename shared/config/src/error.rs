//! Errors of loading and validating a configuration.

use std::path::PathBuf;

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file extension names no format we read.
    #[error("config file {path} must end in .yaml, .yml, .toml or .json")]
    UnknownFormat {
        /// The file.
        path: PathBuf,
    },
    /// The text is not valid YAML, TOML or JSON.
    #[error("config {origin} is not valid {format}: {message}")]
    Syntax {
        /// Where the text came from.
        origin: String,
        /// "YAML", "TOML" or "JSON".
        format: &'static str,
        /// The parser's message.
        message: String,
    },
    /// A field has a value that is out of range or of the wrong type, or does not exist.
    #[error("invalid config field `{field}`: {reason}")]
    Invalid {
        /// Dotted path of the field, e.g. `circuit_breaker.failure_threshold`.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl ConfigError {
    /// An [`ConfigError::Invalid`] for `field`.
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// The dotted path of the offending field, when the error is about one field.
    pub fn field(&self) -> Option<&str> {
        match self {
            Self::Invalid { field, .. } => Some(field),
            _ => None,
        }
    }
}
