"""Grade any JSONL file of (reference, completion) rows; each output row is the input row plus
`extracted` (string or null), `correct` (bool, or null when undecided) and `undecided` (null, or
"timeout"/"error" when the comparison overran its time limit or crashed its worker). Bad input
raises InputError naming file, line and field."""
from __future__ import annotations

import decimal
import json
import math
import os
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from verify.batch import BatchStats, grade_batch
from verify.equivalence import DEFAULT_TIMEOUT, check_grader
from verify.progress import ProgressSink

__all__ = ["InputError", "JsonlResult", "OUTPUT_FIELDS", "read_jsonl", "grade_jsonl", "check_output_path"]

OUTPUT_FIELDS = ("extracted", "correct", "undecided")  # the fields grade_jsonl adds to (or overwrites in) each row
_MAX_NUMBER_CHARS = 10_000  # a numeric reference written out longer than this is refused (give it as a string)


class InputError(ValueError):
    """An input file is missing, unreadable or malformed (the message names file, row and field)."""


@dataclass
class JsonlResult:
    """Summary of grading one JSONL file."""

    rows: int
    correct: int
    no_answer: int
    stats: BatchStats
    undecided: int = 0  # rows whose comparison timed out or failed (written with correct null)


class _NonFinite(ValueError):
    """A NaN, Infinity or out-of-range number in a JSON line."""


def _refuse_constant(name: str) -> Any:
    """json parse_constant hook: NaN and Infinity are not JSON (the output could not be read back)."""
    raise _NonFinite(f"{name} is not valid JSON (NaN and Infinity are not allowed)")


_MAX_INT_DIGITS = 4000  # Python refuses to convert longer digit strings to int (sys.get_int_max_str_digits: 4,300)


class _JsonNumber(float):
    """A JSON number read as a float that remembers how it was written, so the output row writes it as given
    (`1e-400` is not 0.0 there, nor a 30-digit decimal rounded)."""

    text: str

    def __new__(cls, text: str) -> _JsonNumber:
        """The float of text, keeping text."""
        number = super().__new__(cls, text)
        number.text = text
        return number


def _finite_float(text: str) -> float:
    """json parse_float hook: a float, refusing numbers that overflow a double (they would be written as Infinity)."""
    value = _JsonNumber(text)
    if not math.isfinite(value):
        raise _NonFinite(f"number {text[:40]} is too large for a double (give it as a string)")
    return value


def _integer(text: str) -> int | float:
    """json parse_int hook: the integer, except `-0` and integers longer than Python converts (4,300 digits),
    kept as written (an int would write -0 back as 0)."""
    if text == "-0" or len(text.lstrip("-")) > _MAX_INT_DIGITS:
        return _JsonNumber(text)
    return int(text)


def _dumps(row: dict[str, Any], ensure_ascii: bool) -> str:
    """A row as one JSON line, numbers read from the input written as they were given."""
    nonce, texts = uuid.uuid4().hex, []

    def marked(value: Any) -> Any:
        if isinstance(value, _JsonNumber):
            texts.append(value.text)
            return f"\0{nonce}:{len(texts) - 1}\0"
        if isinstance(value, dict):
            return {key: marked(item) for key, item in value.items()}
        if isinstance(value, list):
            return [marked(item) for item in value]
        return value

    try:
        line = json.dumps(marked(row), ensure_ascii=ensure_ascii, allow_nan=False)
    except RecursionError:  # nested deeper than Python recurses: numbers as Python writes them
        return json.dumps(row, ensure_ascii=ensure_ascii, allow_nan=False)
    if not texts:
        return line
    return re.sub(rf'"\\u0000{nonce}:(\d+)\\u0000"', lambda match: texts[int(match[1])], line)


