"""Equal-compute comparison: multipliers against itself, under cost scaling, extrapolation flags, crossovers."""
from __future__ import annotations

import zlib

import numpy as np
import pandas as pd
import pytest

from fit import compare
from fit.analysis import FitOptions, fit_groups
from fit.counts import validate_counts

TARGETS = (0.3, 0.5, 0.8)


def _counts(specs: dict[str, tuple[np.ndarray, float]], n: int = 200) -> pd.DataFrame:
    """Counts table from per-group success rates and a cost per sample."""
    rows = []
    for name, (p, cost) in specs.items():
        rng = np.random.default_rng(7 if name in ("guided", "scaled") else zlib.crc32(name.encode()))  # same draws for twins
        rows.append(pd.DataFrame({"config": name, "problem": np.arange(len(p)), "n": n,
                                  "correct": rng.binomial(n, p), "cost_per_sample": cost}))
    return validate_counts(pd.concat(rows, ignore_index=True), "test", cost_column="cost_per_sample")


def _curves(counts: pd.DataFrame) -> dict[str, compare.ComputeCurve]:
    """Compute curves of every group (small bootstrap)."""
    groups = fit_groups(counts, FitOptions(n_boot=60))
    return {k: compare.compute_curve(g, g.frame["cost_per_sample"].to_numpy(float)) for k, g in groups.items()}


@pytest.fixture(scope="module")
def scaled() -> dict[str, compare.ComputeCurve]:
    """base, guided, and 'scaled' = guided's exact counts at 3× the cost; 'dear_base' = base at 2× cost."""
    rng = np.random.default_rng(0)
    p_base, p_guided = rng.beta(0.3, 3, 300), rng.beta(0.5, 2, 300)
    counts = _counts({"base": (p_base, 1.0), "guided": (p_guided, 2.0), "scaled": (p_guided, 6.0)})
    dear = counts[counts["group"] == "base"].assign(group="dear_base", cost_per_sample=2.0)
    return _curves(pd.concat([counts, dear], ignore_index=True))


def test_multiplier_against_itself_is_exactly_one(scaled: dict[str, compare.ComputeCurve]) -> None:
    """At every target the multiplier and both CI ends are exactly 1; at budgets 1 to rounding."""
    out = compare.compare(scaled, {"base": "guided"}, TARGETS)
    cells = out["configs"]["guided"]["vs_base"]
    for t in TARGETS:
        cell = cells["targets"][str(t)]
        assert cell["multiplier"] == 1.0 and cell["low"] == 1.0 and cell["high"] == 1.0
    for cell in cells["budgets"].values():
        assert cell["multiplier"] == pytest.approx(1.0, rel=1e-9)
    assert cells["crossovers"] == []


def test_multiplier_against_itself_is_one_where_its_curve_is_flat() -> None:
    """A curve with flat stretches (few problems, a step-like empirical curve): at every budget, including
    budgets inside a flat stretch, the reference against itself is 1, not less."""
    counts = _counts({"flat": (np.array([0.0, 0.0, 1.0, 0.5]), 1.0)}, n=64)  # coverage 0.75 from k ≈ 10 on
    curve = _curves(counts)["flat"]
    budgets = np.geomspace(1, 64, 40)
    m, mb, _, cov = compare.multipliers_at_budgets(curve, curve, budgets)
    assert np.ptp(cov[budgets > 20]) < 1e-4  # the flat stretch the test is about
    assert np.allclose(m[cov > 0], 1.0) and np.allclose(mb[np.isfinite(mb)], 1.0)


def test_multipliers_scale_with_costs(scaled: dict[str, compare.ComputeCurve]) -> None:
    """3× the config's cost divides its multiplier by 3; 2× the reference's cost multiplies it by 2."""
    budgets = [5.0, 50.0, 500.0]
    ref = compare.compare(scaled, {"base": "base"}, TARGETS, budgets)["configs"]
    tri = compare.compare(scaled, {"base": "base"}, TARGETS, [3 * b for b in budgets])["configs"]
    dear = compare.compare(scaled, {"base": "dear_base"}, TARGETS, budgets)["configs"]
    for t in map(str, TARGETS):
        g, s, d = ref["guided"]["vs_base"]["targets"][t], tri["scaled"]["vs_base"]["targets"][t], dear["guided"]["vs_base"]["targets"][t]
        for key in ("multiplier", "low", "high"):
            assert s[key] == pytest.approx(g[key] / 3, rel=1e-9)
            assert d[key] == pytest.approx(g[key] * 2, rel=1e-9)
    for b in budgets:
        g = ref["guided"]["vs_base"]["budgets"][f"{b:.6g}"]
        s = tri["scaled"]["vs_base"]["budgets"][f"{3 * b:.6g}"]
        assert s["multiplier"] == pytest.approx(g["multiplier"] / 3, rel=1e-9)
        assert s["coverage"] == pytest.approx(g["coverage"], rel=1e-12)


