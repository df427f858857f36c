"""Answer extraction: boxes (nested, several, unbraced, unbalanced), phrase fallbacks, no answer."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from verify import extract_answer
from verify.extract import extract_boxed, extract_fallback

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # nested braces
        (r"so $\boxed{\frac{1}{2}}$.", r"\frac{1}{2}"),
        (r"$\boxed{\left( 3, \frac{\pi}{2} \right)}$", r"\left( 3, \frac{\pi}{2} \right)"),
        (r"\boxed{\begin{pmatrix} 1 \\ 2 \end{pmatrix}}", r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}"),
        (r"\boxed{x^{2^{3}}+\sqrt{\frac{a}{b}}}", r"x^{2^{3}}+\sqrt{\frac{a}{b}}"),
        # escaped braces do not count
        (r"\boxed{\{1,2\}}", r"\{1,2\}"),
        (r"\boxed{\}}", r"\}"),
        # several boxes: the last one
        (r"first \boxed{1}, then \boxed{2}, finally $\boxed{3}$.", "3"),
        (r"\fbox{7} and later \boxed{8}", "8"),
        # a list of boxes joined only by "and", commas and $ is one answer (MATH's "the answers are ...")
        (r"the answers are $\boxed{-2}$ and $\boxed{1}$.", "-2, 1"),
        (r"$x = \boxed{2}$, $\boxed{3}$, and $\boxed{\frac{1}{2}}$", r"2, 3, \frac{1}{2}"),
        (r"$\boxed{4}$ $\boxed{4}$", "4"),  # a box repeated is one answer
        (r"$\boxed{x+11}$ or $\boxed{11+x}$", "11+x"),  # "or" gives two spellings of one answer: the last
        (r"$a=\boxed{53}$ and $b=\boxed{2}$", "2"),  # text between the boxes: not a list
        (r"$x=\boxed{-2}$ and $x=\boxed{1}$", "-2, 1"),  # the same "x =" before each box: a list
        (r"so $y = \boxed{3}$ and $x = \boxed{5}$", "5"),  # different variables: not a list
        (r"Since $ab = \boxed{6}$ and $b = \boxed{3}$", "3"),  # "ab =" is not "b ="
        (r"we get $\boxed{4}$, then $x=\boxed{5}$", "5"),
        (r"\boxed{2} \text{ and } \boxed{3}", "2, 3"),
        (r"$\boxed{2} \quad \boxed{3}$", "2, 3"),
        (r"\boxed{8} and later \fbox{7}", "7"),
        # unbraced argument
        (r"The answer is $\boxed 5$.", "5"),
        (r"\boxed 5.", "5"),
        (r"\boxed   42$ more", "42"),
        # spaces between command and brace
        (r"\boxed {12}", "12"),
        # an unclosed (truncated) last box falls back to the previous balanced one
        (r"\boxed{3} hmm, actually \boxed{\frac{4}{", "3"),
        # an empty box is skipped
        (r"\boxed{9} ... \boxed{}", "9"),
        (r"\boxed{  }", None),
        # other control words are not boxes
        (r"\boxedx{3}", None),
        # no box
        ("The sum is 12, I think", None),
        ("", None),
    ],
)
def test_boxes(text: str, expected: str | None) -> None:
    """Balanced-brace extraction of the last box."""
    assert extract_answer(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Final Answer: The final answer is $5$. I hope it is correct.", "5"),
        ("so the final answer is: \\frac{3}{4}.", "\\frac{3}{4}"),
        ("Work...\nAnswer: 12", "12"),
        ("**Answer:** 12", "12"),
        ("Answer:\n\n$x=3$", "x=3"),
        ("Natalia sold 48/2 = 24 clips in May.\n#### 72", "72"),
        ("answer: 1\nanswer: 2", "2"),  # the last anchor wins
        ("Answer: $$", None),  # an anchor with nothing after it
        # the answer ends where its sentence or math span does (a later number is not part of it)
        ("...\nAnswer: 6. Each of the 3 people shakes hands with 2 others.", "6"),
        ("The final answer is 6. Each of the 3 people shakes hands with 2 others.", "6"),
        ("...\nAnswer: 3 (since f(3) = 4)", "3"),
        ("...\nAnswer: $x = 3$ at $y = 2$", "$x = 3$ at $y = 2$"),  # two math spans: not unwrapped as one
        ("The final answer is $2$ and $3$.", "$2$ and $3$"),  # a hedge stays whole (graded wrong for 2)
        ("Final Answer: The final answer is $\\$18.90$. I hope it is correct.", "\\$18.90"),  # an escaped dollar
        ("Answer: 12 (or 13 if we count the endpoint)", "12 (or 13 if we count the endpoint)"),
        ("Answer: \\(x=2\\). Done.", "x=2"),
        ("Answer: 3.5", "3.5"),
        ("Answer: x \\in (2, 5)", "x \\in (2, 5)"),
        ("Answer: (1; 2)", "(1; 2)"),
        ("The final answer is 42.\n\n#### Verification\nWe check 6*7=42.", "42"),  # a markdown heading, not GSM8K's ####
        ("Answer: 42\n\n#### Step 3\n6*7 = 42", "42"),
        ("#### Check\nno answer here", None),
        ("#### x = 5", "x = 5"),
        ("...\n#### Monday", "Monday"),  # a word on the last line is GSM8K's answer, not a heading
        ("#### sqrt(2)\n", "sqrt(2)"),
        ("#### Final Answer\n\n$\\frac{1}{2}$", "\\frac{1}{2}"),  # a heading over the answer
        ("The final answer is: x = 3, since 2+1=3", "x = 3"),
        ("Answer: 7, because 3+4 = 7", "7"),
    ],
)
def test_fallbacks(text: str, expected: str | None) -> None:
    """Phrase fallbacks when there is no box."""
    assert extract_answer(text) == expected


def test_box_beats_fallback_phrases() -> None:
    """A box anywhere wins over answer phrases."""
    assert extract_answer("\\boxed{4}\n#### 5") == "4"
    assert extract_fallback("\\boxed{4}\n#### 5") == "5"
    assert extract_boxed("#### 5") is None


def test_math500_solutions_extract_their_answers() -> None:
    """The last box of every MATH-500 reference solution is exactly its answer field."""
    rows = [json.loads(line) for line in (FIXTURES / "math500.jsonl").read_text().splitlines() if line]
    assert len(rows) == 500
    mismatches = [(r["answer"], extract_answer(r["solution"])) for r in rows if extract_answer(r["solution"]) != r["answer"]]
    assert mismatches == []


@pytest.mark.parametrize(
    "text",
    [
        "{" * 1_000_000,
        "\\boxed{" * 150_000,
        "\\boxed{" + "x" * 1_000_000,
        "answer: " * 120_000,
        "a" * 1_000_000 + "\\boxed{5}",
        "\\" * 1_000_000,
    ],
)
def test_pathological_texts_are_linear(text: str) -> None:
    """A megabyte of adversarial text is handled in well under a second."""
    start = time.perf_counter()
    extract_answer(text)
    assert time.perf_counter() - start < 1.0
