//! The optimisation problem, its validation and the three objectives.

use crate::bounds::Bounds;
use crate::error::{Error, Singularity};
use crate::matrix::{Matrix, dot};
use crate::qp::{self, Constraint};
use crate::risk_parity::equal_risk_weights;
use crate::stats::{covariance, log_returns_of, mean};

/// An asset whose return standard deviation is below this fraction of its largest absolute
/// return is constant up to rounding.
const ZERO_VARIANCE_TOLERANCE: f64 = 1e-13;
/// A Cholesky pivot of the correlation matrix below this means the asset's returns are a linear
/// combination of the earlier assets' (R² above `1 - 1e-10`).
const COLLINEAR_TOLERANCE: f64 = 1e-10;
/// The fewest returns per asset accepted, whatever the number of assets.
const MIN_OBSERVATIONS: usize = 3;

/// What the weights optimise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Objective {
    /// The lowest portfolio variance.
    MinVariance,
    /// The highest Sharpe ratio: mean log return above the risk-free rate, per unit volatility.
    MaxSharpe,
    /// Equal risk contributions (each asset's share of the variance is `1 / n`).
    ///
    /// Bounds do not enter the equal-risk problem: its weights are computed unconstrained (they
    /// are always long-only and positive) and then projected onto the bounds, i.e. clipped to
    /// `[min, max]` with one common shift of the unclipped weights so they still sum to 1 (the
    /// nearest feasible weights in the Euclidean sense). The contributions are then only equal
    /// when no bound binds; an asset with max 0 is not excluded from the risk balance.
    RiskParity,
}

/// An optimisation problem: aligned close series, an objective and per-asset bounds.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    /// One close series per asset, oldest first, all of the same length and aligned in time.
    pub closes: Vec<Vec<f64>>,
    /// What to optimise.
    pub objective: Objective,
    /// Per-asset `(min, max)` weights, `0 <= min <= max` (a max above 1, even +inf, means 1);
    /// empty means `(0, 1)` for every asset.
    pub bounds: Vec<(f64, f64)>,
    /// The risk-free rate per bar (same units as the mean log return); used by `MaxSharpe` and
    /// by the reported Sharpe ratio.
    pub risk_free_rate: f64,
}

impl Problem {
    /// A problem with the default bounds `(0, 1)` and a risk-free rate of 0.
    pub fn new(closes: Vec<Vec<f64>>, objective: Objective) -> Self {
        let bounds = vec![(0.0, 1.0); closes.len()];
        Self {
            closes,
            objective,
            bounds,
            risk_free_rate: 0.0,
        }
    }
}

/// Optimal weights and the portfolio they make, all per bar.
#[derive(Debug, Clone, PartialEq)]
pub struct Solution {
    /// One weight per asset, within the bounds, summing to 1.
    pub weights: Vec<f64>,
    /// Each asset's share of the portfolio variance, `w_i (Σ w)_i / w' Σ w`; sums to 1.
    pub risk_contributions: Vec<f64>,
    /// The weighted mean log return per bar.
    pub expected_return: f64,
    /// The standard deviation of the portfolio's log return per bar (sample covariance).
    pub volatility: f64,
    /// `(expected_return − risk_free_rate) / volatility`, per bar (not annualised).
    pub sharpe_ratio: f64,
    /// The number of returns per asset the statistics used (closes minus one).
    pub observations: usize,
}