def test_extrapolated_flags(scaled: dict[str, compare.ComputeCurve]) -> None:
    """A target the base does not reach within its n is computed from the fit and flagged."""
    base = scaled["base"]
    reached = base.point[base.ks <= base.k_empirical].max()
    out = compare.compare(scaled, {"base": "base"}, (reached / 2, min(0.99, reached + 0.05)))
    cells = list(out["configs"]["guided"]["vs_base"]["targets"].values())
    assert cells[0]["extrapolated"] is False and cells[1]["extrapolated"] is True
    assert np.isfinite(cells[1]["multiplier"])


def test_crossover_found_where_curves_cross() -> None:
    """A cheap config that can never solve half the problems leads early and is overtaken by base."""
    rng = np.random.default_rng(1)
    p_base = rng.beta(0.6, 2, 400)
    p_fast = np.where(np.arange(400) % 2 == 0, 0.6, 0.0)
    curves_ = _curves(_counts({"base": (p_base, 1.0), "fast": (p_fast, 1.0)}))
    cross = compare.crossovers(curves_["fast"], curves_["base"])
    assert len(cross) == 1 and cross[0]["ahead_after"] == "base"
    b = cross[0]["budget"]
    before = curves_["fast"].coverage_at(np.array([b / 1.5]))[0] - curves_["base"].coverage_at(np.array([b / 1.5]))[0]
    after = curves_["fast"].coverage_at(np.array([b * 1.5]))[0] - curves_["base"].coverage_at(np.array([b * 1.5]))[0]
    assert before[0] > 0 > after[0]


def test_default_budgets_are_reference_samples(scaled: dict[str, compare.ComputeCurve]) -> None:
    """1, 10, 100 and n samples of the reference."""
    base = scaled["base"]
    assert compare.default_budgets(base) == pytest.approx([base.cost * k for k in (1, 10, 100, 200)])


def _plateau_curve(name: str, tops: np.ndarray, point_top: float) -> compare.ComputeCurve:
    """A config whose coverage levels off at `top` (one plateau per bootstrap replicate), cost 1 per sample."""
    ks = np.concatenate([[0.0], np.arange(1, 101), np.geomspace(100, 1e8, 300)[1:]])
    curve = lambda top: top * (1 - (1 + ks) ** -0.5)  # noqa: E731
    return compare.ComputeCurve(name, ks, curve(point_top), np.array([curve(t) for t in tops]), 100, 1.0,
                                np.ones(len(tops)), "test")


def test_replicates_that_never_reach_a_target_stay_in_the_interval() -> None:
    """Half the config's replicates level off below the target: they need infinite compute, so they count as
    multiplier 0 (the interval reaches 0) instead of being dropped; where half the reference's replicates
    never reach it, the upper bound is unbounded. Both are counted in `unreached` and the report shows ∞."""
    from fit.report import fmt_mult

    tops = np.linspace(0.9, 1.0, 100)
    curves_by_name = {"guided": _plateau_curve("guided", tops, 0.97), "base": _plateau_curve("base", np.ones(100), 1.0),
                      "flaky_base": _plateau_curve("flaky_base", tops, 0.97)}
    out = compare.compare(curves_by_name, {"base": "base"}, targets=(0.95,), budgets=[])["configs"]
    cell = out["guided"]["vs_base"]["targets"]["0.95"]
    assert cell["low"] == 0.0 and cell["unreached"] == {"config": 50, "reference": 0, "replicates": 100}
    compute = out["guided"]["compute_to_target"]["0.95"]
    assert compute["high"] is None and compute["unreached"] == {"config": 50, "replicates": 100}
    against_flaky = compare.compare(curves_by_name, {"base": "flaky_base"}, targets=(0.95,), budgets=[])["configs"]
    cell = against_flaky["base"]["vs_base"]["targets"]["0.95"]
    assert cell["high"] is None and cell["low"] is not None and cell["unreached"]["reference"] == 50
    assert ", ∞]×" in fmt_mult(cell)
    reached = compare.compare(curves_by_name, {"base": "base"}, targets=(0.5,), budgets=[])["configs"]
    assert "unreached" not in reached["guided"]["vs_base"]["targets"]["0.5"]


