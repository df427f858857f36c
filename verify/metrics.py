"""Metrics over graded samples: unbiased pass@k, coverage curves, maj@k, bootstrap CIs, breakdowns.

Conventions
- pass@k (Chen et al. 2021) of a problem with n samples, c correct, is the probability that k of
  the n drawn without replacement include a correct one: 1 - C(n-c, k)/C(n, k), computed in the
  numerically stable product form 1 - prod_{j<c} (1 - k/(n-j)) in log space (log1p terms, expm1
  at the end) for up to 64 successes, and via log-beta functions beyond (no binomial
  coefficients, no overflow, O(1) in n). It is undefined (NaN) for k > n.
- Coverage@k averages pass@k over problems. When problems have different n, coverage@k is the
  mean over the problems with n >= k (the `problems` column says how many), and "coverage@n"
  means each problem at its own n, i.e. the fraction of problems with at least one correct sample.
- maj@k: draw k of a problem's n samples without replacement; the answer class with the most
  votes wins (no-answer samples are drawn but never vote); ties are broken uniformly at random,
  scored by expectation (a tie of t classes including the correct one counts 1/t). Estimated by
  resampling (multivariate hypergeometric draws of class counts); exact when k = 1 (pass@1) or k = n.
- CIs are percentile bootstraps over problems (problems resampled with replacement), except where
  every problem's value is 0 or 1 (coverage@n, coverage at k = n, most maj@n): that is a proportion
  of problems, and its CI is the Wilson score interval. The bootstrap of a proportion collapses to
  zero width when every problem agrees (20 of 20 solved: [1, 1]) and under-covers near 0 and 1
  (about 65% for a nominal 95% with 20 problems at 0.95); Wilson keeps its nominal coverage there.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from scipy.special import betaln
from scipy.stats import binomtest

__all__ = [
    "level_label",
    "pass_at_k",
    "unbiased_pass_at_k",
    "log_grid",
    "bootstrap_ci",
    "proportion_ci",
    "mean_with_ci",
    "coverage_curve",
    "maj_at_k",
    "maj_curve",
    "breakdown",
]


_SMALL_C = 64  # up to this many successes (or samples k) pass@k uses the exact product form
_MAX_PRODUCT_TERMS = 4096  # ... and up to this many where pass@k is small


def unbiased_pass_at_k(n: ArrayLike, c: ArrayLike, k: ArrayLike) -> np.ndarray:
    """Unbiased pass@k for integer k <= n, broadcast over n, c, k (NaN where k > n)."""
    n, c, k = np.broadcast_arrays(*(np.asarray(x, dtype=float) for x in (n, c, k)))
    out = np.full(n.shape, np.nan)
    ok = (k >= 0) & (k <= n)
    always = ok & (n - c < k)  # every k-subset contains a correct sample
    out[always] = 1.0
    rest = ok & ~always & (k > 0) & (c > 0)
    nr, cr, kr = n[rest], c[rest], k[rest]
    # C(n-c, k) / C(n, k) = prod_{j<c} (1 - k/(n-j)) = prod_{j<k} (1 - c/(n-j)): the shorter product where c or
    # k is small (where pass@k can be tiny and relative precision matters), B(n-k+1, k) / B(n-c-k+1, k) otherwise
    terms = np.minimum(cr, kr)
    # also where pass@k is small (c·k < n, so min(c, k) < sqrt(n)): there the betaln difference cancels to ~1e-5
    small = (terms <= _SMALL_C) | ((cr * kr < nr) & (terms <= _MAX_PRODUCT_TERMS))
    log_fail = np.empty(nr.shape)
    log_fail[~small] = betaln(nr[~small] - kr[~small] + 1, kr[~small]) - betaln(nr[~small] - cr[~small] - kr[~small] + 1, kr[~small])
    ns, ts = nr[small], terms[small]
    other = np.maximum(cr, kr)[small]  # prod_{j<t} (1 - other/(n-j)), t = min(c, k), other = max(c, k)
    acc = np.zeros(ns.shape)
    for j in range(int(ts.max(initial=0))):
        live = j < ts
        acc[live] += np.log1p(-other[live] / (ns[live] - j))
    log_fail[small] = acc
    out[rest] = 0.0 - np.expm1(log_fail)  # 0.0 - x: never a negative zero
    out[ok & ~always & ~rest] = 0.0  # k == 0 or c == 0
    return out


def pass_at_k(n: ArrayLike, c: ArrayLike, k: int | ArrayLike) -> np.ndarray:
    """Unbiased pass@k per problem; shape (P,) for a scalar k, (P, K) for an array of k."""
    n_arr = np.atleast_1d(np.asarray(n, dtype=np.int64))
    c_arr = np.atleast_1d(np.asarray(c, dtype=np.int64))
    if n_arr.shape != c_arr.shape or n_arr.ndim != 1:
        raise ValueError("n and c must be 1-D arrays of the same length")
    if (c_arr < 0).any() or (c_arr > n_arr).any():
        raise ValueError("need 0 <= c <= n for every problem")
    scalar = np.ndim(k) == 0
    ks = np.atleast_1d(np.asarray(k, dtype=np.int64))
    if (ks < 1).any():
        raise ValueError("k must be >= 1")
    out = unbiased_pass_at_k(n_arr[:, None], c_arr[:, None], ks[None, :])
    return out[:, 0] if scalar else out


def log_grid(n_max: int, base: float = 2.0) -> np.ndarray:
    """k values 1, base, base^2, ... (rounded, distinct) up to n_max, always including n_max."""
    if n_max < 1:
        raise ValueError("n_max must be >= 1")
    if base <= 1:
        raise ValueError("base must be > 1")
    count = int(np.floor(np.log(n_max) / np.log(base) + 1e-9)) + 1
    grid = np.unique(np.round(base ** np.arange(count)).astype(np.int64))
    grid = grid[grid <= n_max]
    return np.unique(np.append(grid, n_max))


def proportion_ci(successes: int, total: int, ci: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion (scipy's binomtest)."""
    interval = binomtest(int(successes), int(total)).proportion_ci(confidence_level=ci, method="wilson")
    return float(interval.low), float(interval.high)


