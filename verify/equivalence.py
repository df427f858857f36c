"""Is an extracted answer equivalent to the reference? The fast path, math-verify, and vote keys.

The `math-verify` grader's verdict is defined as

    verify.literal.literal_verdict(reference, answer), where it decides (braces around a whole answer removed), else
    math_verify.verify(gold=parse("\\boxed{" + tidy(reference) + "}"), target=parse("\\boxed{" + tidy(answer) + "}"))
    and not digits_disagree(tidy(reference), tidy(answer))

(`verify` is not symmetric: the reference is the gold). `literal_verdict` decides what math-verify reads
past: differing units, a set for a tuple or interval, a choice letter with the choice's name.
`digits_disagree` checks plain numbers where math-verify rounds to 6 decimal places (`0.0000673` is
not `.0000672`). `tidy` removes what math-verify misreads
and no reader would: LaTeX spacing between digits (`1\\,234`, a thin space grouping digits, is
1234), thousands separators inside a fraction (`\\frac{20,000}{\\pi}`), one closing full stop
(`3.` is 3; an ellipsis `...` is kept), braces around the whole answer,
and a number's unit in plain words (see `tidy`). `fast_verdict` decides
the common cases without sympy and is exact with respect to that definition: identical strings are equal, and two
plain integers or integer fractions are compared as exact rationals (which is what math-verify does
with them), and `literal_verdict` is asked; the one exception is numbers in a base (`52_8`), which it compares by value and base where
math-verify ignores the subscript. Everything else goes to math-verify, normally inside a `verify.pool.TaskPool` worker,
because math-verify's own timeouts use `signal.alarm` (main thread only) and cannot interrupt C
code such as a huge integer power.

`answer_key` maps an answer to the key that majority voting groups by: the exact value for numbers
(`\\frac12`, `0.5` and `1/2` all become `q:1/2`), the lower-cased words for answers that are only
words (`Monday` and `\\text{Monday}` both `w:monday`), sympy's printed form of math-verify's parse
for other expressions, and the MATH-normalised string when nothing parses.
"""
from __future__ import annotations

import logging
import math
import re
from collections import OrderedDict
from fractions import Fraction
from typing import Any

from verify.extract import brace_pairs
from verify.literal import literal_verdict, unwrapped
from verify.strict import is_equiv, normalize_strict

__all__ = [
    "GRADERS",
    "DEFAULT_TIMEOUT",
    "exact_number",
    "fast_verdict",
    "math_verify_equal",
    "answer_key",
    "compare",
    "compare_cached",
    "timed_math_verify",
]

GRADERS = ("math-verify", "strict")
DEFAULT_TIMEOUT = 5.0
_MAX_DIGITS = 40
_INT_RE = re.compile(r"-?\d{1,%d}" % _MAX_DIGITS, re.ASCII)
_FRAC_RE = re.compile(  # \\frac{12}{5}, and TeX's single-digit arguments without braces: \\frac12, \\frac{270}7
    r"(?P<sign>-?)\\[dt]?frac\s*(?:\{(?P<num>-?\d{1,%d})\}|(?P<num_digit>\d))\s*(?:\{(?P<den>\d{1,%d})\}|(?P<den_digit>\d))"
    % (_MAX_DIGITS, _MAX_DIGITS), re.ASCII
)
_SLASH_RE = re.compile(r"(?P<num>-?\d{1,%d})/(?P<den>\d{1,%d})" % (_MAX_DIGITS, _MAX_DIGITS), re.ASCII)
_PARSE_CACHE_SIZE = 4096
_parse_cache: OrderedDict[tuple[str, int], list[Any]] = OrderedDict()


def check_grader(grader: str) -> str:
    """Return grader if it is a known grader name, else raise ValueError."""
    if grader not in GRADERS:
        raise ValueError(f"unknown grader {grader!r}; expected one of {', '.join(GRADERS)}")
    return grader


def exact_number(text: str) -> Fraction | None:
    """The exact value of a plain integer, `\\frac{a}{b}` (`\\frac12`) or `a/b` string, else None."""
    text = text.strip()
    if len(text) > 2 * _MAX_DIGITS + 16:
        return None
    if _INT_RE.fullmatch(text):
        return Fraction(int(text))
    match = _FRAC_RE.fullmatch(text) or _SLASH_RE.fullmatch(text)
    if match is None:
        return None
    groups = match.groupdict()
    den = int(groups.get("den") or groups["den_digit"])
    if den == 0:
        return None
    value = Fraction(int(groups.get("num") or groups["num_digit"]), den)
    return -value if groups.get("sign") else value