def test_reference_replicates_that_never_match_a_budget_count_as_unbounded() -> None:
    """At a budget where the config's coverage is above the plateau of some reference replicates, those
    replicates need infinite compute: the multiplier's upper bound is unbounded and they are counted."""
    curves_by_name = {"guided": _plateau_curve("guided", np.ones(100), 1.0),
                      "flaky_base": _plateau_curve("flaky_base", np.linspace(0.9, 1.0, 100), 0.97)}
    out = compare.compare(curves_by_name, {"base": "flaky_base"}, targets=(0.5,), budgets=[1e6])["configs"]
    cell = next(iter(out["guided"]["vs_base"]["budgets"].values()))
    assert cell["high"] is None and cell["unreached"]["config"] == 0
    assert 90 <= cell["unreached"]["reference"] <= 100 and cell["unreached"]["replicates"] == 100


def test_replicates_without_a_fit_beyond_n_are_unknown_not_unreached() -> None:
    """Replicates (and a point curve) with no fit beyond n do not reach a target within n: that is unknown
    (NaN, dropped from the interval), not "never" (which would count them as infinite compute)."""
    tops = np.full(100, 0.97)
    known = _plateau_curve("base", np.ones(100), 1.0)
    unknown = _plateau_curve("guided", tops, 0.97)
    beyond = unknown.ks > unknown.k_empirical
    unknown.boot[:, beyond] = np.nan
    out = compare.compare({"guided": unknown, "base": known}, {"base": "base"}, targets=(0.5, 0.95), budgets=[])["configs"]
    reached = out["guided"]["vs_base"]["targets"]["0.5"]  # inside n: replicates known there
    assert "unreached" not in reached and reached["low"] is not None
    cell = out["guided"]["vs_base"]["targets"]["0.95"]  # point curve known beyond n, replicates not
    assert "unreached" not in cell and cell["low"] is None and cell["high"] is None and cell["multiplier"] is not None
    unknown.point[beyond] = np.nan
    out = compare.compare({"guided": unknown, "base": known}, {"base": "base"}, targets=(0.95,), budgets=[])["configs"]
    cell = out["guided"]["vs_base"]["targets"]["0.95"]
    assert cell["multiplier"] is None and "infinite" not in cell and "no fit" in cell["note"]
    compute = out["guided"]["compute_to_target"]["0.95"]
    assert compute["compute"] is None and "infinite" not in compute and "unreached" not in compute


def test_a_curve_that_never_reaches_a_target_gives_zero_or_infinite_multipliers() -> None:
    """A config whose whole curve levels off below the target: multiplier 0 against a reference that reaches it,
    ∞ (null in JSON, marked `infinite`) for the reference against it; the report shows both and says why."""
    from fit.report import _multiplier_tables, fmt_mult

    low = _plateau_curve("low", np.full(100, 0.9), 0.9)
    high = _plateau_curve("high", np.ones(100), 1.0)
    out = compare.compare({"low": low, "high": high}, {"base": "low"}, targets=(0.95,), budgets=[1e6])
    low_cell = out["configs"]["low"]["vs_base"]["targets"]["0.95"]
    high_cell = out["configs"]["high"]["vs_base"]["targets"]["0.95"]
    assert high_cell["multiplier"] is None and high_cell["infinite"] is True and high_cell["extrapolated"] is True
    assert high_cell["note"] == "low does not reach 0.95 within 10^6× its n"
    assert low_cell["multiplier"] is None and "infinite" not in low_cell  # ∞ / ∞: undefined
    assert out["configs"]["low"]["compute_to_target"]["0.95"]["infinite"] is True
    assert fmt_mult(high_cell).startswith("∞")
    budget_cell = next(iter(out["configs"]["high"]["vs_base"]["budgets"].values()))  # high's coverage there: > 0.9
    assert budget_cell["infinite"] is True and budget_cell["note"].startswith("low does not reach the coverage high has")
    lower = _plateau_curve("lower", np.full(100, 0.8), 0.8)
    both = compare.compare({"lower": lower, "low": low}, {"base": "low"}, targets=(0.95,), budgets=[])
    cell = both["configs"]["lower"]["vs_base"]["targets"]["0.95"]
    assert cell["multiplier"] is None and cell["note"] == "neither lower nor low reaches 0.95 within 10^6× its n"
    against_high = compare.compare({"low": low, "high": high}, {"base": "high"}, targets=(0.95,), budgets=[])
    cell = against_high["configs"]["low"]["vs_base"]["targets"]["0.95"]
    assert cell["multiplier"] == 0.0 and cell["note"] == "low does not reach 0.95 within 10^6× its n"
    assert fmt_mult(cell).startswith("0")
    text = "\n".join(_multiplier_tables({"comparison": {**out, "cost_unit": "FLOPs"}}))
    assert "- low does not reach 0.95 within 10^6× its n (rows `low`, `high`)" in text


