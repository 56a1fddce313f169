//! The one error type of the portfolio crate.

use std::fmt;

/// Everything that makes a return series, a covariance or an optimisation problem unusable.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// An optimisation needs at least two assets.
    #[error("need at least 2 assets, got {found}")]
    TooFewAssets {
        /// How many assets the problem had.
        found: usize,
    },
    /// The lookback is too short for the statistics (returns per asset, after differencing).
    #[error("lookback too short: {found} observations, need at least {required}")]
    TooFewObservations {
        /// How many observations (returns) there are.
        found: usize,
        /// How many are needed.
        required: usize,
    },
    /// A price is NaN, infinite, zero or negative.
    #[error("asset {asset}: price {value} at bar {index} is not finite and positive")]
    InvalidPrice {
        /// The asset (series) index; 0 for [`log_returns`](crate::log_returns) on a single series.
        asset: usize,
        /// The bar index inside that series.
        index: usize,
        /// The offending price.
        value: f64,
    },
    /// A return is NaN or infinite.
    #[error("series {series}: return {value} at index {index} is not finite")]
    NonFiniteReturn {
        /// The series index.
        series: usize,
        /// The index inside that series.
        index: usize,
        /// The offending return.
        value: f64,
    },
    /// The series of one asset has a different length than the first one.
    #[error("series {asset} has {found} values, expected {expected}")]
    LengthMismatch {
        /// The series index.
        asset: usize,
        /// The length of series 0.
        expected: usize,
        /// The length of this series.
        found: usize,
    },
    /// There is not one bound per asset.
    #[error("got {found} bounds for {expected} assets")]
    BoundsLength {
        /// The number of assets.
        expected: usize,
        /// The number of bounds given.
        found: usize,
    },
    /// A bound is not a long-only interval: min must be finite and >= 0, max >= min.
    #[error("asset {asset}: bounds [{min}, {max}] are not a long-only interval")]
    InvalidBounds {
        /// The asset index.
        asset: usize,
        /// The lower bound given.
        min: f64,
        /// The upper bound given.
        max: f64,
    },
    /// No weights within the bounds sum to 1.
    #[error("infeasible bounds: minimums sum to {min_sum}, maximums to {max_sum}")]
    InfeasibleBounds {
        /// The sum of the lower bounds (must be <= 1).
        min_sum: f64,
        /// The sum of the upper bounds, each capped at 1 (must be >= 1).
        max_sum: f64,
    },
    /// The risk-free rate is NaN or infinite.
    #[error("risk-free rate {value} is not finite")]
    InvalidRiskFreeRate {
        /// The rate given.
        value: f64,
    },
    /// The covariance matrix is (numerically) singular.
    #[error("singular covariance: asset {asset} {reason}")]
    SingularCovariance {
        /// The asset that makes it singular.
        asset: usize,
        /// Why.
        reason: Singularity,
    },
    /// Maximum Sharpe needs a portfolio within the bounds whose mean return beats the risk-free rate.
    #[error("no portfolio has a mean return above the risk-free rate {risk_free_rate}")]
    NoExcessReturn {
        /// The risk-free rate per bar.
        risk_free_rate: f64,
    },
    /// The solver stopped without meeting its tolerance (a numerical failure, not bad input).
    #[error("{solver} did not converge after {iterations} iterations")]
    NotConverged {
        /// Which solver.
        solver: &'static str,
        /// How many iterations it ran.
        iterations: usize,
    },
    /// Rounding defeated a solver (should not happen for a validated, non-singular problem).
    #[error("numerical failure: {0}")]
    Numerical(&'static str),
}

/// Why a covariance matrix is singular.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Singularity {
    /// The asset's returns are constant (zero variance, up to rounding).
    ZeroVariance,
    /// The asset's returns are a linear combination of the earlier assets' returns.
    Collinear,
}

impl fmt::Display for Singularity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Singularity::ZeroVariance => f.write_str("has zero variance"),
            Singularity::Collinear => f.write_str("is collinear with earlier assets"),
        }
    }
}
