//! Per-asset weight bounds: validation, the feasible set `{Σw = 1, lo <= w <= hi}` and the
//! projection onto it.

use crate::error::Error;

/// Slack allowed on the sums of the bounds, so that e.g. three maximums of 1/3 are feasible.
const SUM_TOLERANCE: f64 = 1e-12;

/// Validated bounds, upper bounds capped at 1 (a long-only weight cannot exceed it).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Bounds {
    pub(crate) lower: Vec<f64>,
    pub(crate) upper: Vec<f64>,
}

impl Bounds {
    /// Validates `given` for `n` assets; empty means `(0, 1)` for every asset.
    pub(crate) fn new(given: &[(f64, f64)], n: usize) -> Result<Self, Error> {
        if given.is_empty() {
            return Ok(Self {
                lower: vec![0.0; n],
                upper: vec![1.0; n],
            });
        }
        if given.len() != n {
            return Err(Error::BoundsLength {
                expected: n,
                found: given.len(),
            });
        }
        for (asset, &(min, max)) in given.iter().enumerate() {
            // `max` may be +inf (no upper bound); NaN fails the comparison.
            if !(min.is_finite() && min >= 0.0 && max >= min) {
                return Err(Error::InvalidBounds { asset, min, max });
            }
        }
        let lower: Vec<f64> = given.iter().map(|b| b.0).collect();
        let upper: Vec<f64> = given.iter().map(|b| b.1.min(1.0).max(b.0)).collect();
        let min_sum: f64 = lower.iter().sum();
        let max_sum: f64 = upper.iter().sum();
        if min_sum > 1.0 + SUM_TOLERANCE || max_sum < 1.0 - SUM_TOLERANCE {
            return Err(Error::InfeasibleBounds { min_sum, max_sum });
        }
        Ok(Self { lower, upper })
    }

    /// The only feasible weights, when the bounds leave no choice (minimums or maximums
    /// summing to 1).
    pub(crate) fn single_point(&self) -> Option<Vec<f64>> {
        let normalised = |v: &[f64]| {
            let sum: f64 = v.iter().sum();
            v.iter().map(|x| x / sum).collect()
        };
        if self.lower.iter().sum::<f64>() >= 1.0 - SUM_TOLERANCE {
            Some(normalised(&self.lower))
        } else if self.upper.iter().sum::<f64>() <= 1.0 + SUM_TOLERANCE {
            Some(normalised(&self.upper))
        } else {
            None
        }
    }

    /// Feasible weights: every asset at its minimum, then what is left given to the assets in
    /// `order`, each up to its maximum. With assets ordered by a linear score (best first) this
    /// maximises that score over the feasible set.
    pub(crate) fn fill(&self, order: impl IntoIterator<Item = usize>) -> Vec<f64> {
        let mut weights = self.lower.clone();
        let mut left = 1.0 - weights.iter().sum::<f64>();
        for i in order {
            let add = (self.upper[i] - self.lower[i]).min(left).max(0.0);
            weights[i] += add;
            left -= add;
        }
        weights
    }

