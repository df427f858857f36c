"""Equivalence: required equivalences and near misses, the strict grader, the fast path's exactness,
vote keys, MATH-500 reference solutions, and pathological inputs within the time limit."""
from __future__ import annotations

import json
import random
import time
from pathlib import Path

import pytest

import verify
from verify.batch import grade_batch
from verify.equivalence import (
    _parse,
    answer_key,
    exact_number,
    fast_verdict,
    math_verify_equal,
    timed_math_verify,
)
from verify.pool import TaskPool
from verify.strict import is_equiv, strip_string

FIXTURES = Path(__file__).parent / "fixtures"

MUST_HOLD = [  # (answer, reference)
    ("0.5", "\\frac{1}{2}"),
    ("\\frac12", "\\frac{1}{2}"),
    ("1/2", "\\frac{1}{2}"),
    ("\\dfrac{3}{2}", "1.5"),
    ("1.5", "\\frac{3}{2}"),
    ("(3,\\pi/2)", "\\left( 3, \\frac{\\pi}{2} \\right)"),
    ("x=5", "5"),
    ("5", "x=5"),
    ("90", "90^\\circ"),
    ("90^\\circ", "90"),
    ("Evelyn", "\\text{Evelyn}"),
    ("\\text{Evelyn}", "Evelyn"),
    ("\\sqrt{117}", "3\\sqrt{13}"),
    ("3\\sqrt{13}", "\\sqrt{117}"),
    ("[2, 5)", "[2,5)"),
    ("(-\\infty,3]", "(-\\infty, 3]"),
    ("(-\\infty, -2) \\cup (3, \\infty)", "(-\\infty,-2)\\cup(3,\\infty)"),
    ("10000", "10{,}000"),
    ("10{,}000", "10000"),
    ("\\{2, 1\\}", "\\{1,2\\}"),
    ("\\frac{\\sqrt{3}}{2}", "\\frac{1}{2}\\sqrt3"),
    ("3.", "3"),  # a closing full stop inside the box
    ("1\\,234", "1234"),  # a thin space grouping digits
    ("1\\!234", "1{,}234"),
    ("8 000", "8000"),  # digits grouped by spaces (SI style) are one number
    ("12 345.5", "12345.5"),
    ("90°", "90^\\circ"),  # degrees as math-verify reads them
    ("90\\degree", "90^\\circ"),
    ("6 - 5 i", "6 - 5i"),  # a space before the imaginary unit made i a different symbol
    ("1+274\\, i", "1+274i"),
    ("\\text{east.}", "\\text{east}"),  # a full stop closing the text
    ("52_{\\text{8}}", "52_8"),  # numbers in a base: compared by value and base
    ("(52)_8", "52_8"),
    ("52_{\\text{eight}}", "52_8"),
    ("52_{\\text{octal}}", "52_8"),
    ("{(-1,6)}", "(-1,6)"),  # braces grouping the whole answer (a TeX group) change nothing
    ("{\\text{even}}", "\\text{even}"),
    ("{58,500}", "58,500"),
    ("18 dollars", "18"),  # a number's unit in plain words is dropped, as in \\text{} (both read alike)
    ("18 cookies", "18"),
    ("18 dollars per hour", "18"),
    ("18 times", "18"),
    ("{5 \\choose 2}", "10"),  # braces that make a binomial stay
    ("{10 \\choose 3}", "\\binom{10}{3}"),
    ("25 percent", "0.25"),  # words that change the value stay for math-verify to read
    ("25 percent", "25"),
    ("5 xy", "5xy"),  # a short word may be variables
    ("{5.}", "5"),
    ("\\text{(C) Plane}", "\\text{(C)}"),  # a choice letter with the choice's name
    ("(E) Hyperbola", "\\text{(E)}"),
    ("\\frac{20,000}{\\pi}", "\\frac{20000}{\\pi}"),  # thousands separators inside a fraction
    ("\\frac{20{,}000}{\\pi}", "\\frac{20000}{\\pi}"),
    ("864 \\text{ in}^2", "864 \\mbox{ inches}^2"),  # spellings of one unit agree
    ("15 \\text{ square centimeters}", "15\\mbox{ cm}^2"),
    ("18.90 \\text{ dollars}", "\\$18.90"),
    ("90 \\text{ degrees}", "90^\\circ"),
    ("60 \\text{ miles per hour}", "60\\text{ mph}"),
    ("12 \\text{ square units}", "12"),  # a unit the reference does not name decides nothing
    ("42 \\text{ inches}", "42"),
    ("0.333333", "\\frac13"),  # a decimal rounded at its last place
    ("0.3333333333", "\\frac{1}{3}"),
    ("0.6666666", "\\frac{2}{3}"),  # or cut off there
    ("0.0000672", ".0000672"),
    ("\\{-2, 1\\}", "1,-2"),
    ("45\\text{ mi}/\\text{hr}", "45\\text{ mph}"),  # a unit written as a quotient of text groups
    ("5\\,\\text{m}/\\text{s}", "5\\text{ m/s}"),
    ("864\\text{ in}\\cdot\\text{in}", "864\\mbox{ inches}^2"),
    ("100\\text{ mL}", "100\\text{ cm}^3"),  # a millilitre is a cubic centimetre
    ("1.50\\text{ dollars per pound}", "\\$1.50"),  # a rate against a plain unit decides nothing
    ("0.8333333333333334", "\\frac{5}{6}"),  # a program's printed double
    ("3.3333333333333335", "\\frac{10}{3}"),
    ("0.20000000000000001", "\\frac15"),
    ("(c) Plane.", "\\text{(C)}"),
]

