//! The one error type of the indicators crate.

/// Why an indicator could not be computed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// A parameter is out of its range (after defaults were applied).
    #[error("invalid {name} {value}: {reason}")]
    InvalidParameter {
        /// The parameter, e.g. `period` or `deviations`.
        name: &'static str,
        /// The value that was given.
        value: f64,
        /// What is wrong with it, e.g. `must be at least 2`.
        reason: &'static str,
    },
    /// The input is shorter than the indicator's lookback plus one bar.
    #[error("not enough data: need {need} bars, have {have}")]
    NotEnoughData {
        /// Bars needed for one output value (lookback + 1).
        need: usize,
        /// Bars given.
        have: usize,
    },
    /// An input value is NaN or infinite.
    #[error("non-finite value in {column} at index {index}")]
    NonFinite {
        /// The column, e.g. `close`.
        column: &'static str,
        /// The bar's index in the input.
        index: usize,
    },
    /// A price that must be positive (the log return of realised volatility) is zero or negative.
    #[error("non-positive value in {column} at index {index}")]
    NonPositive {
        /// The column, e.g. `close`.
        column: &'static str,
        /// The bar's index in the input.
        index: usize,
    },
    /// Columns (or an output buffer) disagree in length.
    #[error("{column} has {len} values, expected {expected}")]
    LengthMismatch {
        /// The column or output whose length is wrong.
        column: &'static str,
        /// Its length.
        len: usize,
        /// The length of the reference column (`close`).
        expected: usize,
    },
    /// The number of output buffers does not match the indicator's outputs.
    #[error("expected {expected} output buffers, got {got}")]
    OutputCount {
        /// Outputs of the indicator.
        expected: usize,
        /// Buffers given.
        got: usize,
    },
}
