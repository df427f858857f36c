"""Beta-binomial fit: likelihood, closed-form coverage vs Monte Carlo, recovery and CI coverage over seeds."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from fit import beta_binomial as bb
from fit import curves

ALPHA, BETA = 0.3, 3.0
TRUTH = np.log([[ALPHA, BETA]])


def test_likelihood_is_the_beta_binomial_pmf() -> None:
    """loglik_terms + log C(n, c) equals scipy.stats.betabinom.logpmf, for differing n."""
    n = np.array([1, 5, 128, 10_112, 100_096])
    c = np.array([0, 3, 0, 7, 100_000])
    ours = bb.loglik_terms(TRUTH[0], n, c, "beta")
    const = stats.binom.logpmf(c, n, 0.5) - n * np.log(0.5)  # log C(n, c)
    np.testing.assert_allclose(ours + const, stats.betabinom.logpmf(c, n, ALPHA, BETA), rtol=1e-9)


@pytest.mark.parametrize("family,theta", [("beta", [np.log(0.3), np.log(3.0)]),
                                          ("zi_beta", [np.log(0.7), np.log(1.5), 0.0])])
def test_closed_form_coverage_matches_monte_carlo(family: str, theta: list[float]) -> None:
    """1 − E[(1−p)^k] in closed form equals the Monte Carlo mean over sampled p, up to 10^5 samples."""
    rng = np.random.default_rng(0)
    nat = bb.natural(np.array(theta), family)
    draws = 400_000
    p = rng.beta(nat["alpha"], nat["beta"], draws)
    if family == "zi_beta":
        p[rng.random(draws) < nat["pi0"]] = 0.0
    ks = np.array([1, 10, 100, 1000, 100_000])
    closed = bb.coverage(np.array([theta]), ks, family)[0]
    for k, value in zip(ks, closed):
        sample = 1.0 - (1.0 - p) ** k
        se = sample.std() / np.sqrt(draws)
        assert abs(sample.mean() - value) < 4 * se + 1e-12


def test_power_law_exponent_is_minus_alpha() -> None:
    """The local slope of log(1 − coverage) against log k tends to −α; 1 − coverage to −a·k^b, a = −Γ(α+β)/Γ(β)."""
    ks = np.array([1e6, 1e7])
    surv = 1 - bb.coverage(TRUTH, ks)[0]
    slope = np.diff(np.log(surv)) / np.diff(np.log(ks))
    a, b = bb.power_law_params(TRUTH[0], "beta")
    assert b == pytest.approx(-ALPHA) and slope[0] == pytest.approx(b, rel=1e-3)
    assert surv[1] == pytest.approx(-a * 1e7 ** b, rel=1e-4)


def _sample(seed: int, problems: int) -> tuple[np.ndarray, np.ndarray]:
    """Counts from the true beta with differing n per problem (128 to 2048)."""
    rng = np.random.default_rng(seed)
    n = rng.choice([128, 512, 2048], problems)
    return n, rng.binomial(n, rng.beta(ALPHA, BETA, problems))


def test_mle_recovers_parameters() -> None:
    """On 3000 problems the MLE is within a few percent of the truth."""
    n, c = _sample(1, 3000)
    fit = bb.fit(n, c)
    assert fit.status == "ok" and not fit.at_bound
    assert fit.params()["alpha"] == pytest.approx(ALPHA, rel=0.08)
    assert fit.params()["beta"] == pytest.approx(BETA, rel=0.2)


def test_ci_coverage_rate_over_seeds() -> None:
    """95% CIs of α, β and of coverage at 10× and 100× the largest n contain the truth in most of 100 seeds."""
    ks = np.array([20_480.0, 204_800.0])
    truth = np.concatenate([[ALPHA, BETA], bb.coverage(TRUTH, ks)[0]])
    hits = []
    for seed in range(100):
        n, c = _sample(seed, 300)
        fit = bb.fit(n, c, weights=curves.bootstrap_weights(300, 200, seed + 5000))
        nat = bb.natural(fit.boot, "beta")
        reps = np.column_stack([nat["alpha"], nat["beta"], fit.coverage_boot(ks)])
        lo, hi = curves.percentile_ci(reps)
        hits.append((lo <= truth) & (truth <= hi))
    rate = np.mean(hits, axis=0)
    assert np.all(rate >= 0.88), rate


def test_zero_inflated_recovers_point_mass() -> None:
    """With 30% never-solvable problems the zi_beta fit finds π0 and beats the plain beta in likelihood."""
    rng = np.random.default_rng(3)
    p = rng.beta(0.8, 2.0, 4000)
    p[rng.random(4000) < 0.3] = 0.0
    n = np.full(4000, 500)
    c = rng.binomial(n, p)
    zi, plain = bb.fit(n, c, "zi_beta"), bb.fit(n, c, "beta")
    assert zi.params()["pi0"] == pytest.approx(0.3, abs=0.03)
    assert zi.loglik > plain.loglik + 10


def test_degenerate_groups() -> None:
    """No successes, all successes and n = 1 everywhere get statuses and constant/absent predictions."""
    none = bb.fit(np.full(5, 100), np.zeros(5))
    assert none.status == "no_successes" and none.coverage(np.array([1e6]))[0] == 0.0
    full = bb.fit(np.full(5, 10), np.full(5, 10))
    assert full.status == "saturated" and full.coverage(np.array([3.0]))[0] == 1.0
    ones = bb.fit(np.ones(50), np.r_[np.ones(10), np.zeros(40)])
    assert ones.status == "insufficient" and np.isnan(ones.coverage(np.array([10.0]))[0]) and ones.warnings


def test_tiny_group_fits_without_nan() -> None:
    """Two problems with a handful of samples still give finite parameters and replicates."""
    fit = bb.fit(np.array([4, 6]), np.array([1, 0]), weights=curves.bootstrap_weights(2, 50, 0))
    assert fit.status == "ok" and np.all(np.isfinite(fit.theta))
    assert fit.boot is None or np.all(np.isfinite(fit.boot))


@pytest.mark.parametrize("model", ["Pythia_160M_2M", "Pythia_1.4B_64M"])
def test_no_overdispersion_lands_at_the_bound(model: str) -> None:
    """A handful of single successes over 128 problems with 50k–800k samples each: the likelihood rises
    along the α → ∞ ridge so slowly that L-BFGS-B stopped partway (α ≈ 830 and 690, not flagged). The fit
    now ends at the bound and says so, with a likelihood no worse than the optimiser's stopping point."""
    from pathlib import Path

    import pandas as pd

    counts = pd.read_csv(Path(__file__).parent / "fixtures" / "pythia_gsm8k_counts.csv")
    group = counts[counts["model"] == model]
    n, c = group["n"].to_numpy(float), group["correct"].to_numpy(float)
    fit = bb.fit(n, c)
    assert fit.status == "ok" and fit.at_bound and any("parameter bound" in w for w in fit.warnings)
    stopped = max((bb.minimize(lambda th: -bb.loglik_terms(th, n, c, "beta").sum(), start, method="L-BFGS-B",
                               bounds=bb._bounds("beta")) for start in bb._starts(n, c, "beta")), key=lambda r: -r.fun)
    constant = float(np.sum(bb.gammaln(n + 1) - bb.gammaln(c + 1) - bb.gammaln(n - c + 1)))
    assert fit.loglik >= -stopped.fun + constant - bb.FLAT_LOGLIK


def test_constant_success_rate_is_reported_at_the_bound() -> None:
    """Every problem with the same p (binomial counts, no overdispersion): flagged at_bound."""
    rng = np.random.default_rng(3)
    n = np.full(200, 2000)
    fit = bb.fit(n, rng.binomial(n, 0.01))
    assert fit.status == "ok" and fit.at_bound
