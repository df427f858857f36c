"""Final-answer extraction from a completion: last balanced `\\boxed{}`/`\\fbox{}`, then phrase fallbacks.

Rules, in order (the first rule that yields a non-empty answer wins):

1. The last `\\boxed{...}` or `\\fbox{...}` whose braces balance (escaped `\\{`/`\\}` do not count).
   A box left open (a truncated completion) or an empty box is skipped and the one before it is
   tried. `\\boxed 5` (argument without braces) takes the text up to the next `$` or line end.
   Boxes right before it joined only by "and" (also `\\text{ and }`), commas, `\\quad`, `$` and the
   same "x =" (`$x=\\boxed{-2}$ and $x=\\boxed{1}$`) are one list answer, `-2, 1`; "or" is not.
2. Otherwise the last of "final answer is X", "Answer: X" and GSM8K's "#### X" (not a markdown heading:
   after "####", a word with more text on the lines below is a section title and skipped, except
   "#### Final Answer", whose answer is the next line). X runs to the first
   sentence end (". ") or remark (" (since ...", not " (or ..."; ", since", ", because") of its line; `**`,
   one pair of math delimiters around all of it (not "$2$ and $3$", two spans), a trailing period
   and Minerva's "I hope it is correct." are stripped.
3. Otherwise `None`: the sample has no answer (graded wrong, counted separately).

Every step is linear in the text length, so a 1 MB completion is handled in milliseconds.
"""
from __future__ import annotations

import re

__all__ = ["extract_answer", "extract_boxed", "extract_fallback", "matching_brace", "brace_pairs"]

