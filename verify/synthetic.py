"""Synthetic completions and run dirs with a realistic answer distribution, for tests and benchmarks.

Each problem gets a correct rate, its reference answer in a few spellings, a Zipf-weighted handful
of wrong answers, and some garbage: completions with no answer (truncated), unique junk answers,
a truncated (unbalanced) box, and on request pathological ones (a tower of powers, a 1 MB text).
Texts are the problem's reference solution with its final box replaced by the sampled answer, in
one of several closing styles (boxed, "The final answer is", GSM8K `####`).
"""
from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from sampling.store import PROBLEMS, SAMPLES_DIR, SAMPLES_SCHEMA, TEXTS_KEY, problems_schema, texts_digest
from verify.equivalence import exact_number

__all__ = ["SAMPLE_SCHEMA", "load_math500", "answer_forms", "wrong_answers", "make_samples", "write_run_dir"]

SAMPLE_SCHEMA = SAMPLES_SCHEMA
PATHOLOGICAL = ("10^{10^{10^{10}}}", "\\frac{1}{2", "(((((((((((((((((((((((((((((((1)))")
_CLOSINGS = (
    "\n\nTherefore, the answer is $\\boxed{{{a}}}$.",
    "\n\nSo the final result is $\\boxed{{{a}}}$",
    "\n\nHence $x = \\boxed{{{a}}}$.",
    "\n\nFinal Answer: The final answer is ${a}$. I hope it is correct.",
    "\n#### {a}",
)
_CLOSING_P = (0.55, 0.2, 0.1, 0.1, 0.05)


@dataclass(frozen=True)
class ProblemSpec:
    """One problem: id, reference answer, solution text, level, subject."""

    id: str
    answer: str
    solution: str
    level: int | None = None
    subject: str | None = None
    problem: str = ""


def load_math500(path: str | os.PathLike[str]) -> list[ProblemSpec]:
    """MATH-500 records (JSONL with problem, solution, answer, subject, level, unique_id)."""
    specs = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                row = json.loads(line)
                specs.append(
                    ProblemSpec(
                        row["unique_id"], row["answer"], row["solution"], row.get("level"), row.get("subject"), row["problem"]
                    )
                )
    return specs


def answer_forms(answer: str) -> list[str]:
    """Spellings of a reference answer a model might write (most are equivalent to it)."""
    forms = [answer]
    for variant in (
        answer.replace("\\frac", "\\dfrac"),
        answer.replace(" ", ""),
        answer.replace("\\left", "").replace("\\right", ""),
    ):
        if variant not in forms:
            forms.append(variant)
    value = exact_number(answer)
    if value is not None:
        if value.denominator == 1:
            forms.append(f"x = {value.numerator}")
            if abs(value.numerator) >= 10000:
                forms.append(f"{value.numerator:,}".replace(",", "{,}"))
        elif all(p in (2, 5) for p in _prime_factors(value.denominator)):
            forms.append(f"{float(value):g}")
        forms.append(f"{value.numerator}/{value.denominator}" if value.denominator != 1 else f"{value.numerator}.0")
    return forms


def _prime_factors(m: int) -> list[int]:
    """Prime factors of a small positive integer (with repetition)."""
    out, p = [], 2
    while p * p <= m:
        while m % p == 0:
            out.append(p)
            m //= p
        p += 1
    return out + ([m] if m > 1 else [])


def wrong_answers(answer: str, others: Sequence[str], rng: np.random.Generator, count: int) -> list[str]:
    """count plausible wrong answers: near misses of the reference, then other problems' answers."""
    value = exact_number(answer)
    wrong: list[str] = []
    if value is not None and value.denominator == 1:
        v = value.numerator
        wrong += [str(v + 1), str(v - 1), str(2 * v), str(v + 10), str(-v) if v else "1"]
    elif value is not None:
        p, q = value.numerator, value.denominator
        wrong += [f"\\frac{{{q}}}{{{p}}}" if p else "1", f"\\frac{{{p + 1}}}{{{q}}}", f"{p}"]
    pool = [o for o in others if o != answer]
    picks = rng.choice(len(pool), size=min(len(pool), count), replace=False) if pool else []
    wrong += [pool[i] for i in picks]
    wrong += [str(int(x)) for x in rng.integers(-50, 1000, size=count)]
    unique = list(dict.fromkeys(w for w in wrong if w != answer))
    return unique[:count]


def _body(solution: str) -> str:
    """A solution with its final box (and what follows) removed."""
    cut = solution.rfind("\\boxed")
    return solution[:cut] if cut != -1 else solution


