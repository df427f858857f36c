"""Sampler benchmarks, measured side by side in one process (this machine is noisy).

1. Engine throughput vs `transformers.generate` (sampling, same model, same prompts x n) on the toy base.
2. Switching overhead: a guided run's wall time vs the time its token work takes in pure runs
   (the target is <= 1.25). Two predictions are printed:
   - generated: base tokens / base-only tok/s + oracle tokens / oracle-only tok/s, counting only
     generated tokens (this ignores that the oracle must prefill everything the base wrote before
     each intervention, which is real, accounted work);
   - processed: the same with every token each model processes (prefill + decode) and each pure
     run's processed-token rate. This is the switching overhead proper.

    python scripts/bench_sampler.py [--problems 20] [--n 50] [--threads 2]
"""
from __future__ import annotations

import argparse
import time

import torch

from experiments.toy.generator import held_out_problems
from experiments.toy.tokenizer import prompt_ids
from sampling.models import load_pair
from sampling.policy import PolicySpec
from sampling.records import GuidedConfig, SampleRequest, SamplingParams, derive_seed
from sampling.torch_engine import TorchEngine

MAX_TOKENS = 192


def engine_run(engine: TorchEngine, prompts: list[tuple[int, ...]], n: int, spec: PolicySpec, block: int) -> tuple[float, dict[str, int]]:
    """Seconds and token counts (generated, base/oracle decode and processed) for n samples of each prompt."""
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
    counts = {
        "base": sum(r.base_decode for r in records), "oracle": sum(r.oracle_decode for r in records),
        "base_processed": sum(r.base_decode + r.base_prefill for r in records),
        "oracle_processed": sum(r.oracle_decode + r.oracle_prefill for r in records),
    }
    counts["generated"] = counts["base"] + counts["oracle"]
    return seconds, counts


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
    prompts = [prompt_ids(tok, p) for p in held_out_problems(args.problems)]
    max_len = max(map(len, prompts)) + MAX_TOKENS
    engine = TorchEngine(pair.base, pair.oracle, tok.eos_token_id, slots=args.block, max_len=max_len)
    print(f"toy base {pair.manifest['base']['n_params']:,} params, oracle {pair.manifest['oracle']['n_params']:,}; "
          f"{args.problems} problems x n={args.n}, block {args.block}, {args.threads} threads")

    print("\n1. engine vs transformers.generate (base, T=1)")
    hf_s, hf_tok = hf_generate(pair.base, prompts, args.n, tok.pad_token_id, tok.eos_token_id, args.block)
    en_s, en = engine_run(engine, prompts, args.n, PolicySpec("base"), args.block)
    print(f"   transformers.generate: {hf_tok:8,d} tokens in {hf_s:6.1f} s = {hf_tok / hf_s:8,.0f} tok/s")
    print(f"   torch engine:          {en['generated']:8,d} tokens in {en_s:6.1f} s = {en['generated'] / en_s:8,.0f} tok/s")
    print(f"   ratio engine / generate: {(en['generated'] / en_s) / (hf_tok / hf_s):.2f}x (target >= 2)")

    print("\n2. switching overhead")
    base_s, base = engine_run(engine, prompts, args.n, PolicySpec("base"), args.block)
    oracle_s, oracle = engine_run(engine, prompts, args.n, PolicySpec("oracle"), args.block)
    rate = {"base": base["base"] / base_s, "oracle": oracle["oracle"] / oracle_s,
            "base_processed": base["base_processed"] / base_s, "oracle_processed": oracle["oracle_processed"] / oracle_s}
    print(f"   base-only {rate['base']:,.0f} generated ({rate['base_processed']:,.0f} processed) tok/s; "
          f"oracle-only {rate['oracle']:,.0f} generated ({rate['oracle_processed']:,.0f} processed) tok/s")
    for spec in (PolicySpec("random", c=2, k=5, ref_length=50), PolicySpec("random", c=8, k=2, ref_length=50),
                 PolicySpec("entropy", tau=0.5, k=5, max_c=4)):
        seconds, c = engine_run(engine, prompts, args.n, spec, args.block)
        generated = c["base"] / rate["base"] + c["oracle"] / rate["oracle"]
        processed = c["base_processed"] / rate["base_processed"] + c["oracle_processed"] / rate["oracle_processed"]
        label = f"{spec.name}(c={spec.c or spec.max_c}, k={spec.k}{', tau=' + str(spec.tau) if spec.tau else ''})"
        print(f"   {label}: {seconds:.1f} s for {c['base']:,} base + {c['oracle']:,} oracle tokens "
              f"(processed {c['base_processed']:,} + {c['oracle_processed']:,})")
        print(f"      ratio to processed prediction {processed:.1f} s: {seconds / processed:.2f} (target <= 1.25); "
              f"to generated-only prediction {generated:.1f} s: {seconds / generated:.2f}")


if __name__ == "__main__":
    main()
