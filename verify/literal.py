"""Verdicts study decides itself where math-verify reads past what an answer literally says.

math-verify drops units, reads a set and a tuple alike, and does not know a multiple-choice letter
followed by the choice's name. A careful reader does not, so the `math-verify` grader decides these
pairs before math-verify is asked (`literal_verdict`):

- units: both answers name a unit this module knows, and the units differ (`5.4\\text{ cents}` vs
  `5.4\\text{ dollars}`, `15\\mbox{ cm}^2` vs `15\\text{ cm}`, `90^\\circ` vs `90\\text{ radians}`):
  wrong. Spellings of one unit agree (`in^2`, `square inches`, `\\text{in}\\cdot\\text{in}`; `\\$18.90`,
  `18.90 dollars`; `mph`, `\\text{mi}/\\text{hr}`; `mL`, `cm^3`). Words that are not units, or not only
  units (`ways`, `units`, `apples`), decide nothing, nor does a rate against a plain unit
  (`1.50 dollars per pound` for `\\$1.50`: the reference may leave the "per" out).
- a set for a tuple or interval: the reference is `(2,4)`, `(3,4]` or `[0,1]`, the answer a set of
  several elements `\\{2,4\\}`: wrong.
- a choice named: the reference is a choice letter `(C)`, the answer that letter in parentheses
  followed by the choice's name, `\\text{(C) Plane}`: right if the letters agree.

Pure string functions, no sympy, no math-verify, and linear in the answer's length: they run in the
main process, outside the worker pool's time limit (answers over 300 characters get no literal verdict).
"""
from __future__ import annotations

import re

__all__ = ["literal_verdict", "unit_of", "units_differ", "set_for_tuple", "choice_verdict", "unwrapped"]

# spelling (singular, lower case) -> canonical unit; plurals are read by dropping "s" or "es"
_UNIT_SPELLINGS: dict[str, tuple[str, ...]] = {
    "mm": ("millimeter", "millimetre"), "cm": ("centimeter", "centimetre"), "m": ("meter", "metre"),
    "km": ("kilometer", "kilometre"), "in": ("inch",), "ft": ("foot", "feet"), "yd": ("yard",), "mi": ("mile",),
    "s": ("sec", "second"), "min": ("minute",), "h": ("hr", "hour"), "day": (), "week": ("wk",), "month": (),
    "year": ("yr",), "deg": ("degree",), "rad": ("radian",), "cent": ("¢",), "dollar": ("usd",),
    "dm": ("decimeter", "decimetre"), "mg": ("milligram",), "g": ("gram",), "kg": ("kilogram",), "lb": ("lbs", "pound"), "oz": ("ounce",),
    "ml": ("milliliter", "millilitre", "cc"), "l": ("liter", "litre"), "gal": ("gallon",), "qt": ("quart",),
    "pt": ("pint",), "cup": (), "per": (),
}
_UNITS = {spelling: unit for unit, spellings in _UNIT_SPELLINGS.items() for spelling in (unit, *spellings)}
_COMPOUND = {"mph": ("mi", "per", "h"), "kph": ("km", "per", "h"), "kmh": ("km", "per", "h")}
_POWER_WORDS = {"square": 2, "sq": 2, "cubic": 3, "cu": 3}
_POWER_SUFFIXES = {"squared": 2, "cubed": 3}

_MAX_LENGTH = 300  # longer answers get no literal verdict: units, tuples and choices are short (and this bounds the work)
_TEXT_COMMAND = re.compile(r"\\(?:text|mbox|mathrm|textrm|rm)\s*$")
_JOINED_TEXT = re.compile(r"\}\s*(/|\\cdot|\\times)\s*\\(?:text|mbox|mathrm|textrm|rm)\s*\{")  # \text{m}/\text{s}
_TAIL_POWER = re.compile(r"\^\s*\{?\s*([23])\s*\}?$")
_TAIL_DEGREES = re.compile(r"(?:\^\s*\{?\s*\\circ\s*\}?|°|\\degree)$")
_TAIL_SPACING = re.compile(r"(?:\s|~|\\[,;:! ])+$")
_VOLUMES = {("ml",): ("cm",), ("l",): ("dm",)}  # a millilitre is a cubic centimetre, a litre a cubic decimetre


def _canonical_unit(phrase: str, exponent: int) -> tuple[tuple[str, ...], int] | None:
    """(unit words, power) of a unit phrase ("square centimeters" -> (("cm",), 2)); None where a word is not a unit."""
    words = phrase.lower().replace(".", " ").replace("/", " per ").split()
    canonical: list[str] = []
    for i, word in enumerate(words):
        if word in _POWER_WORDS and i + 1 < len(words):
            exponent = _POWER_WORDS[word]
        elif word in _POWER_SUFFIXES and canonical:
            exponent = _POWER_SUFFIXES[word]
        elif word in _COMPOUND:
            canonical += _COMPOUND[word]
        else:
            unit = _UNITS.get(word) or _UNITS.get(word[:-1] if word.endswith("s") else "") or \
                _UNITS.get(word[:-2] if word.endswith("es") else "")
            if unit is None:
                return None
            canonical.append(unit)
    if not canonical or canonical[0] == "per" or canonical[-1] == "per":
        return None
    if len(canonical) > 1 and len(set(canonical)) == 1:  # "in \cdot in": square inches
        canonical, exponent = canonical[:1], exponent * len(canonical)
    if tuple(canonical) in _VOLUMES and exponent == 1:
        return _VOLUMES[tuple(canonical)], 3
    return tuple(canonical), exponent


