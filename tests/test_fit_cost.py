"""The cost module: FLOPs, decode-only and price views of the four token counts."""
from __future__ import annotations

import pandas as pd
import pytest

from fit import cost
from fit.counts import CountsError

PARAMS = {"base": 1e9, "oracle": 8e9}
# Sums over n = 4 samples: per sample 100 base decode, 50 base prefill, 10 oracle decode, 400 oracle prefill.
COUNTS = pd.DataFrame({"n": [4], "base_decode": [400], "base_prefill": [200], "oracle_decode": [40], "oracle_prefill": [1600]})


def test_flops_counts_every_token_of_both_models() -> None:
    """2·params per prefilled or decoded token; components per sample kept apart."""
    out = cost.add_cost_per_sample(COUNTS, "flops", PARAMS)
    assert out["cost_base_decode"].iloc[0] == pytest.approx(2e9 * 100)
    assert out["cost_oracle_prefill"].iloc[0] == pytest.approx(2 * 8e9 * 400)
    assert out["cost_per_sample"].iloc[0] == pytest.approx(2e9 * 150 + 16e9 * 410)


def test_oracle_prefill_dominates_under_flops_not_decode() -> None:
    """Re-reading the base's tokens is most of the FLOPs but free in the decode-only view."""
    flops = cost.add_cost_per_sample(COUNTS, "flops", PARAMS)
    decode = cost.add_cost_per_sample(COUNTS, "decode", PARAMS)
    assert flops["cost_oracle_prefill"].iloc[0] / flops["cost_per_sample"].iloc[0] > 0.9
    assert decode["cost_oracle_prefill"].iloc[0] == 0 and decode["cost_base_prefill"].iloc[0] == 0
    assert decode["cost_per_sample"].iloc[0] == pytest.approx(2e9 * 100 + 16e9 * 10)


def test_price_model() -> None:
    """Input (prefill) and output (decode) prices per million tokens, per model."""
    prices = cost.Prices.parse("0.1,0.4,1,4")
    out = cost.add_cost_per_sample(COUNTS, "price", prices=prices)
    assert out["cost_per_sample"].iloc[0] == pytest.approx((50 * 0.1 + 100 * 0.4 + 400 * 1 + 10 * 4) / 1e6)
    same = cost.Prices.from_mapping({"base": {"input": 0.1, "output": 0.4}, "oracle": {"input": 1, "output": 4}})
    assert same == prices
    assert same.to_mapping() == {"base": {"input": 0.1, "output": 0.4}, "oracle": {"input": 1, "output": 4}}


def test_bad_inputs() -> None:
    """Missing parameters, prices or token columns are clear errors."""
    with pytest.raises(ValueError, match="needs n_params"):
        cost.add_cost_per_sample(COUNTS, "flops", {"base": 1e9})
    with pytest.raises(ValueError, match="needs prices"):
        cost.add_cost_per_sample(COUNTS, "price")
    with pytest.raises(ValueError, match="four non-negative numbers"):
        cost.Prices.parse("1,2,3")
    with pytest.raises(ValueError, match="non-negative numbers"):
        cost.Prices.from_mapping({"base": {"input": 1, "output": 2}, "oracle": {"input": -1, "output": 2}})
    with pytest.raises(ValueError, match="unknown cost model"):
        cost.per_token_rates("watts", PARAMS)  # type: ignore[arg-type]
    with pytest.raises(CountsError, match="oracle_prefill"):
        cost.components(COUNTS.drop(columns="oracle_prefill"), "flops", PARAMS)


def test_seconds_model_is_measured_time_per_sample() -> None:
    """cost 'seconds': the row's measured engine seconds over its n; unmeasured rows are named."""
    counts = pd.DataFrame({"group": ["a", "b"], "n": [4, 8], "seconds": [2.0, 2.0]})
    out = cost.add_seconds_per_sample(counts, "run")
    assert out["cost_per_sample"].tolist() == [0.5, 0.25]
    with pytest.raises(CountsError, match=r"1 row\(s\) have no measured time \(group\(s\) b\)"):
        cost.add_seconds_per_sample(counts.assign(seconds=[2.0, float("nan")]), "run")
    with pytest.raises(CountsError, match=r"column 'seconds', row 2: measured seconds must be a number > 0, got -1.0"):
        cost.add_seconds_per_sample(counts.assign(seconds=[2.0, -1.0]), "run")
    with pytest.raises(CountsError, match=r"row 1: .* got 'abc'"):  # CSV cells are text
        cost.add_seconds_per_sample(counts.assign(seconds=["abc", ""]), "run")
    with pytest.raises(CountsError, match=r"2 row\(s\) have no measured time"):  # how other tools write missing
        cost.add_seconds_per_sample(counts.assign(seconds=["NaN", "NA"]), "run")
    with pytest.raises(CountsError, match="needs a 'seconds' column"):
        cost.add_seconds_per_sample(counts.drop(columns="seconds"), "run")
    with pytest.raises(ValueError, match="not a per-token rate"):
        cost.per_token_rates("seconds", PARAMS)


def test_manifest_parameters() -> None:
    """n_params come from manifest models.base/oracle.n_params."""
    manifest = {"models": {"base": {"n_params": 310_000}, "oracle": {"n_params": 2_450_000}}}
    assert cost.n_params_from_manifest(manifest) == {"base": 310_000.0, "oracle": 2_450_000.0}
    with pytest.raises(ValueError, match="n_params"):
        cost.n_params_from_manifest({"models": {}})
