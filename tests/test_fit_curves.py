"""Empirical coverage building blocks: pass@k, grids, paired bootstrap, interpolation and inversion."""
from __future__ import annotations

from fractions import Fraction
from itertools import combinations
from math import comb

import numpy as np
import pytest

from fit import curves
from verify.metrics import pass_at_k as verify_pass_at_k


def _brute(n: int, c: int, k: int) -> float:
    """pass@k by enumerating every k-subset of n samples with c correct."""
    samples = [1] * c + [0] * (n - c)
    subsets = list(combinations(range(n), k))
    return sum(any(samples[i] for i in s) for s in subsets) / len(subsets)


@pytest.mark.parametrize("n", [1, 2, 5, 8])
def test_pass_at_k_matches_enumeration(n: int) -> None:
    """Every (c, k) with k <= n agrees with brute force."""
    for c in range(n + 1):
        for k in range(1, n + 1):
            assert curves.pass_at_k(n, c, k) == pytest.approx(_brute(n, c, k), abs=1e-12)


def test_pass_at_k_exact_large_and_edges() -> None:
    """Large n agrees with exact rational arithmetic; c = 0 is exactly 0, k > n - c exactly 1, k > n NaN."""
    n, c, k = 100_096, 3, 1000
    exact = 1 - Fraction(comb(n - c, k), comb(n, k))
    assert curves.pass_at_k(n, c, k) == pytest.approx(float(exact), rel=1e-9)
    assert curves.pass_at_k(10**6, 0, 5000) == 0.0
    assert curves.pass_at_k(10, 7, 4) == 1.0
    assert np.isnan(curves.pass_at_k(10, 3, 11))


def test_pass_at_k_agrees_with_verify_metrics() -> None:
    """The vectorised form used by fit equals the verifier's product form."""
    rng = np.random.default_rng(0)
    n = rng.integers(1, 3000, 200)
    c = rng.binomial(n, rng.beta(0.3, 3, 200))
    ks = np.array([1, 2, 7, 50, 400])
    ours = curves.coverage_matrix(n, c, ks)
    theirs = np.column_stack([verify_pass_at_k(n, c, int(k)) for k in ks])
    np.testing.assert_allclose(ours, theirs, rtol=1e-8, atol=1e-12, equal_nan=True)


def test_grids() -> None:
    """k grids are increasing integers covering 1..k_max, dense at small k."""
    g = curves.k_grid(1000)
    assert g[0] == 1 and g[-1] == 1000 and np.all(np.diff(g) > 0)
    assert set(range(1, 65)) <= set(g.tolist())
    f = curves.fit_grid(128)
    assert f[0] == 1 and f[-1] == 128 and np.all(np.diff(f) > 0)
    assert curves.k_grid(1).tolist() == [1]


def test_fit_points_are_on_the_empirical_grid() -> None:
    """Every fit_grid k is in k_grid, so a fit reads the empirical coverage at its own k (not the next grid point)."""
    for k_max in (1, 64, 65, 75, 128, 1000, 4099, 10_000, 100_096):
        assert set(curves.fit_grid(k_max).tolist()) <= set(curves.k_grid(k_max).tolist()), k_max


def test_bootstrap_weights_and_weighted_mean() -> None:
    """Each replicate draws P problems; the weighted mean of constant values is that constant."""
    w = curves.bootstrap_weights(50, 30, seed=1)
    assert w.shape == (30, 50) and np.all(w.sum(axis=1) == 50)
    values = np.full((50, 3), 0.25)
    np.testing.assert_allclose(curves.weighted_mean(w, values), 0.25)


def test_interp_and_invert_rows() -> None:
    """Interpolation and inversion of monotone rows are each other's inverse; unreachable targets are NaN."""
    grid = np.array([0.0, 1.0, 2.0, 4.0])
    rows = np.array([[0.0, 0.2, 0.5, 0.9], [0.0, 0.1, 0.1, 0.3]])
    x = curves.invert_rows(np.array([[0.35, 0.6], [0.2, 0.5]]), grid, rows)
    assert x[0, 0] == pytest.approx(1.5) and x[0, 1] == pytest.approx(2.5)
    assert x[1, 0] == pytest.approx(3.0) and np.isnan(x[1, 1])
    y = curves.interp_rows(np.array([1.5, 3.0]), grid, rows)
    assert y == pytest.approx([0.35, 0.2])
    unknown_after = np.array([[0.0, 0.2, np.nan, np.nan]])  # known up to k = 1 (a curve with no fit beyond n)
    assert curves.interp_rows(np.array([1.0]), grid, unknown_after)[0] == 0.2
    assert np.isnan(curves.interp_rows(np.array([1.5]), grid, unknown_after)[0])


def test_percentile_ci_ignores_failed_replicates() -> None:
    """NaN replicates are dropped; a column with < 2 finite values has no interval."""
    boot = np.array([[1.0, np.nan], [2.0, np.nan], [3.0, 5.0], [np.nan, np.nan]])
    lo, hi = curves.percentile_ci(boot, 0.5)
    assert lo[0] == pytest.approx(1.5) and hi[0] == pytest.approx(2.5)
    assert np.isnan(lo[1]) and np.isnan(hi[1])


def test_percentile_ci_ranks_infinite_replicates_above_finite_ones() -> None:
    """A replicate that never reaches a target (inf) is kept: bounds among such replicates are inf, and
    finite bounds are numpy's linear quantiles over all non-NaN replicates."""
    boot = np.array([[1.0, 2.0, 0.0], [2.0, np.inf, 0.0], [3.0, np.inf, 1.0], [np.nan, 4.0, np.inf], [5.0, 5.0, np.inf]])
    lo, hi = curves.percentile_ci(boot, 0.5)
    assert lo.tolist() == [1.75, 4.0, 0.0] and hi[0] == 3.5 and np.isposinf(hi[1]) and np.isposinf(hi[2])