_DECIMAL_RE = re.compile(r"-?\d{0,%d}\.(\d{1,%d})" % (_MAX_DIGITS, _MAX_DIGITS), re.ASCII)


def _number_and_places(text: str) -> tuple[Fraction, int | None, str] | None:
    """(exact value, decimal places written, digits written) of a plain decimal; (value, None, "") of an integer or
    fraction; else None."""
    text = text.strip()
    if match := _DECIMAL_RE.fullmatch(text):
        return Fraction(text), len(match.group(1)), text.lstrip("-").replace(".", "")
    value = exact_number(text)
    return None if value is None else (value, None, "")


_FLOAT_DIGITS = 15  # a decimal with this many significant digits may be a double's printed form (Python's repr)
_FLOAT_ERROR = Fraction(1, 2**50)  # a few units in the last place of a double: its rounding errors, as printed


def _written_as(value: Fraction, decimal: Fraction, places: int, digits: str) -> bool:
    """Whether decimal is value at `places` decimal places: rounded (half up or half even) or cut off, or, with
    15 or more significant digits, a double within a few units in its last place (`0.8333333333333334` for 5/6,
    `0.66666666666666674` for 2/3, as a program computes and prints them)."""
    scaled, written = value * 10**places, decimal * 10**places
    if written in (round(scaled), math.floor(scaled + Fraction(1, 2)), math.ceil(scaled - Fraction(1, 2)), math.trunc(scaled)):
        return True
    return len(digits.lstrip("0")) >= _FLOAT_DIGITS and abs(decimal - value) <= abs(value) * _FLOAT_ERROR


def digits_disagree(reference: str, answer: str) -> bool:
    """Whether two plain numbers differ in a digit one of them wrote (`0.0000673` vs `.0000672`, `0.03515626`
    vs `\\frac{9}{256}`), where math-verify compares numbers only to 6 decimal places. A decimal that is the
    other number rounded or cut off at its own last place agrees (`0.333333` and `0.3333333` for `\\frac13`),
    and so does a program's printed double (`0.8333333333333334` for `\\frac56`)."""
    ref, ans = _number_and_places(reference), _number_and_places(answer)
    if ref is None or ans is None or ref[0] == ans[0] or (ref[1] is None and ans[1] is None):
        return False
    (ref_value, ref_places, ref_digits), (ans_value, ans_places, ans_digits) = ref, ans
    return not ((ans_places is not None and _written_as(ref_value, ans_value, ans_places, ans_digits))
                or (ref_places is not None and _written_as(ans_value, ref_value, ref_places, ref_digits)))


def _number_key(value: Fraction) -> str:
    """Vote key of an exact number."""
    return f"q:{value.numerator}/{value.denominator}"


def fast_verdict(reference: str, answer: str) -> bool | None:
    """True/False where the verdict is known without sympy, None where math-verify must be asked."""
    ref, ans = reference.strip(), answer.strip()
    if not ref or not ans:
        return None
    if ref == ans:
        return True
    literal = literal_verdict(_ungrouped(ref), _ungrouped(ans))  # units, a set for a tuple, a named choice: as written
    if literal is not None:
        return literal
    ref_value, ans_value = exact_number(ref), exact_number(ans)
    if ref_value is not None and ans_value is not None:
        return ref_value == ans_value
    ref_based, ans_based = base_number(ref), base_number(ans)
    if ref_based is not None and ans_based is not None:  # math-verify ignores subscripts: 52_9 would equal 52_8
        return ref_based == ans_based
    if ref_based is not None and _in_a_base(ans):  # 52_3, 52_{40}: written in a base, but not a number there
        return False
    return None


def _in_a_base(answer: str) -> bool:
    """Whether an answer is written as digits with a base subscript (`52_3`), valid in that base or not."""
    match = _BASE_NUMBER.fullmatch(answer.replace("$", "").strip())
    return (match is not None and any(c.isdigit() for c in match.group(1))
            and (match.group(2).isdigit() or match.group(2).lower() in _BASE_WORDS))  # not "x_{oct}": left to math-verify


_BASE_WORDS = {w: b for b, w in enumerate("zero one two three four five six seven eight nine ten eleven twelve "
                                          "thirteen fourteen fifteen sixteen".split()) if b >= 2}
_BASE_WORDS.update(binary=2, ternary=3, octal=8, decimal=10, hex=16, hexadecimal=16)
_BASE_NUMBER = re.compile(r"\(?\s*([0-9A-Za-z]+)\s*(?:\)\s*)?_\s*(?:\{\s*)?(?:\\(?:text|mathrm)\s*\{\s*)?"
                          r"([0-9]+|[a-z]+)\s*(?:\}\s*)?(?:\}\s*)?")


