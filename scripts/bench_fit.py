"""Benchmark `study fit` on 1000 problems × 10 configs × n = 1000 (target: ≤ 10 s end to end).

Writes a synthetic counts file (per-problem p ~ Beta, different per config; token sums and costs
like a base/oracle study), then times the real CLI in a subprocess — start-up, imports, fits with
200 bootstrap replicates, the equal-compute comparison, fit.json and all plots — and, in process,
each stage separately.

    python scripts/bench_fit.py [--problems 1000] [--configs 10] [--n 1000] [--repeats 3]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd


def synthetic_counts(problems: int, configs: int, n: int, seed: int = 0) -> pd.DataFrame:
    """Counts with token sums for `configs` configs: base, oracle and guided mixtures in between."""
    rng = np.random.default_rng(seed)
    frames = []
    for j in range(configs):
        role = "base" if j == 0 else "oracle" if j == 1 else f"guided_{j - 1}"
        mix = 0.0 if j == 0 else 1.0 if j == 1 else j / (configs + 1)
        alpha, beta = 0.25 + 0.6 * mix, 3.0 - 1.5 * mix
        p = rng.beta(alpha, beta, problems)
        tokens = 300 * n
        frames.append(pd.DataFrame({
            "config": role, "problem": [f"p{i}" for i in range(problems)], "n": n,
            "correct": rng.binomial(n, p), "level": rng.integers(1, 6, problems),
            "base_decode": int((1 - mix) * tokens), "base_prefill": int((1 - mix) * 100 * n + mix * 50 * n),
            "oracle_decode": int(mix * tokens), "oracle_prefill": int(mix * 2 * tokens + 100 * n * (mix > 0)),
        }))
    return pd.concat(frames, ignore_index=True)


def in_process(path: Path, out: Path) -> dict[str, float]:
    """Seconds per stage of one in-process fit."""
    from fit import plots
    from fit.analysis import FitOptions, fit_groups
    from fit.counts import load_counts
    from fit.pipeline import FitRun, _finish, _with_costs

    t = {"start": time.perf_counter()}
    counts = load_counts(path)
    counts, model, unit = _with_costs(counts, None, "flops", {"base": 1e9, "oracle": 8e9}, None, str(path))
    t["load"] = time.perf_counter()
    options = FitOptions()
    groups = fit_groups(counts, options)
    t["fit"] = time.perf_counter()
    run = _finish(FitRun({"counts": str(path)}, counts, groups, options, None, model, unit,
                         {"base": "base", "oracle": "oracle"}), (0.5, 0.8, 0.95), None)
    t["compare"] = time.perf_counter()
    run.to_json()
    t["json"] = time.perf_counter()
    plots.all_plots(run, out / "plots_inproc")
    t["plots"] = time.perf_counter()
    keys = list(t)
    return {k: t[k] - t[p] for p, k in zip(keys, keys[1:])}


def main() -> None:
    """Run the benchmark and print the timings."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--problems", type=int, default=1000)
    ap.add_argument("--configs", type=int, default=10)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        path = tmp_path / "counts.parquet"
        synthetic_counts(args.problems, args.configs, args.n).to_parquet(path)
        cmd = [sys.executable, "-m", "experiments.cli", "fit", "--counts", str(path), "--n-params", "1e9,8e9",
               "--base", "base", "--oracle", "oracle", "--json", str(tmp_path / "fit.json"), "--plots", str(tmp_path / "plots")]
        env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
        walls = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
            walls.append(time.perf_counter() - t0)
        stages = in_process(path, tmp_path)
    print(f"study fit --counts: {args.problems} problems × {args.configs} configs × n={args.n}, 200 bootstrap replicates")
    print(f"end to end (CLI subprocess, incl. start-up, fit.json, all plots): "
          f"best {min(walls):.2f} s, median {np.median(walls):.2f} s over {len(walls)} runs (target ≤ 10 s)")
    print("in-process stages: " + ", ".join(f"{k} {v:.2f} s" for k, v in stages.items()))


if __name__ == "__main__":
    main()