/// Solves `problem`: validates the input, estimates mean log returns and the sample covariance,
/// and finds the weights.
///
/// Needs at least 2 assets and `max(3, assets + 1)` returns per asset (so that the covariance
/// can be non-singular). Minimum variance and maximum Sharpe are solved exactly by an active-set
/// method (maximum Sharpe through the convex reformulation `min y'Σy` s.t. `(μ − r_f)'y = 1`,
/// `w = y / Σy`); risk parity by Newton's method. The covariance is computed on the current rayon
/// pool.
///
/// # Errors
///
/// Bad input: [`Error::TooFewAssets`], [`Error::LengthMismatch`], [`Error::InvalidPrice`],
/// [`Error::TooFewObservations`], [`Error::BoundsLength`], [`Error::InvalidBounds`],
/// [`Error::InfeasibleBounds`], [`Error::InvalidRiskFreeRate`], [`Error::SingularCovariance`]
/// (a constant series, or one that is a linear combination of others), and for `MaxSharpe`
/// [`Error::NoExcessReturn`] when no feasible portfolio's mean return exceeds the risk-free
/// rate. [`Error::NotConverged`] and [`Error::Numerical`] would be solver failures.
pub fn optimize(problem: &Problem) -> Result<Solution, Error> {
    let n = problem.closes.len();
    if n < 2 {
        return Err(Error::TooFewAssets { found: n });
    }
    let length = problem.closes[0].len();
    if let Some((asset, series)) = problem
        .closes
        .iter()
        .enumerate()
        .find(|(_, c)| c.len() != length)
    {
        return Err(Error::LengthMismatch {
            asset,
            expected: length,
            found: series.len(),
        });
    }
    let returns = problem
        .closes
        .iter()
        .enumerate()
        .map(|(asset, closes)| log_returns_of(asset, closes))
        .collect::<Result<Vec<_>, _>>()?;
    let observations = length.saturating_sub(1);
    let required = MIN_OBSERVATIONS.max(n + 1);
    if observations < required {
        return Err(Error::TooFewObservations {
            found: observations,
            required,
        });
    }
    let bounds = Bounds::new(&problem.bounds, n)?;
    let risk_free_rate = problem.risk_free_rate;
    if !risk_free_rate.is_finite() {
        return Err(Error::InvalidRiskFreeRate {
            value: risk_free_rate,
        });
    }

    let cov = covariance(&returns)?;
    check_non_singular(&cov, &returns)?;
    let means: Vec<f64> = returns.iter().map(|r| mean(r)).collect();

    let weights = match problem.objective {
        Objective::MinVariance => min_variance(&cov, &bounds)?,
        Objective::MaxSharpe => max_sharpe(&cov, &means, risk_free_rate, &bounds)?,
        Objective::RiskParity => equal_risk_weights(&cov)?,
    };
    // Also removes the solvers' last rounding from the bounds and the sum.
    let weights = bounds.project(&weights);
    if weights.iter().any(|w| !w.is_finite()) {
        return Err(Error::Numerical("non-finite weights"));
    }

    let marginal = cov.mul_vec(&weights);
    let variance = dot(&weights, &marginal);
    let volatility = variance.sqrt();
    let expected_return = dot(&weights, &means);
    Ok(Solution {
        risk_contributions: weights
            .iter()
            .zip(&marginal)
            .map(|(w, m)| w * m / variance)
            .collect(),
        weights,
        expected_return,
        volatility,
        sharpe_ratio: (expected_return - risk_free_rate) / volatility,
        observations,
    })
}

/// Rejects a covariance that is singular: an asset with constant returns, or one whose returns
/// are (numerically) a linear combination of the others'.
fn check_non_singular(cov: &Matrix, returns: &[Vec<f64>]) -> Result<(), Error> {
    let n = cov.dim();
    let sd: Vec<f64> = cov.diagonal().iter().map(|v| v.max(0.0).sqrt()).collect();
    for (asset, series) in returns.iter().enumerate() {
        let largest = series.iter().fold(0.0_f64, |m, r| m.max(r.abs()));
        if sd[asset] <= ZERO_VARIANCE_TOLERANCE * largest || sd[asset] == 0.0 {
            return Err(Error::SingularCovariance {
                asset,
                reason: Singularity::ZeroVariance,
            });
        }
    }
    let mut correlation = Matrix::zeros(n);
    for i in 0..n {
        for j in 0..n {
            correlation[(i, j)] = cov[(i, j)] / (sd[i] * sd[j]);
        }
    }
    match correlation.first_small_cholesky_pivot(COLLINEAR_TOLERANCE) {
        Some(asset) => Err(Error::SingularCovariance {
            asset,
            reason: Singularity::Collinear,
        }),
        None => Ok(()),
    }
}

/// The covariance scaled to a mean variance of 1, so the solver's tolerances are relative.
fn normalised(cov: &Matrix) -> Matrix {
    let n = cov.dim() as f64;
    let mean_variance = cov.diagonal().iter().sum::<f64>() / n;
    cov.scaled(1.0 / mean_variance)
}

