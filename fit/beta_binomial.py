"""Distributional fit (Schaeffer et al. 2025): per-problem success rates p ~ Beta(α, β), fitted to the
per-problem (correct, n) counts by maximum likelihood of the beta-binomial.

- Likelihood: P(c | n) = C(n, c)·B(c+α, n−c+β) / B(α, β), so problems with different n simply
  contribute their own terms, and zero-success problems contribute B(α, β+n)/B(α, β) — the
  probability of seeing no success in n draws — instead of being dropped or clipped.
- Coverage in closed form: coverage(k) = 1 − E[(1−p)^k] = 1 − B(α, β+k)/B(α, β) (scipy betaln),
  exact for any real k, so extrapolating to 10× or 100× the drawn samples costs nothing.
- Power law: for large k, −log coverage(k) ≈ 1 − coverage(k) ≈ Γ(α+β)/Γ(β)·k^(−α), so the
  aggregate power-law exponent is b = −α and a = −Γ(α+β)/Γ(β): the left tail of the beta
  (density ∝ p^(α−1) near 0) is what makes the aggregate a power law.
- ``zi_beta``: the same with a point mass π0 at p = 0 (problems the model can never solve); its
  coverage plateaus at 1 − π0. The alternative heavy-left-tailed family; it predicted held-out
  coverage worse than the plain beta at 10× and 100× (scripts/eval_extrapolation.py,
  benchmarks/fit.md), so ``beta`` is the default.

The scaled beta of Schaeffer et al. (p = s·q, q ~ Beta) is not used: its likelihood needs
2F1(−(n−c), α+c; α+β+c; s), which underflows without a log-space implementation for the large n
(up to 3·10^6) and c of real data; its scale only changes the right tail, not the exponent.

Fitting: the likelihood is maximised over unconstrained parameters (log α, log β[, logit π0])
with L-BFGS-B and analytic (digamma) scores — finite differences of betaln are useless when β
reaches 10^5–10^9, as it does for models that almost never succeed. When the data show no
overdispersion (e.g. a few single successes spread over many problems) the MLE runs to the α bound,
i.e. every problem gets the same p; that is reported as ``at_bound`` with a warning. The likelihood
is so flat along that ridge that L-BFGS-B stops partway, so the ridge's end at the bounds (the
pooled rate for every problem) is tried too and taken when it is no worse than the optimum by more
than ``FLAT_LOGLIK``.

CIs: a one-step (linearised) bootstrap over problems: replicate r has
θ_r = θ̂ + J⁻¹ Σ_i (w_ri/w̄_r − 1) s_i, with s_i the per-problem score and J the observed information.
This is the robust (sandwich) distribution of the MLE, is valid when the beta is misspecified, and
uses the same problem resampling weights as every other bootstrap in the package, so comparisons
between configs stay paired. Degenerate groups (no successes, all successes, or n = 1 everywhere,
where only the mean of p is identified) get a status instead of parameters.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from scipy.optimize import minimize
from scipy.special import betaln, digamma, expit, gammaln, logit

Family = Literal["beta", "zi_beta"]
FAMILIES: tuple[str, ...] = ("beta", "zi_beta")
DEFAULT_FAMILY: Family = "beta"

_LOG_ALPHA = (np.log(1e-3), np.log(1e3))
_LOG_BETA = (np.log(1e-3), np.log(1e9))
_LOGIT_PI0 = (-15.0, 15.0)
# log-likelihood differences below this are not evidence (and near the β bound, below the objective's
# rounding): an optimum that close to the no-overdispersion limit is taken to be that limit
FLAT_LOGLIK = 1e-3


def _bounds(family: Family) -> list[tuple[float, float]]:
    """Box bounds of the unconstrained parameters."""
    return [_LOG_ALPHA, _LOG_BETA] + ([_LOGIT_PI0] if family == "zi_beta" else [])


def natural(theta: np.ndarray, family: Family) -> dict[str, np.ndarray]:
    """Unconstrained parameters (..., d) -> {'alpha', 'beta'[, 'pi0']}."""
    theta = np.asarray(theta, float)
    out = {"alpha": np.exp(theta[..., 0]), "beta": np.exp(theta[..., 1])}
    if family == "zi_beta":
        out["pi0"] = expit(theta[..., 2])
    return out


def loglik_terms(theta: np.ndarray, n: np.ndarray, c: np.ndarray, family: Family) -> np.ndarray:
    """Log-likelihood of each (n, c) pair up to the constant log C(n, c); theta (d,) or (R, d)."""
    p = natural(theta, family)
    al, be = np.asarray(p["alpha"])[..., None], np.asarray(p["beta"])[..., None]
    ll = betaln(c + al, n - c + be) - betaln(al, be)
    if family == "beta":
        return ll
    pi0 = np.asarray(p["pi0"])[..., None]
    with np.errstate(divide="ignore"):
        zero = np.logaddexp(np.log(pi0), np.log1p(-pi0) + ll)
        return np.where(c == 0, zero, np.log1p(-pi0) + ll)


def survival(theta: np.ndarray, k: np.ndarray, family: Family) -> np.ndarray:
    """E[(1−p)^k] in closed form, shape (R, len(k)) for theta (R, d)."""
    theta = np.atleast_2d(np.asarray(theta, float))
    p = natural(theta, family)
    al, be = p["alpha"][:, None], p["beta"][:, None]
    k = np.asarray(k, float)[None, :]
    s = np.exp(betaln(al, be + k) - betaln(al, be))
    if family == "zi_beta":
        pi0 = p["pi0"][:, None]
        s = pi0 + (1.0 - pi0) * s
    return s


def coverage(theta: np.ndarray, k: np.ndarray, family: Family = DEFAULT_FAMILY) -> np.ndarray:
    """Closed-form coverage(k) = 1 − E[(1−p)^k], shape (R, len(k))."""
    return 1.0 - survival(theta, k, family)


def power_law_params(theta: np.ndarray, family: Family) -> tuple[np.ndarray, np.ndarray]:
    """Asymptotic power law of the fitted distribution: a = −Γ(α+β)/Γ(β), b = −α (solvable part)."""
    p = natural(theta, family)
    with np.errstate(over="ignore"):  # inf for a degenerate point-mass fit; reported as null
        return -np.exp(gammaln(p["alpha"] + p["beta"]) - gammaln(p["beta"])), -p["alpha"]


@dataclass
class BetaBinomialFit:
    """MLE of one group, its per-problem scores and one-step bootstrap replicates."""

    family: Family
    status: str
    theta: np.ndarray  # unconstrained MLE (d,), NaN when status != "ok"
    loglik: float
    at_bound: bool = False
    boot: np.ndarray | None = None  # (B, d) replicate parameters
    warnings: list[str] = field(default_factory=list)

    def params(self) -> dict[str, float]:
        """Natural parameters of the MLE."""
        return {k: float(v) for k, v in natural(self.theta, self.family).items()}

    def coverage(self, k: np.ndarray) -> np.ndarray:
        """Point-estimate coverage at k (0 if no successes, 1 if saturated, NaN if insufficient)."""
        k = np.asarray(k, float)
        if self.status == "no_successes":
            return np.zeros(k.shape)
        if self.status == "saturated":
            return np.ones(k.shape)
        if self.status != "ok":
            return np.full(k.shape, np.nan)
        return coverage(self.theta, k, self.family)[0]

    def coverage_boot(self, k: np.ndarray) -> np.ndarray | None:
        """Bootstrap replicate coverage at k, shape (B, len(k)), or None without replicates."""
        if self.boot is None:
            return None
        return coverage(self.boot, k, self.family)


def _unique_pairs(n: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unique (n, c) pairs and the index mapping each problem to its pair."""
    pairs, inverse = np.unique(np.column_stack([n, c]), axis=0, return_inverse=True)
    return pairs[:, 0].astype(float), pairs[:, 1].astype(float), inverse.ravel()


