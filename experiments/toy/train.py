"""Train the toy base/oracle pair (tiny Llama models, character level) on CPU, deterministically."""
from __future__ import annotations

import json
import math
import random
import re
import time
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from experiments.toy.generator import ToyProblem, iter_split, held_out_problems
from experiments.toy.tokenizer import build_tokenizer, prompt_ids
from sampling.models import readable_as_umask

# Training mix: harder levels dominate (levels 1-2 saturate for both models and squash the gap).
TRAIN_LEVEL_WEIGHTS = {1: 1.0, 2: 1.0, 3: 2.0, 4: 3.0, 5: 3.0}
MAX_POSITIONS = 320


@dataclass(frozen=True)
class ModelSpec:
    """Architecture and training schedule of one toy model."""

    name: str
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    steps: int
    batch_size: int
    lr: float
    bf16: bool = False
    warmup: int = 100


# Schedules chosen so that, on the held-out test set at temperature 1, the base lands at
# pass@1 10-40% and the oracle at >= 2x the base (see BENCHMARKS.md for the measurements).
# Head size 32 everywhere: vLLM's CPU attention supports only head sizes 32, 64, 80, 96, ...
BASE_SPEC = ModelSpec("base", 96, 4, 3, 256, steps=3000, batch_size=32, lr=3e-3)
ORACLE_SPEC = ModelSpec("oracle", 224, 4, 7, 608, steps=6000, batch_size=32, lr=2e-3, bf16=True)
BUCKET_BATCHES = 8  # examples for this many batches are drawn at once and grouped by length
SPECS = {spec.name: spec for spec in (BASE_SPEC, ORACLE_SPEC)}


def make_model(spec: ModelSpec, tokenizer: PreTrainedTokenizerFast) -> LlamaForCausalLM:
    """A freshly initialised LlamaForCausalLM of the given size."""
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_heads,
        max_position_embeddings=MAX_POSITIONS,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        dtype="float32",
    )
    return LlamaForCausalLM(config)


def encode_example(tokenizer: PreTrainedTokenizerFast, problem: ToyProblem) -> tuple[list[int], int]:
    """Token ids `<bos> prompt solution <eos>` and the prompt length (loss starts after it)."""
    prompt = list(prompt_ids(tokenizer, problem))
    solution = tokenizer.encode(problem.solution, add_special_tokens=False) + [tokenizer.eos_token_id]
    return prompt + solution, len(prompt)


