"""The classic MATH `is_equiv` (Hendrycks et al. 2021): normalised string match, for comparability.

A faithful port of `strip_string`/`is_equiv` from the MATH repository (MIT licence), including its
quirks (`0.5` becomes `\\frac{1}{2}` but `0.25` stays a decimal; a short `k = ` prefix is dropped;
on any normalisation error the raw strings are compared).
"""
from __future__ import annotations

__all__ = ["strip_string", "is_equiv"]


def _fix_fracs(string: str) -> str:
    """`\\frac12` -> `\\frac{1}{2}`, `\\frac1{72}` -> `\\frac{1}{72}`."""
    substrs = string.split("\\frac")
    new_str = substrs[0]
    for substr in substrs[1:]:
        new_str += "\\frac"
        if substr[0] == "{":  # IndexError on "\\frac" at the end, as in the original
            new_str += substr
            continue
        if len(substr) < 2:
            return string
        a, b = substr[0], substr[1]
        if b != "{":
            new_str += "{" + a + "}{" + b + "}" + substr[2:]
        else:
            new_str += "{" + a + "}" + b + substr[2:]
    return new_str


def _fix_a_slash_b(string: str) -> str:
    """`3/4` (two plain integers) -> `\\frac{3}{4}`."""
    parts = string.split("/")
    if len(parts) != 2:
        return string
    try:
        a, b = int(parts[0]), int(parts[1])
    except ValueError:  # not two integers (`\\pi/2`): left as it is, as in the original (its try/except)
        return string
    if string != f"{a}/{b}":
        return string
    return "\\frac{" + str(a) + "}{" + str(b) + "}"


def _remove_right_units(string: str) -> str:
    """Drop a trailing `\\text{ units}` (MATH writes units with a leading space)."""
    if "\\text{ " in string:
        splits = string.split("\\text{ ")
        if len(splits) != 2:
            raise ValueError("several unit annotations")
        return splits[0]
    return string


def _fix_sqrt(string: str) -> str:
    """`\\sqrt3` -> `\\sqrt{3}`."""
    if "\\sqrt" not in string:
        return string
    splits = string.split("\\sqrt")
    new_string = splits[0]
    for split in splits[1:]:
        if not split:
            raise ValueError("dangling \\sqrt")
        if split[0] != "{":
            new_string += "\\sqrt{" + split[0] + "}" + split[1:]
        else:
            new_string += "\\sqrt" + split
    return new_string


def strip_string(string: str) -> str:
    """MATH's answer normalisation (raises ValueError where the original would raise)."""
    string = string.replace("\n", "").replace("\\!", "").replace("\\\\", "\\")
    string = string.replace("tfrac", "frac").replace("dfrac", "frac")
    string = string.replace("\\left", "").replace("\\right", "")
    string = string.replace("^{\\circ}", "").replace("^\\circ", "")
    string = string.replace("\\$", "")
    string = _remove_right_units(string)
    string = string.replace("\\%", "")
    string = string.replace(" .", " 0.").replace("{.", "{0.")
    if not string:
        return string
    if string[0] == ".":
        string = "0" + string
    parts = string.split("=")
    if len(parts) == 2 and len(parts[0]) <= 2:
        string = parts[1]
    string = _fix_sqrt(string)
    string = string.replace(" ", "")
    string = _fix_fracs(string)
    if string == "0.5":
        string = "\\frac{1}{2}"
    return _fix_a_slash_b(string)


def normalize_strict(string: str) -> str:
    """strip_string, or the raw string where MATH's normalisation fails."""
    try:
        return strip_string(string)
    except (ValueError, IndexError):
        return string


def is_equiv(answer: str | None, reference: str | None) -> bool:
    """MATH's is_equiv: normalised strings equal (raw strings if normalisation fails); None is wrong."""
    if answer is None or reference is None:
        return False
    try:
        return strip_string(answer) == strip_string(reference)
    except (ValueError, IndexError):
        return answer == reference
