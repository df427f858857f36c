"""Grade any JSONL file of (reference, completion) rows; each output row is the input row plus
`extracted` (string or null) and `correct` (bool). Bad input raises InputError naming file, row, field."""
from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from verify.batch import BatchStats, grade_batch
from verify.equivalence import DEFAULT_TIMEOUT, check_grader
from verify.progress import ProgressSink

__all__ = ["InputError", "JsonlResult", "read_jsonl", "grade_jsonl"]


class InputError(ValueError):
    """An input file is missing, unreadable or malformed (the message names file, row and field)."""


@dataclass
class JsonlResult:
    """Summary of grading one JSONL file."""

    rows: int
    correct: int
    no_answer: int
    stats: BatchStats


def _text_field(row: dict[str, Any], field: str, where: str, allow_null: bool, allow_number: bool) -> str | None:
    """A row's field as a string, or InputError naming where and what is wrong."""
    if field not in row:
        present = ", ".join(repr(k) for k in list(row)[:10]) or "none"
        raise InputError(f"{where}: missing field {field!r} (fields present: {present})")
    value = row[field]
    if value is None and allow_null:
        return None
    if isinstance(value, str):
        return value
    if allow_number and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    kinds = "a string" + (" or a number" if allow_number else "") + (" or null" if allow_null else "")
    raise InputError(f"{where}: field {field!r} must be {kinds}, got {type(value).__name__}")


def read_jsonl(
    path: str | os.PathLike[str], reference_field: str = "reference", completion_field: str = "completion"
) -> tuple[list[dict[str, Any]], list[str], list[str | None]]:
    """Rows, references and completions of a JSONL file (blank lines skipped)."""
    source = Path(path)
    if not source.exists():
        raise InputError(f"{source}: no such file")
    if not source.is_file():
        raise InputError(f"{source}: not a file")
    rows: list[dict[str, Any]] = []
    references: list[str] = []
    completions: list[str | None] = []
    try:
        with source.open(encoding="utf-8") as handle:
            for lineno, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                where = f"{source}:{lineno}"
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise InputError(f"{where}: malformed JSON ({exc.msg} at column {exc.colno})") from None
                if not isinstance(row, dict):
                    raise InputError(f"{where}: expected a JSON object, got {type(row).__name__}")
                reference = _text_field(row, reference_field, where, allow_null=False, allow_number=True)
                completion = _text_field(row, completion_field, where, allow_null=True, allow_number=False)
                rows.append(row)
                references.append(reference)  # type: ignore[arg-type]
                completions.append(completion)
    except UnicodeDecodeError as exc:
        raise InputError(f"{source}: not UTF-8 text ({exc.reason} at byte {exc.start} of a line)") from None
    except OSError as exc:
        raise InputError(f"{source}: cannot read ({exc.strerror})") from None
    return rows, references, completions


def grade_jsonl(
    input_path: str | os.PathLike[str],
    output_path: str | os.PathLike[str],
    reference_field: str = "reference",
    completion_field: str = "completion",
    grader: str = "math-verify",
    timeout: float = DEFAULT_TIMEOUT,
    workers: int | None = None,
    progress: ProgressSink | None = None,
) -> JsonlResult:
    """Grade a JSONL file into output_path (written under a temporary name, then renamed)."""
    check_grader(grader)
    target = Path(output_path)
    if not target.parent.is_dir():
        raise InputError(f"{target}: output folder {target.parent} does not exist")
    rows, references, completions = read_jsonl(input_path, reference_field, completion_field)
    result = grade_batch(completions, references, grader, timeout, workers, progress=progress)
    extracted = [a if isinstance(a, str) else None for a in result.frame["extracted"].tolist()]
    correct = result.frame["correct"].tolist()
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with tmp.open("w", encoding="utf-8") as handle:
            for row, answer, ok in zip(rows, extracted, correct):
                out = {**row, "extracted": answer, "correct": bool(ok)}
                try:
                    handle.write(json.dumps(out, ensure_ascii=False) + "\n")
                except UnicodeEncodeError:  # a lone surrogate (a truncated emoji) has no UTF-8: write it escaped
                    handle.write(json.dumps(out) + "\n")
        os.replace(tmp, target)
    except OSError as exc:
        raise InputError(f"{target}: cannot write ({exc.strerror})") from None
    finally:
        if tmp.exists():
            tmp.unlink()
    return JsonlResult(len(rows), int(sum(correct)), int(sum(a is None for a in extracted)), result.stats)