def _starts(n: np.ndarray, c: np.ndarray, family: Family) -> list[np.ndarray]:
    """A few starting points from the pooled success rate."""
    m = float(np.clip(c.sum() / n.sum(), 1e-6, 1 - 1e-6))
    out = []
    for a0 in (0.1, 0.5, 2.0):
        th = [np.log(a0), np.log(a0 * (1 - m) / m)]
        if family == "zi_beta":
            th.append(logit(np.clip(np.mean(c == 0) / 2, 0.01, 0.99)))
        out.append(np.clip(np.array(th), [b[0] for b in _bounds(family)], [b[1] for b in _bounds(family)]))
    return out


def _no_overdispersion_point(theta: np.ndarray, n: np.ndarray, c: np.ndarray, family: Family) -> np.ndarray:
    """The end of the α → ∞ ridge (one p for every problem, kept at the pooled rate) at the α bound.

    Without overdispersion the likelihood rises along that ridge all the way, but so slowly that
    L-BFGS-B stops partway up it; this point is tried as a candidate so the MLE lands at the bound.
    """
    lo, hi = np.array(_bounds(family)).T
    end = np.array(theta, float)
    share = 1.0 - (expit(theta[2]) if family == "zi_beta" else 0.0)  # the part of problems that can succeed
    m = float(np.clip(c.sum() / n.sum() / share, 1e-12, 1 - 1e-12))
    log_odds = np.log((1 - m) / m)  # log β − log α along the ridge
    end[0] = min(hi[0], hi[1] - log_odds)  # as far as both bounds allow
    end[1] = end[0] + log_odds
    return np.clip(end, lo, hi)


