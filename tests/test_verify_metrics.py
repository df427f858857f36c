"""Metrics against brute force: pass@k by enumeration, maj@k by exact enumeration; grids, CIs, curves."""
from __future__ import annotations

import itertools
from fractions import Fraction
from math import comb

import numpy as np
import pandas as pd
import pytest

from verify.metrics import (
    bootstrap_ci,
    breakdown,
    coverage_curve,
    log_grid,
    maj_at_k,
    maj_curve,
    mean_with_ci,
    pass_at_k,
)


def brute_pass_at_k(n: int, c: int, k: int) -> float:
    """Fraction of the k-subsets of n samples (c correct) that contain a correct one."""
    samples = [1] * c + [0] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(samples[i] for i in s) for s in subsets) / len(subsets)


def test_pass_at_k_matches_enumeration() -> None:
    """Every (n, c, k) with n <= 9 agrees with enumerating all subsets, vectorised over problems."""
    cases = [(n, c, k) for n in range(1, 10) for c in range(n + 1) for k in range(1, n + 1)]
    n = np.array([x[0] for x in cases])
    c = np.array([x[1] for x in cases])
    for k in range(1, 10):
        mask = n >= k
        got = pass_at_k(n[mask], c[mask], k)
        want = [brute_pass_at_k(nn, cc, k) for nn, cc in zip(n[mask], c[mask])]
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)


def test_pass_at_k_large_n_matches_exact_rationals() -> None:
    """Large n (where binomials overflow floats) agrees with exact 1 - C(n-c,k)/C(n,k) to 1e-12 relative, also
    with many successes and small k (a tiny pass@1 of a real Pythia problem: 71 of 100,096)."""
    for n, c, k in [(10_000, 3, 100), (10_000, 1, 1), (100_000, 50, 1000), (5000, 4990, 5), (20_000, 1, 10_000),
                    (100_096, 71, 1), (1_000_000, 65, 1), (1_000_000, 500, 3), (5000, 200, 100), (1_000_000, 100_000, 2),
                    (10_000_000, 65, 65), (10_000_000, 1000, 1000)]:
        exact = 1 - Fraction(comb(n - c, k), comb(n, k))
        got = pass_at_k([n], [c], k)[0]
        assert got == pytest.approx(float(exact), rel=1e-12, abs=0)


def test_pass_at_k_shapes_and_edges() -> None:
    """(P,) for scalar k, (P, K) for arrays; c=0 -> 0, n-c<k -> 1, k>n -> NaN; bad input raises."""
    out = pass_at_k([10, 10, 4], [0, 10, 1], [1, 5, 8])
    assert out.shape == (3, 3)
    assert np.all(out[0] == 0) and np.all(out[1] == 1)
    assert out[2, 0] == pytest.approx(0.25)
    assert np.isnan(out[2, 1]) and np.isnan(out[2, 2])
    assert pass_at_k([4], [1], 1).shape == (1,)
    assert pass_at_k([6], [2], 5)[0] == 1.0  # n - c = 4 < 5
    with pytest.raises(ValueError):
        pass_at_k([3], [4], 1)
    with pytest.raises(ValueError):
        pass_at_k([3], [1], 0)


def test_log_grid() -> None:
    """Powers of two up to n, with n itself."""
    assert log_grid(1).tolist() == [1]
    assert log_grid(10).tolist() == [1, 2, 4, 8, 10]
    assert log_grid(1024).tolist() == [2**i for i in range(11)]
    assert log_grid(1000, base=10).tolist() == [1, 10, 100, 1000]


def test_coverage_curve_with_different_n() -> None:
    """coverage@k averages pass@k over problems that have at least k samples."""
    n = np.array([4, 8, 8])
    c = np.array([1, 0, 8])
    curve = coverage_curve(n, c, n_boot=200)
    assert curve["k"].tolist() == [1, 2, 4, 8]
    assert curve["problems"].tolist() == [3, 3, 3, 2]
    expected_k2 = np.mean([brute_pass_at_k(4, 1, 2), 0.0, 1.0])
    assert curve.loc[curve.k == 2, "coverage"].item() == pytest.approx(expected_k2)
    assert curve.loc[curve.k == 8, "coverage"].item() == pytest.approx(0.5)
    assert (curve["lo"] <= curve["coverage"] + 1e-12).all() and (curve["coverage"] <= curve["hi"] + 1e-12).all()


def test_bootstrap_ci_properties() -> None:
    """CIs contain the mean, are reproducible by seed, shrink with more problems, collapse on constants."""
    rng = np.random.default_rng(0)
    small = rng.random(20)
    lo, hi = bootstrap_ci(small, n_boot=2000, seed=3)
    assert lo < small.mean() < hi
    assert (lo, hi) == bootstrap_ci(small, n_boot=2000, seed=3)
    big = rng.random(2000)
    lo2, hi2 = bootstrap_ci(big, n_boot=2000, seed=3)
    assert hi2 - lo2 < (hi - lo) / 4
    # the width of a mean's 95% CI is about 2 * 1.96 * sd / sqrt(P)
    assert hi2 - lo2 == pytest.approx(2 * 1.96 * big.std() / np.sqrt(len(big)), rel=0.15)
    assert bootstrap_ci(np.full(5, 0.3)) == (0.3, 0.3)
    mean, lo3, hi3 = mean_with_ci([1.0, np.nan, 0.0])
    assert mean == 0.5 and 0.0 <= lo3 <= hi3 <= 1.0
    lo_cols, hi_cols = bootstrap_ci(np.column_stack([small, small + 1]), seed=1)
    assert lo_cols.shape == (2,) and hi_cols[1] - lo_cols[1] == pytest.approx(hi - lo, abs=0.05)