NEAR_MISSES = [  # (answer, reference)
    ("(2,1)", "(1,2)"),
    ("\\frac{4}{15}", "\\frac{15}{4}"),
    ("x=-5", "x=5"),
    ("-5", "5"),
    ("[2,5]", "[2,5)"),
    ("3\\sqrt{12}", "3\\sqrt{13}"),
    ("\\text{Eve}", "\\text{Evelyn}"),
    ("10001", "10{,}000"),
    ("3.5", "3"),
    ("1\\,234", "1"),
    ("52_9", "52_8"),  # math-verify ignores subscripts
    ("4343_{7}", "4343_6"),
    ("91°", "90^\\circ"),
    ("6 - 4 i", "6 - 5i"),
    ("8 000", "0"),  # not 8 times 000
    ("1 2345", "12345"),  # not a group of three: left as math-verify reads it
    ("52_3", "52_8"),  # digits the base does not have, or no base (math-verify would ignore the subscript)
    ("204_3", "204_5"),
    ("52_{40}", "52_8"),
    ("40_0", "40_9"),
    ("19 dollars", "18"),
    ("2 pi", "2\\pi"),  # a word of mathematics is not a unit
    ("{1}{2}", "(1,2)"),  # two groups, not one
    ("5 squared", "5"),
    ("3 halves", "3"),
    ("5 sixths", "5"),
    ("1 billion", "1"),
    ("5 xy", "5"),
    ("\\text{(A) Line}", "\\text{(C)}"),
    ("5.4 \\text{ dollars}", "5.4 \\text{ cents}"),  # math-verify drops units; differing ones are wrong
    ("864 \\text{ feet}^2", "864 \\mbox{ inches}^2"),
    ("15 \\text{ cm}", "15\\mbox{ cm}^2"),
    ("\\frac{270}{7}\\text{ radians}", "\\frac{270}7\\text{ degrees}"),
    ("90 \\text{ radians}", "90^\\circ"),
    ("\\{2,4\\}", "(2,4)"),  # a set for a tuple or an interval (math-verify reads them alike)
    ("\\left\\{ 5, \\infty \\right\\}", "(5,\\infty)"),
    ("\\{3,4\\}", "(3,4]"),
    ("0.0000673", ".0000672"),  # math-verify compares numbers to 6 decimal places
    ("0.03515626", "\\frac{9}{256}"),
    ("0.1428572", "\\frac{1}{7}"),
    ("5.0000001", "5"),
    ("0.8333333333333344", "\\frac{5}{6}"),  # long, but not the double nearest 5/6
    ("{\\{2,4\\}}", "(2,4)"),  # braces around the whole answer change nothing
    ("{5\\text{ m}^2}", "5\\text{ cm}^2"),
]


@pytest.mark.parametrize(("answer", "reference"), MUST_HOLD)
def test_equivalences_hold(answer: str, reference: str) -> None:
    """Equivalent spellings grade correct, through extraction and directly."""
    assert verify.is_equivalent(answer, reference, timeout=10)
    assert verify.grade(f"Thus the answer is $\\boxed{{{answer}}}$.", reference, timeout=10)


