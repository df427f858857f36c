"""Exponentiated power law coverage(k) = exp(a·k^b) (Brown et al. 2024), a < 0, b < 0.

Two fits of the same law to an empirical coverage curve sampled at log-spaced k (each decade of k
weighs the same):

- ``nonlinear`` (the default): least squares on coverage itself (scipy.optimize.least_squares,
  analytic Jacobian, started at the log-log solution).
- ``loglog``: ordinary least squares of log(-log coverage) on log k (slope b, intercept log(-a));
  closed form and vectorised over bootstrap replicates, but the transform blows up the noise of
  points near coverage 0 and 1 and gives the small-k end — where real curves are not yet a power
  law — as much weight as the tail. Points with coverage 0 or 1 are skipped on this scale.

Why nonlinear is the default: on the real Pythia GSM8K counts (fit on 1/10 or 1/100 of each
problem's samples, predict the full-n coverage; scripts/eval_extrapolation.py, benchmarks/fit.md)
it had the smaller error at both ratios, while log-log was biased low by about 0.11 at 10× and 0.15
at 100×. CIs come from bootstrapping problems: the curve points are strongly correlated (all come
from the same counts), so regression standard errors would be meaningless. The fit error is the
RMSE of the fitted curve against the empirical coverage over the fitted k (coverage units).

Degenerate curves: coverage 0 at every k (no successes) or 1 at every k (all solved) have no
power law; they are reported with status ``no_successes`` / ``saturated`` and predicted as 0 / 1.
A curve with fewer than two usable k (e.g. n = 1) has status ``insufficient`` and no parameters.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy.optimize import least_squares

Method = Literal["loglog", "nonlinear"]
METHODS: tuple[str, ...] = ("loglog", "nonlinear")
DEFAULT_METHOD: Method = "nonlinear"
B_MIN = -10.0  # lower bound of the nonlinear fit's exponent b (coverage is flat beyond k = 1 far before)


@dataclass(frozen=True)
class PowerLaw:
    """A fitted law coverage(k) = exp(a·k^b); a or b may be NaN when the fit failed."""

    a: float
    b: float
    status: str = "ok"

    def coverage(self, k: np.ndarray) -> np.ndarray:
        """Coverage at k (0 for status no_successes, 1 for saturated, NaN when insufficient)."""
        return coverage(np.array([self.a]), np.array([self.b]), np.array([self.status]), np.asarray(k, float))[0]


def coverage(a: np.ndarray, b: np.ndarray, status: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Coverage for R laws at k: shape (R, len(k)); degenerate statuses give their constant."""
    a, b = np.asarray(a, float)[:, None], np.asarray(b, float)[:, None]
    status = np.asarray(status)[:, None]
    with np.errstate(over="ignore", invalid="ignore"):
        out = np.exp(a * np.asarray(k, float)[None, :] ** b)
    out = np.where(status == "no_successes", 0.0, out)
    return np.where(status == "saturated", 1.0, out)


def _status(cov: np.ndarray) -> np.ndarray:
    """Per-row status from the curve values alone (R, G) -> (R,)."""
    finite = np.isfinite(cov)
    usable = finite & (cov > 0) & (cov < 1)
    status = np.full(cov.shape[0], "ok", dtype=object)
    status[(usable.sum(axis=1) < 2)] = "insufficient"
    status[np.all(~finite | (cov <= 0), axis=1) & finite.any(axis=1)] = "no_successes"
    status[np.all(~finite | (cov >= 1), axis=1) & finite.any(axis=1)] = "saturated"
    return status


def fit_loglog(ks: np.ndarray, cov: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """OLS of log(-log cov) on log k for each row of cov (R, G): returns a, b, status (R,)."""
    cov = np.atleast_2d(np.asarray(cov, float))
    x = np.log(np.asarray(ks, float))[None, :]
    m = np.isfinite(cov) & (cov > 0) & (cov < 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        y = np.where(m, np.log(-np.log(np.where(m, cov, 0.5))), 0.0)
    w = m.astype(float)
    cnt = w.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        xm = (w * x).sum(axis=1) / cnt
        ym = (w * y).sum(axis=1) / cnt
        sxx = (w * (x - xm[:, None]) ** 2).sum(axis=1)
        sxy = (w * (x - xm[:, None]) * (y - ym[:, None])).sum(axis=1)
        b = sxy / sxx
    a = -np.exp(ym - b * xm)
    status = _status(cov)
    status[(status == "ok") & ~(sxx > 0)] = "insufficient"
    bad = status != "ok"
    a[bad], b[bad] = np.nan, np.nan
    return a, b, status


def _fit_one_nonlinear(ks: np.ndarray, cov: np.ndarray, a0: float, b0: float) -> tuple[float, float]:
    """Least squares on coverage for one curve, started at (a0, b0)."""
    m = np.isfinite(cov)
    k, y = ks[m].astype(float), cov[m]
    lk = np.log(k)

    def resid(p: np.ndarray) -> np.ndarray:
        """Fitted minus observed coverage."""
        return np.exp(p[0] * k ** p[1]) - y

    def jac(p: np.ndarray) -> np.ndarray:
        """d resid / d (a, b)."""
        kb = k ** p[1]
        f = np.exp(p[0] * kb)
        return np.column_stack([f * kb, f * p[0] * kb * lk])

    # the start must lie within the bounds: a steep curve (coverage near 1 from k = 1) has a
    # log-log slope below B_MIN
    start = np.array([min(a0, -1e-9), float(np.clip(b0, B_MIN, 0.0))])
    try:
        res = least_squares(resid, start, jac=jac, bounds=([-np.inf, B_MIN], [0.0, 0.0]), method="trf",
                            x_scale="jac", xtol=1e-10, ftol=1e-12)
    except ValueError:  # non-finite residuals or start: the fit fails, the caller marks it
        return np.nan, np.nan
    return (float(res.x[0]), float(res.x[1])) if res.success else (np.nan, np.nan)


def fit_nonlinear(ks: np.ndarray, cov: np.ndarray, start: tuple[np.ndarray, np.ndarray] | None = None
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Direct least squares of exp(a·k^b) on coverage for each row of cov (R, G): a, b, status."""
    cov = np.atleast_2d(np.asarray(cov, float))
    a0, b0, status = fit_loglog(ks, cov) if start is None else (*start, _status(cov))
    a = np.full(cov.shape[0], np.nan)
    b = np.full(cov.shape[0], np.nan)
    for r in np.flatnonzero(status == "ok"):
        if np.isfinite(a0[r]) and np.isfinite(b0[r]):
            a[r], b[r] = _fit_one_nonlinear(np.asarray(ks), cov[r], a0[r], b0[r])
    status = status.copy()
    status[(status == "ok") & ~np.isfinite(a)] = "failed"
    return a, b, status


def fit(ks: np.ndarray, cov: np.ndarray, method: Method = DEFAULT_METHOD,
        start: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fit the law to each row of cov (R, G) with `method`; returns a, b, status arrays (R,)."""
    if method == "loglog":
        return fit_loglog(ks, cov)
    if method == "nonlinear":
        return fit_nonlinear(ks, cov, start)
    raise ValueError(f"unknown power-law method {method!r}; choose from {METHODS}")


def rmse(ks: np.ndarray, cov: np.ndarray, law: PowerLaw) -> float:
    """Root-mean-square error of the law against the empirical curve (coverage units)."""
    pred = law.coverage(ks)
    m = np.isfinite(cov) & np.isfinite(pred)
    return float(np.sqrt(np.mean((pred[m] - cov[m]) ** 2))) if m.any() else float("nan")
