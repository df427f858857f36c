"""Exponentiated power law: exact recovery, degenerate curves, bootstrap CI coverage over many seeds."""
from __future__ import annotations

import numpy as np
import pytest

from fit import beta_binomial, curves, power_law
from fit.analysis import fit_power_law


@pytest.mark.parametrize("method", power_law.METHODS)
def test_noise_free_curve_is_recovered(method: str) -> None:
    """On coverage = exp(a·k^b) exactly, both fits return a and b."""
    ks = curves.fit_grid(1000)
    cov = np.exp(-2.3 * ks ** -0.41)
    a, b, status = power_law.fit(ks, cov[None, :], method)
    assert status[0] == "ok"
    assert a[0] == pytest.approx(-2.3, rel=1e-6) and b[0] == pytest.approx(-0.41, rel=1e-6)
    law = power_law.PowerLaw(float(a[0]), float(b[0]))
    assert power_law.rmse(ks, cov, law) < 1e-7


def test_degenerate_curves() -> None:
    """All-zero, all-one and single-point curves get a status, constant predictions and no parameters."""
    ks = np.array([1, 2, 4, 8])
    cov = np.array([[0, 0, 0, 0], [1, 1, 1, 1], [0.1, 1, 1, 1], [0.1, 0.2, 0.3, 0.4]], float)
    for method in power_law.METHODS:
        a, b, status = power_law.fit(ks, cov, method)
        assert status.tolist() == ["no_successes", "saturated", "insufficient", "ok"]
        assert np.isnan(a[:3]).all() and np.isfinite(a[3])
        pred = power_law.coverage(a, b, status, np.array([100.0]))
        assert pred[0, 0] == 0.0 and pred[1, 0] == 1.0 and np.isnan(pred[2, 0])


def test_steep_curve_starts_inside_the_bounds() -> None:
    """A problem solved 99% of the time has a log-log slope below B_MIN: the nonlinear fit still succeeds."""
    ks = curves.fit_grid(1000)
    cov = curves.coverage_matrix(np.array([1000]), np.array([990]), ks)
    a0, b0, _ = power_law.fit_loglog(ks, cov)
    assert b0[0] < power_law.B_MIN  # the case the start clipping is for
    a, b, status = power_law.fit_nonlinear(ks, cov)
    assert status[0] == "ok" and power_law.B_MIN <= b[0] < 0 and a[0] < 0
    assert power_law.rmse(ks, cov[0], power_law.PowerLaw(float(a[0]), float(b[0]))) < 1e-3


def _ci_hits(method: str, seeds: int, n_boot: int) -> np.ndarray:
    """Per seed: whether the bootstrap CIs of a and b contain the population-curve parameters."""
    alpha, beta, problems, n = 0.4, 2.0, 400, 200
    ks = curves.fit_grid(n)
    # The estimand: the same fit applied to the population curve E[pass@k] = 1 - B(α, β+k)/B(α, β).
    population = beta_binomial.coverage(np.log([[alpha, beta]]), ks)
    a0, b0, _ = power_law.fit(ks, population, method)
    hits = []
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        c = rng.binomial(n, rng.beta(alpha, beta, problems))
        per_problem = curves.coverage_matrix(np.full(problems, n), c, ks)
        w = curves.bootstrap_weights(problems, n_boot, seed + 10_000)
        res = fit_power_law(ks, per_problem.mean(0), curves.weighted_mean(w, per_problem), method)
        lo, hi = curves.percentile_ci(np.column_stack([res.a_boot, res.b_boot]))
        hits.append([lo[0] <= a0[0] <= hi[0], lo[1] <= b0[0] <= hi[1]])
    return np.array(hits)


def test_bootstrap_ci_coverage_rate_loglog() -> None:
    """95% bootstrap CIs over problems contain the population parameters in most of 120 seeds."""
    rate = _ci_hits("loglog", 120, 200).mean(axis=0)
    assert np.all(rate >= 0.85), rate


def test_bootstrap_ci_coverage_rate_nonlinear() -> None:
    """Same for the direct nonlinear fit (fewer seeds: one least-squares fit per replicate)."""
    rate = _ci_hits("nonlinear", 30, 80).mean(axis=0)
    assert np.all(rate >= 0.8), rate