def bootstrap_ci(
    values: ArrayLike, n_boot: int = 1000, ci: float = 0.95, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """CI of the mean over problems (axis 0), NaN rows dropped per column: percentile bootstrap, or the
    Wilson interval where every value is 0 or 1; none (NaN) for a single problem (resampling one problem
    says nothing about the spread over problems; `study fit` gives none there either)."""
    x = np.asarray(values, dtype=np.float64)
    squeeze = x.ndim == 1
    x = x.reshape(len(x), -1)
    lo = np.full(x.shape[1], np.nan)
    hi = np.full(x.shape[1], np.nan)
    rng = np.random.default_rng(seed)
    alpha = (1.0 - ci) / 2.0
    for col in range(x.shape[1]):
        v = x[:, col][~np.isnan(x[:, col])]
        if len(v) == 0:
            continue
        if len(v) == 1:
            continue
        if np.all((v == 0) | (v == 1)):
            lo[col], hi[col] = proportion_ci(int(v.sum()), len(v), ci)
            continue
        if np.all(v == v[0]):
            lo[col] = hi[col] = v[0]
            continue
        weights = rng.multinomial(len(v), np.full(len(v), 1.0 / len(v)), size=n_boot)
        means = weights @ v / len(v)
        lo[col], hi[col] = np.quantile(means, [alpha, 1.0 - alpha])
    if squeeze:
        return lo[0], hi[0]
    return lo, hi


def mean_with_ci(values: ArrayLike, n_boot: int = 1000, ci: float = 0.95, seed: int = 0) -> tuple[float, float, float]:
    """(mean, CI low, CI high) over problems of a 1-D array of per-problem values (NaN ignored)."""
    v = np.asarray(values, dtype=np.float64)
    mean = float(np.nanmean(v)) if np.any(~np.isnan(v)) else float("nan")
    lo, hi = bootstrap_ci(v, n_boot, ci, seed)
    return mean, float(lo), float(hi)


def coverage_curve(
    n: ArrayLike,
    c: ArrayLike,
    ks: ArrayLike | None = None,
    n_boot: int = 1000,
    ci: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """Coverage (mean pass@k over problems with n >= k) with bootstrap CIs, one row per k.

    ks defaults to log_grid(max n). Columns: k, coverage, lo, hi, problems.
    """
    n_arr = np.asarray(n, dtype=np.int64)
    grid = log_grid(int(n_arr.max())) if ks is None else np.asarray(ks, dtype=np.int64)
    per_problem = pass_at_k(n_arr, c, grid)
    lo, hi = bootstrap_ci(per_problem, n_boot, ci, seed)
    with np.errstate(invalid="ignore"):
        coverage = np.nanmean(per_problem, axis=0) if len(n_arr) else np.full(len(grid), np.nan)
    return pd.DataFrame(
        {
            "k": grid,
            "coverage": coverage,
            "lo": lo,
            "hi": hi,
            "problems": (~np.isnan(per_problem)).sum(axis=0),
        }
    )


def _maj_one(
    votes: np.ndarray, correct: int, no_answer: int, k: int, n_resamples: int, rng: np.random.Generator
) -> float:
    """maj@k of one problem (see the module docstring)."""
    n = int(votes.sum()) + no_answer
    if k > n:
        return float("nan")
    if correct < 0 or votes.size == 0 or votes[correct] == 0:
        return 0.0
    if k == 1:  # one drawn sample wins alone when it has an answer: maj@1 is pass@1, exactly
        return float(votes[correct] / n)
    colors = np.append(votes, no_answer).astype(np.int64)
    if k == n:
        draws = colors[None, :]
    elif np.count_nonzero(colors) == 1:
        draws = np.minimum(colors, k)[None, :]
    else:
        draws = rng.multivariate_hypergeometric(colors, k, size=n_resamples)
    counted = draws[:, :-1]
    top = counted.max(axis=1)
    ties = (counted == top[:, None]).sum(axis=1)
    wins = (counted[:, correct] == top) & (top > 0)
    return float(np.mean(wins / ties))


def maj_at_k(
    votes: Sequence[ArrayLike],
    correct: Sequence[int],
    k: int,
    no_answer: Sequence[int] | None = None,
    n_resamples: int = 2000,
    seed: int = 0,
) -> np.ndarray:
    """maj@k per problem.

    votes[p] are the sample counts of problem p's answer classes, correct[p] the index of its
    correct class in votes[p] (-1 if no sample is correct), no_answer[p] its samples without an
    answer. NaN where k exceeds the problem's sample count.
    """
    if len(votes) != len(correct):
        raise ValueError("votes and correct must have the same length")
    abstain = [0] * len(votes) if no_answer is None else list(no_answer)
    rng = np.random.default_rng(seed)
    return np.array(
        [
            _maj_one(np.asarray(v, dtype=np.int64), int(cc), int(a), int(k), n_resamples, rng)
            for v, cc, a in zip(votes, correct, abstain)
        ],
        dtype=np.float64,
    )


def maj_curve(
    votes: Sequence[ArrayLike],
    correct: Sequence[int],
    no_answer: Sequence[int] | None = None,
    ks: ArrayLike | None = None,
    n_resamples: int = 2000,
    n_boot: int = 1000,
    ci: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """maj@k averaged over problems (with n >= k) with bootstrap CIs; columns k, maj, lo, hi, problems."""
    abstain = [0] * len(votes) if no_answer is None else list(no_answer)
    n = np.array([int(np.sum(v)) + int(a) for v, a in zip(votes, abstain)], dtype=np.int64)
    grid = log_grid(int(n.max())) if ks is None else np.asarray(ks, dtype=np.int64)
    per_problem = np.column_stack(
        [maj_at_k(votes, correct, int(kk), abstain, n_resamples, seed + i) for i, kk in enumerate(grid)]
    )
    lo, hi = bootstrap_ci(per_problem, n_boot, ci, seed)
    with np.errstate(invalid="ignore"):
        mean = np.nanmean(per_problem, axis=0)
    return pd.DataFrame(
        {"k": grid, "maj": mean, "lo": lo, "hi": hi, "problems": (~np.isnan(per_problem)).sum(axis=0)}
    )


def level_label(level: object) -> str:
    """A level (or subject) as shown: numbers without trailing zeros (a level column with gaps reads as floats:
    1, not 1.0), text as written, '(none)' for a problem without one."""
    if not isinstance(level, str) and pd.isna(level):
        return "(none)"
    return f"{level:g}" if isinstance(level, (int, float, np.number)) else str(level)


def breakdown(
    counts: pd.DataFrame,
    by: str | Sequence[str],
    ks: Sequence[int] = (1,),
    n_boot: int = 1000,
    ci: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """pass@k (with CIs) per group of a counts table (columns n, correct, and the `by` columns).

    Each row: the group values, problems, samples, and for each k: pass@k, pass@k_lo, pass@k_hi
    (averaged over the group's problems with n >= k).
    """
    by_cols = [by] if isinstance(by, str) else list(by)
    rows = []
    for group, part in counts.groupby(by_cols, dropna=False, sort=True):
        values = group if isinstance(group, tuple) else (group,)
        row: dict[str, object] = dict(zip(by_cols, values))
        row["problems"] = len(part)
        row["samples"] = int(part["n"].sum())
        per_problem = pass_at_k(part["n"].to_numpy(), part["correct"].to_numpy(), np.asarray(ks))
        lo, hi = bootstrap_ci(per_problem, n_boot, ci, seed)
        with np.errstate(invalid="ignore"):
            means = np.nanmean(per_problem, axis=0)
        for j, kk in enumerate(ks):
            row[f"pass@{kk}"] = means[j]
            row[f"pass@{kk}_lo"] = lo[j]
            row[f"pass@{kk}_hi"] = hi[j]
        rows.append(row)
    return pd.DataFrame(rows)
