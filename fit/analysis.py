"""Per-group fits of a counts table: empirical coverage, power law, beta-binomial, predictions, JSON.

Coverage at k is the empirical curve where it exists (k <= the group's smallest n) and the default
estimator beyond it, marked ``extrapolated``. Estimators: ``beta_binomial``, ``power_law`` and
``ensemble`` (the default), the mean of the two — point estimate and each paired bootstrap
replicate, so its CI is the percentile interval of the averaged replicates.

Why the ensemble: on the real Pythia GSM8K counts (81 models; fit on 1/10 or 1/100 of each
problem's samples, predict the full-n coverage; scripts/eval_extrapolation.py, benchmarks/fit.md)
the nonlinear power law is biased low (it under-predicts the tail), the beta-binomial is unbiased
at 10× but over-shoots when the subsample holds only a few successes, and their mean had the
smallest mean absolute error at both 10× and 100× extrapolation, on both halves of the models.
Both fits are always reported beside it.

Edge cases (no NaN reaches a table; JSON uses null plus a status/method that says why):
- differing n: the empirical curve stops at min(n); the beta-binomial uses every problem's own n.
- zero-success problems: pass@k = 0 on the curve, B(α, β+n)/B(α, β) in the likelihood.
- a group with no success at all: coverage 0 at every k, upper bound by the rule of three
  (total successes ~ Poisson with mean Σ n_i p_i <= 3 at 95%, so coverage(k) <= 3k / (P·min n)),
  method ``zero_successes_bound``; all successes: coverage 1.
- tiny groups: n = 1 everywhere identifies neither fit (status ``insufficient``, prediction
  ``unavailable``); when only one estimator fails the other is used and named in ``method``;
  fewer than 10 problems adds a warning that bootstrap CIs over problems are unreliable.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from fit import beta_binomial, curves, power_law
from verify.metrics import bootstrap_ci, proportion_ci
from verify.progress import NullProgress, ProgressSink

ESTIMATORS: tuple[str, ...] = ("ensemble", "beta_binomial", "power_law")
DEFAULT_ESTIMATOR = "ensemble"
MIN_PROBLEMS_FOR_CI = 10
DEFAULT_PREDICT_FACTORS: tuple[int, ...] = (10, 100)  # predict at 10× and 100× the samples drawn


@dataclass(frozen=True)
class FitOptions:
    """Knobs of a fit run."""

    estimator: str = DEFAULT_ESTIMATOR
    power_law_method: str = power_law.DEFAULT_METHOD
    family: str = beta_binomial.DEFAULT_FAMILY
    n_boot: int = 200
    level: float = 0.95
    seed: int = 0
    anchor: bool = True  # extrapolations pass through the last empirical point (see GroupFit.curve)

    def __post_init__(self) -> None:
        """Reject unknown names early."""
        if self.estimator not in ESTIMATORS:
            raise ValueError(f"unknown estimator {self.estimator!r}; choose from {', '.join(ESTIMATORS)}")
        if self.power_law_method not in power_law.METHODS:
            raise ValueError(f"unknown power-law method {self.power_law_method!r}; choose from {', '.join(power_law.METHODS)}")
        if self.family not in beta_binomial.FAMILIES:
            raise ValueError(f"unknown family {self.family!r}; choose from {', '.join(beta_binomial.FAMILIES)}")
        if self.n_boot < 2:
            raise ValueError("n_boot must be >= 2")
        if not 0 < self.level < 1:
            raise ValueError("level must be in (0, 1)")


@dataclass
class PowerLawResult:
    """A power-law fit with its bootstrap replicates."""

    method: str
    law: power_law.PowerLaw
    a_boot: np.ndarray
    b_boot: np.ndarray
    status_boot: np.ndarray
    rmse: float

    def coverage(self, k: np.ndarray) -> np.ndarray:
        """Point-estimate coverage at k."""
        return self.law.coverage(k)

    def coverage_boot(self, k: np.ndarray) -> np.ndarray:
        """Replicate coverage at k, (B, len(k)); failed replicates are NaN."""
        return power_law.coverage(self.a_boot, self.b_boot, self.status_boot, np.asarray(k, float))


def fit_power_law(ks: np.ndarray, cov: np.ndarray, cov_boot: np.ndarray, method: str) -> PowerLawResult:
    """Fit the law to the curve and to every bootstrap replicate of it."""
    a, b, st = power_law.fit(ks, cov[None, :], method)
    law = power_law.PowerLaw(float(a[0]), float(b[0]), str(st[0]))
    start = None
    if method == "nonlinear":  # warm-start each replicate at the point estimate
        start = (np.full(len(cov_boot), law.a), np.full(len(cov_boot), law.b))
    ab, bb, sb = power_law.fit(ks, cov_boot, method, start)
    return PowerLawResult(method, law, ab, bb, sb, power_law.rmse(ks, cov, law))


def _fmt_k(k: float) -> str:
    """JSON key for a k: '10000' for integers, else the shortest float text."""
    return str(int(k)) if float(k).is_integer() else repr(float(k))


def json_float(x: Any) -> float | None:
    """A JSON-safe float (None for NaN/inf)."""
    x = float(x)
    return x if np.isfinite(x) else None


def ci_list(boot: np.ndarray | None, level: float) -> list[float | None]:
    """[low, high] percentile interval of 1-D replicates ([None, None] without replicates)."""
    if boot is None:
        return [None, None]
    lo, hi = curves.percentile_ci(np.asarray(boot, float)[:, None], level)
    return [json_float(lo[0]), json_float(hi[0])]


def anchored(model: np.ndarray, model_end: np.ndarray, empirical_end: np.ndarray) -> np.ndarray:
    """A fitted coverage curve scaled in −log space to pass through the empirical endpoint: model^r with
    r = log(empirical_end) / log(model_end); an empirical endpoint of 0 (a replicate that drew no solved
    problem) stays 0 wherever the model is known; where r is undefined (a saturated fit) the model is kept."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        ratio = np.log(empirical_end) / np.log(model_end)
        out = np.exp(np.log(model) * ratio)
    kept = np.where(np.isfinite(ratio) & np.isfinite(out), out, model)
    return np.where((empirical_end == 0) & np.isfinite(model), 0.0, kept)


