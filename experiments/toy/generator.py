"""The toy task: MATH-format arithmetic over integers and fractions with exact step-by-step solutions.

A problem is an expression such as ``\\frac{3}{4}+2\\times5-7``. The canonical solution rewrites the
expression once per operation (multiplication and division first, then left to right), keeping every
intermediate value in lowest terms, and ends with ``\\boxed{answer}``. Because every step is
determined, the canonical solution tells exactly where a sample first goes wrong.
"""
from __future__ import annotations

import functools
import hashlib
import itertools
import random
from dataclasses import dataclass
from fractions import Fraction
from typing import Iterator

OPS = ("+", "-", "\\times", "\\div")
MAX_NUMERATOR = 99  # bound on intermediate numerators (keeps solutions short)
MAX_DENOMINATOR = 30
PROMPT_TEMPLATE = "Compute ${expr}$.\n"

# level -> (number of operations, max integer operand, fraction probability, max denominator)
LEVELS: dict[int, tuple[int, int, float, int]] = {
    1: (1, 20, 0.0, 1),
    2: (2, 9, 0.0, 1),
    3: (2, 9, 0.3, 4),
    4: (3, 9, 0.3, 5),
    5: (4, 9, 0.3, 6),
}


@dataclass(frozen=True)
class ToyProblem:
    """One toy problem with its canonical solution."""

    id: str
    level: int
    expression: str
    prompt: str
    solution: str
    answer: str


def format_number(value: Fraction) -> str:
    """LaTeX for a rational: ``7``, ``-7``, ``\\frac{3}{4}``, ``-\\frac{3}{4}``."""
    if value.denominator == 1:
        return str(value.numerator)
    sign = "-" if value < 0 else ""
    return f"{sign}\\frac{{{abs(value.numerator)}}}{{{value.denominator}}}"


def _apply(op: str, left: Fraction, right: Fraction) -> Fraction:
    """Apply one operator."""
    if op == "+":
        return left + right
    if op == "-":
        return left - right
    if op == "\\times":
        return left * right
    return left / right


def render(values: list[Fraction], ops: list[str]) -> str:
    """LaTeX of an operand/operator sequence."""
    out = format_number(values[0])
    for op, value in zip(ops, values[1:]):
        out += op + format_number(value)
    return out


def reduce_steps(values: list[Fraction], ops: list[str]) -> list[tuple[list[Fraction], list[str]]]:
    """Operand/operator lists after each reduction (x and / first, then left to right)."""
    values, ops, out = list(values), list(ops), []
    while ops:
        index = next((i for i, op in enumerate(ops) if op in ("\\times", "\\div")), 0)
        values[index : index + 2] = [_apply(ops[index], values[index], values[index + 1])]
        del ops[index]
        out.append((list(values), list(ops)))
    return out


def solve_steps(values: list[Fraction], ops: list[str]) -> list[str]:
    """Expressions after each reduction step, the last one being the answer."""
    return [render(v, o) for v, o in reduce_steps(values, ops)]


def _operand(rng: random.Random, max_int: int, p_frac: float, max_den: int) -> Fraction:
    """Draw a positive integer or a proper-or-improper fraction in lowest terms."""
    if rng.random() < p_frac:
        den = rng.randint(2, max_den)
        num = rng.randint(1, 2 * den)
        value = Fraction(num, den)
        if value.denominator == 1:
            return Fraction(rng.randint(1, max_int))
        return value
    return Fraction(rng.randint(1, max_int))