@pytest.mark.parametrize(("answer", "reference"), NEAR_MISSES)
def test_near_misses_fail(answer: str, reference: str) -> None:
    """Close but different answers grade wrong."""
    assert not verify.is_equivalent(answer, reference, timeout=10)
    assert not verify.grade(f"\\boxed{{{answer}}}", reference, timeout=10)


def test_no_answer_is_wrong() -> None:
    """A completion without an extractable answer is wrong, never an error."""
    assert verify.grade("I give up.", "5") is False
    assert verify.grade("", "5") is False
    assert verify.is_equivalent("  ", "5") is False


def test_unknown_grader_rejected() -> None:
    """Only the two graders exist."""
    with pytest.raises(ValueError, match="unknown grader"):
        verify.grade("\\boxed{5}", "5", grader="exact")


@pytest.mark.parametrize(
    ("answer", "reference", "expected"),
    [
        ("\\frac12", "\\frac{1}{2}", True),
        ("0.5", "\\frac{1}{2}", True),  # MATH's special case
        ("0.25", "\\frac{1}{4}", False),  # ...which covers only 0.5
        ("3/4", "\\frac{3}{4}", True),
        ("\\dfrac{3}{4}", "\\frac{3}{4}", True),
        ("k = 5", "5", True),
        ("\\left( 1, 2 \\right)", "(1,2)", True),
        ("90^\\circ", "90", True),
        ("\\$18.90", "18.90", True),
        ("5 \\text{ cm}", "5", True),
        ("\\text{Evelyn}", "Evelyn", False),  # classic behaviour, unlike math-verify
        ("10{,}000", "10000", False),
        ("(2,1)", "(1,2)", False),
        ("\\left( \\pi/2, 1 \\right)", "(\\pi/2,1)", True),  # a non-integer a/b is left as it is, not an error
        ("\\pi / 2", "\\pi/2", True),
        (None, "5", False),
    ],
)
def test_strict_grader_is_classic_math(answer: str | None, reference: str, expected: bool) -> None:
    """The strict grader reproduces MATH's is_equiv, quirks included."""
    assert is_equiv(answer, reference) is expected
    if answer is not None:
        assert verify.is_equivalent(answer, reference, grader="strict") is expected


def test_strict_normalisation_details() -> None:
    """strip_string's documented rewrites, and its fallback to raw comparison on errors."""
    assert strip_string("\\frac12") == "\\frac{1}{2}"
    assert strip_string("\\sqrt3") == "\\sqrt{3}"
    assert strip_string(".5") == "\\frac{1}{2}"
    assert strip_string("\\pi/2") == "\\pi/2"
    assert is_equiv("\\sqrt", "\\sqrt")  # normalisation raises; raw strings compared
    assert not is_equiv("\\sqrt", "\\sqrt{}")


def _random_number_string(rng: random.Random) -> str:
    """An integer or integer fraction in one of the spellings the fast path reads."""
    a = rng.choice([0, 1, 2, 3, 4, 6, 7, 12, 100, -3, -1, 10**30 + 7])
    b = rng.choice([1, 2, 3, 4, 6, 8, 12])
    form = rng.randrange(7)
    if form == 0:
        return str(a)
    if form == 6 and b < 10:  # TeX's single-digit argument without braces
        return f"\\frac{{{a}}}{b}" if a < 0 or a > 9 else f"\\frac{a}{b}"
    if form == 1:
        return f"\\frac{{{a}}}{{{b}}}"
    if form == 2:
        return f"{a}/{b}"
    if form == 3:
        return f"-\\frac{{{abs(a)}}}{{{b}}}"
    if form == 4:
        return f"\\dfrac{{{a}}}{{{b}}}"
    return "0" + str(abs(a))


