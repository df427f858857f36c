"""Benchmark: grade 1,000,000 synthetic samples (100 MATH-500 problems x 10,000) with `verify.grade_run`.

Prints, side by side: the cold grading time (and its phases), the warm re-run time, the cost of
calling math-verify once per sample (measured on a random subset, and extrapolated), and whether
the pipeline's verdicts are identical to per-sample math-verify calls on that subset.

    OMP_NUM_THREADS=1 python scripts/bench_verify.py                 # the full benchmark
    OMP_NUM_THREADS=1 python scripts/bench_verify.py --samples 500   # a quick run
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from verify.equivalence import timed_math_verify  # noqa: E402
from verify.extract import extract_answer  # noqa: E402
from verify.run_grades import grade_run_with_stats, read_problems  # noqa: E402
from verify.pool import TaskPool  # noqa: E402
from verify.synthetic import load_math500, make_samples, write_run_dir  # noqa: E402

FIXTURE = ROOT / "tests" / "fixtures" / "math500.jsonl"


def _parse_args() -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--problems", type=int, default=100, help="problems (from MATH-500)")
    parser.add_argument("--samples", type=int, default=10_000, help="samples per problem")
    parser.add_argument("--subset", type=int, default=1000, help="random samples checked against per-sample math-verify")
    parser.add_argument("--workers", type=int, default=None, help="grading workers (default: all CPUs)")
    parser.add_argument("--timeout", type=float, default=5.0, help="per-comparison time limit (s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", type=Path, default=None, help="write the run dir here and keep it")
    return parser.parse_args()


def _per_sample_baseline(
    references: list[str], texts: list[str], extracted: list[str | None], timeout: float
) -> dict[str, tuple[list[bool], np.ndarray]]:
    """Per-sample math-verify (no dedup, no fast path, no grade cache), three ways, as {name: (verdicts, seconds)}.

    "warm": on each extracted answer, in run order (math-verify's own parse caches help, as in a
    plain loop); "cold": the same with those caches emptied before every call; "raw": math-verify's
    own extraction on the whole completion. Calls run one at a time in a one-worker pool (so a
    pathological sample cannot hang the benchmark); times are taken inside the worker.
    """
    results: dict[str, tuple[list[bool], np.ndarray]] = {}
    with TaskPool(workers=1, timeout=max(timeout * 4, 20.0)) as pool:
        for name, cold in (("warm", False), ("cold", True)):
            tasks = [(r, e, timeout, False, cold) for r, e in zip(references, extracted) if e is not None]
            outcomes = iter(pool.map(timed_math_verify, tasks))
            verdicts, costs = [], []
            for e in extracted:
                if e is None:  # no answer: wrong, and math-verify is never called
                    verdicts.append(False)
                    continue
                outcome = next(outcomes)
                verdict, cost = outcome.value if outcome.ok else (False, float("nan"))
                verdicts.append(verdict)
                costs.append(cost)
            results[name] = (verdicts, np.array(costs))
        raw = pool.map(timed_math_verify, [(r, t, timeout, True, False) for r, t in zip(references, texts)])
        results["raw"] = (
            [bool(o.ok and o.value[0]) for o in raw],
            np.array([o.value[1] if o.ok else float("nan") for o in raw]),
        )
    return results


def _cost_text(costs: np.ndarray) -> str:
    """'median 0.19 ms, p99 26.8 ms; n=984'."""
    return f"median {np.nanmedian(costs) * 1e3:.2f} ms, p99 {np.nanpercentile(costs, 99) * 1e3:.1f} ms; n={len(costs)}"


def _row(name: str, value: str, note: str = "") -> tuple[str, str, str]:
    """One line of the results table."""
    return name, value, note


def main() -> None:
    """Run the benchmark and print its measurements."""
    args = _parse_args()
    workdir = args.keep or Path(tempfile.mkdtemp(prefix="bench_verify_"))
    if args.keep and workdir.exists():
        shutil.rmtree(workdir)
    try:
        problems = load_math500(FIXTURE)[: args.problems]
        t0 = time.perf_counter()
        samples = make_samples(problems, args.samples, seed=args.seed, pathological=2, huge_chars=1_000_000)
        write_run_dir(workdir, problems, samples)
        total = len(samples)
        del samples
        t_setup = time.perf_counter() - t0
        print(f"generated and wrote {total:,} samples in {t_setup:.1f} s -> {workdir}", flush=True)

        cold, cold_stats = grade_run_with_stats(workdir, progress=True, timeout=args.timeout, workers=args.workers)
        warm_start = time.perf_counter()
        warm, warm_stats = grade_run_with_stats(workdir, progress=False, timeout=args.timeout, workers=args.workers)
        t_warm = time.perf_counter() - warm_start
        batch = cold_stats.batch
        assert batch is not None and warm_stats.newly_graded == 0
        assert cold.equals(warm)

        # Per-sample math-verify on a random subset, and the identical-verdicts check.
        rng = np.random.default_rng(args.seed + 1)
        subset = np.sort(rng.choice(total, size=min(args.subset, total), replace=False))
        import pyarrow.parquet as pq

        texts_all = pq.read_table(workdir / "samples", columns=["config_id", "problem_id", "sample_index", "text"]).to_pandas()
        texts_all = texts_all.sort_values(["config_id", "problem_id", "sample_index"], kind="stable").reset_index(drop=True)
        chosen = texts_all.iloc[subset].reset_index(drop=True)
        del texts_all
        answers = dict(zip(*read_problems(workdir)[["id", "answer"]].T.values))
        references = [answers[p] for p in chosen["problem_id"]]
        texts = chosen["text"].tolist()
        extracted = [extract_answer(t) for t in texts]
        t1 = time.perf_counter()
        baseline = _per_sample_baseline(references, texts, extracted, args.timeout)
        t_base = time.perf_counter() - t1
        ours = cold.merge(chosen[["config_id", "problem_id", "sample_index"]], on=["config_id", "problem_id", "sample_index"])
        ours_correct = ours["correct"].tolist()
        base, costs = baseline["warm"]
        mismatches = [i for i, (a, b) in enumerate(zip(ours_correct, base)) if a != b]
        cold_mismatches = sum(a != b for a, b in zip(ours_correct, baseline["cold"][0]))
        raw, raw_costs = baseline["raw"]
        raw_agree = sum(a == b for a, b in zip(ours_correct, raw))

        answered = 1 - batch.no_answer / batch.samples
        workers = args.workers or len(os.sched_getaffinity(0))
        phases = batch.seconds
        io = cold_stats.seconds - sum(phases.values())

        def extrapolated(costs: np.ndarray) -> tuple[str, str, str]:
            hours = float(np.nanmean(costs)) * answered * total / 3600
            return _row("  => per-sample loop", f"{hours:.2f} h", f"all {total:,} samples ({hours * 60 / workers:.0f} min on {workers} workers)")

        rows = [
            _row("samples graded", f"{total:,}", f"{args.problems} problems x {args.samples:,}"),
            _row("grading, cold (grade_run)", f"{cold_stats.seconds:.1f} s", f"{total / cold_stats.seconds:,.0f} samples/s"),
            _row("  read + write Parquet", f"{io:.1f} s"),
            _row("  extract answers", f"{phases['extract']:.1f} s"),
            _row("  dedupe pairs", f"{phases['dedupe']:.1f} s"),
            _row("  grade unique pairs", f"{phases['grade']:.1f} s", f"{workers} worker(s)"),
            _row("distinct (reference, answer) pairs", f"{batch.pairs:,}", f"{batch.pairs / total:.2%} of samples"),
            _row("  decided by fast path", f"{batch.fast:,}"),
            _row("  decided by math-verify", f"{batch.verified:,}"),
            _row("  timed out / errors", f"{batch.timeouts} / {batch.errors}", f"limit {args.timeout:g} s"),
            _row("samples with no answer", f"{batch.no_answer:,}", f"{batch.no_answer / total:.2%}"),
            _row("grading, warm re-run", f"{t_warm:.2f} s", "nothing left to grade"),
            _row("math-verify per sample, in order", f"{np.nanmean(costs) * 1e3:.2f} ms", _cost_text(costs)),
            extrapolated(costs),
            _row("math-verify per sample, caches cold", f"{np.nanmean(baseline['cold'][1]) * 1e3:.2f} ms", _cost_text(baseline["cold"][1])),
            extrapolated(baseline["cold"][1]),
            _row("math-verify per sample, raw text", f"{np.nanmean(raw_costs) * 1e3:.2f} ms", "its own extraction on the whole completion; " + _cost_text(raw_costs)),
            _row(
                "identical verdicts (subset)",
                f"{len(base) - len(mismatches)}/{len(base)}",
                f"pipeline vs per-sample math-verify on the extracted answer (cold: {len(base) - cold_mismatches}/{len(base)})",
            ),
            _row("  agreement with raw-text math-verify", f"{raw_agree}/{len(raw)}", "informational: its extraction differs"),
            _row("baseline subset wall time", f"{t_base:.1f} s"),
        ]
        width = max(len(r[0]) for r in rows)
        vwidth = max(len(r[1]) for r in rows)
        print()
        print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; "
              f"python {platform.python_version()}, math-verify {metadata.version('math-verify')}, sympy {metadata.version('sympy')}")
        for name, value, note in rows:
            print(f"{name:<{width}}  {value:>{vwidth}}  {note}")
        for i in mismatches[:10]:
            print(f"MISMATCH ref={references[i]!r} extracted={extracted[i]!r} pipeline={ours_correct[i]} math-verify={base[i]}")
        if mismatches or cold_mismatches:
            sys.exit(1)
    finally:
        if args.keep is None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    pd.set_option("display.width", 200)
    main()
