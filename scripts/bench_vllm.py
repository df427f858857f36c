"""vLLM engine benchmarks on the toy models, measured side by side in one process (this machine is noisy).

1. Guided overhead: a guided run's wall time vs plain vLLM generation of the same tokens: the base
   generating exactly each sample's base_decode tokens and the oracle exactly its oracle_decode
   tokens (ignore_eos, same prompts, one batch each). Target: <= 1.5x. The guided run also does
   what plain generation does not: the oracle prefills the base's tokens before each intervention
   (accounted work), so a second baseline gives each plain request a prompt as long as the tokens
   that model prefilled in the guided run (the switching overhead proper).
2. Throughput on the toy oracle: oracle-only sampling, vLLM engine vs torch engine, tokens/s.

Each measurement is repeated (`--repeats`, interleaved) and the fastest kept: noise only adds time.

    OMP_NUM_THREADS=2 python scripts/bench_vllm.py [--problems 20] [--n 25] [--repeats 3]
    OMP_NUM_THREADS=2 python scripts/bench_vllm.py --configs judge-a0.2-k3-e8-m4 --no-throughput --judge-windows 1
"""
from __future__ import annotations

import argparse
import contextlib
import os
import time
from collections.abc import Iterator

from experiments.toy.generator import held_out_problems
from experiments.toy.tokenizer import prompt_ids
from sampling.models import load_pair
from sampling.policy import PolicySpec
from sampling.records import GuidedConfig, SampleRequest, SamplingParams, derive_seed
from sampling.torch_engine import TorchEngine
from sampling.vllm_engine import vllm_engine_for

MAX_TOKENS = 192
GUIDED = {
    "random-c4-k5": PolicySpec("random", c=4, k=5, ref_length=50),
    "random-c1-k2": PolicySpec("random", c=1, k=2, ref_length=50),
    "entropy-t0.5-k5-m4": PolicySpec("entropy", tau=0.5, k=5, max_c=4),
    "judge-a0.2-k3-e8-m4": PolicySpec("judge", alpha=0.2, k=3, every=8, max_c=4),
}


def requests_for(prompts: list[tuple[int, ...]], n: int, spec: PolicySpec, config_id: str) -> list[SampleRequest]:
    """n sampled requests per prompt for one policy."""
    config = GuidedConfig(spec, SamplingParams(1.0), SamplingParams(1.0), MAX_TOKENS)
    return [SampleRequest(config_id, f"p{j}", i, derive_seed(1, f"p{j}", config_id, i), prompt, config)
            for j, prompt in enumerate(prompts) for i in range(n)]


def cold(*llms) -> None:
    """Empty the prefix caches: a repeated measurement must not reuse the previous one's blocks."""
    for llm in llms:
        llm.reset_prefix_cache()


@contextlib.contextmanager
def counting_steps(llm) -> Iterator[list[int]]:
    """Count the scheduler steps (forward passes) of a vLLM `LLM` inside the block: [count].

    The wrapper is removed on leaving: it refers to the engine, and while that cycle lives the engine
    is not shut down when the script ends (on a GPU its engine-core process then kept the script alive)."""
    counter, step = [0], llm.llm_engine.step

    def counted():
        counter[0] += 1
        return step()

    llm.llm_engine.step = counted
    try:
        yield counter
    finally:
        del llm.llm_engine.step


def timed(engine, requests):
    """Seconds and records of one engine call (a vLLM engine starts with empty prefix caches)."""
    if engine.name == "vllm":
        cold(*[llm for llm in (engine.base, engine.oracle) if llm is not None])
    start = time.perf_counter()
    records = engine.run_block(requests)
    return time.perf_counter() - start, records


def plain_generate(llm, prompts: list[tuple[int, ...]], lengths: list[int]) -> float:
    """Seconds for plain vLLM sampling of exactly `lengths[i]` tokens after prompts[i] (one batch)."""
    from vllm import SamplingParams as VllmParams
    from vllm.inputs import TokensPrompt

    pairs = [(p, n) for p, n in zip(prompts, lengths) if n > 0]
    cold(llm)
    start = time.perf_counter()
    llm.generate([TokensPrompt(prompt_token_ids=list(p)) for p, _ in pairs],
                 [VllmParams(temperature=1.0, max_tokens=n, ignore_eos=True, seed=i, detokenize=False)
                  for i, (_, n) in enumerate(pairs)], use_tqdm=False)
    return time.perf_counter() - start


def prefix(prompt_ids: tuple[int, ...], token_ids: list[int], length: int) -> tuple[int, ...]:
    """The first `length` tokens (at least 1) of a sample's prompt + generated tokens."""
    return tuple((list(prompt_ids) + list(token_ids))[: max(1, length)])