def base_number(answer: str) -> tuple[int, int] | None:
    """(value, base) of a number written in a base, `52_8`, `52_{\\text{8}}`, `(52)_8`, `52_{\\text{eight}}`; else None."""
    match = _BASE_NUMBER.fullmatch(answer.replace("$", "").strip())
    if match is None:
        return None
    digits, base_text = match.groups()
    base = int(base_text) if base_text.isdigit() else _BASE_WORDS.get(base_text.lower())
    if base is None or not 2 <= base <= 36:
        return None
    try:
        return int(digits, base), base
    except ValueError:  # a digit the base does not have: not a number in that base
        return None


_WORDS = re.compile(r"[A-Za-z]{2,}(?: [A-Za-z]+)*")


def word_key(answer: str) -> str | None:
    """Vote key of an answer that is only words (`Monday`, `\\text{Monday}`, `no solution`), else None.

    math-verify parses bare words as products of single-letter symbols but `\\text{}` as one name,
    so the two spellings of one word would vote apart; the lower-cased words are the key instead.
    """
    text = unwrapped(answer)
    return "w:" + text.lower() if _WORDS.fullmatch(text) else None


def fast_key(answer: str) -> str | None:
    """Vote key of an answer when it is a plain number, else None (needs math-verify's parse)."""
    value = exact_number(answer)
    return None if value is None else _number_key(value)


def _quiet_math_verify() -> None:
    """Silence math-verify's per-timeout warnings (timeouts are reported by the pool)."""
    logging.getLogger("math_verify").setLevel(logging.ERROR)


_DIGIT_SPACING = re.compile(r"(?<=\d)\\[,;:! ](?=\d)")
_CLOSING_STOP = re.compile(r"(?<!\.)\.\s*$")
_SPACE_GROUPED = re.compile(r"(?<![\d.,])\d{1,3}(?: \d{3})+(?![\d,]|\s\d)")  # "8 000", "12 345.5": one number


def _join_groups(match: re.Match[str]) -> str:
    """A number written in space-separated groups of three digits, without the spaces."""
    return match.group().replace(" ", "")


_DEGREES = re.compile(r"(?<!\s)\s*(?:°|\\degree\b)")  # "90°", "90\\degree": math-verify reads only 90^\\circ
_SPACED_I = re.compile(r"(?<=\d)(?:\s|\\[,;:! ])+(?=i\b)")  # "5 i", "274\\, i": read apart, i is taken as a real symbol
_STOP_IN_TEXT = re.compile(r"(?<=[A-Za-z])\.(?=\s*\}+\s*$)")  # "\\text{east.}"
_BRACED_COMMA = re.compile(r"(?<=\d)\{,\}(?=\d{3}(?!\d))")  # "20{,}000": TeX's thousands separator
_GROUPED_ARGUMENT = re.compile(r"(?<!\\)\{(-?\d{1,3}(?:,\d{3})+(?:\.\d+)?)\}")  # "\\frac{20,000}{\\pi}": one number


def tidy(answer: str) -> str:
    """An answer as math-verify should read it: no spacing inside digit groups ("1\\,234", "8 000") or before
    the imaginary unit ("5 i"), degrees as ^\\circ ("90°"), no closing full stop ("3.", "\\text{east.}"), no
    braces around all of it ("{(-1,6)}": a TeX group), and a number's unit in plain words dropped ("18 dollars")
    as math-verify drops it in `\\text{}` (it reads plain words as products of letters)."""
    tidied = _SPACE_GROUPED.sub(_join_groups, _DIGIT_SPACING.sub("", _ungrouped(answer)))
    tidied = _GROUPED_ARGUMENT.sub(lambda m: "{" + m.group(1).replace(",", "") + "}", _BRACED_COMMA.sub("", tidied))
    tidied = _SPACED_I.sub("", _DEGREES.sub(lambda _: "^\\circ", tidied))
    tidied = _CLOSING_STOP.sub("", _STOP_IN_TEXT.sub("", tidied))
    tidied = _unit_dropped(tidied)
    return tidied if tidied.strip() else answer


