//! Equal risk contribution weights by Newton's method on Spinu's convex formulation.
//!
//! F. Spinu, "An algorithm for computing risk parity weights" (2013): the minimiser of
//! `f(x) = ½ x' Σ x − b Σ ln x_i` over `x > 0` satisfies `x_i (Σ x)_i = b` for every `i`, so
//! `w = x / Σ x` has equal risk contributions. `f / b` is self-concordant, which makes the damped
//! Newton method below converge globally and quadratically near the solution.

use crate::error::Error;
use crate::matrix::{Matrix, dot, solve_linear};

/// The name errors give this solver.
const SOLVER: &str = "risk parity newton solver";
/// Enough for the damped phase from the start used below plus the quadratic phase.
const MAX_ITERATIONS: usize = 200;
/// Stop once the squared Newton decrement of `f / b` is below this: the iterate is then about
/// `1e-13` from the solution, relative.
const DECREMENT_TOLERANCE: f64 = 1e-26;
/// The largest acceptable `|x_i (Σ x)_i − b| / b` at the end.
const RESIDUAL_TOLERANCE: f64 = 1e-12;

/// The long-only weights (summing to 1) whose risk contributions are all equal.
///
/// `covariance` must be positive definite.
pub(crate) fn equal_risk_weights(covariance: &Matrix) -> Result<Vec<f64>, Error> {
    let n = covariance.dim();
    let sd: Vec<f64> = covariance.diagonal().iter().map(|v| v.sqrt()).collect();
    // Work on the correlation matrix: with w = z / sd, w_i (Σ w)_i = z_i (C z)_i, so the risk
    // contributions are the same and the scale of the data drops out.
    let mut correlation = Matrix::zeros(n);
    for i in 0..n {
        for j in 0..n {
            correlation[(i, j)] = covariance[(i, j)] / (sd[i] * sd[j]);
        }
    }
    let budget = 1.0 / n as f64;

    // The minimiser of f along the ray x = c·1.
    let total: f64 = correlation.as_slice().iter().sum();
    let mut x = vec![(1.0 / total).sqrt(); n];

    let mut iterations = 0;
    while iterations < MAX_ITERATIONS {
        iterations += 1;
        let cx = correlation.mul_vec(&x);
        let gradient: Vec<f64> = (0..n).map(|i| cx[i] - budget / x[i]).collect();
        let mut hessian = correlation.clone();
        for i in 0..n {
            hessian[(i, i)] += budget / (x[i] * x[i]);
        }
        let negative: Vec<f64> = gradient.iter().map(|g| -g).collect();
        let Some(direction) = solve_linear(hessian.as_slice().to_vec(), negative) else {
            break;
        };
        let decrement_squared = (-dot(&gradient, &direction) / budget).max(0.0);
        // Damped step 1 / (1 + λ) far from the solution, full steps close to it; both keep
        // x > 0 for a self-concordant function.
        let decrement = decrement_squared.sqrt();
        let length = if decrement < 0.25 {
            1.0
        } else {
            1.0 / (1.0 + decrement)
        };
        let next: Vec<f64> = x
            .iter()
            .zip(&direction)
            .map(|(xi, di)| xi + length * di)
            .collect();
        if next.iter().any(|v| !(v.is_finite() && *v > 0.0)) {
            break;
        }
        x = next;
        if decrement_squared <= DECREMENT_TOLERANCE {
            break;
        }
    }

    let cx = correlation.mul_vec(&x);
    let residual = (0..n)
        .map(|i| (x[i] * cx[i] - budget).abs() / budget)
        .fold(0.0, f64::max);
    if residual.is_nan() || residual > RESIDUAL_TOLERANCE {
        return Err(Error::NotConverged {
            solver: SOLVER,
            iterations,
        });
    }
    let raw: Vec<f64> = x.iter().zip(&sd).map(|(xi, s)| xi / s).collect();
    let sum: f64 = raw.iter().sum();
    Ok(raw.iter().map(|v| v / sum).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uncorrelated_assets_get_inverse_volatility_weights() {
        let cov = Matrix::from_rows(&[
            vec![0.04, 0.0, 0.0],
            vec![0.0, 0.01, 0.0],
            vec![0.0, 0.0, 0.0025],
        ])
        .unwrap();
        let w = equal_risk_weights(&cov).unwrap();
        // Inverse volatilities 5, 10, 20 out of 35.
        for (got, want) in w.iter().zip([5.0 / 35.0, 10.0 / 35.0, 20.0 / 35.0]) {
            assert!((got - want).abs() < 1e-14, "{got} vs {want}");
        }
    }

    #[test]
    fn risk_contributions_are_equal_for_correlated_assets() {
        let cov = Matrix::from_rows(&[
            vec![0.09, 0.02, -0.01],
            vec![0.02, 0.04, 0.015],
            vec![-0.01, 0.015, 0.0225],
        ])
        .unwrap();
        let w = equal_risk_weights(&cov).unwrap();
        let sw = cov.mul_vec(&w);
        let variance = dot(&w, &sw);
        for i in 0..3 {
            assert!((w[i] * sw[i] / variance - 1.0 / 3.0).abs() < 1e-13);
        }
    }
}
