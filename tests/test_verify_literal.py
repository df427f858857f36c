"""study's literal verdicts: units, a set for a tuple, named choices (pure string functions)."""
from __future__ import annotations

import time

import pytest

from verify.equivalence import digits_disagree, fast_verdict
from verify.literal import choice_verdict, literal_verdict, set_for_tuple, unit_of


@pytest.mark.parametrize(("answer", "unit"), [
    ("5\\text{ cm}", (("cm",), 1)),
    ("15\\mbox{ cm}^2", (("cm",), 2)),
    ("15 \\text{ square centimeters}", (("cm",), 2)),
    ("216 \\text{ cubic feet}", (("ft",), 3)),
    ("864 \\text{ in}^{2}", (("in",), 2)),
    ("10 \\text{ in.}", (("in",), 1)),
    ("18 dollars", (("dollar",), 1)),
    ("\\$32,\\!348", (("dollar",), 1)),
    ("$\\$5$", (("dollar",), 1)),
    ("90^\\circ", (("deg",), 1)),
    ("90°", (("deg",), 1)),
    ("\\frac{270}7\\text{ degrees}", (("deg",), 1)),
    ("60 \\text{ mph}", (("mi", "per", "h"), 1)),
    ("60 \\text{ miles per hour}", (("mi", "per", "h"), 1)),
    ("3 \\text{ m/s}", (("m", "per", "s"), 1)),
    ("4 hrs", (("h",), 1)),
    ("45\\text{ mi}/\\text{hr}", (("mi", "per", "h"), 1)),
    ("864\\text{ in}\\cdot\\text{in}", (("in",), 2)),
    ("100\\text{ mL}", (("cm",), 3)),
    ("2\\text{ L}", (("dm",), 3)),
    ("5 cm^2", (("cm",), 2)),
])
def test_units_read(answer: str, unit: tuple) -> None:
    """Known units in their spellings, powers and plurals."""
    assert unit_of(answer) == unit


@pytest.mark.parametrize("answer", [
    "42", "144 \\text{ ways}", "12 \\text{ square units}", "3 \\text{ units}", "1251 \\text{ students}",
    "9 \\text{ a.m.}", "5 xy", "5 m", "\\text{east}", "\\text{(C)}", "2 \\text{ and } 3", "5.4 \\cent",
    "\\text{ cm}", "18 dollars and cents", "5\\text{ cm} + 3\\text{ m}", "1\\text{ if } x > 0",
    "1" * 400 + "\\text{ m}",  # too long to be read at all
])
def test_no_unit_read(answer: str) -> None:
    """No unit, an unknown word, a single plain letter (may be a variable), or no value before it: nothing decided."""
    assert unit_of(answer) is None


def test_units_decide_only_when_both_are_known() -> None:
    """Differing known units are wrong; the same unit, or one side without a known unit, is left to math-verify."""
    assert literal_verdict("5.4 \\text{ cents}", "5.4 \\text{ dollars}") is False
    assert literal_verdict("15\\mbox{ cm}^2", "15 \\text{ cm}") is False
    assert literal_verdict("864 \\mbox{ inches}^2", "864 \\text{ in}^2") is None
    assert literal_verdict("42", "42 \\text{ feet}") is None  # the question's unit is not known here
    assert literal_verdict("4 \\text{ m}", "4 \\text{ apples}") is None
    assert literal_verdict("\\$1.50", "1.50\\text{ dollars per pound}") is None  # the reference may leave "per" out
    assert literal_verdict("45\\text{ mph}", "45\\text{ km/h}") is False


@pytest.mark.parametrize("answer", [
    "1\\text{" + " " * 3000 + "}x", "1\\text{ if" + " " * 3000 + "}x>0", "1" + "~" * 40_000 + "x", "1" + "\\," * 40_000 + "x",
    "\\text{" * 15_000 + "(C) Plane" + "}" * 15_000, "5" + " " * 100_000 + "x", "{" * 5000 + "}" * 5000,
])
def test_long_answers_cost_linear_time(answer: str) -> None:
    """No pattern backtracks over a long answer (these run in the main process, outside the pool's time limit)."""
    start = time.perf_counter()
    for reference in ("5\\text{ cm}", "(1,2)", "\\text{(C)}", "5", "90^\\circ"):
        literal_verdict(reference, answer), literal_verdict(answer, reference)
        fast_verdict(reference, answer), fast_verdict(answer, reference)
    assert time.perf_counter() - start < 1.0