def _ungrouped(answer: str) -> str:
    """answer without TeX group braces around all of it ("{(-1,6)}", "{{5}}"; `\\{1, 2\\}` is a set, kept)."""
    text = answer.strip()
    # not "{5 \\choose 2}": there the braces are what make it one binomial or fraction
    if not text.startswith("{") or _GROUP_OPERATOR.search(text):
        return text if text else answer
    pairs = brace_pairs(text, 0)  # one pass, so that thousands of nested groups cost linear time
    first, last = 0, len(text) - 1
    while first < last and text[first] == "{" and pairs.get(first) == last:
        first, last = first + 1, last - 1
        while first <= last and text[first].isspace():
            first += 1
        while last >= first and text[last].isspace():
            last -= 1
    inner = text[first:last + 1]
    return inner if inner else answer


_GROUP_OPERATOR = re.compile(r"\\(?:choose|over|atop|brace|brack|above)(?![A-Za-z])")


_NUMBER_WITH_UNIT = re.compile(r"\s*(-?\d[\d,]*(?:\.\d+)?)\s+([A-Za-z]{2,}(?:\s+[A-Za-z]{2,})*)\s*")  # not "5 times x"
# words that change the number or are mathematics, not a unit ("25 percent" is 0.25 to math-verify, "3 halves" 1.5)
_NOT_UNITS = frozenset("""and or plus minus over pi sqrt sin cos tan cot sec csc log ln exp infty infinity mod divided by
    percent percentage dozen dozens score hundred hundreds thousand thousands million millions billion billions
    trillion trillions squared cubed half halves third thirds quarter quarters factorial choose power root roots
    inverse negative""".split())
# two- and three-letter words read as units; any other short word may be a product of variables ("5 xy")
_SHORT_UNITS = frozenset("""cm mm km kg mg lb lbs oz ft yd mi mph kph hr hrs min mins ml gal qt pt day yr yrs sq
    cal usd eur gbp cup deg kw mb gb kb tb hz""".split())


def _unit_dropped(answer: str) -> str:
    """A number followed only by words of a unit ("18 dollars", "3 cm") as the number; words that change the value
    ("25 percent", "3 halves", "1 billion", "2 pi") or may be variables ("5 xy") keep the answer as it is."""
    match = _NUMBER_WITH_UNIT.fullmatch(answer)
    if match is None:
        return answer
    words = match.group(2).lower().split()
    if "per cent" in " ".join(words):
        return answer
    for word in words:
        if word in _NOT_UNITS or word.endswith("ths") or (len(word) <= 3 and word not in _SHORT_UNITS | {"per"}):
            return answer
    return match.group(1)


def _parse(answer: str, timeout_s: int) -> list[Any]:
    """math-verify's parse of an answer (tidied) wrapped in `\\boxed{}`."""
    from math_verify import parse

    return parse("\\boxed{" + tidy(answer) + "}", parsing_timeout=timeout_s)


def _parse_cached(answer: str, timeout_s: int) -> list[Any]:
    """_parse with a small LRU cache (references repeat for every answer of a problem)."""
    key = (answer, timeout_s)
    hit = _parse_cache.get(key)
    if hit is not None:
        _parse_cache.move_to_end(key)
        return hit
    parsed = _parse(answer, timeout_s)
    _parse_cache[key] = parsed
    if len(_parse_cache) > _PARSE_CACHE_SIZE:
        _parse_cache.popitem(last=False)
    return parsed


def _alarm_seconds(timeout: float | None) -> int:
    """math-verify's own (signal.alarm) timeout: whole seconds, at least 1."""
    return max(1, math.ceil(timeout if timeout is not None else DEFAULT_TIMEOUT))


def _graded(reference: str, answer: str, gold: list[Any], pred: list[Any], seconds: int) -> bool:
    """The math-verify grader's verdict on parsed answers: study's literal verdict, else math-verify's checked digit by digit."""
    from math_verify import verify

    literal = literal_verdict(_ungrouped(reference), _ungrouped(answer))
    if literal is not None:
        return literal
    return bool(verify(gold, pred, timeout_seconds=seconds)) and not digits_disagree(tidy(reference), tidy(answer))


def math_verify_equal(reference: str, answer: str, timeout: float | None = DEFAULT_TIMEOUT) -> bool:
    """The `math-verify` grader's verdict for answer against reference, in this process (main thread only)."""
    seconds = _alarm_seconds(timeout)
    return _graded(reference, answer, _parse(reference, seconds), _parse(answer, seconds), seconds)


def _safe_to_evaluate(expr: Any) -> bool:
    """Whether evaluating expr is cheap: every power has a small numeric exponent."""
    import sympy

    if not isinstance(expr, sympy.Basic):
        return False
    for node in sympy.preorder_traversal(expr):
        if isinstance(node, sympy.Pow) and not (node.exp.is_Number and abs(node.exp) <= 1000):
            return False
        if isinstance(node, (sympy.factorial, sympy.binomial)):
            return False
    return True