def guided_vs_plain(engine, prompts: list[tuple[int, ...]], args: argparse.Namespace, oracle_steps: list[int]) -> None:
    """Benchmark 1: each guided config's wall time against plain generation of the same tokens, printed."""
    print(f"{args.problems} problems x n={args.n} = {args.problems * args.n} samples per config, threads={os.environ.get('OMP_NUM_THREADS')}, "
          f"fastest of {args.repeats}")
    print("1. guided vLLM run vs plain vLLM generation of the same base and oracle tokens")
    for config_id in args.configs:
        spec = GUIDED[config_id]
        requests = requests_for(prompts, args.n, spec, config_id)
        sample_prompts = [r.prompt_ids for r in requests]
        guided, plain, processed, at_once = [], [], [], []
        for _ in range(args.repeats):
            oracle_steps[0] = 0
            seconds, records = timed(engine, requests)  # the same records every time (seeded)
            guided.append(seconds)
            batched_steps, oracle_steps[0] = oracle_steps[0], 0
            held = engine.admit_fraction, engine.max_hold
            engine.admit_fraction, engine.max_hold = 0.0, 0  # no oracle batching: each request admitted at once
            at_once.append(timed(engine, requests)[0])
            engine.admit_fraction, engine.max_hold = held
            unbatched_steps = oracle_steps[0]
            plain.append(plain_generate(engine.base, sample_prompts, [r.base_decode for r in records])
                         + plain_generate(engine.oracle, sample_prompts, [r.oracle_decode for r in records]))
            # the same, with each model also prefilling as many tokens as it prefilled in the guided
            # run (the oracle reading what the base wrote, the base reading the oracle's tokens)
            processed.append(sum(
                plain_generate(model, [prefix(q.prompt_ids, r.token_ids, getattr(r, prefilled)) for q, r in zip(requests, records)],
                               [getattr(r, decoded) for r in records])
                for model, prefilled, decoded in ((engine.base, "base_prefill", "base_decode"), (engine.oracle, "oracle_prefill", "oracle_decode"))))
        seconds, plain_s, processed_s = min(guided), min(plain), min(processed)
        base_tokens, oracle_tokens = sum(r.base_decode for r in records), sum(r.oracle_decode for r in records)
        print(f"  {config_id:22s} guided {seconds:6.2f} s  plain {plain_s:6.2f} s  ratio {seconds / plain_s:4.2f}  "
              f"(base {base_tokens:,} + oracle {oracle_tokens:,} tokens, {sum(r.interventions for r in records) / len(records):.2f} interventions/sample)")
        print(f"  {'':22s} plain with the same prefills {processed_s:6.2f} s  ratio {seconds / processed_s:4.2f}")
        print(f"  {'':22s} guided without oracle batching {min(at_once):6.2f} s  ratio {min(at_once) / plain_s:4.2f}  "
              f"(oracle forward passes {batched_steps} batched, {unbatched_steps} without)")


def main() -> None:
    """Run both benchmarks and print the ratios."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--problems", type=int, default=20)
    parser.add_argument("--n", type=int, default=25)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--configs", nargs="+", choices=list(GUIDED), default=list(GUIDED), help="guided configs to run")
    parser.add_argument("--no-throughput", action="store_true", help="skip the vLLM vs torch throughput comparison")
    parser.add_argument("--judge-windows", type=int, default=None, help="the engine's judge_windows option (default: the engine's)")
    args = parser.parse_args()
    pair = load_pair("toy:base", "toy:oracle")
    tok = pair.tokenizer
    options = {} if args.judge_windows is None else {"judge_windows": args.judge_windows}
    engine = vllm_engine_for(pair, max_model_len=320, options=options)  # in-process on CPU; on a GPU one engine-core process per model
    prompts = [prompt_ids(tok, p) for p in held_out_problems(args.problems)]
    engine.run_block(requests_for(prompts[:4], 2, GUIDED["random-c4-k5"], "warmup"))  # compile/warm both models
    with counting_steps(engine.oracle) as oracle_steps:
        guided_vs_plain(engine, prompts, args, oracle_steps)
    if args.no_throughput:
        return
    print("2. toy oracle throughput (oracle-only sampling), vLLM engine vs torch engine")
    requests = requests_for(prompts, args.n, PolicySpec("oracle"), "oracle")
    torch_engine = TorchEngine(pair.base, pair.oracle, tok.eos_token_id, slots=len(requests), max_len=320)
    results = {}
    for name, eng in (("vllm", engine), ("torch", torch_engine)):
        runs = [timed(eng, requests) for _ in range(args.repeats)]
        seconds, records = min(runs, key=lambda run: run[0])
        tokens = sum(len(r.token_ids) for r in records)
        results[name] = tokens / seconds
        print(f"  {name:6s} {tokens:,} tokens in {seconds:5.2f} s = {tokens / seconds:,.0f} tok/s")
    print(f"  vllm / torch throughput: {results['vllm'] / results['torch']:.2f}x")


if __name__ == "__main__":
    main()