def test_ci_of_a_proportion_of_problems_is_wilson() -> None:
    """0/1 per-problem values (coverage@n): the Wilson interval, not a bootstrap that collapses when every
    problem agrees (20 of 20 solved gave [1, 1]) and under-covers near 0 and 1."""
    assert mean_with_ci(np.ones(20)) == pytest.approx((1.0, 0.8389, 1.0), abs=1e-4)
    assert mean_with_ci(np.r_[np.ones(19), 0.0]) == pytest.approx((0.95, 0.7639, 0.9911), abs=1e-4)
    lo, hi = bootstrap_ci(np.column_stack([np.zeros(20), np.r_[np.ones(10), np.zeros(10)]]))
    assert lo[0] == 0.0 and hi[0] == pytest.approx(0.1611, abs=1e-4) and lo[1] == pytest.approx(0.2993, abs=1e-4)
    # coverage near 1 with 20 problems over 2000 simulated studies: about 92% (the bootstrap: about 65%)
    rng = np.random.default_rng(0)
    hits = sum(lo <= 0.95 <= hi for lo, hi in (bootstrap_ci((rng.random(20) < 0.95).astype(float)) for _ in range(2000)))
    assert hits / 2000 >= 0.9


def exact_maj(labels: list[int], correct: int, k: int) -> float:
    """maj@k by enumerating every k-subset: plurality class wins, ties split evenly, -1 never votes."""
    total = Fraction(0)
    subsets = list(itertools.combinations(range(len(labels)), k))
    for subset in subsets:
        votes: dict[int, int] = {}
        for i in subset:
            if labels[i] >= 0:
                votes[labels[i]] = votes.get(labels[i], 0) + 1
        if not votes:
            continue
        top = max(votes.values())
        winners = [cls for cls, v in votes.items() if v == top]
        if correct in winners:
            total += Fraction(1, len(winners))
    return float(total / len(subsets))


MAJ_CASES = [
    # labels (class per sample, -1 = no answer), correct class
    ([0, 0, 1, 1, 2, -1, 0, 1], 0),
    ([0, 1, 1, 2, 2, 3, 3, 3, -1, -1], 0),
    ([1, 1, 1, 0, 0, 2], 0),
    ([0, -1, -1, -1, -1, 1], 0),
    ([2, 2, 0, 0, 0, 1, 1, 1, 1], 0),
    ([0, 1, 2, 3, 4, 5], 3),
]


@pytest.mark.parametrize(("labels", "correct"), MAJ_CASES)
def test_maj_at_k_matches_exact_enumeration(labels: list[int], correct: int) -> None:
    """The resampling estimate is within 0.012 of exact enumeration for every k; exact at k = 1 and k = n."""
    classes = sorted({x for x in labels if x >= 0})
    votes = [labels.count(cls) for cls in classes]
    correct_index = classes.index(correct) if correct in classes else -1
    no_answer = labels.count(-1)
    for k in range(1, len(labels) + 1):
        got = maj_at_k([votes], [correct_index], k, [no_answer], n_resamples=40_000, seed=k)[0]
        want = exact_maj(labels, correct, k)
        if k in (1, len(labels)):
            assert got == pytest.approx(want, abs=1e-12)
        else:
            assert got == pytest.approx(want, abs=0.012), (k, got, want)


def test_maj_at_k_edges() -> None:
    """No correct class -> 0; all correct -> 1; k > n -> NaN; several problems at once."""
    out = maj_at_k([[5, 3], [4], [2, 2], [1]], [-1, 0, 1, 0], 4, [0, 0, 0, 0])
    assert out[0] == 0.0 and out[1] == 1.0
    assert out[2] == pytest.approx(exact_maj([0, 0, 1, 1], 1, 4))
    assert np.isnan(out[3])
    # 1/2, 0.5 and \frac12 are one class: one vote of size 3 beats two singletons
    assert maj_at_k([[3, 1, 1]], [0], 5)[0] == 1.0


def test_maj_curve() -> None:
    """maj@k over a grid with CIs; maj@1 is the chance that one random sample is correct."""
    votes = [[6, 2, 2], [1, 5], [4]]
    correct = [0, 0, -1]
    curve = maj_curve(votes, correct, [0, 0, 0], n_resamples=20_000, n_boot=200)
    assert curve["k"].tolist() == [1, 2, 4, 8, 10]
    assert curve.loc[0, "maj"] == pytest.approx(np.mean([0.6, 1 / 6, 0.0]), abs=0.01)
    assert curve["problems"].tolist() == [3, 3, 3, 1, 1]  # n = 10, 6, 4


def test_breakdown_by_level() -> None:
    """pass@k per group equals the per-group mean of per-problem pass@k."""
    counts = pd.DataFrame(
        {"problem": list("abcd"), "n": [4, 4, 8, 8], "correct": [1, 0, 8, 2], "level": [1, 1, 2, 2]}
    )
    table = breakdown(counts, "level", ks=(1, 4), n_boot=100)
    assert table["level"].tolist() == [1, 2]
    assert table["problems"].tolist() == [2, 2]
    assert table.loc[0, "pass@1"] == pytest.approx(0.125)
    assert table.loc[1, "pass@4"] == pytest.approx(np.mean([1.0, brute_pass_at_k(8, 2, 4)]))
    assert {"pass@1_lo", "pass@1_hi", "pass@4_lo", "pass@4_hi", "samples"} <= set(table.columns)
