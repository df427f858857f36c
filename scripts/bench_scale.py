"""Memory and time of `study verify` and `study fit` on run dirs of growing size (synthetic, MATH-like texts).

    python scripts/bench_scale.py                       # 100k and 400k samples
    python scripts/bench_scale.py --samples 1000000 --factor 10

Writes two synthetic run dirs (S and factor x S samples: 1.5 KB completions with a boxed answer,
token columns, a manifest) under a temp folder, then runs `study verify` (grading every sample) and
`study fit --no-plots` on each in a fresh process, side by side, and prints wall time, peak resident
memory (that process's own ru_maxrss) and the large/small ratios. Bounded memory shows as a memory
ratio well below the size ratio.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from verify.synthetic import ProblemSpec, write_run_dir  # noqa: E402

FILLER = ("Let us simplify the expression step by step. " * 40)[:1500]
CONFIGS = ["base", "oracle", "random-c1-k2", "random-c4-k5", "entropy-t0.5-k5-m4"]


def make_run(root: Path, samples: int, n: int, seed: int = 0) -> Path:
    """A run dir of about `samples` samples: problems x CONFIGS x n, 512 samples per shard, as `study sample` writes."""
    problems = max(1, samples // (n * len(CONFIGS)))
    rng = np.random.default_rng(seed)
    specs = [ProblemSpec(f"test/algebra/{i}.json", str(i), "Compute x.", 1 + i % 5, "Algebra") for i in range(problems)]
    frames = []
    for c, config in enumerate(CONFIGS):
        rate = rng.beta(1 + c, 2, problems)
        pid = np.repeat(np.arange(problems), n)
        index = np.tile(np.arange(n), problems)
        right = rng.random(len(pid)) < rate[pid]
        answer = np.where(right, pid, pid + 7 * rng.integers(1, 30, len(pid)))
        length = rng.integers(200, 800, len(pid))
        frames.append(pd.DataFrame({
            "config_id": config, "problem_id": [specs[p].id for p in pid], "sample_index": index.astype(np.int32),
            "text": [f"Sample {i}: {FILLER}The answer is $\\boxed{{{a}}}$." for i, a in zip(index, answer)],
            "base_decode": length, "base_prefill": length // 4, "oracle_decode": length // 10 * c,
            "oracle_prefill": length // 2 * c}))
    run = write_run_dir(root, specs, pd.concat(frames, ignore_index=True), shard_rows=512)
    manifest = {"models": {"base": {"path": "b", "n_params": 1.5e9}, "oracle": {"path": "o", "n_params": 7e9}},
                "configs": {config: {"policy": config.split("-")[0]} for config in CONFIGS}, "n": n, "seed": seed}
    (run / "_manifest.json").write_text(json.dumps(manifest))
    return run


def measure(command: list[str]) -> tuple[float, float]:
    """(wall seconds, peak RSS in GB) of one command in a fresh process."""
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               env={**os.environ, "PYTHONPATH": str(REPO)})
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{process.stderr.read().decode()[-2000:]}")
    return wall, usage.ru_maxrss / 1e6  # kilobytes on Linux


def main() -> None:
    """Build the two run dirs, measure verify and fit on each, print the table and ratios."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=100_000, help="samples in the small run dir")
    parser.add_argument("--factor", type=int, default=4, help="the large run dir has this many times more")
    parser.add_argument("--n", type=int, default=1000, help="samples per problem and config")
    parser.add_argument("--make", nargs=2, metavar=("DIR", "SAMPLES"), help=argparse.SUPPRESS)  # internal
    args = parser.parse_args()
    if args.make:  # in its own process: a child's peak RSS counts its parent's at fork, so the parent stays small
        make_run(Path(args.make[0]), int(args.make[1]), args.n)
        return
    smallest = args.n * len(CONFIGS)  # one problem's samples: a run dir holds a whole number of problems
    if args.samples * args.factor < 2 * smallest:
        parser.error(f"--samples {args.samples} x --factor {args.factor} would give both run dirs one problem of "
                     f"{smallest:,} samples (n = {args.n} x {len(CONFIGS)} configs): raise --samples or lower --n")
    study = [sys.executable, "-m", "experiments.cli"]
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, size in (("small", args.samples), ("large", args.samples * args.factor)):
            run = Path(tmp) / label
            subprocess.run([sys.executable, __file__, "--make", str(run), str(size), "--n", str(args.n)], check=True)
            total = sum(len(pd.read_parquet(p, columns=["sample_index"])) for p in (run / "samples").rglob("*.parquet"))
            verify = measure([*study, "verify", str(run), "--no-progress"])
            fit = measure([*study, "fit", str(run), "--no-plots", "--json", str(Path(tmp) / f"{label}.json")])
            rows[label] = (total, verify, fit)
            print(f"{label}: {total:,} samples  verify {verify[0]:.1f} s, {verify[1]:.2f} GB  "
                  f"fit {fit[0]:.1f} s, {fit[1]:.2f} GB", flush=True)
    (n_small, v_small, f_small), (n_large, v_large, f_large) = rows["small"], rows["large"]
    print(f"large / small: samples {n_large / n_small:.1f}x  verify time {v_large[0] / v_small[0]:.2f}x, "
          f"memory {v_large[1] / v_small[1]:.2f}x  fit time {f_large[0] / f_small[0]:.2f}x, memory {f_large[1] / f_small[1]:.2f}x")


if __name__ == "__main__":
    main()