@pytest.mark.parametrize(("reference", "answer", "is_set_for_tuple"), [
    ("(2,4)", "\\{2,4\\}", True),
    ("\\left( 3, \\frac{\\pi}{2} \\right)", "\\left\\{3, \\frac{\\pi}{2}\\right\\}", True),
    ("(3,4]", "\\{3,4\\}", True),
    ("[0, 1]", "\\{0,1\\}", True),
    ("(2,4)", "\\{(2,4)\\}", False),  # a set of one pair
    ("(0,9) \\cup (9,36)", "\\{0,9,36\\}", False),  # a union, not one tuple
    ("(5)", "\\{5\\}", False),
    ("1, 2", "\\{1,2\\}", False),  # a list may be given as a set
    ("\\{1,2\\}", "\\{2,1\\}", False),
    ("(2,4)", "(2,4)", False),
])
def test_set_for_tuple(reference: str, answer: str, is_set_for_tuple: bool) -> None:
    """A set of several elements for one tuple or interval, and nothing else."""
    assert set_for_tuple(reference, answer) is is_set_for_tuple


@pytest.mark.parametrize(("reference", "answer", "verdict"), [
    ("\\text{(C)}", "\\text{(C) Plane}", True),
    ("\\text{(C)}", "\\textbf{(C)} Plane", True),
    ("(C)", "(A) Line", False),
    ("\\text{(C)}", "\\text{(C)}, \\text{(D)}", None),  # two choices: left to math-verify (wrong there)
    ("\\text{(C)}", "C", None),
    ("\\text{Plane}", "(C) Plane", None),
    ("\\text{(C)}", "(c) Plane.", True),
])
def test_named_choice(reference: str, answer: str, verdict: bool | None) -> None:
    """A choice letter followed by the choice's name is that choice."""
    assert choice_verdict(reference, answer) is verdict


def test_fast_path_decides_literal_verdicts() -> None:
    """The fast path answers these pairs without math-verify."""
    assert fast_verdict("5.4 \\text{ cents}", "5.4 \\text{ dollars}") is False
    assert fast_verdict("(2,4)", "\\{2,4\\}") is False
    assert fast_verdict("\\text{(C)}", "\\text{(C) Plane}") is True


@pytest.mark.parametrize(("reference", "answer", "disagree"), [
    (".0000672", "0.0000673", True),
    ("\\frac{9}{256}", "0.03515626", True),
    ("\\frac{9}{256}", "0.03515625", False),
    ("\\frac13", "0.333333", False),  # rounded at its last place
    ("\\frac13", "0.3333334", True),
    ("\\frac23", "0.6666667", False),
    ("\\frac23", "0.6666666", False),  # cut off
    ("-\\frac23", "-0.6666667", False),
    ("0.3333333", "\\frac13", False),  # the reference rounded
    ("2.50", "2.5", False),
    ("5", "5.0000001", True),
    ("5", "6", False),  # integers: not this check's business (the fast path compares them exactly)
    ("x", "0.5", False),
    ("\\frac{5}{6}", "0.8333333333333334", False),  # a program's printed double
    ("\\frac{5}{6}", "0.8333333333333344", True),
    ("\\frac{1}{5}", "0.20000000000000001", False),
    ("\\frac{2}{3}", "0.66666666666666674", False),  # 1 - 1/3 in doubles
    ("\\frac{2}{3}", "0.66666666666666774", True),
])
def test_digits_disagree(reference: str, answer: str, disagree: bool) -> None:
    """A digit written on either side must agree with the other number at that place."""
    assert digits_disagree(reference, answer) is disagree
