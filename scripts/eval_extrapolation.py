"""Held-out extrapolation test on real repeated-sampling counts: which estimator predicts larger-n coverage best?

For every model in the Pythia GSM8K counts (Schaeffer et al. 2025): K = the smallest n over that
model's problems, the target is the empirical coverage@K from the full counts (unbiased pass@K,
every problem has n >= K). Each problem's samples are then subsampled to m = K / ratio without
replacement — the subsampled successes are hypergeometric(n, correct, m) — and each estimator,
fitted on the subsample only, predicts coverage@K (a ratio× extrapolation), anchored to the
subsample's empirical coverage@m (the default) and, for comparison, not anchored. Reported: mean absolute
error, bias, RMSE and how often the 95% CI contains the target, per ratio and estimator.

    python scripts/eval_extrapolation.py [--counts tests/fixtures/pythia_gsm8k_counts.csv]
        [--ratios 10,100] [--reps 5] [--boot 200] [--json OUT.json]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fit import curves
from fit.analysis import FitOptions, GroupFit
from fit.counts import load_counts

ESTIMATORS = ("power_law/loglog", "power_law/nonlinear", "beta_binomial/beta", "beta_binomial/zi_beta",
              "ensemble", "ensemble/unanchored", "power_law/nonlinear/unanchored", "beta_binomial/beta/unanchored",
              "no extrapolation")
MIN_SUBSAMPLE = 8


def predict_all(frame: pd.DataFrame, k: float, n_boot: int, seed: int) -> dict[str, tuple]:
    """(coverage, low, high, method) at k from every estimator, each fitted on `frame` by the real code path."""
    weights = curves.bootstrap_weights(len(frame), n_boot, seed)

    def one(estimator: str, **opts: Any) -> tuple:
        """Fit with these options and predict at k."""
        g = GroupFit("g", frame, FitOptions(estimator=estimator, n_boot=n_boot, seed=seed, **opts), weights)
        p = next(iter(g.predict([k]).values()))
        return p["coverage"], p["low"], p["high"], p["method"]

    m = int(frame["n"].min())
    g = GroupFit("g", frame, FitOptions(n_boot=n_boot, seed=seed), weights)
    p = next(iter(g.predict([m]).values()))
    return {
        "power_law/loglog": one("power_law", power_law_method="loglog"),
        "power_law/nonlinear": one("power_law", power_law_method="nonlinear"),
        "beta_binomial/beta": one("beta_binomial", family="beta"),
        "beta_binomial/zi_beta": one("beta_binomial", family="zi_beta"),
        "ensemble": one("ensemble", power_law_method="nonlinear", family="beta"),
        "ensemble/unanchored": one("ensemble", power_law_method="nonlinear", family="beta", anchor=False),
        "power_law/nonlinear/unanchored": one("power_law", power_law_method="nonlinear", anchor=False),
        "beta_binomial/beta/unanchored": one("beta_binomial", family="beta", anchor=False),
        "no extrapolation": (p["coverage"], p["low"], p["high"], p["method"]),
    }


def evaluate(counts: pd.DataFrame, ratios: list[int], reps: int, n_boot: int) -> pd.DataFrame:
    """One row per (model, ratio, rep, estimator) with prediction, CI and target."""
    rows = []
    for gi, (model, frame) in enumerate(counts.groupby("group", sort=True)):
        n, c = frame["n"].to_numpy(), frame["correct"].to_numpy()
        big_k = int(n.min())
        target = float(curves.pass_at_k(n, c, big_k).mean())
        for ratio in ratios:
            m = big_k // ratio
            if m < MIN_SUBSAMPLE:
                continue
            for rep in range(reps):
                rng = np.random.default_rng([gi, ratio, rep])
                sub = pd.DataFrame({"problem": frame["problem"].to_numpy(), "n": m,
                                    "correct": rng.hypergeometric(c, n - c, m)})
                for est, (cov, lo, hi, method) in predict_all(sub, big_k, n_boot, rep).items():
                    rows.append({"model": model, "K": big_k, "ratio": ratio, "m": m, "rep": rep,
                                 "estimator": est, "method": method, "target": target,
                                 "pred": cov, "low": lo, "high": hi})
    return pd.DataFrame(rows)


def summarize(res: pd.DataFrame) -> pd.DataFrame:
    """Error metrics per ratio and estimator (over models and replicates)."""
    res = res.assign(err=res["pred"] - res["target"],
                     covered=(res["low"] <= res["target"]) & (res["target"] <= res["high"]))
    res["abs_err"] = res["err"].abs()
    g = res.groupby(["ratio", "estimator"], sort=True)
    out = g.agg(models=("model", "nunique"), fits=("pred", "size"), unavailable=("pred", lambda s: int(s.isna().sum())),
                mae=("abs_err", "mean"), median_ae=("abs_err", "median"), bias=("err", "mean"),
                rmse=("err", lambda e: float(np.sqrt(np.nanmean(e ** 2)))), ci_coverage=("covered", "mean"))
    return out.reset_index()


def markdown(df: pd.DataFrame) -> str:
    """A Markdown table (floats to 4 decimals)."""
    cells = [[f"{v:.4f}" if isinstance(v, float) else str(v) for v in row] for row in df.itertuples(index=False)]
    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in cells])


def main() -> None:
    """Run the evaluation and print a Markdown table."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    root = Path(__file__).resolve().parents[1]
    ap.add_argument("--counts", default=str(root / "tests/fixtures/pythia_gsm8k_counts.csv"))  # a copy of shared/data's
    ap.add_argument("--by", default="model")
    ap.add_argument("--ratios", default="10,100")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--boot", type=int, default=200)
    ap.add_argument("--json", default=None, help="write per-fit rows and the summary here")
    args = ap.parse_args()
    t0 = time.perf_counter()
    counts = load_counts(args.counts, by=args.by)
    res = evaluate(counts, [int(r) for r in args.ratios.split(",")], args.reps, args.boot)
    summary = summarize(res)
    elapsed = time.perf_counter() - t0
    pd.set_option("display.width", 200)
    print(markdown(summary))
    print(f"\n{res['model'].nunique()} models, {len(res) // len(ESTIMATORS)} subsample fits per estimator, {elapsed:.1f} s")
    if args.json:
        Path(args.json).write_text(json.dumps({"summary": summary.to_dict(orient="records"),
                                               "rows": res.to_dict(orient="records")}, indent=1))


if __name__ == "__main__":
    main()
