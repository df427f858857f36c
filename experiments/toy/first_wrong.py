"""Exact first-wrong-token location for toy-world samples.

A toy solution is fully determined by the expression (one reduction per line, lowest terms), and
the tokenizer is character level, so a sample's prefix can be continued into the canonical solution
exactly while it agrees with it character for character. The first wrong token is the first
generated token that differs from the canonical completion: a wrong character, the first extra
token after the whole canonical solution, or an end-of-sequence token before it is complete. A
sample cut off by max_tokens while still agreeing with the canonical text has no wrong token.
"""
from __future__ import annotations

import re
from fractions import Fraction

from experiments.toy.generator import OPS, render, solve_steps

_TOKEN = re.compile(r"\\frac\{(\d+)\}\{(\d+)\}|(\d+)|(\\times|\\div|\+|-)")
_PROBLEM = re.compile(r"^Compute \$(.+)\$\.\s*$")


class NotAToyProblem(ValueError):
    """The text is not a toy-world problem."""


def parse_expression(expression: str) -> tuple[list[Fraction], list[str]]:
    """Operands and operators of a toy expression such as ``\\frac{3}{4}+2\\times5``."""
    values: list[Fraction] = []
    ops: list[str] = []
    position = 0
    for match in _TOKEN.finditer(expression):
        if match.start() != position:
            raise NotAToyProblem(f"unexpected text {expression[position:match.start()]!r} in {expression!r}")
        position = match.end()
        num, den, integer, op = match.groups()
        if op is not None:
            if op not in OPS or len(ops) != len(values) - 1:
                raise NotAToyProblem(f"misplaced operator {op!r} in {expression!r}")
            ops.append(op)
        else:
            if len(values) != len(ops):
                raise NotAToyProblem(f"two operands in a row in {expression!r}")
            values.append(Fraction(int(num), int(den)) if num is not None else Fraction(int(integer)))
    if position != len(expression) or not values or len(ops) != len(values) - 1:
        raise NotAToyProblem(f"not a toy expression: {expression!r}")
    if render(values, ops) != expression:
        raise NotAToyProblem(f"not in canonical form: {expression!r}")
    return values, ops


def canonical_completion(problem: str) -> str:
    """The canonical solution text that follows a toy problem's prompt."""
    match = _PROBLEM.match(problem)
    if not match:
        raise NotAToyProblem(f"not a toy problem: {problem!r}")
    values, ops = parse_expression(match.group(1))
    steps = solve_steps(values, ops)
    return "".join(f"={step}\n" for step in steps) + f"\\boxed{{{steps[-1]}}}"


def first_wrong_token(problem: str, generated: list[str], stopped: bool) -> int | None:
    """Index of the first generated token that leaves the canonical solution, or None.

    `generated` holds the decoded text of each generated token (EOS excluded); `stopped` says
    whether the sample ended with EOS. None means the sample is the canonical solution or a
    truncation of it.
    """
    canonical = canonical_completion(problem)
    offset = 0
    for index, piece in enumerate(generated):
        if canonical[offset : offset + len(piece)] != piece:
            return index
        offset += len(piece)
    if stopped and offset < len(canonical):
        return len(generated)  # stopped early: the EOS itself is the first wrong token
    return None