def test_a_budget_where_the_config_has_coverage_0_says_so() -> None:
    """A config that solves nothing has no coverage to match at any budget: its budget cells are null with a note
    (the report lists it under the cells without a finite multiplier), not a bare null."""
    from fit.report import _multiplier_tables

    zero = _plateau_curve("zero", np.zeros(100), 0.0)
    base = _plateau_curve("base", np.full(100, 0.9), 0.9)
    out = compare.compare({"base": base, "zero": zero}, {"base": "base"}, targets=(0.5,), budgets=[1.0, 10.0])
    for cell in out["configs"]["zero"]["vs_base"]["budgets"].values():
        assert cell["multiplier"] is None and cell["coverage"] == 0.0
        assert cell["note"] == "zero has coverage 0 at a budget: no coverage to match"
    text = "\n".join(_multiplier_tables({"comparison": {**out, "cost_unit": "FLOPs"}}))
    assert text.count("- zero has coverage 0 at a budget: no coverage to match (row `zero`)") == 1


def test_budgets_that_round_alike_keep_distinct_keys(scaled: dict[str, compare.ComputeCurve]) -> None:
    """Budgets equal to 6 significant digits are keyed with more digits instead of overwriting each other."""
    budgets = [10.0, 10.0000001]
    cells = compare.compare(scaled, {"base": "base"}, TARGETS, budgets)["configs"]["guided"]["vs_base"]["budgets"]
    assert len(cells) == 2
    plain = compare.compare(scaled, {"base": "base"}, TARGETS, [10.0, 20.0])["configs"]["guided"]["vs_base"]["budgets"]
    assert list(plain) == ["10", "20"]


def test_curves_that_tie_hand_the_lead_to_nobody() -> None:
    """Two curves flat at the same coverage for a while are tied, not crossing: a lead change is reported once,
    where the new leader goes ahead, and a touch that ends with the same leader is no crossover."""
    ks = np.concatenate([[0.0], np.arange(1.0, 101.0)])
    flat = np.minimum(ks / 20, 0.75)  # 0.75 from k = 15
    rise = np.where(ks < 40, np.minimum(ks / 20, 0.75), np.minimum(0.75 + (ks - 40) / 400, 0.9))  # ahead from k = 40

    def curve(name: str, point: np.ndarray) -> compare.ComputeCurve:
        return compare.ComputeCurve(name, ks, point, point[None, :], 100, 1.0, np.ones(1), "test")

    ahead_early = np.where(ks < 10, ks / 10 * 0.75, flat)  # ahead before k = 15, then tied, then behind `rise`
    cross = compare.crossovers(curve("early", ahead_early), curve("rise", rise))
    assert [c["ahead_after"] for c in cross] == ["rise"]
    assert 39 <= cross[0]["budget"] <= 41 and cross[0]["coverage"] == pytest.approx(0.75)
    touch = np.where((ks >= 15) & (ks <= 30), flat, flat - 0.01 * (ks > 0))  # behind `flat`, level with it for a while
    assert compare.crossovers(curve("touch", np.maximum(touch, 0)), curve("flat", flat)) == []