    /// The Euclidean projection of `v` onto the feasible set: `clamp(v - τ, lo, hi)` with `τ`
    /// chosen (by bisection, then exactly on the free assets) so the weights sum to 1.
    pub(crate) fn project(&self, v: &[f64]) -> Vec<f64> {
        let clamp = |t: f64| -> Vec<f64> {
            v.iter()
                .zip(self.lower.iter().zip(&self.upper))
                .map(|(x, (lo, hi))| (x - t).max(*lo).min(*hi))
                .collect()
        };
        // The sum of clamp(t) falls from Σhi >= 1 at `below` to Σlo <= 1 at `above`.
        let mut below = v
            .iter()
            .zip(&self.upper)
            .map(|(x, hi)| x - hi)
            .fold(f64::INFINITY, f64::min);
        let mut above = v
            .iter()
            .zip(&self.lower)
            .map(|(x, lo)| x - lo)
            .fold(f64::NEG_INFINITY, f64::max);
        for _ in 0..200 {
            let middle = 0.5 * (below + above);
            if middle <= below || middle >= above {
                break;
            }
            if clamp(middle).iter().sum::<f64>() > 1.0 {
                below = middle;
            } else {
                above = middle;
            }
        }
        let t = 0.5 * (below + above);
        let mut weights = clamp(t);

        // Bisection leaves τ a few ulps off; solve for it exactly on the assets strictly inside
        // their bounds.
        let free: Vec<usize> = (0..v.len())
            .filter(|&i| weights[i] > self.lower[i] && weights[i] < self.upper[i])
            .collect();
        if !free.is_empty() {
            let fixed: f64 = (0..v.len())
                .filter(|i| !free.contains(i))
                .map(|i| weights[i])
                .sum();
            let free_values: f64 = free.iter().map(|&i| v[i]).sum();
            let exact = (free_values - (1.0 - fixed)) / free.len() as f64;
            for &i in &free {
                weights[i] = (v[i] - exact).max(self.lower[i]).min(self.upper[i]);
            }
        }

        // The last rounding error goes to the asset with the most room for it.
        let residual = 1.0 - weights.iter().sum::<f64>();
        let room = |i: usize| {
            if residual > 0.0 {
                self.upper[i] - weights[i]
            } else {
                weights[i] - self.lower[i]
            }
        };
        if let Some(i) = (0..v.len()).max_by(|&a, &b| room(a).total_cmp(&room(b))) {
            weights[i] = (weights[i] + residual)
                .max(self.lower[i])
                .min(self.upper[i]);
        }
        weights
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(v: &[f64]) -> f64 {
        v.iter().sum()
    }

    #[test]
    fn empty_bounds_mean_zero_to_one() {
        let b = Bounds::new(&[], 3).unwrap();
        assert_eq!(b.lower, vec![0.0; 3]);
        assert_eq!(b.upper, vec![1.0; 3]);
    }

    #[test]
    fn infeasible_bounds_are_rejected() {
        assert!(matches!(
            Bounds::new(&[(0.6, 1.0), (0.5, 1.0)], 2),
            Err(Error::InfeasibleBounds { .. })
        ));
        assert!(matches!(
            Bounds::new(&[(0.0, 0.4), (0.0, 0.5)], 2),
            Err(Error::InfeasibleBounds { .. })
        ));
        assert!(matches!(
            Bounds::new(&[(0.5, 0.4), (0.0, 1.0)], 2),
            Err(Error::InvalidBounds { asset: 0, .. })
        ));
        assert!(matches!(
            Bounds::new(&[(0.0, 1.0), (-0.1, 1.0)], 2),
            Err(Error::InvalidBounds { asset: 1, .. })
        ));
        assert!(matches!(
            Bounds::new(&[(0.0, f64::NAN), (0.0, 1.0)], 2),
            Err(Error::InvalidBounds { asset: 0, .. })
        ));
        assert!(matches!(
            Bounds::new(&[(0.0, 1.0)], 2),
            Err(Error::BoundsLength {
                expected: 2,
                found: 1
            })
        ));
    }

    #[test]
    fn thirds_are_feasible_and_leave_a_single_point() {
        let third = 1.0 / 3.0;
        let b = Bounds::new(&[(0.0, third); 3], 3).unwrap();
        let w = b.single_point().unwrap();
        assert!((sum(&w) - 1.0).abs() < 1e-15);
    }

    #[test]
    fn projection_keeps_a_feasible_point() {
        let b = Bounds::new(&[], 3).unwrap();
        let v = [0.2, 0.3, 0.5];
        let w = b.project(&v);
        for (a, e) in w.iter().zip(v) {
            assert!((a - e).abs() < 1e-16);
        }
    }

    #[test]
    fn projection_clips_and_shifts_the_rest_equally() {
        let b = Bounds::new(&[(0.0, 0.3), (0.0, 1.0), (0.1, 1.0)], 3).unwrap();
        // 0.6 clips to 0.3; the other two share the remaining 0.7 at equal shifts:
        // 0.35 - τ + 0.05 - τ = 0.7 gives τ = -0.15, so 0.5 and 0.2.
        let w = b.project(&[0.6, 0.35, 0.05]);
        assert_eq!(w[0], 0.3);
        assert!((w[1] - 0.5).abs() < 1e-15 && (w[2] - 0.2).abs() < 1e-15);
        assert!((sum(&w) - 1.0).abs() < 1e-15);
    }

    #[test]
    fn fill_gives_the_best_assets_as_much_as_allowed() {
        let b = Bounds::new(&[(0.1, 0.5), (0.0, 0.3), (0.2, 1.0)], 3).unwrap();
        let w = b.fill([1, 0, 2]);
        assert!((w[1] - 0.3).abs() < 1e-15);
        assert!((w[0] - 0.5).abs() < 1e-15);
        assert!((w[2] - 0.2).abs() < 1e-15);
    }
}
