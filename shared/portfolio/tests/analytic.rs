#![allow(clippy::unwrap_used)]
//! Two-asset closed forms, with the statistics computed here from their textbook formulas.

use tickmesh_portfolio::{Objective, Problem, optimize};

/// A deterministic price path: a linear congruential generator's uniforms as shocks, plus a
/// share `common` of a shared factor so the two assets are correlated.
fn paths(len: usize, drifts: [f64; 2], vols: [f64; 2], common: f64) -> [Vec<f64>; 2] {
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut uniform = move || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (state >> 11) as f64 / (1u64 << 53) as f64 - 0.5
    };
    let mut prices = [vec![100.0], vec![50.0]];
    for _ in 1..len {
        let factor = uniform();
        for (k, path) in prices.iter_mut().enumerate() {
            let shock = drifts[k] + vols[k] * (common * factor + (1.0 - common) * uniform());
            let last = *path.last().unwrap();
            path.push(last * shock.exp());
        }
    }
    prices
}

/// Sample variances s1², s2² and covariance s12 (n − 1), and the means, of the log returns.
fn moments(prices: &[Vec<f64>; 2]) -> (f64, f64, f64, [f64; 2]) {
    let returns: Vec<Vec<f64>> = prices
        .iter()
        .map(|p| p.windows(2).map(|w| (w[1] / w[0]).ln()).collect())
        .collect();
    let n = returns[0].len() as f64;
    let means = [
        returns[0].iter().sum::<f64>() / n,
        returns[1].iter().sum::<f64>() / n,
    ];
    let co = |a: usize, b: usize| {
        returns[a]
            .iter()
            .zip(&returns[b])
            .map(|(x, y)| (x - means[a]) * (y - means[b]))
            .sum::<f64>()
            / (n - 1.0)
    };
    (co(0, 0), co(1, 1), co(0, 1), means)
}

#[test]
fn two_asset_minimum_variance_matches_the_closed_form() {
    for common in [0.0, 0.3, 0.5, -0.4] {
        let prices = paths(400, [0.0005, 0.001], [0.02, 0.026], common);
        let (s1, s2, s12, _) = moments(&prices);
        let w1 = (s2 - s12) / (s1 + s2 - 2.0 * s12);
        assert!(
            w1 > 0.0 && w1 < 1.0,
            "common {common}: pick paths with an interior optimum"
        );
        let solution = optimize(&Problem::new(prices.to_vec(), Objective::MinVariance)).unwrap();
        assert!(
            (solution.weights[0] - w1).abs() < 1e-12,
            "common {common}: {} vs closed form {w1}",
            solution.weights[0]
        );
        assert!((solution.weights[1] - (1.0 - w1)).abs() < 1e-12);
        let variance = w1 * w1 * s1 + (1.0 - w1) * (1.0 - w1) * s2 + 2.0 * w1 * (1.0 - w1) * s12;
        assert!((solution.volatility - variance.sqrt()).abs() < 1e-14);
        assert_eq!(solution.observations, 399);
    }
}

#[test]
fn minimum_variance_puts_everything_in_the_safer_asset_when_the_optimum_would_short() {
    // Highly correlated, very different volatilities: the unconstrained optimum shorts the
    // riskier asset, so long-only holds only the safer one.
    let prices = paths(300, [0.0, 0.0], [0.01, 0.04], 0.95);
    let (s1, s2, s12, _) = moments(&prices);
    assert!((s2 - s12) / (s1 + s2 - 2.0 * s12) > 1.0);
    let solution = optimize(&Problem::new(prices.to_vec(), Objective::MinVariance)).unwrap();
    assert_eq!(solution.weights, vec![1.0, 0.0]);
}

#[test]
fn two_asset_maximum_sharpe_matches_the_tangency_portfolio() {
    let prices = paths(500, [0.002, 0.0015], [0.02, 0.025], 0.4);
    let (s1, s2, s12, means) = moments(&prices);
    let rf = 1e-4;
    let (e1, e2) = (means[0] - rf, means[1] - rf);
    // Σ⁻¹ e up to a positive factor.
    let (t1, t2) = (s2 * e1 - s12 * e2, s1 * e2 - s12 * e1);
    assert!(
        t1 > 0.0 && t2 > 0.0,
        "pick paths with an interior tangency portfolio"
    );
    let w1 = t1 / (t1 + t2);
    let mut problem = Problem::new(prices.to_vec(), Objective::MaxSharpe);
    problem.risk_free_rate = rf;
    let solution = optimize(&problem).unwrap();
    assert!(
        (solution.weights[0] - w1).abs() < 1e-12,
        "{} vs closed form {w1}",
        solution.weights[0]
    );
    let mean = w1 * means[0] + (1.0 - w1) * means[1];
    assert!((solution.expected_return - mean).abs() < 1e-15);
}

#[test]
fn two_asset_risk_parity_is_inverse_volatility() {
    for common in [0.0, 0.5, -0.5] {
        let prices = paths(300, [0.0, 0.0], [0.01, 0.03], common);
        let (s1, s2, _, _) = moments(&prices);
        let w1 = s2.sqrt() / (s1.sqrt() + s2.sqrt());
        let solution = optimize(&Problem::new(prices.to_vec(), Objective::RiskParity)).unwrap();
        assert!((solution.weights[0] - w1).abs() < 1e-12);
        for rc in &solution.risk_contributions {
            assert!((rc - 0.5).abs() < 1e-8, "{:?}", solution.risk_contributions);
        }
    }
}
