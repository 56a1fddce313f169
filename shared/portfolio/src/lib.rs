//! Portfolio optimisation: minimum variance, maximum Sharpe ratio and risk parity.
//!
//! Long-only, fully invested (weights sum to 1) and with per-asset weight bounds. Pure
//! computation, no I/O: give [`optimize`] aligned close series, get weights and the portfolio's
//! risk and return per bar. The solvers are exact (active set) or quadratically convergent
//! (Newton), so the weights are accurate to rounding, not to an iteration tolerance.
//!
//! ```
//! use tickmesh_portfolio::{Objective, Problem, optimize};
//!
//! // Three aligned close series, oldest first.
//! let closes: Vec<Vec<f64>> = (1..=3)
//!     .map(|k| {
//!         (0..60)
//!             .map(|t| 100.0 * (0.001 * k as f64 * t as f64 + 0.02 * (t as f64 * k as f64).sin()).exp())
//!             .collect()
//!     })
//!     .collect();
//! let mut problem = Problem::new(closes, Objective::MinVariance);
//! problem.bounds = vec![(0.1, 0.6); 3];
//! let solution = optimize(&problem)?;
//! assert!((solution.weights.iter().sum::<f64>() - 1.0).abs() < 1e-12);
//! assert!(solution.weights.iter().all(|w| (0.1..=0.6).contains(w)));
//! # Ok::<(), tickmesh_portfolio::Error>(())
//! ```

mod bounds;
mod error;
mod matrix;
mod optimize;
mod qp;
mod risk_parity;
mod stats;

pub use error::{Error, Singularity};
pub use matrix::Matrix;
pub use optimize::{Objective, Problem, Solution, optimize};
pub use stats::{covariance, log_returns};