def make_batch(examples: list[tuple[list[int], int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded input ids and labels (-100 on prompt and padding)."""
    width = max(len(ids) for ids, _ in examples)
    inputs = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), -100, dtype=torch.long)
    for row, (ids, prompt_len) in enumerate(examples):
        inputs[row, : len(ids)] = torch.tensor(ids)
        labels[row, prompt_len : len(ids)] = torch.tensor(ids[prompt_len:])
    return inputs, labels


_BOXED = re.compile(r"\\boxed\{(-?)(?:\\frac\{(\d+)\}\{(\d+)\}|(\d+))\}\s*$")


def toy_answer_value(text: str) -> Fraction | None:
    """Exact value of a toy completion's final `\\boxed{}` (integers and \\frac only)."""
    match = _BOXED.search(text.strip())
    if not match:
        return None
    sign, num, den, integer = match.groups()
    try:
        value = Fraction(int(num), int(den)) if num is not None else Fraction(int(integer))
    except ZeroDivisionError:
        return None
    return -value if sign else value


@torch.no_grad()
def quick_pass_at_1(
    model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast, problems: list[ToyProblem],
    temperature: float, seed: int = 0, max_new_tokens: int = 200,
) -> float:
    """Fraction of problems solved by one sample each (HF generate; a training-time monitor)."""
    model.eval()
    torch.manual_seed(seed)
    prompts = [list(prompt_ids(tokenizer, p)) for p in problems]
    width = max(map(len, prompts))
    ids = torch.full((len(prompts), width), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, prompt in enumerate(prompts):  # left padding for generation
        ids[row, width - len(prompt):] = torch.tensor(prompt)
        mask[row, width - len(prompt):] = 1
    out = model.generate(
        input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens,
        do_sample=temperature > 0, temperature=temperature if temperature > 0 else None, top_p=None, top_k=None,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    texts = tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)
    model.train()
    solved = [toy_answer_value(t) == Fraction(_answer_value(p)) for t, p in zip(texts, problems)]
    return sum(solved) / len(solved)


def _answer_value(problem: ToyProblem) -> Fraction:
    """Exact value of a problem's reference answer."""
    value = toy_answer_value(f"\\boxed{{{problem.answer}}}")
    assert value is not None, problem.answer
    return value


def _length_bucketed_batches(
    tokenizer: PreTrainedTokenizerFast, stream, batch_size: int, rng: random.Random
):
    """Endless batches; each group of BUCKET_BATCHES batches is sorted by length to cut padding."""
    while True:
        examples = [encode_example(tokenizer, next(stream)) for _ in range(batch_size * BUCKET_BATCHES)]
        examples.sort(key=lambda ex: len(ex[0]))
        group = [examples[i : i + batch_size] for i in range(0, len(examples), batch_size)]
        rng.shuffle(group)
        for batch in group:
            yield make_batch(batch, tokenizer.pad_token_id)


def save_model(model: LlamaForCausalLM, folder: Path) -> None:
    """save_pretrained as safetensors, the weights readable as the umask allows (other users' workers load them)."""
    model.save_pretrained(str(folder), safe_serialization=True)
    for weights in Path(folder).glob("*.safetensors"):
        readable_as_umask(weights)


def train_model(
    spec: ModelSpec, out_dir: Path, seed: int = 0, threads: int = 2,
    eval_every: int = 0, eval_problems: int = 100, checkpoints: bool = False, log=print,
) -> LlamaForCausalLM:
    """Train one model deterministically and save it (safetensors + config + tokenizer) to out_dir."""
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    random.seed(seed)
    tokenizer = build_tokenizer()
    model = make_model(spec, tokenizer)
    optimizer = torch.optim.AdamW(model.parameters(), lr=spec.lr, betas=(0.9, 0.98), weight_decay=0.01)
    # warmup then inverse-sqrt decay: independent of the total, so a run stopped at step s
    # equals a run configured with steps=s (checkpoints are valid shorter schedules)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / spec.warmup) * math.sqrt(spec.warmup / max(step + 1, spec.warmup))
    )
    stream = iter_split("train", seed=seed, level_weights=TRAIN_LEVEL_WEIGHTS)
    monitor = held_out_problems(eval_problems, seed=seed) if eval_every else []
    history: list[dict] = []
    start = time.time()
    model.train()
    batches = _length_bucketed_batches(tokenizer, stream, spec.batch_size, random.Random(seed))
    for step in range(1, spec.steps + 1):
        inputs, labels = next(batches)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=spec.bf16):
            loss = model(input_ids=inputs, labels=labels).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        evaluate = bool(eval_every) and (step % eval_every == 0 or step == spec.steps)
        if step % 50 == 0 or step == spec.steps or evaluate:
            entry = {"step": step, "loss": round(loss.item(), 4), "seconds": round(time.time() - start, 1)}
            if evaluate:
                entry["pass@1_t1"] = quick_pass_at_1(model, tokenizer, monitor, temperature=1.0, seed=step)
                if checkpoints:
                    save_model(model, out_dir / "checkpoints" / f"step-{step}")
            history.append(entry)
            log(json.dumps({"model": spec.name, **entry}))
    out_dir.mkdir(parents=True, exist_ok=True)
    save_model(model, out_dir)
    tokenizer.save_pretrained(str(out_dir))
    (out_dir / "training.json").write_text(
        json.dumps({"spec": asdict(spec), "seed": seed, "threads": threads, "history": history}, indent=1)
    )
    return model
