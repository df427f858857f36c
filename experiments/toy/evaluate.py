"""Toy-world model quality: pass@1 at temperature 1, greedy accuracy, and base coverage@N."""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Callable

import numpy as np

from experiments.toy.generator import ToyProblem, held_out_problems
from experiments.toy.tokenizer import prompt_ids
from experiments.toy.train import toy_answer_value
from sampling.policy import PolicySpec
from sampling.records import GuidedConfig, SampleRequest, SamplingParams, derive_seed

EVAL_MAX_TOKENS = 192


@dataclass
class ToyEval:
    """Accuracy numbers for one model on the held-out toy test set."""

    model: str
    problems: int
    samples_per_problem: int
    pass_at_1: float
    pass_at_1_by_level: dict[int, float]
    greedy_accuracy: float
    coverage: float  # fraction of problems with at least one correct sample


def _correct(text_ids: list[int], decode: Callable[[list[int]], str], answer: Fraction) -> bool:
    """Exact rational comparison of the boxed answer with the reference."""
    return toy_answer_value(decode(text_ids)) == answer


def evaluate_model(
    engine, decode: Callable[[list[int]], str], prompts: dict[str, tuple[int, ...]], problems: list[ToyProblem],
    role: str, samples: int, block_size: int, on_samples: Callable[[int], None] | None = None,
) -> ToyEval:
    """pass@1 (T=1, `samples` per problem), greedy accuracy, and coverage@samples for base or oracle."""
    policy = PolicySpec("base" if role == "base" else "oracle")
    answers = {p.id: toy_answer_value(f"\\boxed{{{p.answer}}}") for p in problems}
    counts = {}
    for temperature, n in ((1.0, samples), (0.0, 1)):
        config = GuidedConfig(policy, SamplingParams(temperature), SamplingParams(temperature), EVAL_MAX_TOKENS)
        items = [(p.id, i) for p in problems for i in range(n)]
        correct = {p.id: 0 for p in problems}
        for start in range(0, len(items), block_size):
            block = items[start : start + block_size]
            requests = [SampleRequest(role, pid, i, derive_seed(12345, pid, role, i), prompts[pid], config) for pid, i in block]
            for record in engine.run_block(requests):
                correct[record.problem_id] += _correct(record.token_ids, decode, answers[record.problem_id])
            if on_samples is not None:
                on_samples(len(block))
        counts[temperature] = correct
    per_problem = np.array([counts[1.0][p.id] / samples for p in problems])
    levels = sorted({p.level for p in problems})
    return ToyEval(
        model=role, problems=len(problems), samples_per_problem=samples,
        pass_at_1=float(per_problem.mean()),
        pass_at_1_by_level={lv: float(np.mean([counts[1.0][p.id] / samples for p in problems if p.level == lv])) for lv in levels},
        greedy_accuracy=float(np.mean([counts[0.0][p.id] for p in problems])),
        coverage=float(np.mean([counts[1.0][p.id] > 0 for p in problems])),
    )


def evaluate_pair(
    base_name: str = "toy:base", oracle_name: str = "toy:oracle", problems: int = 50,
    base_samples: int = 1000, oracle_samples: int = 100, block_size: int = 512, progress=None,
) -> list[ToyEval]:
    """Evaluate the toy pair on the first `problems` held-out test problems."""
    from sampling.models import load_pair
    from sampling.torch_engine import TorchEngine

    pair = load_pair(base_name, oracle_name)
    tokenizer = pair.tokenizer
    chosen = held_out_problems(problems)
    prompts = {p.id: prompt_ids(tokenizer, p) for p in chosen}
    max_len = max(map(len, prompts.values())) + EVAL_MAX_TOKENS
    results = []
    for role, model, samples in (("base", pair.base, base_samples), ("oracle", pair.oracle, oracle_samples)):
        engine = TorchEngine(model, model, tokenizer.eos_token_id, slots=block_size, max_len=max_len)
        # samples at temperature 1 plus one greedy sample per problem
        task = progress.add_task(f"eval {role}", total=len(chosen) * (samples + 1)) if progress is not None else None
        on_samples = (lambda count, task=task: progress.update(task, advance=count)) if progress is not None else None
        decode = lambda ids: tokenizer.decode(ids, skip_special_tokens=True)  # noqa: E731
        results.append(evaluate_model(engine, decode, prompts, chosen, role, samples, block_size, on_samples))
    return results
