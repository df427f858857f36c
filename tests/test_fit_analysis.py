"""Per-group fits: empirical vs extrapolated predictions, the ensemble, and edge-case groups without NaN."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fit import curves
from fit.analysis import FitOptions, GroupFit, fit_groups
from fit.counts import load_counts, validate_counts

PYTHIA = Path(__file__).parent / "fixtures" / "pythia_gsm8k_counts.csv"


def _frame(group: str, n, c) -> pd.DataFrame:
    """Rows of one group."""
    n, c = np.broadcast_arrays(np.asarray(n), np.asarray(c))
    return pd.DataFrame({"config": group, "problem": np.arange(len(c)), "n": n, "correct": c})


@pytest.fixture(scope="module")
def groups() -> dict:
    """A normal group and every edge case the issue names."""
    rng = np.random.default_rng(0)
    n_mixed = rng.choice([64, 256, 1024], 200)
    frames = [
        _frame("normal", 100, rng.binomial(100, rng.beta(0.4, 3, 200))),
        _frame("mixed_n", n_mixed, rng.binomial(n_mixed, rng.beta(0.4, 3, 200))),
        _frame("zero", 50, np.zeros(40, int)),
        _frame("full", 8, np.full(10, 8)),
        _frame("n_is_one", 1, rng.binomial(1, 0.3, 30)),
        _frame("one_problem", 20, [3]),
        _frame("two_samples", 2, [0, 1, 0, 2, 0]),
    ]
    counts = validate_counts(pd.concat(frames, ignore_index=True), "test")
    return fit_groups(counts, FitOptions(n_boot=80))


def test_json_has_no_nan_for_any_group(groups) -> None:
    """Every group serialises as strict JSON (no NaN/inf anywhere)."""
    for name, g in groups.items():
        json.dumps(g.to_json([10.0, 1e4, 1e6]), allow_nan=False)


def test_within_range_is_empirical_beyond_is_fit(groups) -> None:
    """k <= min n: the empirical mean pass@k; beyond: the default (ensemble) estimator, flagged."""
    g = groups["normal"]
    pred = g.predict([50, 1000])
    expected = curves.pass_at_k(g.n, g.c, 50).mean()
    assert pred["50"]["method"] == "empirical" and not pred["50"]["extrapolated"]
    assert pred["50"]["coverage"] == pytest.approx(expected, rel=1e-12)
    assert pred["50"]["low"] < expected < pred["50"]["high"]
    assert pred["1000"]["method"] == "ensemble" and pred["1000"]["extrapolated"]
    ks = np.array([float(g.n_min), 1000.0])
    _, beta_pt, _ = g.model_coverage(ks, "beta_binomial")
    _, pl_pt, _ = g.model_coverage(ks, "power_law")
    ensemble = (beta_pt + pl_pt) / 2  # anchored: −log coverage scaled to the empirical curve's at n_min
    anchored = np.exp(np.log(ensemble[1]) * np.log(g.cov[-1]) / np.log(ensemble[0]))
    assert pred["1000"]["coverage"] == pytest.approx(anchored, rel=1e-12)
    assert pred["1000"]["low"] <= pred["1000"]["coverage"] <= pred["1000"]["high"]
    unanchored = GroupFit(g.name, g.frame, replace(g.options, anchor=False), g.weights).predict([1000])
    assert unanchored["1000"]["coverage"] == pytest.approx(ensemble[1], rel=1e-12)


def test_extrapolation_continues_the_empirical_curve() -> None:
    """Past the sampled range the anchored curve starts at the empirical endpoint and never steps down,
    where the raw fit can start below it (a real Pythia group where it does)."""
    frame = load_counts(PYTHIA, by="model")
    frame = frame[frame["group"] == "Pythia_410M_300B"]
    weights = curves.bootstrap_weights(len(frame), 40, 0)
    for anchor in (True, False):
        g = GroupFit("g", frame, FitOptions(n_boot=40, anchor=anchor), weights)
        k = np.array([g.n_min, g.n_min + 1, 1.5 * g.n_min, 10 * g.n_min], float)
        point, boot, extrapolated, _ = g.curve(k)
        assert extrapolated.tolist() == [False, True, True, True]
        if anchor:
            assert 0 <= point[1] - point[0] < 2e-3 and np.all(np.diff(point) >= 0)
            assert np.all(np.diff(boot, axis=1)[np.isfinite(np.diff(boot, axis=1))] >= -1e-12)
        else:
            assert point[1] < point[0] - 0.005  # the seam this fixes


def test_differing_n(groups) -> None:
    """The empirical curve stops at the smallest n, with a warning; the fits use every problem."""
    g = groups["mixed_n"]
    assert g.ks[-1] == 64 and any("n differs" in w for w in g.warnings)
    assert g.predict([100])["100"]["extrapolated"]
    assert g.beta.status == "ok"


def test_zero_successes_rule_of_three(groups) -> None:
    """No success at all: coverage 0 with the upper bound 3k / (problems · min n)."""
    pred = groups["zero"].predict([10, 500, 1e6])
    assert pred["500"] == {"coverage": 0.0, "low": 0.0, "high": pytest.approx(3 * 500 / (40 * 50)),
                           "method": "zero_successes_bound", "extrapolated": True}
    assert pred["1000000"]["high"] == 1.0 and pred["10"]["extrapolated"] is False


def test_saturated_and_uninformative_groups(groups) -> None:
    """All solved: coverage 1 everywhere. n = 1: no fit can extrapolate; the prediction says so."""
    from verify.metrics import proportion_ci

    for k in ("8", "1000"):  # from n on: as coverage@n's Wilson interval, not [1, 1] (no step at n)
        full = groups["full"].predict([8, 1000])[k]
        assert full["coverage"] == 1.0 and full["high"] == 1.0
        assert full["low"] == pytest.approx(proportion_ci(10, 10)[0])
    js = groups["n_is_one"].to_json([10.0])
    assert js["predict"]["10"]["method"] == "unavailable" and js["predict"]["10"]["coverage"] is None
    assert js["power_law"]["status"] == "insufficient" and js["beta_binomial"]["status"] == "insufficient"


def test_tiny_groups_still_predict(groups) -> None:
    """One problem, or n = 2: finite predictions and a warning about unreliable CIs."""
    for name in ("one_problem", "two_samples"):
        g = groups[name]
        p = g.predict([100])["100"]
        assert p["coverage"] is not None and 0 <= p["coverage"] <= 1
        assert any("unreliable" in w for w in g.warnings)


def test_fallback_names_the_estimator_used(groups) -> None:
    """n = 2 leaves the power law two points; if one estimator fails, the other is named, never 'ensemble'."""
    g = groups["two_samples"]
    method = g.predict([100])["100"]["method"]
    statuses = {g.power_law().law.status, g.beta.status}
    assert method == "ensemble" if statuses == {"ok"} else method in ("beta_binomial", "power_law")


def test_a_group_missing_problems_is_warned_about() -> None:
    """Groups over different problem sets (a run still sampling) compare unlike with unlike: the short one says so."""
    rows = [{"config": config, "problem": f"p{i}", "n": 8, "correct": i % 5}
            for config, count in (("full", 12), ("short", 7)) for i in range(count)]
    groups = fit_groups(validate_counts(pd.DataFrame(rows), "t", "config"), FitOptions(n_boot=20))
    assert any("covers 7 of the 12 problems" in w for w in groups["short"].warnings)
    assert not any("covers" in w for w in groups["full"].warnings)


def test_coverage_at_n_ci_is_the_wilson_interval(groups) -> None:
    """coverage@n is a share of problems: its CI is Wilson's (as `study verify` prints), so 10 of 10 solved
    problems give [0.72, 1], not the bootstrap's [1, 1]; one problem has no CI, like every other statistic."""
    full = groups["full"].to_json()["coverage@n"]
    assert full["value"] == 1.0 and full["low"] == pytest.approx(0.7225, abs=1e-4) and full["high"] == 1.0
    zero = groups["zero"].to_json()["coverage@n"]
    assert zero["low"] == 0.0 and zero["high"] == pytest.approx(0.0876, abs=1e-4)
    assert groups["one_problem"].to_json()["coverage@n"]["low"] is None
    # pass@1 where every problem is always or never solved is a share of problems too (the bootstrap gave [0, 0])
    assert groups["zero"].to_json()["pass@1"]["high"] == pytest.approx(0.0876, abs=1e-4)
    normal = groups["normal"].to_json()["pass@1"]
    assert normal["low"] < normal["value"] < normal["high"] < 0.5  # fractional values: the bootstrap


