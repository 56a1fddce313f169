//! The cache's errors.

use std::error::Error as StdError;
use std::sync::Arc;

/// An error a loader returns.
pub type BoxError = Box<dyn StdError + Send + Sync>;

/// What went wrong in a cache call.
///
/// Redis being unreachable is never one of them: the cache answers from L1 and the source then.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CacheError {
    /// A key or pattern is empty or longer than the limit.
    #[error("{field} must be 1-{max} bytes (got {len})")]
    BadLength {
        /// `key`, `pattern` or `namespace`.
        field: &'static str,
        /// Its length in bytes.
        len: usize,
        /// The limit in bytes.
        max: usize,
    },
    /// A key or pattern holds a byte that is not printable ASCII.
    #[error("{field} must be printable ascii (byte {byte:#04x} at offset {offset})")]
    NotPrintable {
        /// `key`, `pattern` or `namespace`.
        field: &'static str,
        /// Where the byte is.
        offset: usize,
        /// The byte.
        byte: u8,
    },
    /// A namespace name holds a `:`, which separates namespace and key in Redis.
    #[error("namespace must not contain ':' (got {0:?})")]
    NamespaceColon(String),
    /// A value is larger than `cache.max_value_bytes`.
    #[error("value is {len} bytes, the limit is {max}")]
    ValueTooLarge {
        /// Its size in bytes.
        len: u64,
        /// `cache.max_value_bytes`.
        max: u64,
    },
    /// The namespace is neither in the configuration nor has a registered loader.
    #[error("unknown namespace {0:?}")]
    UnknownNamespace(String),
    /// Registering another namespace would pass the limit.
    #[error("a cache holds at most {0} namespaces")]
    TooManyNamespaces(usize),
    /// Warming needs a loader and the namespace has none.
    #[error("namespace {0:?} has no loader")]
    NoLoader(String),
    /// The namespace's loader failed.
    #[error("loading {namespace}/{key} failed")]
    Load {
        /// The namespace.
        namespace: String,
        /// The key.
        key: String,
        /// What the loader said.
        #[source]
        source: Arc<dyn StdError + Send + Sync>,
    },
    /// The configuration cannot build a cache.
    #[error("{field}: {reason}")]
    Config {
        /// The configuration field.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// How a service reports a [`CacheError`] (the gRPC code it maps to).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// INVALID_ARGUMENT: bad key, pattern or namespace name.
    InvalidArgument,
    /// NOT_FOUND: unknown namespace.
    NotFound,
    /// RESOURCE_EXHAUSTED: value too large.
    ResourceExhausted,
    /// FAILED_PRECONDITION: the namespace cannot do what was asked (no loader), or bad configuration.
    FailedPrecondition,
    /// UNAVAILABLE: the source behind the cache failed.
    Unavailable,
}

impl CacheError {
    /// The class of the error, for mapping it to a status code in one place.
    pub fn class(&self) -> ErrorClass {
        match self {
            Self::BadLength { .. } | Self::NotPrintable { .. } | Self::NamespaceColon(_) => {
                ErrorClass::InvalidArgument
            }
            Self::ValueTooLarge { .. } | Self::TooManyNamespaces(_) => {
                ErrorClass::ResourceExhausted
            }
            Self::UnknownNamespace(_) => ErrorClass::NotFound,
            Self::NoLoader(_) | Self::Config { .. } => ErrorClass::FailedPrecondition,
            Self::Load { .. } => ErrorClass::Unavailable,
        }
    }

    /// The request field the error is about (`key`, `pattern`, `namespace`, `value`), if any.
    pub fn field(&self) -> Option<&'static str> {
        match self {
            Self::BadLength { field, .. } | Self::NotPrintable { field, .. } => Some(field),
            Self::NamespaceColon(_)
            | Self::UnknownNamespace(_)
            | Self::NoLoader(_)
            | Self::TooManyNamespaces(_) => Some("namespace"),
            Self::ValueTooLarge { .. } => Some("value"),
            Self::Load { .. } | Self::Config { .. } => None,
        }
    }

    pub(crate) fn config(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Config {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// A value that does not encode or decode.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// Protobuf bytes that do not decode.
    #[error("protobuf decode failed")]
    Protobuf(#[from] prost::DecodeError),
    /// MessagePack that does not encode.
    #[error("messagepack encode failed")]
    MessagePackEncode(#[from] rmp_serde::encode::Error),
    /// MessagePack that does not decode.
    #[error("messagepack decode failed")]
    MessagePackDecode(#[from] rmp_serde::decode::Error),
    /// Custom binary bytes that end early.
    #[error("binary value truncated at offset {0}")]
    Truncated(usize),
    /// Custom binary bytes of another value type or version.
    #[error("binary value has tag {found:#04x}, expected {expected:#04x}")]
    WrongTag {
        /// The tag this type has.
        expected: u8,
        /// The tag the bytes have.
        found: u8,
    },
    /// Custom binary bytes with something left after the value.
    #[error("binary value has {0} trailing bytes")]
    Trailing(usize),
    /// A string in custom binary bytes that is not UTF-8.
    #[error("binary value holds invalid utf-8")]
    Utf8,
    /// A value too large for the custom binary layout (a string over 65,535 bytes, a list
    /// over 4,294,967,295 items).
    #[error("{0} too long for the binary layout")]
    TooLong(&'static str),
}