def _parse_line(line: str, source: Path, lineno: int) -> Any:
    """One JSONL line as a Python value, or InputError naming the line and the column within it."""
    try:  # without its line break: an error at the end of a cut-off row is at its last column, not a next line's first
        return json.loads(line.rstrip("\r\n"), parse_constant=_refuse_constant, parse_float=_finite_float,
                          parse_int=_integer)
    except json.JSONDecodeError as exc:
        raise InputError(
            f"{source}:{lineno}:{exc.colno}: malformed JSON ({exc.msg} at line {lineno}, column {exc.colno})"
        ) from None
    except RecursionError:
        raise InputError(f"{source}:{lineno}: the row nests arrays or objects too deeply to read") from None
    except ValueError as exc:  # _NonFinite, or an integer too long to convert
        raise InputError(f"{source}:{lineno}: {exc}") from None


def exact_number_text(number: decimal.Decimal | int) -> str:
    """A JSON number as exact plain text: integral values as integers ("1", "1000"), others positional ("0.0000001")."""
    if isinstance(number, int):
        return str(number)
    digits = len(number.as_tuple().digits)
    exponent = number.as_tuple().exponent
    if not isinstance(exponent, int) or digits + abs(exponent) > _MAX_NUMBER_CHARS:
        raise ValueError(f"number {number} is too long to write out")
    if number.is_zero():
        return "0"
    normal = number.normalize(decimal.Context(prec=max(28, digits)))
    return format(normal, "f")


def _text_field(row: dict[str, Any], field: str, where: str, line: str, allow_null: bool, allow_number: bool) -> str | None:
    """A row's field as a string (a number as its exact text), or InputError naming where and what is wrong."""
    if field not in row:
        present = ", ".join(repr(k) for k in list(row)[:10]) or "none"
        raise InputError(f"{where}: missing field {field!r} (fields present: {present})")
    value = row[field]
    if value is None and allow_null:
        return None
    if isinstance(value, str):
        return value
    if allow_number and isinstance(value, (int, float)) and not isinstance(value, bool):
        exact = value if isinstance(value, int) else json.loads(line, parse_float=decimal.Decimal, parse_int=decimal.Decimal)[field]
        try:
            return exact_number_text(exact)
        except ValueError as exc:
            raise InputError(f"{where}: field {field!r}: {exc}; give it as a string") from None
    kinds = "a string" + (" or a number" if allow_number else "") + (" or null" if allow_null else "")
    raise InputError(f"{where}: field {field!r} must be {kinds}, got {type(value).__name__}")


def _check_fields(reference_field: str, completion_field: str) -> None:
    """Refuse one field for both the reference and the completion."""
    if reference_field == completion_field:
        raise InputError(f"the reference field and the completion field are both {reference_field!r}; give two different fields")


def read_jsonl(
    path: str | os.PathLike[str], reference_field: str = "reference", completion_field: str = "completion"
) -> tuple[list[dict[str, Any]], list[str], list[str | None]]:
    """Rows, references and completions of a JSONL file (blank lines and a leading UTF-8 BOM skipped)."""
    _check_fields(reference_field, completion_field)
    source = Path(path)
    if not source.exists():
        raise InputError(f"{source}: no such file")
    if not source.is_file():
        raise InputError(f"{source}: not a file")
    rows: list[dict[str, Any]] = []
    references: list[str] = []
    completions: list[str | None] = []
    try:
        with source.open(encoding="utf-8-sig") as handle:
            for lineno, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                where = f"{source}:{lineno}"
                row = _parse_line(line, source, lineno)
                if not isinstance(row, dict):
                    raise InputError(f"{where}: expected a JSON object, got {type(row).__name__}")
                reference = _text_field(row, reference_field, where, line, allow_null=False, allow_number=True)
                if not reference or not reference.strip():
                    raise InputError(f"{where}: field {reference_field!r} is an empty reference (nothing to grade against)")
                completion = _text_field(row, completion_field, where, line, allow_null=True, allow_number=False)
                rows.append(row)
                references.append(reference)  # type: ignore[arg-type]
                completions.append(completion)
    except UnicodeDecodeError as exc:
        raise InputError(f"{source}: not UTF-8 text ({exc.reason} at byte {exc.start} of a line)") from None
    except OSError as exc:
        raise InputError(f"{source}: cannot read ({exc.strerror})") from None
    return rows, references, completions


