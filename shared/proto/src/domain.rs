//! The domain vocabulary every service shares, next to the contracts it describes: what a valid
//! symbol is ([`Symbol`]) and how long a bar of each [`Interval`] lasts. Ingestion, query and
//! computation check input with these, so a symbol one of them refuses gets the same answer
//! from all of them.

use std::fmt;
use std::ops::Deref;

use crate::v1::Interval;

/// Most characters of client input an error message quotes ([`quote`]).
pub const MAX_QUOTED_CHARS: usize = 64;

/// Client input as an error message quotes it: debug-quoted, cut after
/// [`MAX_QUOTED_CHARS`] characters with its length, so a huge field cannot become a huge
/// `grpc-message`.
pub fn quote(text: &str) -> String {
    match text.char_indices().nth(MAX_QUOTED_CHARS) {
        None => format!("{text:?}"),
        Some((cut, _)) => format!("{:?}... ({} bytes)", &text[..cut], text.len()),
    }
}

/// Longest symbol, in bytes (every allowed character is one byte).
pub const MAX_SYMBOL_LEN: usize = 32;

/// Why a string is not a [`Symbol`]; the `Display` text completes "symbol ...".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SymbolError {
    /// The empty string.
    Empty,
    /// Longer than [`MAX_SYMBOL_LEN`].
    TooLong,
    /// A character outside `[A-Za-z0-9._:/-]`.
    BadChar(char),
}

impl fmt::Display for SymbolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("must not be empty"),
            Self::TooLong => write!(f, "must be at most {MAX_SYMBOL_LEN} characters"),
            Self::BadChar(c) => write!(f, "must use only A-Z a-z 0-9 . _ : / - (found {c:?})"),
        }
    }
}

impl std::error::Error for SymbolError {}

/// An instrument symbol such as `BTC-USD` or `AAPL`: 1-32 characters of `[A-Za-z0-9._:/-]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Symbol(String);

impl Symbol {
    /// Checks `value` without taking it: the one rule for a valid symbol.
    pub fn check(value: &str) -> Result<(), SymbolError> {
        if value.is_empty() {
            return Err(SymbolError::Empty);
        }
        if value.len() > MAX_SYMBOL_LEN {
            return Err(SymbolError::TooLong);
        }
        match value
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '/' | '-')))
        {
            Some(c) => Err(SymbolError::BadChar(c)),
            None => Ok(()),
        }
    }

    /// `value` as a symbol, if it is one.
    pub fn parse(value: impl Into<String>) -> Result<Self, SymbolError> {
        let value = value.into();
        Self::check(&value)?;
        Ok(Self(value))
    }

    /// The symbol as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The symbol's text, owned.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl Deref for Symbol {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Symbol {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Symbol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for Symbol {
    type Error = SymbolError;

    fn try_from(value: String) -> Result<Self, SymbolError> {
        Self::parse(value)
    }
}

impl TryFrom<&str> for Symbol {
    type Error = SymbolError;

    fn try_from(value: &str) -> Result<Self, SymbolError> {
        Self::parse(value)
    }
}

const SECOND_US: i64 = 1_000_000;

impl Interval {
    /// Every interval the store keeps bars of, finest first.
    pub const STORED: [Interval; 7] = [
        Interval::Interval1s,
        Interval::Interval1m,
        Interval::Interval5m,
        Interval::Interval15m,
        Interval::Interval1h,
        Interval::Interval4h,
        Interval::Interval1d,
    ];

    /// Length of one bar in microseconds; `None` for `INTERVAL_UNSPECIFIED`.
    pub const fn length_us(self) -> Option<i64> {
        match self {
            Interval::Unspecified => None,
            Interval::Interval1s => Some(SECOND_US),
            Interval::Interval1m => Some(60 * SECOND_US),
            Interval::Interval5m => Some(300 * SECOND_US),
            Interval::Interval15m => Some(900 * SECOND_US),
            Interval::Interval1h => Some(3_600 * SECOND_US),
            Interval::Interval4h => Some(14_400 * SECOND_US),
            Interval::Interval1d => Some(86_400 * SECOND_US),
        }
    }

    /// The interval of a wire or stored number with a bar length (not `INTERVAL_UNSPECIFIED`).
    pub fn from_code(code: i32) -> Option<Self> {
        Self::try_from(code)
            .ok()
            .filter(|i| *i != Interval::Unspecified)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symbols_of_the_allowed_characters_are_accepted() {
        for s in ["BTC-USD", "AAPL", "es.fut:2026/12", "a_b", &"X".repeat(32)] {
            assert_eq!(Symbol::parse(s).map(|s| s.into_string()), Ok(s.to_string()));
        }
    }

    #[test]
    fn an_empty_long_or_odd_symbol_is_refused() {
        assert_eq!(Symbol::check(""), Err(SymbolError::Empty));
        assert_eq!(Symbol::check(&"X".repeat(33)), Err(SymbolError::TooLong));
        assert_eq!(Symbol::check("BTC USD"), Err(SymbolError::BadChar(' ')));
        assert_eq!(Symbol::check("ÄPL"), Err(SymbolError::BadChar('Ä')));
        assert!(SymbolError::BadChar('$').to_string().contains("'$'"));
    }

    #[test]
    fn every_stored_interval_has_a_length_that_grows() {
        let lengths: Vec<i64> = Interval::STORED
            .iter()
            .map(|i| i.length_us().expect("stored intervals have a length"))
            .collect();
        assert!(lengths.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(lengths[0], 1_000_000);
        assert_eq!(lengths[6], 86_400_000_000);
        assert_eq!(Interval::Unspecified.length_us(), None);
        assert_eq!(Interval::from_code(0), None);
        assert_eq!(Interval::from_code(7), Some(Interval::Interval1d));
        assert_eq!(Interval::from_code(99), None);
    }
}

#[cfg(test)]
mod quote_tests {
    use super::quote;

    #[test]
    fn long_input_is_cut_with_its_length() {
        assert_eq!(quote("12x"), "\"12x\"");
        let long = "é".repeat(1_000);
        let quoted = quote(&long);
        assert!(quoted.ends_with("... (2000 bytes)"), "{quoted}");
        assert_eq!(quoted.chars().filter(|c| *c == 'é').count(), 64);
    }
}
