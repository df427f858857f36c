"""Sampler benchmarks, measured side by side in one process (this machine is noisy).

1. Engine throughput vs `transformers.generate` (sampling, same model, same prompts x n) on the toy base.
2. Switching overhead: a guided run's wall time vs base tokens / base-only tok/s + oracle tokens /
   oracle-only tok/s (the target is <= 1.25).

    python scripts/bench_sampler.py [--problems 20] [--n 50] [--threads 2]
"""
from __future__ import annotations

import argparse
import time

import torch

from experiments.toy.generator import held_out_problems
from sampling.models import load_pair
from sampling.policy import PolicySpec
from sampling.records import GuidedConfig, SampleRequest, SamplingParams, derive_seed
from sampling.torch_engine import TorchEngine

MAX_TOKENS = 192


def engine_run(engine: TorchEngine, prompts: list[tuple[int, ...]], n: int, spec: PolicySpec, block: int) -> tuple[float, int, int, int]:
    """Seconds, total generated tokens, base tokens, oracle tokens for n samples of each prompt."""
    config = GuidedConfig(spec, SamplingParams(1.0), SamplingParams(1.0), MAX_TOKENS)
    requests = [
        SampleRequest("bench", f"p{j}", i, derive_seed(1, f"p{j}", spec.name, i), prompt, config)
        for j, prompt in enumerate(prompts) for i in range(n)
    ]
    start = time.perf_counter()
    records = []
    for offset in range(0, len(requests), block):
        records += engine.run_block(requests[offset : offset + block])
    seconds = time.perf_counter() - start
    base = sum(r.base_decode for r in records)
    oracle = sum(r.oracle_decode for r in records)
    return seconds, base + oracle, base, oracle


def hf_generate(model, prompts: list[tuple[int, ...]], n: int, pad_id: int, eos_id: int, block: int) -> tuple[float, int]:
    """Seconds and generated tokens (up to and including EOS) for HF generate with left padding."""
    rows = [p for p in prompts for _ in range(n)]
    tokens, start = 0, time.perf_counter()
    for offset in range(0, len(rows), block):
        chunk = rows[offset : offset + block]
        width = max(map(len, chunk))
        ids = torch.full((len(chunk), width), pad_id)
        mask = torch.zeros_like(ids)
        for r, prompt in enumerate(chunk):
            ids[r, width - len(prompt):] = torch.tensor(prompt)
            mask[r, width - len(prompt):] = 1
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=MAX_TOKENS, do_sample=True,
                             temperature=1.0, top_p=None, top_k=None, pad_token_id=pad_id, eos_token_id=eos_id)
        for row in out[:, width:].tolist():
            tokens += row.index(eos_id) + 1 if eos_id in row else len(row)
    return time.perf_counter() - start, tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--problems", type=int, default=20)
    parser.add_argument("--n", type=int, default=50)
    parser.add_argument("--block", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pair = load_pair("toy:base", "toy:oracle")
    tok = pair.tokenizer
    prompts = [tuple([tok.bos_token_id] + tok.encode(p.prompt, add_special_tokens=False)) for p in held_out_problems(args.problems)]
    max_len = max(map(len, prompts)) + MAX_TOKENS
    engine = TorchEngine(pair.base, pair.oracle, tok.eos_token_id, slots=args.block, max_len=max_len)
    print(f"toy base {pair.manifest['base']['n_params']:,} params, oracle {pair.manifest['oracle']['n_params']:,}; "
          f"{args.problems} problems x n={args.n}, block {args.block}, {args.threads} threads")

    print("\n1. engine vs transformers.generate (base, T=1)")
    hf_s, hf_tok = hf_generate(pair.base, prompts, args.n, tok.pad_token_id, tok.eos_token_id, args.block)
    en_s, en_tok, _, _ = engine_run(engine, prompts, args.n, PolicySpec("base"), args.block)
    print(f"   transformers.generate: {hf_tok:8,d} tokens in {hf_s:6.1f} s = {hf_tok / hf_s:8,.0f} tok/s")
    print(f"   torch engine:          {en_tok:8,d} tokens in {en_s:6.1f} s = {en_tok / en_s:8,.0f} tok/s")
    print(f"   ratio engine / generate: {(en_tok / en_s) / (hf_tok / hf_s):.2f}x (target >= 2)")

    print("\n2. switching overhead")
    base_s, base_tok, _, _ = engine_run(engine, prompts, args.n, PolicySpec("base"), args.block)
    oracle_s, oracle_tok, _, _ = engine_run(engine, prompts, args.n, PolicySpec("oracle"), args.block)
    base_rate, oracle_rate = base_tok / base_s, oracle_tok / oracle_s
    print(f"   base-only {base_rate:,.0f} tok/s, oracle-only {oracle_rate:,.0f} tok/s")
    for spec in (PolicySpec("random", c=2, k=5, ref_length=50), PolicySpec("random", c=8, k=2, ref_length=50),
                 PolicySpec("entropy", tau=0.5, k=5, max_c=4)):
        seconds, _, b, o = engine_run(engine, prompts, args.n, spec, args.block)
        predicted = b / base_rate + o / oracle_rate
        print(f"   {spec.name}(c={spec.c or spec.max_c}, k={spec.k}{', tau=' + str(spec.tau) if spec.tau else ''}): "
              f"{b:,} base + {o:,} oracle tokens in {seconds:.1f} s; predicted {predicted:.1f} s; ratio {seconds / predicted:.2f} (target <= 1.25)")


if __name__ == "__main__":
    main()