_BOX_COMMANDS = ("\\boxed", "\\fbox")
_BRACE_RE = re.compile(r"\\.|[{}]", re.DOTALL)
_ANCHOR_RE = re.compile(r"final\s+answer\s+is\s*:?|\banswer\s*:|####", re.IGNORECASE)
_LINE_RE = re.compile(r"[^\S\n]*(?:\n\s*)?([^\n]*)")
_HOPE_RE = re.compile(r"\.?\s*I hope it is correct\.?\s*$", re.IGNORECASE)
_MATH_DELIMS = (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"))
_SENTENCE_END_RE = re.compile(r"(?<=\S)\.\s|\s\((?!or\b)(?=[A-Za-z]{2})|,\s+(?:since|because)\b")  # "6. Each ...",
# "3 (since ..." (not "(or ..."), "3, since ..."


def _box_starts(text: str) -> list[tuple[int, int]]:
    """(command start, argument start) of every `\\boxed`/`\\fbox` command, in text order."""
    found: list[tuple[int, int]] = []
    for command in _BOX_COMMANDS:
        start = text.find(command)
        while start != -1:
            after = start + len(command)
            # `\boxedx` is another control word, not a box.
            if after >= len(text) or not text[after].isalpha():
                found.append((start, after))
            start = text.find(command, after)
    found.sort()
    return found


def matching_brace(text: str, open_pos: int) -> int:
    """Index of the `}` closing the `{` at open_pos, or -1 if it never closes."""
    depth = 0
    for match in _BRACE_RE.finditer(text, open_pos):
        token = match.group()
        if token == "{":
            depth += 1
        elif token == "}":
            depth -= 1
            if depth == 0:
                return match.start()
    return -1


def brace_pairs(text: str, start: int) -> dict[int, int]:
    """Map every `{` at or after start to its closing `}` (one linear pass with a stack)."""
    stack: list[int] = []
    pairs: dict[int, int] = {}
    for match in _BRACE_RE.finditer(text, start):
        token = match.group()
        if token == "{":
            stack.append(match.start())
        elif token == "}" and stack:
            pairs[stack.pop()] = match.start()
    return pairs


def _unbraced_argument(text: str, arg_start: int) -> str:
    """Argument of `\\boxed 5`: the text up to the next `$` or line end."""
    end = len(text)
    for stop in ("$", "\n"):
        pos = text.find(stop, arg_start)
        if pos != -1:
            end = min(end, pos)
    return _clean(text[arg_start:end])


def extract_boxed(text: str) -> str | None:
    """Content of the last balanced, non-empty `\\boxed{}`/`\\fbox{}` in text, or None; boxes just before
    it that are joined to it as a list (see the module docstring) are part of the answer ("a, b")."""
    boxes = _box_starts(text)
    if not boxes:
        return None
    state: dict[str, dict[int, int] | None] = {"pairs": None}
    for i in range(len(boxes) - 1, -1, -1):
        found = _box_content(text, boxes[i][1], state, boxes[0][1])
        if found is None:
            continue
        parts = [found[0]]
        while i > 0:  # "the answers are $\boxed{-2}$ and $\boxed{1}$": a list of boxes is one answer
            before = _box_content(text, boxes[i - 1][1], state, boxes[0][1])
            if before is None or before[1] is None:
                break
            glue = _LIST_GLUE_RE.fullmatch(text, before[1], boxes[i][0])
            if glue is None or (glue["var"] and not _assigned(text, boxes[i - 1][0], glue["var"])):
                break
            parts.insert(0, before[0])
            i -= 1
        return ", ".join(dict.fromkeys(parts))  # a box repeated is one answer
    return None


# what may join the boxes of one list answer: commas, "and" (also as \text{ and }), \quad, and "x =" when the
# earlier box has the same "x =" before it ("$x=\boxed{-2}$ and $x=\boxed{1}$"); not "or": "x+11 or 11+x"
# are two spellings of one answer
_LIST_GLUE_RE = re.compile(
    r"[\s$]*(?:,|,?\s*and|\\text\s*\{\s*,?\s*(?:and)?\s*\}|\\q?quad)?[\s$]*(?:\\q?quad[\s$]*)?"
    r"(?:(?P<var>[A-Za-z](?:_\{?\w+\}?)?)\s*=\s*)?")
_ASSIGNED_RE = re.compile(r"(?<![A-Za-z\\])(?P<var>[A-Za-z](?:_\{?\w+\}?)?)\s*=\s*[\s$]*$")


def _assigned(text: str, box_start: int, var: str) -> bool:
    """Whether the box starting at box_start is preceded by "var =" (only spaces and `$` between)."""
    match = _ASSIGNED_RE.search(text, max(0, box_start - 40), box_start)
    return match is not None and match["var"] == var


def _box_content(text: str, arg_start: int, state: dict[str, dict[int, int] | None], first_arg: int
                 ) -> tuple[str, int | None] | None:
    """(content, end after the closing brace; None for an unbraced box) of one box, or None when open or empty."""
    pos = arg_start
    while pos < len(text) and text[pos] in " \t":
        pos += 1
    if pos >= len(text):
        return None
    if text[pos] != "{":
        content = _unbraced_argument(text, pos)
        return (content, None) if content else None
    pairs = state["pairs"]
    if pairs is None:
        close = matching_brace(text, pos)
        if close == -1:
            # An unclosed box: match every brace once, so earlier boxes cost O(1) each.
            state["pairs"] = brace_pairs(text, first_arg)
    else:
        close = pairs.get(pos, -1)
    if close == -1:
        return None
    content = text[pos + 1 : close].strip()
    return (content, close + 1) if content else None


def _strip_delimiters(answer: str) -> str:
    """Remove one pair of math delimiters or markdown bold around answer."""
    changed = True
    while changed and answer:
        changed = False
        for left, right in (*_MATH_DELIMS, ("**", "**")):
            inner = answer[len(left) : len(answer) - len(right)]
            if (len(answer) >= len(left) + len(right) and answer.startswith(left) and answer.endswith(right)
                    and not _unescaped(inner, left) and not _unescaped(inner, right)):  # not "$2$ and $3$": two spans
                answer = inner.strip()
                changed = True
                break
    return answer


def _unescaped(text: str, delimiter: str) -> bool:
    """Whether text holds the delimiter, not counting an escaped dollar (`\\$` is a dollar sign, not math)."""
    if delimiter.startswith("$"):
        return re.search(r"(?<!\\)" + re.escape(delimiter), text) is not None
    return delimiter in text


def _clean(answer: str) -> str:
    """Strip whitespace, delimiters, trailing punctuation and Minerva's sign-off from an answer."""
    answer = _HOPE_RE.sub("", answer.strip())
    answer = answer.strip().strip("*").strip().rstrip(".").strip()
    answer = _strip_delimiters(answer)
    answer = answer.rstrip(".").strip()
    return answer


def _rest_of_line(text: str, start: int) -> str:
    """Text from start to the line end; the next non-blank line if that is blank."""
    match = _LINE_RE.match(text, start)
    return match.group(1) if match else ""


def _answer_span(line: str) -> str:
    """The answer at the start of a line: up to the first sentence end ("6. Each of ...") or remark ("3 (since ...")."""
    body = line.lstrip(" *")
    end = _SENTENCE_END_RE.search(body)
    return body[: end.start()] if end else body


def extract_fallback(text: str) -> str | None:
    """Answer after the last "final answer is", "Answer:" or "####" anchor that has one, or None."""
    for anchor in reversed(list(_ANCHOR_RE.finditer(text))):
        start = anchor.end()
        answer = _clean(_answer_span(_HOPE_RE.sub("", _rest_of_line(text, start))))
        if answer and anchor.group() == "####" and _is_heading(text, start, answer):
            if not _ANSWER_HEADING_RE.fullmatch(answer):
                continue  # "#### Verification" and text below it: a section, not an answer
            line_end = text.find("\n", start)  # "#### Final Answer" over the answer: the answer is the next line
            answer = _clean(_answer_span(_HOPE_RE.sub("", _rest_of_line(text, line_end)))) if line_end != -1 else ""
        if answer:
            return answer
    return None


# "#### Verification" with text on the lines below is a markdown heading, not GSM8K's "#### 72" (which ends a
# solution; "#### Monday" or "#### sqrt(2)" on the last line is still an answer)
_HEADING_START_RE = re.compile(r"[A-Za-z]{2,}")
_ANSWER_HEADING_RE = re.compile(r"(?:the\s+)?(?:final\s+)?answer\s*:?", re.IGNORECASE)


def _is_heading(text: str, start: int, answer: str) -> bool:
    """Whether the "####" anchor ending at start is a markdown heading: a word, and more text on the lines below."""
    line_end = text.find("\n", start)
    return bool(_HEADING_START_RE.match(answer)) and line_end != -1 and bool(text[line_end:].strip())


def extract_answer(text: str) -> str | None:
    """The final answer of a completion (see the module docstring), or None if there is none."""
    if not text:
        return None
    boxed = extract_boxed(text)
    if boxed is not None:
        return boxed
    return extract_fallback(text)