def test_coverage_at_a_sampled_k_that_is_a_share_of_problems_has_the_wilson_interval(groups) -> None:
    """At k = n every problem's pass@k is 0 or 1, so the prediction there is coverage@n, with its Wilson interval
    (the bootstrap under-covers a share near 1); inside n, fractional pass@k keeps the bootstrap."""
    from verify.metrics import proportion_ci

    counts = validate_counts(_frame("almost", 100, [0, *range(2, 21)]), "test")  # 19 of 20 problems solved
    g = fit_groups(counts, FitOptions(n_boot=200))["almost"]
    at_n = g.predict([100])["100"]
    wilson = proportion_ci(19, 20)
    assert at_n["coverage"] == 0.95 and (at_n["low"], at_n["high"]) == pytest.approx(wilson)
    assert [g.to_json()["coverage@n"][key] for key in ("low", "high")] == pytest.approx(wilson)
    inside = g.predict([50])["50"]
    assert inside["low"] > wilson[0] and inside["high"] < 1.0  # the bootstrap's interval of fractional values
    normal = groups["normal"].predict([100])["100"]  # a share at n = 100 there too
    assert normal["low"] == pytest.approx(groups["normal"].to_json()["coverage@n"]["low"])


def test_replicates_that_drew_no_solved_problem_stay_at_zero_past_n() -> None:
    """One solved problem of 10: many bootstrap replicates draw none. Anchored to their own empirical endpoint (0),
    they stay 0 past n instead of falling back to the unanchored fit (which had lifted the CI's low to a made-up
    0.032); the low past n is then coverage@n's Wilson low (coverage only grows with k), not below it."""
    from verify.metrics import proportion_ci

    counts = validate_counts(_frame("rare", 100, [5, *[0] * 9]), "test")
    g = fit_groups(counts, FitOptions(n_boot=200))["rare"]
    _, boot, _, _ = g.curve(np.array([100.0, 1000.0, 10000.0]))
    none_solved = boot[:, 0] == 0
    assert 0.1 < none_solved.mean() < 0.9
    assert np.all(boot[none_solved, 1:] == 0.0) and np.all(boot[~none_solved, 1:] > 0)
    wilson_low = proportion_ci(1, 10)[0]
    pred = g.predict([1000, 10000])
    assert pred["1000"]["low"] == pytest.approx(wilson_low) == pred["10000"]["low"]
    assert pred["1000"]["coverage"] > 0.1 and pred["1000"]["high"] > pred["1000"]["coverage"]


