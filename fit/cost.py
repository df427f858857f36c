"""The cost module: the only place in the project that multiplies tokens by parameters.

A sample's cost comes from its four token counts (``base_decode``, ``base_prefill``,
``oracle_decode``, ``oracle_prefill``) and each model's parameter count (manifest ``n_params``):

- ``flops`` (default): 2·params FLOPs per prefilled or decoded token, per model. The oracle's
  prefill of everything the base wrote since the oracle's last call is charged in full, so late
  interventions are expensive; ``components`` keeps the four parts apart so reports can show it.
- ``decode``: 2·params per *decoded* token only; prefill is treated as free (the latency view on
  GPUs, where prefill is compute-bound and cheap per token next to memory-bound decoding).
- ``price``: per-model prices per million input (prefill) and output (decode) tokens.
- ``seconds``: measured, not modelled: each sample's share of the engine's wall-clock time for
  its block (``study sample`` records it per shard; the counts table sums it per problem). It
  prices everything the run really did on its hardware and engine, switching overhead included,
  so it is only comparable between configs sampled on the same machine type and engine.

No attention term: at the toy and 1B–8B scales with ≤1k-token samples the 2·params·tokens term
dominates; the parameter counts are what the manifest records.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Mapping

import numpy as np
import pandas as pd

from fit.counts import SECONDS_COLUMN, TOKEN_COLUMNS, CountsError, show_cell

CostModel = Literal["flops", "decode", "price", "seconds"]
COST_MODELS: tuple[str, ...] = ("flops", "decode", "price", "seconds")
UNITS: dict[str, str] = {"flops": "FLOPs", "decode": "decode FLOPs", "price": "price units", "seconds": "engine seconds"}
MODELS: tuple[str, ...] = ("base", "oracle")


@dataclass(frozen=True)
class Prices:
    """Prices per million tokens: input = prefill, output = decode, for each model."""

    base_input: float
    base_output: float
    oracle_input: float
    oracle_output: float

    @classmethod
    def parse(cls, text: str) -> "Prices":
        """From 'BASE_IN,BASE_OUT,ORACLE_IN,ORACLE_OUT' (per million tokens)."""
        try:
            values = [float(x) for x in text.split(",")]
        except ValueError as exc:
            raise ValueError(f"--prices {text!r}: expected four numbers BASE_IN,BASE_OUT,ORACLE_IN,ORACLE_OUT") from exc
        if len(values) != 4 or any(not np.isfinite(v) or v < 0 for v in values):
            raise ValueError(f"--prices {text!r}: expected four non-negative numbers BASE_IN,BASE_OUT,ORACLE_IN,ORACLE_OUT")
        return cls(*values)

    @classmethod
    def from_mapping(cls, prices: Mapping[str, Mapping[str, float]]) -> "Prices":
        """From {'base': {'input': .., 'output': ..}, 'oracle': {...}} (a manifest's ``prices``)."""
        shape = "prices must look like {'base': {'input': x, 'output': y}, 'oracle': {...}}"
        if not isinstance(prices, Mapping) or set(prices) != set(MODELS):
            raise ValueError(f"{shape}, got {prices!r}")
        for m in MODELS:
            if not isinstance(prices[m], Mapping) or set(prices[m]) != {"input", "output"}:
                raise ValueError(f"{shape}, got {m} = {prices[m]!r}")
        values = [prices[m][io] for m in MODELS for io in ("input", "output")]
        if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in values):  # "0.02" or true is a typo
            raise ValueError(f"prices must be numbers, got {prices!r}")
        values = [float(v) for v in values]
        if any(not np.isfinite(v) or v < 0 for v in values):
            raise ValueError(f"prices must be non-negative numbers, got {values}")
        return cls(*values)

    def to_mapping(self) -> dict[str, dict[str, float]]:
        """{'base': {'input': .., 'output': ..}, 'oracle': {...}}: what `from_mapping` reads."""
        return {m: {"input": getattr(self, f"{m}_input"), "output": getattr(self, f"{m}_output")} for m in MODELS}


