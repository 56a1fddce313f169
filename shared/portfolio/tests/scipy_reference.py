#!/usr/bin/env python3
"""Reference portfolio weights from scipy's SLSQP, for tests/scipy.rs.

Usage: scipy_reference.py OUT.json

Builds several sets of assets from the real OHLCV data that the `backtesting` package ships
(GOOG daily, EURUSD hourly; read from the installed package, never copied into the repository)
and from seeded random walks, solves minimum variance, maximum Sharpe and risk parity for each
with scipy.optimize.minimize(method="SLSQP"), and writes the inputs and scipy's weights as JSON:

    {"cases": [{"name", "closes": [[...] per asset], "bounds": [[lo, hi] per asset],
                "risk_free_rate", "solutions": {"min_variance" | "max_sharpe" | "risk_parity":
                {"weights": [...], "objective": float}}}]}

The statistics are numpy's own (log returns, mean, np.cov with ddof=1): nothing here comes from
the Rust code.
"""

import json
import sys

import numpy as np
from scipy.optimize import minimize

from backtesting.test import EURUSD, GOOG

OPTIONS = {"ftol": 1e-15, "maxiter": 1000}


def statistics(closes):
    returns = np.diff(np.log(np.asarray(closes, dtype=float)), axis=1)
    return returns.mean(axis=1), np.cov(returns, ddof=1)


def slsqp(fun, jac, x0, bounds):
    result = minimize(
        fun,
        x0,
        jac=jac,
        method="SLSQP",
        bounds=bounds,
        constraints=[
            {"type": "eq", "fun": lambda w: w.sum() - 1.0, "jac": lambda w: np.ones_like(w)}
        ],
        options=OPTIONS,
    )
    if not result.success:
        sys.exit(f"SLSQP failed: {result.message}")
    return result.x


def feasible_start(bounds):
    """Equal weights moved into the bounds (the projection, by bisection on the shift)."""
    lo = np.array([b[0] for b in bounds])
    hi = np.array([b[1] for b in bounds])
    v = np.full(len(bounds), 1.0 / len(bounds))
    below, above = (v - hi).min(), (v - lo).max()
    for _ in range(200):
        middle = 0.5 * (below + above)
        if np.clip(v - middle, lo, hi).sum() > 1.0:
            below = middle
        else:
            above = middle
    return np.clip(v - 0.5 * (below + above), lo, hi)


def min_variance(mean, cov, bounds, rf):
    # Scaling the objective changes nothing but brings it near 1 for ftol.
    scaled = cov / np.trace(cov) * len(cov)
    w = slsqp(lambda w: w @ scaled @ w, lambda w: 2.0 * scaled @ w, feasible_start(bounds), bounds)
    return w, float(w @ cov @ w)


def max_sharpe(mean, cov, bounds, rf):
    excess = mean - rf

    def negative_sharpe(w):
        return -(excess @ w) / np.sqrt(w @ cov @ w)

    def gradient(w):
        sigma_w = cov @ w
        vol = np.sqrt(w @ sigma_w)
        return -(excess / vol - (excess @ w) * sigma_w / vol**3)

    w = slsqp(negative_sharpe, gradient, feasible_start(bounds), bounds)
    return w, float(-negative_sharpe(w))


def equal_risk(cov):
    """Equal risk contributions, unbounded (long-only by construction).

    The convex formulation (Maillard, Roncalli & Teiletche 2010): the minimiser of
    ½ x'Σx − (1/n) Σ ln x_i over x > 0 has x_i (Σx)_i = 1/n for every i. (Least squares on the
    contributions has a spurious local minimum with one weight at 0, where SLSQP stops.)
    """
    n = len(cov)
    scaled = cov / np.trace(cov) * n
    start = np.full(n, 1.0 / np.sqrt(scaled.sum()))
    result = minimize(
        lambda x: 0.5 * x @ scaled @ x - np.log(x).sum() / n,
        start,
        jac=lambda x: scaled @ x - 1.0 / (n * x),
        method="SLSQP",
        bounds=[(1e-12, None)] * n,
        options=OPTIONS,
    )
    if not result.success:
        sys.exit(f"SLSQP failed: {result.message}")
    return result.x / result.x.sum()