def score_terms(theta: np.ndarray, n: np.ndarray, c: np.ndarray, family: Family) -> np.ndarray:
    """Analytic per-pair gradient of loglik_terms w.r.t. the unconstrained parameters, shape (pairs, d).

    Digamma differences stay accurate where finite differences of betaln drown in rounding
    (β ~ 10^5–10^9 for models that almost never succeed).
    """
    p = natural(theta, family)
    al, be = float(p["alpha"]), float(p["beta"])
    common = digamma(al + be) - digamma(n + al + be)
    d_log_alpha = al * (digamma(c + al) - digamma(al) + common)
    d_log_beta = be * (digamma(n - c + be) - digamma(be) + common)
    grad = np.column_stack([d_log_alpha, d_log_beta])
    if family == "beta":
        return grad
    pi0 = float(p["pi0"])
    lik_beta = np.exp(betaln(c + al, n - c + be) - betaln(al, be))  # P(c | solvable)
    zero = c == 0
    mix = pi0 + (1 - pi0) * lik_beta
    weight = np.where(zero, (1 - pi0) * lik_beta / mix, 1.0)  # posterior P(solvable | data)
    d_logit = np.where(zero, pi0 * (1 - pi0) * (1 - lik_beta) / mix, -pi0)
    return np.column_stack([grad * weight[:, None], d_logit])


def _hessian(theta: np.ndarray, n: np.ndarray, c: np.ndarray, wts: np.ndarray, family: Family,
             h: float = 1e-5) -> np.ndarray:
    """Hessian of the weighted total log-likelihood: central differences of the analytic scores."""
    cols = [(wts @ score_terms(theta + h * e, n, c, family) - wts @ score_terms(theta - h * e, n, c, family)) / (2 * h)
            for e in np.eye(theta.size)]
    hess = np.column_stack(cols)
    return (hess + hess.T) / 2


def fit(n: np.ndarray, c: np.ndarray, family: Family = DEFAULT_FAMILY,
        weights: np.ndarray | None = None) -> BetaBinomialFit:
    """Maximum-likelihood beta-binomial fit to per-problem counts; `weights` (B, P) adds bootstrap."""
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; choose from {FAMILIES}")
    n, c = np.asarray(n, float), np.asarray(c, float)
    d = len(_bounds(family))
    nan = np.full(d, np.nan)
    if c.sum() == 0:
        return BetaBinomialFit(family, "no_successes", nan, 0.0)
    if np.all(c == n):
        return BetaBinomialFit(family, "saturated", nan, 0.0)
    if n.max() < 2:
        return BetaBinomialFit(family, "insufficient", nan, float("nan"),
                               warnings=["n = 1 for every problem: only the mean of p is identified"])
    nu, cu, inv = _unique_pairs(n, c)
    mult = np.bincount(inv, minlength=nu.size).astype(float)

    def objective(th: np.ndarray) -> tuple[float, np.ndarray]:
        """Negative log-likelihood over the unique (n, c) pairs, and its gradient."""
        return -float(mult @ loglik_terms(th, nu, cu, family)), -(mult @ score_terms(th, nu, cu, family))

    best = None
    for start in _starts(n, c, family):
        res = minimize(objective, start, jac=True, method="L-BFGS-B", bounds=_bounds(family))
        if best is None or res.fun < best.fun:
            best = res
    theta = best.x
    ridge_end = _no_overdispersion_point(theta, n, c, family)
    ridge_fun = objective(ridge_end)[0]
    if ridge_fun <= best.fun + FLAT_LOGLIK:  # no overdispersion the likelihood can tell: the MLE is at the bound
        theta, best.fun = ridge_end, ridge_fun
    const = float(np.sum(gammaln(n + 1) - gammaln(c + 1) - gammaln(n - c + 1)))
    lo, hi = np.array(_bounds(family)).T
    at_bound = bool(np.any(np.isclose(theta, lo, atol=1e-3) | np.isclose(theta, hi, atol=1e-3)))
    out = BetaBinomialFit(family, "ok", theta, -best.fun + const, at_bound)
    if at_bound:
        names = ["log alpha", "log beta", "logit pi0"][:d]
        which = [nm for nm, t, a, b in zip(names, theta, lo, hi) if np.isclose(t, a, atol=1e-3) or np.isclose(t, b, atol=1e-3)]
        out.warnings.append(f"MLE at the parameter bound ({', '.join(which)}): CIs are unreliable")
    if weights is not None:
        out.boot = _one_step_boot(theta, nu, cu, inv, mult, family, weights)
        if out.boot is None:
            out.warnings.append("observed information not positive definite: no CIs")
    return out


def _one_step_boot(theta: np.ndarray, nu: np.ndarray, cu: np.ndarray, inv: np.ndarray, mult: np.ndarray,
                   family: Family, weights: np.ndarray) -> np.ndarray | None:
    """Linearised bootstrap replicates θ_r = θ̂ + J⁻¹ Σ_i (w_ri/w̄_r − 1) s_i, clipped to the bounds."""
    scores = score_terms(theta, nu, cu, family)[inv]  # (P, d)
    info = -_hessian(theta, nu, cu, mult, family)
    try:
        np.linalg.cholesky(info)
    except np.linalg.LinAlgError:
        return None
    wbar = weights.mean(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        step = np.linalg.solve(info, ((weights / wbar - 1.0) @ scores).T).T
    lo, hi = np.array(_bounds(family)).T
    return np.clip(theta + step, lo, hi)