def test_fast_path_agrees_with_math_verify() -> None:
    """Whenever the fast path decides, math-verify decides the same (random integers and fractions)."""
    rng = random.Random(1234)
    decided = 0
    for _ in range(150):
        reference, answer = _random_number_string(rng), _random_number_string(rng)
        fast = fast_verdict(reference, answer)
        assert fast is not None
        decided += 1
        assert fast == math_verify_equal(reference, answer), (reference, answer)
    assert decided == 150
    # identical strings are equal; anything else is left to math-verify
    assert fast_verdict("\\pi", "\\pi") is True
    assert fast_verdict("0.5", "\\frac{1}{2}") is None
    assert fast_verdict("x=5", "5") is None
    assert exact_number("\\frac{3}{0}") is None
    assert exact_number("٣") is None  # only ASCII digits: math-verify does not read other scripts


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ("\\frac12", "0.5", True),
        ("0.5", "1/2", True),
        ("\\frac{2}{4}", "\\dfrac{1}{2}", True),
        ("\\sqrt{117}", "3\\sqrt{13}", True),
        ("x = 7", "7", True),
        ("x+1", "1+x", True),
        ("(1,2)", "(2,1)", False),
        ("\\frac{4}{15}", "\\frac{15}{4}", False),
        ("7", "-7", False),
        ("Monday", "\\text{Monday}", True),  # bare words parse as products of letters, \\text{} as one name
        ("\\textbf{no solution}", "no  solution", True),
        ("Monday", "Tuesday", False),
        ("\\text{Monday}", "\\text{Tuesday}", False),
    ],
)
def test_vote_keys_group_equivalent_answers(a: str, b: str, same: bool) -> None:
    """Majority-vote keys: one key for equivalent spellings, different keys for different answers."""
    assert (answer_key(_parse(a, 5), a) == answer_key(_parse(b, 5), b)) is same


def test_math500_reference_solutions_all_correct() -> None:
    """All 500 MATH-500 reference solutions grade correct against their answers, also by math-verify alone."""
    rows = [json.loads(line) for line in (FIXTURES / "math500.jsonl").read_text().splitlines() if line]
    solutions = [r["solution"] for r in rows]
    answers = [r["answer"] for r in rows]
    result = grade_batch(solutions, answers, timeout=10)
    assert result.frame["correct"].all()
    assert result.stats.no_answer == 0
    # the same verdict from math-verify itself, with no fast path, on every one of the 500
    extracted = result.frame["extracted"].tolist()
    with TaskPool(timeout=30) as pool:
        outcomes = pool.map(timed_math_verify, [(ref, ans, 10, False) for ref, ans in zip(answers, extracted)])
    failures = [(answers[i], o) for i, o in enumerate(outcomes) if not (o.ok and o.value[0])]
    assert failures == []


HANGS_IN_C = ("\\boxed{10^{10^{10^{10}}}}", "p - q")  # sympy stalls in C; only the pool's kill stops it


@pytest.mark.parametrize(
    ("completion", "reference"),
    [
        HANGS_IN_C,
        ("\\boxed{10^{10^{10^{10}}}}", "5"),
        ("so \\boxed{\\frac{1}{2}", "\\frac{1}{2}"),  # unbalanced: no answer
        ("\\boxed{" + "{" * 5000 + "}" * 4999, "1"),
        ("\\boxed{" + "1+" * 250_000 + "1}", "3"),  # a 500 kB answer
        ("Let me think. " * 75_000 + "\\boxed{((((((((((((((((((((((((((((1)))}", "1"),  # a 1 MB completion
        ("\\boxed{5" + " " * 100_000 + "x}", "5"),  # a long run of spaces (no regex may backtrack over it twice)
        ("\\boxed{5" + " " * 100_000 + "x}", "90^\\circ"),
        ("\\boxed{1\\text{" + " " * 3000 + "}x}", "5\\text{ cm}"),  # text groups, tildes, thin spaces, nested groups
        ("\\boxed{1" + "~" * 40_000 + "x}", "5\\text{ cm}"),
        ("\\boxed{1" + "\\," * 40_000 + "x}", "5\\text{ cm}"),
        ("\\boxed{" + "\\text{" * 15_000 + "(C) Plane" + "}" * 15_000 + "}", "\\text{(D)}"),
        ("\\boxed{" + "{" * 5000 + "1" + "}" * 5000 + "}", "5"),
    ],
)
def test_pathological_inputs_finish_within_the_limit(completion: str, reference: str) -> None:
    """Each is graded False within the hard limit (plus process-restart slack): no hang, no crash."""
    verify.is_equivalent("x^2+1", "1+x^2", timeout=10)  # the shared worker is started outside the timing
    limit = 1.0
    start = time.perf_counter()
    assert verify.grade(completion, reference, timeout=limit) is False
    assert time.perf_counter() - start < limit + 3.0