def _evaluated(expr: Any, seconds: int) -> Any:
    """expr.doit() where that is cheap and finishes within the alarm, else expr unchanged."""
    from math_verify.errors import TimeoutException
    from math_verify.utils import timeout as alarm

    if not _safe_to_evaluate(expr):
        return expr
    try:
        return alarm(timeout_seconds=seconds)(expr.doit)()
    except (Exception, TimeoutException):
        return expr


def answer_key(parsed: list[Any], answer: str, seconds: int = 1) -> str:
    """Vote key from math-verify's parse of answer (see the module docstring)."""
    import sympy
    from math_verify.grader import is_assignment_relation, take_last_relation

    fast = fast_key(answer) or word_key(answer)
    if fast is not None:
        return fast
    expr = next((p for p in parsed if not isinstance(p, str)), None)
    if expr is None:
        return "s:" + normalize_strict(answer)
    if is_assignment_relation(expr):
        expr = take_last_relation(expr).rhs
    expr = _evaluated(expr, seconds)
    if isinstance(expr, sympy.Float):
        expr = sympy.Rational(str(expr))
    if isinstance(expr, sympy.Rational):
        return _number_key(Fraction(int(expr.p), int(expr.q)))
    return "e:" + sympy.sstr(expr)


def compare_cached(reference: str, answer: str, timeout: float | None = DEFAULT_TIMEOUT) -> tuple[bool, str]:
    """(the math-verify grader's verdict, vote key) for one pair; the pool task, run in a worker process."""
    _quiet_math_verify()
    # math-verify's own alarm is only a backstop a second past the pool's limit: were it to fire first, its
    # timeout would come back as a decided (and cached) "wrong" instead of the pool's undecided timeout
    seconds = _alarm_seconds(timeout) + 1
    gold = _parse_cached(reference, seconds)
    pred = _parse_cached(answer, seconds)
    correct = _graded(reference, answer, gold, pred, seconds)
    if correct:  # correct answers all vote for the reference's class; no key needed
        return True, "s:" + normalize_strict(answer)
    try:
        key = answer_key(pred, answer)
    except Exception:  # a key must never fail a grade; fall back to the normalised string
        key = "s:" + normalize_strict(answer)
    return False, key


def compare(reference: str, answer: str, grader: str = "math-verify") -> tuple[bool, str] | None:
    """(verdict, vote key) where known without math-verify, else None (the caller runs compare_cached)."""
    check_grader(grader)
    if grader == "strict":
        return is_equiv(answer, reference), "s:" + normalize_strict(answer)
    verdict = fast_verdict(reference, answer)
    if verdict is None:
        return None
    key = fast_key(answer)
    if key is None and (based := base_number(answer)) is not None:
        key = f"b:{based[0]}_{based[1]}"
    elif key is None and _in_a_base(answer):  # digits the base does not have: no value, its spelling is its key
        key = "s:" + normalize_strict(answer)
    if verdict:
        return True, key or "s:" + normalize_strict(answer)
    if key is None:  # a wrong answer whose key needs sympy
        return None
    return False, key


def clear_math_verify_caches() -> None:
    """Empty math-verify's own LRU caches (parse results), so the next call pays the full cost."""
    from math_verify import parser

    for name in ("parse_latex_cached", "parse_expr_cached", "extract_latex"):
        cached = getattr(parser, name, None)
        if hasattr(cached, "cache_clear"):
            cached.cache_clear()
    _parse_cache.clear()


def timed_math_verify(
    reference: str, text: str, timeout: float | None = DEFAULT_TIMEOUT, raw: bool = False, cold: bool = False
) -> tuple[bool, float]:
    """(verdict, seconds) of one math-verify call: on an extracted answer, or (raw) on a whole completion.

    raw=True lets math-verify extract the answer itself: verify(parse(boxed reference), parse(text)).
    cold=True empties math-verify's parse caches first (they make repeated strings cheap).
    """
    import time

    from math_verify import parse, verify

    _quiet_math_verify()
    if cold:
        clear_math_verify_caches()
    seconds = _alarm_seconds(timeout)
    start = time.perf_counter()
    if raw:
        verdict = bool(verify(_parse(reference, seconds), parse(text, parsing_timeout=seconds), timeout_seconds=seconds))
    else:
        verdict = math_verify_equal(reference, text, timeout)
    return verdict, time.perf_counter() - start