def make_samples(
    problems: Sequence[ProblemSpec],
    n: int,
    seed: int = 0,
    config_id: str = "base",
    no_answer_rate: float = 0.02,
    junk_rate: float = 0.003,
    pathological: int = 0,
    huge_chars: int = 0,
) -> pd.DataFrame:
    """n samples per problem: DataFrame with config_id, problem_id, sample_index, text.

    pathological: how many problems get one sample with each of PATHOLOGICAL's answers;
    huge_chars > 0 adds one completion of that many characters (a runaway generation).
    """
    rng = np.random.default_rng(seed)
    answers = [p.answer for p in problems]
    frames = []
    for pi, spec in enumerate(problems):
        body = _body(spec.solution)
        forms = answer_forms(spec.answer)
        wrong = wrong_answers(spec.answer, answers, rng, int(rng.integers(2, 25)))
        zipf = 1.0 / np.arange(1, len(wrong) + 1) ** 1.3
        p_correct = float(rng.beta(0.7, 0.7))
        p_junk, p_none = junk_rate, no_answer_rate
        p_wrong = max(0.0, 1.0 - p_correct - p_junk - p_none)
        kind = rng.choice(4, size=n, p=np.array([p_correct, p_wrong, p_none, p_junk]) / (p_correct + p_wrong + p_none + p_junk))
        form_pick = rng.choice(len(forms), size=n, p=_decreasing(len(forms)))
        wrong_pick = rng.choice(len(wrong), size=n, p=zipf / zipf.sum())
        closing = rng.choice(len(_CLOSINGS), size=n, p=_CLOSING_P)
        cut = rng.integers(len(body) // 3, len(body) + 1, size=n)
        texts = []
        for i in range(n):
            k = kind[i]
            if k == 2:  # truncated: no answer
                texts.append(body[: cut[i]])
                continue
            if k == 0:
                ans = forms[form_pick[i]]
            elif k == 1:
                ans = wrong[wrong_pick[i]]
            else:  # unique junk, half numeric, half not
                ans = str(int(rng.integers(10**6, 10**9))) if i % 2 else f"{int(rng.integers(10**6))}\\,\\mathrm{{q}}_{{{i}}}"
            texts.append(body + _CLOSINGS[closing[i]].format(a=ans))
        if pi < pathological:
            for j, ans in enumerate(PATHOLOGICAL):
                texts[j] = body + f"\n\nSo the answer is $\\boxed{{{ans}}}$"
        frames.append(
            pd.DataFrame(
                {
                    "config_id": config_id,
                    "problem_id": spec.id,
                    "sample_index": np.arange(n, dtype=np.int32),
                    "text": texts,
                }
            )
        )
    samples = pd.concat(frames, ignore_index=True)
    if huge_chars > 0 and len(samples):
        filler = "Let me reconsider the previous step. " * (huge_chars // 72 + 1)
        boxed = "\\boxed{" + "1+" * (huge_chars // 4) + "1}"
        samples.loc[len(samples) - 1, "text"] = filler[: huge_chars - len(boxed)] + boxed
    return samples


def _decreasing(m: int) -> np.ndarray:
    """Probabilities 1/1, 1/2, ... normalised."""
    w = 1.0 / np.arange(1, m + 1)
    return w / w.sum()


def _fill_sample_columns(samples: pd.DataFrame) -> pa.Table:
    """The full samples-table schema from a frame with at least config/problem/index/text."""
    frame = samples.copy()
    count = len(frame)
    lengths = frame["text"].fillna("").str.len().to_numpy() // 4
    defaults = {
        "seed": np.arange(count, dtype=np.int64),
        "token_ids": [[] for _ in range(count)],
        "provenance": [[] for _ in range(count)],
        "base_entropy": [[] for _ in range(count)],
        "interventions": np.zeros(count, dtype=np.int32),
        "finish_reason": "eos",
        "base_decode": lengths.astype(np.int64),
        "base_prefill": np.full(count, 120, dtype=np.int64),
        "oracle_decode": np.zeros(count, dtype=np.int64),
        "oracle_prefill": np.zeros(count, dtype=np.int64),
        "discarded": np.zeros(count, dtype=np.int64),
    }
    for column, value in defaults.items():
        if column not in frame.columns:
            frame[column] = value
    return pa.Table.from_pandas(frame[SAMPLE_SCHEMA.names], schema=SAMPLE_SCHEMA, preserve_index=False)


def write_run_dir(
    path: str | os.PathLike[str],
    problems: Sequence[ProblemSpec],
    samples: pd.DataFrame,
    shard_rows: int = 100_000,
) -> Path:
    """Write _problems.parquet and samples/CONFIG/shard-*.parquet (the samples-table schema) under path."""
    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    rows = [{"id": p.id, "problem": p.problem, "answer": p.answer, "level": p.level, "subject": p.subject} for p in problems]
    pq.write_table(pa.Table.from_pylist(rows, schema=problems_schema()), root / PROBLEMS)
    for config, part in samples.groupby("config_id", sort=True):
        folder = root / SAMPLES_DIR / str(config)
        folder.mkdir(parents=True, exist_ok=True)
        existing = len(list(folder.glob("shard-*.parquet")))
        for i, start in enumerate(range(0, len(part), shard_rows)):
            table = _fill_sample_columns(part.iloc[start : start + shard_rows])
            table = table.replace_schema_metadata({**(table.schema.metadata or {}), TEXTS_KEY: texts_digest(table).encode()})
            pq.write_table(table, folder / f"shard-{existing + i:05d}.parquet")
    return root