/// `min w'Σw` subject to `Σw = 1`, `lo <= w <= hi`.
fn min_variance(cov: &Matrix, bounds: &Bounds) -> Result<Vec<f64>, Error> {
    if let Some(only) = bounds.single_point() {
        return Ok(only);
    }
    let n = cov.dim();
    let mut inequalities: Vec<Constraint> = (0..n)
        .map(|i| Constraint::lower(i, bounds.lower[i]))
        .collect();
    // An upper bound of 1 already follows from the others' lower bounds >= 0.
    inequalities.extend(
        (0..n)
            .filter(|&i| bounds.upper[i] < 1.0)
            .map(|i| Constraint::upper(i, bounds.upper[i])),
    );
    let problem = qp::Problem {
        hessian: normalised(cov),
        equalities: vec![Constraint::dense(vec![1.0; n], 1.0)],
        inequalities,
    };
    // Start with the least volatile assets filled first: often close to the answer.
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| cov[(a, a)].total_cmp(&cov[(b, b)]));
    problem.minimize(bounds.fill(order))
}

/// `max (μ − r_f)'w / √(w'Σw)` subject to `Σw = 1`, `lo <= w <= hi`.
///
/// Solved as the convex problem `min y'Σy` subject to `e'y = 1`, `y_i >= lo_i Σy`,
/// `y_i <= hi_i Σy` with `e = μ − r_f`, then `w = y / Σy`; valid because some feasible `w` has
/// `e'w > 0` (checked), which also makes `Σy > 0`.
fn max_sharpe(
    cov: &Matrix,
    means: &[f64],
    risk_free_rate: f64,
    bounds: &Bounds,
) -> Result<Vec<f64>, Error> {
    let n = cov.dim();
    let excess: Vec<f64> = means.iter().map(|m| m - risk_free_rate).collect();
    // The feasible portfolio with the highest excess return: best assets first.
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| excess[b].total_cmp(&excess[a]));
    let best = bounds.fill(order);
    let best_excess = dot(&best, &excess);
    if best_excess.is_nan() || best_excess <= 0.0 {
        return Err(Error::NoExcessReturn { risk_free_rate });
    }
    if let Some(only) = bounds.single_point() {
        return Ok(only);
    }

    let scale = excess.iter().fold(0.0_f64, |m, e| m.max(e.abs()));
    let excess: Vec<f64> = excess.iter().map(|e| e / scale).collect();
    let mut inequalities = Vec::with_capacity(2 * n);
    for i in 0..n {
        let lower = bounds.lower[i];
        inequalities.push(if lower == 0.0 {
            Constraint::lower(i, 0.0)
        } else {
            // y_i − lo_i Σy >= 0
            let mut a = vec![-lower; n];
            a[i] += 1.0;
            Constraint::dense(a, 0.0)
        });
        let upper = bounds.upper[i];
        if upper < 1.0 {
            inequalities.push(if upper == 0.0 {
                Constraint::upper(i, 0.0)
            } else {
                // hi_i Σy − y_i >= 0
                let mut a = vec![upper; n];
                a[i] -= 1.0;
                Constraint::dense(a, 0.0)
            });
        }
    }
    let problem = qp::Problem {
        hessian: normalised(cov),
        equalities: vec![Constraint::dense(excess.clone(), 1.0)],
        inequalities,
    };
    let start_excess = dot(&best, &excess);
    let start: Vec<f64> = best.iter().map(|w| w / start_excess).collect();
    let y = problem.minimize(start)?;
    let total: f64 = y.iter().sum();
    if total.is_nan() || total <= 0.0 {
        return Err(Error::Numerical(
            "maximum sharpe weights do not sum to a positive total",
        ));
    }
    Ok(y.iter().map(|v| v / total).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic random walk (xorshift noise, so no dependency is needed).
    fn walk(seed: u64, drift: f64, volatility: f64, len: usize) -> Vec<f64> {
        let mut state = seed.max(1);
        let mut price = 100.0;
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let uniform = (state >> 11) as f64 / (1u64 << 53) as f64;
                let current = price;
                price *= (drift + volatility * (uniform - 0.5)).exp();
                current
            })
            .collect()
    }

    fn assets() -> Vec<Vec<f64>> {
        vec![
            walk(1, 0.001, 0.02, 200),
            walk(2, 0.0005, 0.03, 200),
            walk(3, 0.002, 0.05, 200),
        ]
    }

    #[test]
    fn one_asset_is_rejected() {
        let problem = Problem::new(vec![walk(1, 0.0, 0.01, 50)], Objective::MinVariance);
        assert_eq!(optimize(&problem), Err(Error::TooFewAssets { found: 1 }));
    }

    #[test]
    fn two_identical_series_are_singular() {
        let a = walk(5, 0.0, 0.02, 100);
        let problem = Problem::new(vec![a.clone(), a], Objective::MinVariance);
        assert_eq!(
            optimize(&problem),
            Err(Error::SingularCovariance {
                asset: 1,
                reason: Singularity::Collinear
            })
        );
    }

    #[test]
    fn a_scaled_copy_and_a_combination_are_singular() {
        let a = walk(5, 0.0, 0.02, 100);
        let b = walk(6, 0.0, 0.02, 100);
        // Prices 3·a: the same returns as a.
        let scaled: Vec<f64> = a.iter().map(|p| 3.0 * p).collect();
        let problem = Problem::new(vec![a.clone(), b.clone(), scaled], Objective::RiskParity);
        assert!(matches!(
            optimize(&problem),
            Err(Error::SingularCovariance {
                asset: 2,
                reason: Singularity::Collinear
            })
        ));
        // Returns r_c = r_a − 2 r_b, i.e. prices a / b².
        let combined: Vec<f64> = a.iter().zip(&b).map(|(x, y)| x / (y * y)).collect();
        let problem = Problem::new(vec![a, b, combined], Objective::MaxSharpe);
        assert!(matches!(
            optimize(&problem),
            Err(Error::SingularCovariance {
                asset: 2,
                reason: Singularity::Collinear
            })
        ));
    }

    #[test]
    fn a_constant_series_is_singular() {
        let problem = Problem::new(
            vec![walk(5, 0.0, 0.02, 100), vec![42.0; 100]],
            Objective::MinVariance,
        );
        assert_eq!(
            optimize(&problem),
            Err(Error::SingularCovariance {
                asset: 1,
                reason: Singularity::ZeroVariance
            })
        );
        // Constant growth has constant returns too, up to rounding.
        let growth: Vec<f64> = (0..100).map(|t| 100.0 * 1.01f64.powi(t)).collect();
        let problem = Problem::new(vec![growth, walk(5, 0.0, 0.02, 100)], Objective::RiskParity);
        assert!(matches!(
            optimize(&problem),
            Err(Error::SingularCovariance {
                asset: 0,
                reason: Singularity::ZeroVariance
            })
        ));
    }

    #[test]
    fn infeasible_bounds_are_rejected() {
        let mut problem = Problem::new(assets(), Objective::MinVariance);
        problem.bounds = vec![(0.5, 1.0), (0.4, 1.0), (0.2, 1.0)];
        assert!(matches!(
            optimize(&problem),
            Err(Error::InfeasibleBounds { .. })
        ));
        problem.bounds = vec![(0.0, 0.3), (0.0, 0.3), (0.0, 0.3)];
        assert!(matches!(
            optimize(&problem),
            Err(Error::InfeasibleBounds { .. })
        ));
        problem.bounds = vec![(0.0, 1.0), (0.6, 0.5), (0.0, 1.0)];
        assert!(matches!(
            optimize(&problem),
            Err(Error::InvalidBounds { asset: 1, .. })
        ));
    }

    #[test]
    fn a_short_lookback_is_rejected() {
        // Three returns are the minimum ...
        let short: Vec<Vec<f64>> = assets().iter().map(|a| a[..3].to_vec()).collect();
        let mut problem = Problem::new(short[..2].to_vec(), Objective::MinVariance);
        assert_eq!(
            optimize(&problem),
            Err(Error::TooFewObservations {
                found: 2,
                required: 3
            })
        );
        // ... and a covariance of k assets needs k + 1.
        let four: Vec<Vec<f64>> = (0..4).map(|i| walk(i + 10, 0.0, 0.02, 4)).collect();
        problem.closes = four;
        problem.bounds.clear();
        assert_eq!(
            optimize(&problem),
            Err(Error::TooFewObservations {
                found: 3,
                required: 5
            })
        );
        problem.closes = vec![vec![], vec![]];
        assert!(matches!(
            optimize(&problem),
            Err(Error::TooFewObservations { found: 0, .. })
        ));
    }

    #[test]
    fn a_nan_price_is_rejected_with_its_asset() {
        let mut closes = assets();
        closes[2][17] = f64::NAN;
        let problem = Problem::new(closes, Objective::MaxSharpe);
        assert!(matches!(
            optimize(&problem),
            Err(Error::InvalidPrice { asset: 2, index: 17, value }) if value.is_nan()
        ));
    }

    #[test]
    fn unequal_lengths_are_rejected() {
        let mut closes = assets();
        closes[1].pop();
        let problem = Problem::new(closes, Objective::MinVariance);
        assert_eq!(
            optimize(&problem),
            Err(Error::LengthMismatch {
                asset: 1,
                expected: 200,
                found: 199
            })
        );
    }

    #[test]
    fn max_sharpe_without_excess_return_is_an_error() {
        let closes = vec![walk(1, -0.01, 0.02, 100), walk(2, -0.02, 0.02, 100)];
        let problem = Problem::new(closes, Objective::MaxSharpe);
        assert!(matches!(
            optimize(&problem),
            Err(Error::NoExcessReturn { .. })
        ));
        // A risk-free rate above every asset's mean return does the same.
        let mut problem = Problem::new(assets(), Objective::MaxSharpe);
        problem.risk_free_rate = 1.0;
        assert!(matches!(
            optimize(&problem),
            Err(Error::NoExcessReturn { .. })
        ));
        let mut problem = Problem::new(assets(), Objective::MaxSharpe);
        problem.risk_free_rate = f64::NAN;
        assert!(matches!(
            optimize(&problem),
            Err(Error::InvalidRiskFreeRate { .. })
        ));
    }

    #[test]
    fn bounds_that_leave_one_choice_give_it() {
        for objective in [
            Objective::MinVariance,
            Objective::MaxSharpe,
            Objective::RiskParity,
        ] {
            let mut problem = Problem::new(assets(), objective);
            problem.bounds = vec![(0.2, 1.0), (0.3, 1.0), (0.5, 1.0)];
            let solution = optimize(&problem).unwrap();
            for (w, want) in solution.weights.iter().zip([0.2, 0.3, 0.5]) {
                assert!((w - want).abs() < 1e-15);
            }
        }
    }

    #[test]
    fn every_objective_respects_bounds_and_sums_to_one() {
        let bounds = vec![(0.1, 0.5), (0.0, 0.25), (0.2, 0.6)];
        for objective in [
            Objective::MinVariance,
            Objective::MaxSharpe,
            Objective::RiskParity,
        ] {
            let mut problem = Problem::new(assets(), objective);
            problem.bounds = bounds.clone();
            let solution = optimize(&problem).unwrap();
            let sum: f64 = solution.weights.iter().sum();
            assert!((sum - 1.0).abs() < 1e-14, "{objective:?}: sum {sum}");
            for (w, (lo, hi)) in solution.weights.iter().zip(&bounds) {
                assert!(
                    w >= lo && w <= hi,
                    "{objective:?}: {w} outside [{lo}, {hi}]"
                );
            }
            let rc: f64 = solution.risk_contributions.iter().sum();
            assert!((rc - 1.0).abs() < 1e-12);
            assert_eq!(solution.observations, 199);
        }
    }

    /// Checks the KKT conditions of `max g'w`-type problems on the bounded simplex: the
    /// gradient `grad` is equal on assets strictly inside their bounds, no larger on assets at
    /// their minimum and no smaller on assets at their maximum (for a maximisation), all relative
    /// to `scale`, the size of the gradient's terms.
    fn assert_kkt(w: &[f64], grad: &[f64], scale: f64, bounds: &Bounds, what: &str) {
        let tolerance = 1e-9;
        let at_lower = |i: usize| w[i] <= bounds.lower[i] + 1e-12;
        let at_upper = |i: usize| w[i] >= bounds.upper[i] - 1e-12;
        let free: Vec<usize> = (0..w.len())
            .filter(|&i| !at_lower(i) && !at_upper(i))
            .collect();
        let level = match free.first() {
            Some(&i) => grad[i],
            None => return,
        };
        for i in 0..w.len() {
            let excess = (grad[i] - level) / scale;
            if free.contains(&i) {
                assert!(
                    excess.abs() < tolerance,
                    "{what}: free asset {i} off by {excess:e}: w {w:?} grad {grad:?} {bounds:?}"
                );
            } else if at_lower(i) && !at_upper(i) {
                assert!(
                    excess < tolerance,
                    "{what}: asset {i} at its minimum wants more ({excess:e})"
                );
            } else if at_upper(i) && !at_lower(i) {
                assert!(
                    excess > -tolerance,
                    "{what}: asset {i} at its maximum wants less ({excess:e})"
                );
            }
        }
    }

    #[test]
    fn random_problems_meet_the_optimality_conditions() {
        for seed in 1..150u64 {
            let n = 2 + (seed % 11) as usize;
            let len = n + 2 + (seed as usize * 7) % 200;
            let closes: Vec<Vec<f64>> = (0..n as u64)
                .map(|i| {
                    let drift = 0.002 * ((seed * 31 + i * 17) % 7) as f64 / 7.0 - 0.0005;
                    let vol = 0.005 + 0.05 * ((seed * 13 + i * 29) % 11) as f64 / 11.0;
                    walk(seed * 1000 + i + 1, drift, vol, len)
                })
                .collect();
            let given: Vec<(f64, f64)> = if seed % 3 == 0 {
                Vec::new()
            } else {
                (0..n as u64)
                    .map(|i| {
                        let lo = if (seed + i) % 4 == 0 {
                            0.5 / n as f64
                        } else {
                            0.0
                        };
                        let hi = if (seed + i) % 3 == 0 {
                            1.5 / n as f64
                        } else {
                            1.0
                        };
                        (lo, hi)
                    })
                    .collect()
            };
            let bounds = Bounds::new(&given, n).unwrap();
            let returns: Vec<Vec<f64>> = closes
                .iter()
                .map(|c| crate::log_returns(c).unwrap())
                .collect();
            let cov = covariance(&returns).unwrap();
            let means: Vec<f64> = returns.iter().map(|r| mean(r)).collect();

            let mut problem = Problem::new(closes, Objective::MinVariance);
            problem.bounds = given;
            let solution = optimize(&problem).unwrap();
            // Maximising −w'Σw: the gradient is −2Σw.
            let grad: Vec<f64> = cov.mul_vec(&solution.weights).iter().map(|g| -g).collect();
            let scale = grad.iter().fold(0.0_f64, |m, g| m.max(g.abs()));
            let what = format!("seed {seed} min variance");
            assert_kkt(&solution.weights, &grad, scale, &bounds, &what);

            problem.objective = Objective::MaxSharpe;
            match optimize(&problem) {
                Ok(solution) => {
                    let w = &solution.weights;
                    let sw = cov.mul_vec(w);
                    let variance = dot(w, &sw);
                    let excess = dot(w, &means);
                    let grad: Vec<f64> = (0..n)
                        .map(|i| means[i] / variance.sqrt() - excess * sw[i] / variance.powf(1.5))
                        .collect();
                    let scale = means.iter().fold(0.0_f64, |m, v| m.max(v.abs())) / variance.sqrt();
                    assert_kkt(w, &grad, scale, &bounds, &format!("seed {seed} max sharpe"));
                }
                Err(Error::NoExcessReturn { .. }) => {}
                Err(e) => panic!("seed {seed}: {e}"),
            }

            problem.objective = Objective::RiskParity;
            let solution = optimize(&problem).unwrap();
            let sum: f64 = solution.weights.iter().sum();
            assert!((sum - 1.0).abs() < 1e-14);
        }
    }

    #[test]
    fn max_sharpe_beats_nearby_feasible_portfolios() {
        let problem = Problem::new(assets(), Objective::MaxSharpe);
        let best = optimize(&problem).unwrap();
        let returns: Vec<Vec<f64>> = problem
            .closes
            .iter()
            .map(|c| crate::log_returns(c).unwrap())
            .collect();
        let cov = covariance(&returns).unwrap();
        let means: Vec<f64> = returns.iter().map(|r| mean(r)).collect();
        let sharpe = |w: &[f64]| dot(w, &means) / cov.quadratic_form(w).sqrt();
        assert!((sharpe(&best.weights) - best.sharpe_ratio).abs() < 1e-14);
        for i in 0..3 {
            for j in 0..3 {
                let mut w = best.weights.clone();
                let shift = 1e-4f64.min(w[j]);
                w[i] += shift;
                w[j] -= shift;
                assert!(sharpe(&w) <= best.sharpe_ratio + 1e-15);
            }
        }
    }
}