def check_output_path(input_path: str | os.PathLike[str], output_path: str | os.PathLike[str]) -> Path:
    """The output path, refused (InputError) if it is a folder, lies in a missing folder, or is the input file."""
    target = Path(output_path)
    if target.is_dir():
        raise InputError(f"{target}: is a folder; --output needs a file name, e.g. {target / 'graded.jsonl'}")
    if not target.parent.is_dir():
        raise InputError(f"{target}: output folder {target.parent} does not exist")
    source = Path(input_path)
    same = target.resolve() == source.resolve()
    if not same and target.exists() and source.exists():
        same = os.path.samefile(target, source)
    if same:
        raise InputError(f"{target}: the output is the input file {source}; write the grades to another file")
    return target


def clobbered_fields(rows: list[dict[str, Any]]) -> dict[str, int]:
    """How many rows already have each field grading writes (those values are overwritten in the output)."""
    counts = {name: sum(name in row for row in rows) for name in OUTPUT_FIELDS}
    return {name: n for name, n in counts.items() if n}


def _output_row(row: dict[str, Any], answer: str | None, ok: bool, undecided: str | None) -> dict[str, Any]:
    """An input row plus the grading fields (correct is null when the comparison was undecided)."""
    return {**row, "extracted": answer, "correct": None if undecided else bool(ok), "undecided": undecided}


def _write_rows(target: Path, rows: list[dict[str, Any]]) -> None:
    """Write rows as JSONL under a temporary name, then rename (never a half-written file)."""
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with tmp.open("w", encoding="utf-8") as handle:
            for out in rows:
                try:
                    handle.write(_dumps(out, ensure_ascii=False) + "\n")
                except UnicodeEncodeError:  # a lone surrogate (a truncated emoji) has no UTF-8: write it escaped
                    handle.write(_dumps(out, ensure_ascii=True) + "\n")
        os.replace(tmp, target)
    except OSError as exc:
        raise InputError(f"{target}: cannot write ({exc.strerror})") from None
    finally:
        if tmp.exists():
            tmp.unlink()


def grade_jsonl(
    input_path: str | os.PathLike[str],
    output_path: str | os.PathLike[str],
    reference_field: str = "reference",
    completion_field: str = "completion",
    grader: str = "math-verify",
    timeout: float = DEFAULT_TIMEOUT,
    workers: int | None = None,
    progress: ProgressSink | None = None,
    on_warning: Callable[[str], None] | None = None,
) -> JsonlResult:
    """Grade a JSONL file into output_path (written under a temporary name, then renamed).

    on_warning receives a message for each grading field the input rows already have (default: warnings.warn).
    """
    check_grader(grader)
    _check_fields(reference_field, completion_field)
    target = check_output_path(input_path, output_path)
    rows, references, completions = read_jsonl(input_path, reference_field, completion_field)
    for name, count in clobbered_fields(rows).items():
        message = f"{input_path}: {count:,} of {len(rows):,} row(s) already have a {name!r} field; the output replaces it"
        if on_warning is None:
            import warnings

            warnings.warn(message, stacklevel=2)
        else:
            on_warning(message)
    result = grade_batch(completions, references, grader, timeout, workers, progress=progress)
    extracted = [a if isinstance(a, str) else None for a in result.frame["extracted"].tolist()]
    correct = result.frame["correct"].tolist()
    undecided = [u if isinstance(u, str) else None for u in result.frame["undecided"].tolist()]
    _write_rows(target, [_output_row(*fields) for fields in zip(rows, extracted, correct, undecided)])
    n_correct = sum(bool(ok) and u is None for ok, u in zip(correct, undecided))
    n_undecided = sum(u is not None for u in undecided)
    return JsonlResult(len(rows), n_correct, sum(a is None for a in extracted), result.stats, n_undecided)
