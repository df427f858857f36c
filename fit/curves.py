"""Empirical coverage curves: vectorised unbiased pass@k, k grids, paired bootstrap over problems.

Coverage(k) of a group is the mean over its problems of the unbiased pass@k estimate
(Chen et al. 2021) ``1 - C(n-c, k) / C(n, k)``. With differing n per problem the empirical curve
is defined for ``k <= min(n)`` only (every problem then has an unbiased estimate); beyond that the
fits take over. Between grid points the curve is interpolated linearly in k, which is exactly the
coverage of the mixed strategy "draw floor(k) or ceil(k) samples" (and ``k < 1``: draw one sample
with probability k), so the interpolated curve is achievable, never optimistic.
"""
from __future__ import annotations

import numpy as np

from verify.metrics import unbiased_pass_at_k as pass_at_k  # the one pass@k implementation



def k_grid(k_max: int, dense: int = 64, per_decade: int = 64) -> np.ndarray:
    """Integer k from 1 to k_max: every integer up to `dense`, then about `per_decade` per decade,
    and every point of `fit_grid(k_max)` (fits read the empirical curve at their own k)."""
    k_max = int(k_max)
    if k_max < 1:
        raise ValueError(f"k_max must be >= 1, got {k_max}")
    head = np.arange(1, min(dense, k_max) + 1)
    if k_max <= dense:
        return head
    decades = np.log10(k_max / dense)
    tail = np.geomspace(dense, k_max, max(2, int(np.ceil(decades * per_decade)) + 1))
    return np.unique(np.concatenate([head, np.round(tail).astype(int), fit_grid(k_max), [k_max]]))


def fit_grid(k_max: int, points: int = 32) -> np.ndarray:
    """About `points` log-spaced integer k in [1, k_max] for curve fits (each decade weighs the same)."""
    return np.unique(np.round(np.geomspace(1, max(1, int(k_max)), points)).astype(int))


def coverage_matrix(n: np.ndarray, c: np.ndarray, ks: np.ndarray) -> np.ndarray:
    """Per-problem pass@k, shape (problems, len(ks))."""
    return pass_at_k(np.asarray(n)[:, None], np.asarray(c)[:, None], np.asarray(ks)[None, :])


def bootstrap_weights(n_items: int, n_boot: int, seed: int) -> np.ndarray:
    """Multinomial resampling weights (n_boot, n_items): how often each problem is drawn."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n_items, np.full(n_items, 1.0 / n_items), size=n_boot).astype(float)


def weighted_mean(weights: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Per-replicate weighted mean over problems: weights (B, P) @ values (P, ...) / sum(weights)."""
    total = weights.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (weights @ values.reshape(values.shape[0], -1)) / total[:, None]
    out[total == 0] = np.nan
    return out.reshape((weights.shape[0],) + values.shape[1:])


def percentile_ci(boot: np.ndarray, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval over the first axis of bootstrap replicates, ignoring failed (NaN) ones.

    Infinite replicates (a target never reached: infinite compute) are kept: they rank above every
    finite one, so a bound that falls among them is inf.
    """
    alpha = (1.0 - level) / 2.0
    boot = np.asarray(boot, dtype=float)
    finite = np.isfinite(boot)
    low = np.full(boot.shape[1:], np.nan)
    high = np.full(boot.shape[1:], np.nan)
    present = (~np.isnan(boot)).sum(axis=0)
    enough = present >= 2
    plain = enough & (finite.sum(axis=0) == present)
    if np.any(plain):
        b = boot[:, plain]
        low[plain] = np.nanquantile(b, alpha, axis=0)
        high[plain] = np.nanquantile(b, 1.0 - alpha, axis=0)
    infinite = enough & ~plain
    if np.any(infinite):
        low[infinite] = _quantile_with_inf(boot[:, infinite], alpha)
        high[infinite] = _quantile_with_inf(boot[:, infinite], 1.0 - alpha)
    return low, high


def _quantile_with_inf(boot: np.ndarray, q: float) -> np.ndarray:
    """numpy's linear quantile of each column over its non-NaN values, ±inf included (a bound next to inf is inf)."""
    ordered = np.sort(boot, axis=0)  # NaN sorts last
    count = (~np.isnan(boot)).sum(axis=0)
    position = (count - 1) * q
    below = np.floor(position).astype(int)
    above = np.minimum(below + 1, count - 1)
    cols = np.arange(boot.shape[1])
    a, b, t = ordered[below, cols], ordered[above, cols], position - below
    with np.errstate(invalid="ignore"):
        mixed = a + t * (b - a)
    return np.where((t == 0) | (a == b), a, np.where(np.isposinf(b), b, np.where(np.isneginf(a), a, mixed)))


def interp_rows(x: np.ndarray, grid: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Linear interpolation of each row of `rows` (R, G) on `grid` at per-row points x (R,) or (R, T)."""
    x = np.asarray(x, dtype=float)
    squeeze = x.ndim == 1
    x2 = x[:, None] if squeeze else x
    idx = np.clip(np.searchsorted(grid, x2, side="right"), 1, len(grid) - 1)
    x0, x1 = grid[idx - 1], grid[idx]
    r = np.arange(rows.shape[0])[:, None]
    y0, y1 = rows[r, idx - 1], rows[r, idx]
    t = np.clip((x2 - x0) / (x1 - x0), 0.0, 1.0)
    with np.errstate(invalid="ignore"):  # at a grid point the value there, even where a neighbour is NaN
        out = np.where(t == 0, y0, np.where(t == 1, y1, y0 + t * (y1 - y0)))
    out = np.where((x2 < grid[0]) | (x2 > grid[-1]) | ~np.isfinite(x2), np.nan, out)
    return out[:, 0] if squeeze else out


def invert_rows(targets: np.ndarray, grid: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Smallest x on `grid` where each non-decreasing row reaches each target (R, T); NaN if never."""
    targets = np.asarray(targets, dtype=float)
    t2 = np.broadcast_to(targets if targets.ndim == 2 else targets[None, :], (rows.shape[0], targets.shape[-1]))
    mono = np.maximum.accumulate(np.nan_to_num(rows, nan=-np.inf), axis=1)
    reached = mono[:, None, :] >= t2[:, :, None]  # (R, T, G)
    idx = reached.argmax(axis=2)
    hit = reached.any(axis=2)
    r = np.arange(rows.shape[0])[:, None]
    i0 = np.maximum(idx - 1, 0)
    y0, y1 = mono[r, i0], mono[r, idx]
    x0, x1 = grid[i0], grid[idx]
    with np.errstate(invalid="ignore", divide="ignore"):
        t = np.where(y1 > y0, (t2 - y0) / (y1 - y0), 1.0)
    out = np.where(idx == 0, grid[0], x0 + np.clip(t, 0.0, 1.0) * (x1 - x0))
    return np.where(hit & np.isfinite(t2), out, np.nan)
