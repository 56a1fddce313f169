//! Log returns, means and the sample covariance.

use rayon::prelude::*;

use crate::error::Error;
use crate::matrix::{Matrix, dot};

/// The log returns `ln(p[t+1] / p[t])` of a close series, oldest first.
///
/// Fewer than two closes give no returns. A price that is NaN, infinite, zero or negative is an
/// [`Error::InvalidPrice`] (with `asset` 0).
pub fn log_returns(closes: &[f64]) -> Result<Vec<f64>, Error> {
    log_returns_of(0, closes)
}

/// [`log_returns`] for the series of asset `asset`, which errors name.
pub(crate) fn log_returns_of(asset: usize, closes: &[f64]) -> Result<Vec<f64>, Error> {
    if let Some((index, &value)) = closes
        .iter()
        .enumerate()
        .find(|(_, p)| !(p.is_finite() && **p > 0.0))
    {
        return Err(Error::InvalidPrice {
            asset,
            index,
            value,
        });
    }
    Ok(closes.windows(2).map(|w| (w[1] / w[0]).ln()).collect())
}

/// The arithmetic mean; 0 for an empty slice.
pub(crate) fn mean(values: &[f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.iter().sum::<f64>() / values.len() as f64
}

/// The sample covariance (divisor `n - 1`) of equally long return series, one per asset.
///
/// The `k (k + 1) / 2` distinct entries are computed in parallel on the current rayon pool (run
/// it inside `pool.install` to use a named pool). Needs at least two observations per series;
/// no series gives a `0 × 0` matrix.
pub fn covariance(returns: &[Vec<f64>]) -> Result<Matrix, Error> {
    let Some(first) = returns.first() else {
        return Ok(Matrix::zeros(0));
    };
    let observations = first.len();
    for (series, values) in returns.iter().enumerate() {
        if values.len() != observations {
            return Err(Error::LengthMismatch {
                asset: series,
                expected: observations,
                found: values.len(),
            });
        }
        if let Some((index, &value)) = values.iter().enumerate().find(|(_, r)| !r.is_finite()) {
            return Err(Error::NonFiniteReturn {
                series,
                index,
                value,
            });
        }
    }
    if observations < 2 {
        return Err(Error::TooFewObservations {
            found: observations,
            required: 2,
        });
    }

    // Two passes (centre, then multiply) keep the rounding error small for series whose mean
    // is large against their spread.
    let centred: Vec<Vec<f64>> = returns
        .par_iter()
        .map(|values| {
            let m = mean(values);
            values.iter().map(|v| v - m).collect()
        })
        .collect();
    let n = returns.len();
    let pairs: Vec<(usize, usize)> = (0..n).flat_map(|i| (i..n).map(move |j| (i, j))).collect();
    let divisor = (observations - 1) as f64;
    let entries: Vec<f64> = pairs
        .par_iter()
        .map(|&(i, j)| dot(&centred[i], &centred[j]) / divisor)
        .collect();

    let mut matrix = Matrix::zeros(n);
    for (&(i, j), &value) in pairs.iter().zip(&entries) {
        matrix[(i, j)] = value;
        matrix[(j, i)] = value;
    }
    Ok(matrix)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_returns_are_log_price_ratios() {
        let r = log_returns(&[100.0, 110.0, 99.0]).unwrap();
        assert_eq!(r.len(), 2);
        assert!((r[0] - (1.1f64).ln()).abs() < 1e-15);
        assert!((r[1] - (0.9f64).ln()).abs() < 1e-15);
        assert!(log_returns(&[5.0]).unwrap().is_empty());
    }

    #[test]
    fn a_nan_price_is_rejected() {
        let err = log_returns(&[1.0, f64::NAN, 2.0]).unwrap_err();
        assert!(matches!(err, Error::InvalidPrice { asset: 0, index: 1, value } if value.is_nan()));
    }

    #[test]
    fn a_zero_or_negative_price_is_rejected() {
        assert!(matches!(
            log_returns(&[1.0, 2.0, 0.0]),
            Err(Error::InvalidPrice { index: 2, .. })
        ));
        assert!(matches!(
            log_returns(&[-1.0, 2.0]),
            Err(Error::InvalidPrice { index: 0, .. })
        ));
        assert!(matches!(
            log_returns(&[1.0, f64::INFINITY]),
            Err(Error::InvalidPrice { index: 1, .. })
        ));
    }

    #[test]
    fn covariance_matches_a_hand_computation() {
        let a = vec![1.0, 2.0, 3.0, 4.0];
        let b = vec![2.0, 1.0, 4.0, 3.0];
        let m = covariance(&[a, b]).unwrap();
        // Deviations from the mean 2.5: a = (-1.5, -0.5, 0.5, 1.5), b = (-0.5, -1.5, 1.5, 0.5).
        let cov_ab = (0.75 + 0.75 + 0.75 + 0.75) / 3.0;
        assert!((m[(0, 0)] - 5.0 / 3.0).abs() < 1e-15);
        assert!((m[(1, 1)] - 5.0 / 3.0).abs() < 1e-15);
        assert!((m[(0, 1)] - cov_ab).abs() < 1e-15);
        assert_eq!(m[(0, 1)], m[(1, 0)]);
    }

    #[test]
    fn covariance_rejects_unequal_lengths_and_short_series() {
        assert!(matches!(
            covariance(&[vec![1.0, 2.0, 3.0], vec![1.0, 2.0]]),
            Err(Error::LengthMismatch {
                asset: 1,
                expected: 3,
                found: 2
            })
        ));
        assert!(matches!(
            covariance(&[vec![1.0], vec![2.0]]),
            Err(Error::TooFewObservations { found: 1, .. })
        ));
        assert!(matches!(
            covariance(&[vec![1.0, f64::NAN]]),
            Err(Error::NonFiniteReturn {
                series: 0,
                index: 1,
                ..
            })
        ));
        assert_eq!(covariance(&[]).unwrap().dim(), 0);
    }
}