def generate_problem(rng: random.Random, level: int) -> ToyProblem:
    """Draw one problem of the given level (no division by zero; answers stay small)."""
    n_ops, max_int, p_frac, max_den = LEVELS[level]
    while True:
        values = [_operand(rng, max_int, p_frac, max_den) for _ in range(n_ops + 1)]
        ops = [rng.choice(OPS) for _ in range(n_ops)]
        try:
            reductions = reduce_steps(values, ops)
        except ZeroDivisionError:
            continue
        # keep intermediate numbers readable: bounded numerators and denominators
        if all(abs(v.numerator) <= MAX_NUMERATOR and v.denominator <= MAX_DENOMINATOR for vals, _ in reductions for v in vals):
            break
    steps = [render(v, o) for v, o in reductions]
    expression = render(values, ops)
    solution = "".join(f"={step}\n" for step in steps) + f"\\boxed{{{steps[-1]}}}"
    uid = hashlib.sha1(expression.encode()).hexdigest()[:10]
    return ToyProblem(
        id=f"toy-{uid}",
        level=level,
        expression=expression,
        prompt=PROMPT_TEMPLATE.format(expr=expression),
        solution=solution,
        answer=steps[-1],
    )


def is_test_expression(expression: str) -> bool:
    """The split rule: a stable hash of the expression puts ~1/8 of all expressions in test."""
    return int(hashlib.sha256(expression.encode()).hexdigest(), 16) % 8 == 0


def iter_split(split: str, seed: int = 0, level_weights: dict[int, float] | None = None) -> Iterator[ToyProblem]:
    """Endless deterministic stream of one split ("train" or "test"); splits never share an expression."""
    if split not in ("train", "test"):
        raise ValueError(f"unknown toy split {split!r}: use 'train' or 'test'")
    weights = level_weights or {level: 1.0 for level in LEVELS}
    rng = random.Random(f"toy-{split}-{seed}")
    levels = sorted(weights)
    want_test = split == "test"
    while True:
        level = rng.choices(levels, weights=[weights[lv] for lv in levels])[0]
        problem = generate_problem(rng, level)
        if is_test_expression(problem.expression) == want_test:
            yield problem


def generate_split(
    split: str, count: int, seed: int = 0, level_weights: dict[int, float] | None = None
) -> list[ToyProblem]:
    """The first `count` distinct problems of a split's stream (a repeated expression is skipped: problem ids
    are the expression's hash, and a dataset's ids must be unique)."""
    seen: set[str] = set()
    distinct = (p for p in iter_split(split, seed, level_weights) if not (p.expression in seen or seen.add(p.expression)))
    return list(itertools.islice(distinct, count))


HELD_OUT_SIZE = 500  # the held-out test set (the `toy` dataset); smaller counts are its first problems


def held_out_problems(count: int = 200, seed: int = 0) -> list[ToyProblem]:
    """The first `count` problems of the held-out test set (HELD_OUT_SIZE problems, levels interleaved
    1..5, deterministic): the same problems `study sample --dataset toy --problems count` draws."""
    if not 0 <= count <= HELD_OUT_SIZE:
        raise ValueError(f"the toy held-out set has {HELD_OUT_SIZE} problems; asked for {count}")
    return list(_held_out_set(seed)[:count])


@functools.lru_cache(maxsize=4)
def _held_out_set(seed: int) -> tuple[ToyProblem, ...]:
    """The whole held-out set: equal numbers per level, distinct test expressions."""
    count = HELD_OUT_SIZE
    per_level: dict[int, list[ToyProblem]] = {level: [] for level in LEVELS}
    rng = random.Random(f"toy-test-balanced-{seed}")
    seen: set[str] = set()
    target = -(-count // len(LEVELS))
    attempts = 0
    while any(len(v) < target for v in per_level.values()):
        attempts += 1
        if attempts > 200 * target:
            raise ValueError(f"cannot draw {target} distinct held-out problems per level (too few exist)")
        for level in LEVELS:
            if len(per_level[level]) >= target:
                continue
            problem = generate_problem(rng, level)
            if not is_test_expression(problem.expression) or problem.expression in seen:
                continue
            seen.add(problem.expression)
            per_level[level].append(problem)
    interleaved = [p for group in zip(*per_level.values()) for p in group]
    return tuple(interleaved[:count])