def _has_value(value: str) -> bool:
    """Whether the text before a unit is a value (a number or an expression) and holds no second text group."""
    return bool(re.search(r"[\d\\]", value)) and not any(c in value for c in ("\\text", "\\mbox", "\\mathrm", "\\rm"))


def unit_of(answer: str) -> tuple[tuple[str, ...], int] | None:
    """The unit an answer names after its value (`5\\text{ cm}^2`, `18 dollars`, `90^\\circ`, `\\$3`), if this module knows it.

    Read from the end by hand (no regular expression runs over the value), so any answer costs linear time.
    """
    text = answer.replace("$", "\uE000").replace("\\\uE000", "\\$").replace("\uE000", "").strip()
    if len(text) > _MAX_LENGTH:
        return None
    text = _JOINED_TEXT.sub(lambda m: "/" if m.group(1) == "/" else " ", text)
    exponent = 1
    if power := _TAIL_POWER.search(text):
        exponent, text = int(power.group(1)), text[: power.start()].rstrip()
    if degrees := _TAIL_DEGREES.search(text):
        return (("deg",), 1) if exponent == 1 and text[: degrees.start()].strip() else None
    if text.endswith("}"):  # \text{ unit}
        opening = text.rfind("{")
        command = _TEXT_COMMAND.search(text[:opening]) if opening > 0 else None
        if command is None or "}" in text[opening + 1:-1]:
            return None
        value = _TAIL_SPACING.sub("", text[: command.start()])
        return _canonical_unit(text[opening + 1:-1], exponent) if _has_value(value) else None
    words = text.split()
    phrase: list[str] = []
    while len(words) > 1 and len(phrase) < 6 and len(words[-1]) >= 2 and words[-1].isascii() and words[-1].isalpha():
        phrase.insert(0, words.pop())
    if phrase and words[-1][-1].isdigit():  # "18 dollars": plain words after a number
        return _canonical_unit(" ".join(phrase), exponent)
    if text.startswith("\\$") and text[2:].strip() and exponent == 1:
        return ("dollar",), 1
    return None


def units_differ(reference: str, answer: str) -> bool:
    """Whether reference and answer both name a known unit, and not the same one (a rate against a plain unit,
    `1.50 dollars per pound` for `\\$1.50`, decides nothing: the reference may leave the "per" out)."""
    ref_unit, ans_unit = unit_of(reference), unit_of(answer)
    if ref_unit is None or ans_unit is None or ("per" in ref_unit[0]) != ("per" in ans_unit[0]):
        return False
    return ref_unit != ans_unit


_SIZING = re.compile(r"\\(?:left|right|big|Big|bigg|Bigg)(?![A-Za-z])|\s+")
_OPEN, _CLOSE = "([{", ")]}"


def _top_level_comma(inner: str) -> bool | None:
    """Whether a comma stands outside every bracket of inner; None where inner's brackets do not balance."""
    depth, comma = 0, False
    for char in inner.replace("\\{", "{").replace("\\}", "}"):
        if char in _OPEN:
            depth += 1
        elif char in _CLOSE:
            depth -= 1
            if depth < 0:
                return None
        elif char == "," and depth == 0:
            comma = True
    return comma if depth == 0 else None


def set_for_tuple(reference: str, answer: str) -> bool:
    """Whether the reference is one tuple or interval, `(2,4)`, `(3,4]`, and the answer a set of several elements, `\\{2,4\\}`."""
    if len(reference) > _MAX_LENGTH or len(answer) > _MAX_LENGTH:
        return False
    ref, ans = _SIZING.sub("", reference.replace("$", "")), _SIZING.sub("", answer.replace("$", ""))
    if len(ref) < 2 or ref[0] not in "([" or ref[-1] not in ")]" or not _top_level_comma(ref[1:-1]):
        return False
    return ans.startswith("\\{") and ans.endswith("\\}") and bool(_top_level_comma(ans[2:-2]))


_WRAPPER = re.compile(r"\\(?:text|textbf|textit|textrm|mathrm|mathbf|mbox)\s*\{([^{}]*)\}")
_CHOICE = re.compile(r"\(?([A-H])\)?")
_NAMED_CHOICE = re.compile(r"\(([A-Ha-h])\)\s*[A-Za-z][A-Za-z' -]*\.?")


def unwrapped(answer: str) -> str:
    """answer without text wrappers (`\\text{(C) Plane}` -> `(C) Plane`) and `$`, spacing collapsed."""
    text = answer.replace("$", "")
    while (inner := _WRAPPER.sub(r"\1", text)) != text:
        text = inner
    return " ".join(text.replace("~", " ").replace("\\ ", " ").split())


def choice_verdict(reference: str, answer: str) -> bool | None:
    """Right or wrong where the reference is a choice letter `(C)` and the answer a letter with the choice's name."""
    if len(reference) > _MAX_LENGTH or len(answer) > _MAX_LENGTH:
        return None
    ref = _CHOICE.fullmatch(unwrapped(reference))
    named = _NAMED_CHOICE.fullmatch(unwrapped(answer))
    if ref is None or named is None:
        return None
    return ref.group(1) == named.group(1).upper()


def literal_verdict(reference: str, answer: str) -> bool | None:
    """study's own verdict where math-verify reads past what is written (see the module docstring), else None."""
    if units_differ(reference, answer) or set_for_tuple(reference, answer):
        return False
    return choice_verdict(reference, answer)