def per_token_rates(model: CostModel, n_params: Mapping[str, float] | None = None,
                    prices: Prices | None = None) -> dict[str, float]:
    """Cost of one token in each of the four token columns under `model`."""
    if model in ("flops", "decode"):
        if n_params is None or any(m not in n_params for m in MODELS):
            raise ValueError(f"cost model {model!r} needs n_params for 'base' and 'oracle'")
        nb, no = (float(n_params[m]) for m in MODELS)
        if not (nb > 0 and no > 0):
            raise ValueError(f"n_params must be positive, got base={nb}, oracle={no}")
        prefill = 1.0 if model == "flops" else 0.0
        return {"base_decode": 2 * nb, "base_prefill": 2 * nb * prefill,
                "oracle_decode": 2 * no, "oracle_prefill": 2 * no * prefill}
    if model == "price":
        if prices is None:
            raise ValueError("cost model 'price' needs prices (--prices, or 'prices' in the experiment's [cost] table)")
        return {"base_decode": prices.base_output / 1e6, "base_prefill": prices.base_input / 1e6,
                "oracle_decode": prices.oracle_output / 1e6, "oracle_prefill": prices.oracle_input / 1e6}
    if model == "seconds":
        raise ValueError("cost model 'seconds' is measured per sample, not a per-token rate (use add_seconds_per_sample)")
    raise ValueError(f"unknown cost model {model!r}; choose from {', '.join(COST_MODELS)}")


def components(tokens: pd.DataFrame, model: CostModel = "flops", n_params: Mapping[str, float] | None = None,
               prices: Prices | None = None) -> pd.DataFrame:
    """Cost of each token column (same rows as `tokens`): tokens × per-token rate."""
    missing = [c for c in TOKEN_COLUMNS if c not in tokens.columns]
    if missing:
        raise CountsError(f"token columns missing for the cost model: {', '.join(missing)}")
    rates = per_token_rates(model, n_params, prices)
    return pd.DataFrame({c: tokens[c].to_numpy(dtype=float) * rates[c] for c in TOKEN_COLUMNS}, index=tokens.index)


def add_cost_per_sample(counts: pd.DataFrame, model: CostModel = "flops",
                        n_params: Mapping[str, float] | None = None, prices: Prices | None = None) -> pd.DataFrame:
    """Counts with token *sums* -> adds ``cost_<column>`` per-sample components and ``cost_per_sample``."""
    parts = components(counts, model, n_params, prices).div(counts["n"].to_numpy(dtype=float), axis=0)
    out = counts.copy()
    for col in TOKEN_COLUMNS:
        out[f"cost_{col}"] = parts[col]
    out["cost_per_sample"] = parts.sum(axis=1)
    return out


def n_params_from_manifest(manifest: Mapping) -> dict[str, float]:
    """{'base': N, 'oracle': N} from a run manifest."""
    try:
        return {m: float(manifest["models"][m]["n_params"]) for m in MODELS}
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError("manifest has no models.base.n_params / models.oracle.n_params") from exc


def add_seconds_per_sample(counts: pd.DataFrame, source: str) -> pd.DataFrame:
    """Validated counts with measured ``seconds`` sums -> adds ``cost_per_sample`` = seconds / n (the ``seconds`` model)."""
    if SECONDS_COLUMN not in counts.columns:
        raise CountsError(f"{source}: cost model 'seconds' needs a '{SECONDS_COLUMN}' column (measured engine seconds per row)")
    column = counts[SECONDS_COLUMN]
    seconds = pd.to_numeric(column, errors="coerce").to_numpy(dtype=float)
    text = column.astype(str).str.strip().str.lower()
    missing = column.isna().to_numpy() | text.isin(["", "nan", "na", "n/a", "null", "none"]).to_numpy()
    wrong = ~missing & ~(np.isfinite(seconds) & (seconds > 0))  # a value, but not a time: name it
    if wrong.any():
        i = int(np.flatnonzero(wrong)[0])
        raise CountsError(f"{source}: column '{SECONDS_COLUMN}', row {i + 1}: measured seconds must be a number > 0, "
                          f"got {show_cell(column.iloc[i])}" + (f" ({int(wrong.sum())} rows affected)" if wrong.sum() > 1 else ""))
    unmeasured = ~np.isfinite(seconds)
    if unmeasured.any():
        names = sorted(set(map(str, counts["group"][unmeasured])))
        raise CountsError(
            f"{source}: cost model 'seconds': {int(unmeasured.sum())} row(s) have no measured time "
            f"(group(s) {', '.join(names[:10])}{', ...' if len(names) > 10 else ''}); samples written before "
            "`study sample` recorded block times have none. Re-sample them into a new run dir or use another --cost."
        )
    out = counts.copy()
    out["cost_per_sample"] = seconds / counts["n"].to_numpy(dtype=float)
    return out