def risk_parity(mean, cov, bounds, rf):
    """The equal-risk weights, then the nearest weights within the bounds (documented meaning)."""
    erc = equal_risk(cov)
    lo = np.array([b[0] for b in bounds])
    hi = np.array([b[1] for b in bounds])
    if np.all(erc >= lo) and np.all(erc <= hi):
        w = erc
    else:
        w = slsqp(
            lambda w: float(((w - erc) ** 2).sum()),
            lambda w: 2.0 * (w - erc),
            feasible_start(bounds),
            bounds,
        )
    contributions = w * (cov @ w) / (w @ cov @ w)
    return w, float(np.abs(contributions - 1.0 / len(w)).max())


OBJECTIVES = {"min_variance": min_variance, "max_sharpe": max_sharpe, "risk_parity": risk_parity}


def random_walks(seed, length, drifts, vols, factor_loadings):
    """Seeded correlated geometric random walks: one common factor plus idiosyncratic noise."""
    rng = np.random.default_rng(seed)
    factor = rng.standard_normal(length - 1)
    walks = []
    for drift, vol, loading in zip(drifts, vols, factor_loadings):
        noise = rng.standard_normal(length - 1)
        shocks = drift + vol * (loading * factor + np.sqrt(1.0 - loading**2) * noise)
        walks.append(100.0 * np.exp(np.concatenate([[0.0], np.cumsum(shocks)])))
    return walks


def cases():
    goog = GOOG["Close"].to_numpy(dtype=float)
    eurusd = EURUSD["Close"].to_numpy(dtype=float)
    eurusd_daily = EURUSD["Close"].resample("1D").last().dropna().to_numpy(dtype=float)
    days = len(eurusd_daily)
    synthetic = random_walks(
        20240611,
        500,
        drifts=[1.5e-3, 8e-4, 2.5e-3, 2e-4, 2e-3, 1e-3, 3.5e-3, 4e-4],
        vols=[0.010, 0.015, 0.022, 0.008, 0.018, 0.012, 0.030, 0.005],
        factor_loadings=[0.6, 0.3, 0.7, -0.2, 0.5, 0.4, 0.8, 0.1],
    )
    mixed = [
        eurusd_daily,
        goog[-days:],
        goog[:days],
        goog[700 : 700 + days],
        *random_walks(7, days, [5e-4, 2e-4], [0.012, 0.006], [0.3, -0.4]),
    ]
    return [
        {
            "name": "goog_windows",
            "closes": [goog[k * 500 : (k + 1) * 500] for k in range(4)],
            "bounds": [(0.0, 1.0)] * 4,
            "risk_free_rate": 0.0,
        },
        {
            "name": "eurusd_hourly_windows",
            "closes": [eurusd[k * 1000 : (k + 1) * 1000] for k in range(5)],
            "bounds": [(0.0, 1.0)] * 5,
            "risk_free_rate": 0.0,
        },
        {
            "name": "mixed",
            "closes": mixed,
            "bounds": [(0.0, 1.0)] * 6,
            "risk_free_rate": 1e-5,
        },
        {
            "name": "mixed_bounded",
            "closes": mixed,
            "bounds": [(0.05, 0.4), (0.1, 0.5), (0.0, 0.3), (0.0, 1.0), (0.05, 0.25), (0.0, 0.15)],
            "risk_free_rate": 1e-4,
        },
        {
            "name": "synthetic",
            "closes": synthetic,
            "bounds": [(0.0, 1.0)] * 8,
            "risk_free_rate": 2e-4,
        },
        {
            "name": "synthetic_bounded",
            "closes": synthetic,
            "bounds": [(0.02, 0.3)] * 8,
            "risk_free_rate": 0.0,
        },
    ]


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: scipy_reference.py OUT.json")
    out = []
    for case in cases():
        mean, cov = statistics(case["closes"])
        solutions = {}
        for name, solve in OBJECTIVES.items():
            weights, objective = solve(mean, cov, case["bounds"], case["risk_free_rate"])
            solutions[name] = {"weights": weights.tolist(), "objective": objective}
        out.append(
            {
                "name": case["name"],
                "closes": [np.asarray(c, dtype=float).tolist() for c in case["closes"]],
                "bounds": [list(b) for b in case["bounds"]],
                "risk_free_rate": case["risk_free_rate"],
                "solutions": solutions,
            }
        )
    with open(sys.argv[1], "w") as f:
        json.dump({"scipy": __import__("scipy").__version__, "cases": out}, f)


if __name__ == "__main__":
    main()