def test_a_group_with_no_successes_is_bounded_by_coverage_at_n_from_n_on(groups) -> None:
    """No success at all: at k = n the bound is coverage@n's Wilson interval (a share of problems), and past n the
    rule of three once it is larger; its replicates past n stay unknown (a fit of no successes says nothing of
    how far past n it stays at 0), so its multipliers have no interval rather than [0, 0]."""
    from fit import compare
    from verify.metrics import proportion_ci

    zero = groups["zero"]  # 40 problems, n = 50
    wilson = proportion_ci(0, 40)[1]
    pred = zero.predict([49, 50, 51, 500])
    assert pred["49"]["high"] == pytest.approx(3 * 49 / (40 * 50))  # sampled, below n: the rule of three
    assert pred["50"]["high"] == pytest.approx(wilson) == zero.to_json()["coverage@n"]["high"]
    assert pred["51"]["high"] == pytest.approx(wilson) and pred["500"]["high"] == pytest.approx(3 * 500 / (40 * 50))
    _, boot, _, _ = zero.curve(np.array([10.0, 500.0]))
    assert np.all(boot[:, 0] == 0.0) and np.all(np.isnan(boot[:, 1]))
    counts = validate_counts(pd.concat([_frame("base", 100, np.arange(20) % 7), _frame("none", 100, np.zeros(20, int))]),
                             "test")
    counts["cost_per_sample"] = np.where(counts["group"] == "none", 0.5, 1.0)
    fitted = fit_groups(counts, FitOptions(n_boot=40))
    curves_ = {name: compare.compute_curve(g, g.frame["cost_per_sample"].to_numpy(float)) for name, g in fitted.items()}
    cell = compare.compare(curves_, {"base": "base"}, targets=(0.5,), budgets=[])["configs"]["none"]["vs_base"]["targets"]["0.5"]
    assert cell["multiplier"] == 0.0 and cell["low"] is None and cell["high"] is None