@dataclass
class GroupFit:
    """Everything fitted for one group (config) of a counts table."""

    name: str
    frame: pd.DataFrame
    options: FitOptions
    weights: np.ndarray  # (B, P) bootstrap weights, paired across groups by problem id
    ks: np.ndarray = field(init=False)  # empirical grid, 1..min(n)
    cov: np.ndarray = field(init=False)
    cov_boot: np.ndarray = field(init=False)
    fit_ks: np.ndarray = field(init=False)
    power_laws: dict[str, PowerLawResult] = field(init=False)
    beta: beta_binomial.BetaBinomialFit = field(init=False)
    warnings: list[str] = field(init=False)

    def __post_init__(self) -> None:
        """Fit the curve, both power-law methods and the beta-binomial."""
        n, c = self.n, self.c
        self.warnings = []
        self.ks = curves.k_grid(int(n.min()))
        per_problem = curves.coverage_matrix(n, c, self.ks)
        self.cov = per_problem.mean(axis=0)
        self.cov_boot = curves.weighted_mean(self.weights, per_problem)
        self.fit_ks = curves.fit_grid(int(n.min()))
        sel = np.searchsorted(self.ks, self.fit_ks)
        self.power_laws = {m: fit_power_law(self.fit_ks, self.cov[sel], self.cov_boot[:, sel], m)
                           for m in power_law.METHODS}
        self.beta = beta_binomial.fit(n, c, self.options.family, self.weights)
        self.warnings += self.beta.warnings
        if len(n) < MIN_PROBLEMS_FOR_CI:
            self.warnings.append(f"only {len(n)} problem{'s' if len(n) != 1 else ''}: bootstrap CIs over problems are "
                                 + ("unreliable" if len(n) > 1 else "undefined (none reported)"))
        if n.min() != n.max():
            self.warnings.append(f"n differs across problems ({n.min()}..{n.max()}): the empirical curve "
                                 f"stops at k = {n.min()}, where the fits take over (anchored there); coverage@n "
                                 f"takes each problem at its own n, and the default predictions (10×n, 100×n) are "
                                 f"multiples of the largest n")

    @property
    def n(self) -> np.ndarray:
        """Samples per problem."""
        return self.frame["n"].to_numpy(dtype=np.int64)

    @property
    def c(self) -> np.ndarray:
        """Correct samples per problem."""
        return self.frame["correct"].to_numpy(dtype=np.int64)

    @property
    def n_min(self) -> int:
        """Largest k with an empirical coverage estimate."""
        return int(self.n.min())

    @property
    def no_successes(self) -> bool:
        """True when no problem has a correct sample."""
        return int(self.c.sum()) == 0

    def ci(self, boot: np.ndarray | None) -> list[float | None]:
        """[low, high] of replicates; none for a single problem (resampling it changes nothing)."""
        return ci_list(boot if len(self.n) > 1 else None, self.options.level)

    def mean_ci(self, values: np.ndarray) -> list[float | None]:
        """[low, high] of a per-problem mean, as `study verify` gives it (`verify.metrics.bootstrap_ci`, its replicates
        and the fit's seed): Wilson where every value is 0 or 1 (a share of problems), else a percentile bootstrap
        (none for a single problem)."""
        low, high = bootstrap_ci(values, ci=self.options.level, seed=self.options.seed)
        return [json_float(low), json_float(high)]

    def stat(self, values: np.ndarray) -> tuple[float, np.ndarray]:
        """Mean over problems and its bootstrap replicates."""
        return float(values.mean()), curves.weighted_mean(self.weights, values.astype(float))

    def power_law(self) -> PowerLawResult:
        """The power-law fit of the configured method."""
        return self.power_laws[self.options.power_law_method]

    def model_coverage(self, k: np.ndarray, estimator: str | None = None
                       ) -> tuple[str, np.ndarray, np.ndarray | None]:
        """(method, point (K,), replicates (B, K) or None) of the estimator; a failed fit falls back to the other.

        A beta-binomial whose MLE sits at a parameter bound stays in the ensemble: leaving it out (the
        power law alone) predicted held-out Pythia coverage worse (BENCHMARKS.md, eighth session).
        """
        k = np.asarray(k, float)
        fits = {}
        for name, fitted in (("beta_binomial", self.beta), ("power_law", self.power_law())):
            point = fitted.coverage(k)
            if np.all(np.isfinite(point)):
                fits[name] = (point, fitted.coverage_boot(k))
        estimator = estimator or self.options.estimator
        if estimator == "ensemble" and len(fits) == 2:
            (pb, bb), (pp, bp) = fits["beta_binomial"], fits["power_law"]
            return "ensemble", (pb + pp) / 2, None if bb is None or bp is None else (bb + bp) / 2
        for name in [estimator, *fits]:
            if name in fits:
                return name, *fits[name]
        return "unavailable", np.full(k.shape, np.nan), None

    def curve(self, k: np.ndarray, estimator: str | None = None
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
        """Coverage at k: empirical for k <= min(n), the fit beyond. (point, boot, extrapolated, method).

        Beyond min(n) the fit is anchored (`FitOptions.anchor`): its −log coverage is scaled to equal
        the empirical curve's at min(n) (for a power law: a rescaled, b kept), so the curve is
        continuous and non-decreasing at the seam; each bootstrap replicate is anchored to its own
        empirical endpoint.
        """
        k = np.asarray(k, float)
        grid = np.concatenate([[0.0], self.ks])
        emp = np.concatenate([[0.0], self.cov])
        emp_boot = np.column_stack([np.zeros(len(self.cov_boot)), self.cov_boot])
        within = k <= self.n_min
        point = np.interp(k, grid, emp)
        boot = curves.interp_rows(np.broadcast_to(k, (len(emp_boot), k.size)), grid, emp_boot)
        method = "empirical"
        if not within.all():
            # the fit is also read at n_min, where the extrapolation is anchored to the empirical curve
            method, mp, mb = self.model_coverage(np.concatenate([[self.n_min], k[~within]]), estimator)
            point[~within] = anchored(mp[1:], mp[:1], self.cov[-1:]) if self.options.anchor else mp[1:]
            if mb is None:
                boot[:, ~within] = np.nan
            else:
                boot[:, ~within] = anchored(mb[:, 1:], mb[:, :1], self.cov_boot[:, -1:]) if self.options.anchor else mb[:, 1:]
        return point, boot, ~within, method

    def predict(self, ks: list[float], estimator: str | None = None) -> dict[str, dict[str, Any]]:
        """Coverage with CI at each k: empirical within the sampled range, the fit beyond."""
        out: dict[str, dict[str, Any]] = {}
        ks_arr = np.asarray(ks, float)
        if self.no_successes:
            for k, hi in zip(ks_arr, self._zero_successes_interval(ks_arr)[1]):
                out[_fmt_k(k)] = {"coverage": 0.0, "low": 0.0, "high": float(hi),
                                  "method": "zero_successes_bound", "extrapolated": bool(k > self.n_min)}
            return out
        point, boot, extra, method = self.curve(ks_arr, estimator)
        lo, hi = self.interval(ks_arr, boot)
        for i, k in enumerate(ks_arr):
            m = method if extra[i] else "empirical"
            if not np.isfinite(point[i]):
                m = "unavailable"
            out[_fmt_k(k)] = {"coverage": json_float(point[i]), "low": json_float(lo[i]), "high": json_float(hi[i]),
                              "method": m, "extrapolated": bool(extra[i])}
        return out

    def interval(self, ks: np.ndarray, boot: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The CI of the coverage at ks from its bootstrap replicates (as `predict` reports it): percentiles,
        with Wilson's interval where the coverage is a share of problems; none for a single problem; the
        zero-successes bound for a group that never solved a problem."""
        ks = np.asarray(ks, float)
        if self.no_successes:
            return self._zero_successes_interval(ks)
        if len(self.n) < 2:
            return curves.percentile_ci(boot[:0], self.options.level)
        return self._share_intervals(ks, *curves.percentile_ci(boot, self.options.level))

    def _zero_successes_interval(self, ks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """[0, min(1, 3k / (problems · n))] for a group that never solved a problem (the rule of three over its
        problems × draws), from n on at least coverage@n's Wilson high."""
        high = np.minimum(1.0, 3.0 * ks / (len(self.n) * self.n_min))
        share = proportion_ci(0, len(self.n), self.options.level)[1]
        return np.zeros_like(ks), np.where(ks >= self.n_min, np.maximum(high, share), high)

    def _share_intervals(self, ks: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Wilson intervals where the coverage is a share of problems, as for coverage@n.

        At a sampled k where every problem's pass@k is 0 or 1 (k = n; problems always or never
        solved) the bootstrap of a proportion under-covers (it collapses to [1, 1] when all are
        solved), so the interval is Wilson's. Past min(n) the fit's replicates give the interval,
        never below coverage@n's Wilson low where that is a share (coverage only grows with k; replicates
        that drew no solved problem stay at 0), and when every problem is solved by then, resampling them
        says [1, 1], so coverage@n's Wilson low holds on and the interval has no step at n.
        """
        lo, hi = lo.copy(), hi.copy()
        sampled = (ks <= self.n_min) & (ks == np.round(ks)) & (ks >= 1)
        level = self.options.level
        if sampled.any():
            values = curves.coverage_matrix(self.n, self.c, ks[sampled])
            shares = np.all((values == 0) | (values == 1), axis=0)
            for i, share, column in zip(np.flatnonzero(sampled), shares, values.T):
                if share:
                    lo[i], hi[i] = proportion_ci(int(column.sum()), len(column), level)
        past = ks > self.n_min
        at_n = curves.coverage_matrix(self.n, self.c, np.array([float(self.n_min)]))[:, 0]
        if past.any() and np.all((at_n == 0) | (at_n == 1)):
            floor = proportion_ci(int(at_n.sum()), len(at_n), level)[0]
            lo = np.where(past & np.isfinite(lo), np.fmax(lo, floor), lo)
        if past.any() and self.cov[-1] >= 1.0:  # also where the saturated fits gave no replicates
            floor = proportion_ci(len(self.n), len(self.n), level)[0]
            lo, hi = np.where(past, np.fmin(lo, floor), lo), np.where(past, 1.0, hi)
        return lo, hi

    def default_predict_ks(self) -> list[float]:
        """DEFAULT_PREDICT_FACTORS × the samples drawn (the group's largest n)."""
        return [float(f * int(self.n.max())) for f in DEFAULT_PREDICT_FACTORS]

    def power_law_json(self, ks: list[float]) -> dict[str, Any]:
        """JSON block of the configured power-law fit with the other method as an alternative."""

        def block(res: PowerLawResult) -> dict[str, Any]:
            """One method's parameters, CIs and fit error."""
            ok = res.status_boot == "ok"
            return {"method": res.method, "status": res.law.status, "a": json_float(res.law.a), "b": json_float(res.law.b),
                    "a_ci": self.ci(res.a_boot[ok]), "b_ci": self.ci(res.b_boot[ok]),
                    "rmse": json_float(res.rmse), "k_range": [1, self.n_min], "points": int(len(self.fit_ks)),
                    "boot_failed": int((~ok & (res.status_boot != "no_successes") & (res.status_boot != "saturated")).sum())}

        main = block(self.power_law())
        main["alternative"] = block(self.power_laws[next(m for m in power_law.METHODS if m != self.power_law().method)])
        main["predict"] = self.predict(ks, "power_law") if main["status"] == "ok" else {}
        return main

    def beta_json(self, ks: list[float]) -> dict[str, Any]:
        """JSON block of the beta-binomial fit."""
        f = self.beta
        out: dict[str, Any] = {"family": f.family, "status": f.status, "loglik": json_float(f.loglik), "at_bound": f.at_bound}
        if f.status != "ok":
            return out
        params = beta_binomial.natural(f.theta, f.family)
        boot = beta_binomial.natural(f.boot, f.family) if f.boot is not None else None
        for name, value in params.items():
            out[name] = json_float(value)
            out[f"{name}_ci"] = self.ci(None if boot is None else boot[name])
        a, b = beta_binomial.power_law_params(f.theta, f.family)
        out["power_law_a"], out["power_law_b"] = json_float(a), json_float(b)
        out["power_law_b_ci"] = self.ci(None if boot is None else -boot["alpha"])
        sel = np.searchsorted(self.ks, self.fit_ks)
        pred = f.coverage(self.fit_ks)
        out["rmse"] = json_float(np.sqrt(np.mean((pred - self.cov[sel]) ** 2)))
        out["predict"] = self.predict(ks, "beta_binomial")
        return out

    def to_json(self, ks: list[float] | None = None) -> dict[str, Any]:
        """The group's entry of fit.json."""
        ks = self.default_predict_ks() if ks is None else ks
        rates, solved = self.c / self.n, (self.c > 0).astype(float)
        return {
            "problems": int(len(self.n)), "n_min": int(self.n.min()), "n_max": int(self.n.max()),
            "samples": int(self.n.sum()), "successes": int(self.c.sum()),
            "zero_success_problems": int((self.c == 0).sum()),
            "pass@1": dict(zip(("value", "low", "high"), [float(rates.mean()), *self.mean_ci(rates)])),
            "coverage@n": dict(zip(("value", "low", "high"), [float(solved.mean()), *self.mean_ci(solved)])),
            "default_estimator": self.options.estimator,
            "power_law": self.power_law_json(ks),
            "beta_binomial": self.beta_json(ks),
            "predict": self.predict(ks),
            "warnings": list(self.warnings),
        }


def fit_groups(counts: pd.DataFrame, options: FitOptions | None = None,
               progress: ProgressSink | None = None) -> dict[str, GroupFit]:
    """Fit every group of a validated counts table (see fit.counts) with paired bootstrap weights; `progress` counts groups."""
    options = options or FitOptions()
    sink = progress or NullProgress()
    problems = pd.Index(pd.unique(counts["problem"]))
    weights = curves.bootstrap_weights(len(problems), options.n_boot, options.seed)
    out = {}
    groups = counts.groupby("group", sort=True)
    sink.phase("fit", groups.ngroups)
    for name, frame in groups:
        frame = frame.reset_index(drop=True)
        idx = problems.get_indexer(frame["problem"])
        group = out[str(name)] = GroupFit(str(name), frame, options, weights[:, idx])
        if len(frame) < len(problems):  # e.g. a run still sampling: its coverage is over other problems
            group.warnings.append(f"covers {len(frame)} of the {len(problems)} problems in this fit: its curves and "
                                  "multipliers average over a different set of problems than groups that cover all")
        sink.advance("fit")
    return out
