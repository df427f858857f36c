"""Problem records and dataset loading: the toy world, MATH, MATH-500, GSM8K, or a local file."""
from __future__ import annotations

import decimal
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

HUB_DATASETS = {
    "math500": ("HuggingFaceH4/MATH-500", None, "test"),
    "gsm8k": ("openai/gsm8k", "main", "test"),
}
MATH_HUB_NAME = "EleutherAI/hendrycks_math"
MATH_SUBJECTS = (
    "algebra", "counting_and_probability", "geometry", "intermediate_algebra",
    "number_theory", "prealgebra", "precalculus",
)
DATASET_NAMES = ("toy", "toy-train", "math500", "math", "gsm8k")
TOY_TEST_SIZE = 500


class DatasetError(ValueError):
    """A dataset that cannot be loaded or a row that cannot be normalised."""


@dataclass(frozen=True)
class Problem:
    """One normalised problem: reference final answer, optional level and subject."""

    id: str
    problem: str
    answer: str
    level: int | None = None
    subject: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (for tables and JSON)."""
        return asdict(self)


def parse_level(value: Any) -> int | None:
    """MATH's "Level 3" / 3 / 3.0 / "3" -> 3; missing, NaN or "Level ?" -> None."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, (float, decimal.Decimal)):  # a Parquet level column with a missing value is float64
        return int(value) if math.isfinite(value) and value == int(value) else None
    text = str(value).strip().removeprefix("Level").strip()
    return int(text) if text.isdigit() else None


def _gsm8k_answer(answer_field: str) -> str | None:
    """The number after GSM8K's `####`, without thousands separators."""
    if "####" not in answer_field:
        return None
    return answer_field.rsplit("####", 1)[1].strip().replace(",", "")


def _number_text(value: Any, where: str, field: str) -> str:
    """A number field as exact text (1e20 is 100000000000000000000, as `study verify --input` reads it)."""
    from verify.jsonl import exact_number_text

    if isinstance(value, float):
        if not math.isfinite(value):
            raise DatasetError(f"{where}: {field!r} must be a finite number, got {value}")
        value = decimal.Decimal(repr(value))  # a float column (Parquet): its shortest exact spelling
    if isinstance(value, decimal.Decimal) and not value.is_finite():
        raise DatasetError(f"{where}: {field!r} must be a finite number, got {value}")
    try:
        return exact_number_text(value)
    except ValueError as exc:
        raise DatasetError(f"{where}: {field!r}: {exc}; give it as a string") from None


def _scalar_text(value: Any, where: str, field: str) -> str:
    """A string or number field as text; anything else (true, a list, an object) is an error naming the field."""
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float, decimal.Decimal)) and not isinstance(value, bool):
        return _number_text(value, where, field)
    raise DatasetError(f"{where}: {field!r} must be a string or a number, got {type(value).__name__} {value!r:.60}")


def normalise_row(row: dict[str, Any], index: int, source: str, where: str | None = None) -> Problem:
    """Map one raw row (MATH, MATH-500, GSM8K, or our own format) to a Problem, or raise DatasetError.

    `where` names the row in errors (default "SOURCE, row N", data rows counted from 1)."""
    from verify import extract_answer  # the one balanced-brace \boxed{} extractor

    where = where or f"{source}, row {index + 1}"
    if not isinstance(row, dict):
        raise DatasetError(f"{where}: expected an object with problem and answer fields, got {type(row).__name__}")
    text = row.get("problem") or row.get("question")
    if not isinstance(text, str) or not text.strip():
        raise DatasetError(f"{where}: missing 'problem' (or 'question') text")
    answer = row.get("answer")
    if answer is not None:
        answer = _scalar_text(answer, where, "answer")
    if isinstance(answer, str) and "####" in answer:  # GSM8K: the answer field is a worked solution
        answer = _gsm8k_answer(answer)
    if answer is None or (isinstance(answer, str) and not answer.strip()):
        solution = row.get("solution")
        answer = extract_answer(solution) if isinstance(solution, str) else None
    if answer is None or not str(answer).strip():
        raise DatasetError(f"{where}: no reference answer ('answer' field or \\boxed{{}} in 'solution')")
    key = next((key for key in ("id", "unique_id", "idx") if row.get(key) not in (None, "")), None)
    identifier = _scalar_text(row[key], where, key) if key is not None else f"{Path(source).stem}-{index}"
    subject = row.get("subject") or row.get("type")
    return Problem(
        id=identifier,
        problem=text,
        answer=str(answer).strip(),
        level=parse_level(row.get("level")),
        subject=str(subject) if subject is not None else None,
    )


def normalise_rows(rows: Iterable[dict[str, Any]], source: str, skip_bad_rows: bool = False,
                   lines: Sequence[int] | None = None) -> tuple[list[Problem], list[str]]:
    """Normalise all rows; returns problems and why each skipped row was skipped (only with skip_bad_rows).

    Errors name a row by its number from 1, and its line in the file where `lines` gives it (JSONL)."""
    problems: list[Problem] = []
    skipped: list[str] = []
    seen: set[str] = set()
    for index, row in enumerate(rows):
        where = f"{source}, row {index + 1}" + (f" (line {lines[index]})" if lines is not None else "")
        try:
            problem = normalise_row(row, index, source, where)
        except DatasetError as exc:
            if not skip_bad_rows:
                raise
            skipped.append(str(exc))
            continue
        if problem.id in seen:
            if not skip_bad_rows:
                raise DatasetError(f"{where}: duplicate problem id {problem.id!r}")
            skipped.append(f"{where}: duplicate problem id {problem.id!r}")  # the first row with the id is kept
            continue
        seen.add(problem.id)
        problems.append(problem)
    return problems, skipped


def _json(text: str) -> Any:
    """JSON with numbers kept exact (Decimal) for answers given as numbers."""
    return json.loads(text, parse_float=decimal.Decimal)


def read_local_rows(path: Path, skip_bad_lines: bool = False) -> tuple[list[dict[str, Any]], list[int] | None, list[str]]:
    """Rows of a local .jsonl / .json / .parquet file, each row's line for a .jsonl file (blank lines skipped), and
    why each line skipped was (with `skip_bad_lines`: JSONL lines that are not UTF-8 or not JSON)."""
    if not path.exists():
        raise DatasetError(f"dataset file not found: {path} (looked at {Path(path).resolve()})")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            return pq.read_table(path).to_pylist(), None, []
        except pa.ArrowException as exc:
            raise DatasetError(f"{path}: not a readable Parquet file ({exc})") from None
    if suffix == ".jsonl":
        rows, lines, offset, bad = [], [], 0, []
        with path.open("rb") as handle:
            for line_number, raw in enumerate(handle, start=1):
                try:
                    line = raw.decode("utf-8")
                    if line.strip():
                        rows.append(_json(line))
                        lines.append(line_number)
                except UnicodeDecodeError as exc:
                    bad.append(f"{path}, line {line_number}: not UTF-8 text ({exc.reason} at byte "
                               f"{offset + exc.start} of the file)")
                except json.JSONDecodeError as exc:
                    bad.append(f"{path}, line {line_number}: invalid JSON ({exc.msg})")
                offset += len(raw)
                if bad and not skip_bad_lines:
                    raise DatasetError(bad[0])
        return rows, lines, bad
    if suffix == ".json":
        try:
            data = _json(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{path}: invalid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from None
        except UnicodeDecodeError as exc:
            raise DatasetError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
        if not isinstance(data, list):
            raise DatasetError(f"{path}: expected a JSON list of rows")
        return data, None, []
    raise DatasetError(f"{path}: unsupported dataset file type {suffix!r} (use .jsonl, .json or .parquet)")


def _hub_rows(name: str) -> list[dict[str, Any]]:
    """Rows of a hub dataset by its short name (needs internet and the `datasets` library)."""
    import datasets

    if name == "math":
        rows: list[dict[str, Any]] = []
        for subject in MATH_SUBJECTS:
            part = datasets.load_dataset(MATH_HUB_NAME, subject, split="test")
            rows.extend({**row, "id": f"math-{subject}-{i}"} for i, row in enumerate(part))
        return rows
    repo, config, split = HUB_DATASETS[name]
    data = datasets.load_dataset(repo, config, split=split) if config else datasets.load_dataset(repo, split=split)
    return [{**row, "id": row.get("unique_id") or f"{name}-{i}"} for i, row in enumerate(data)]


def _from_toy(problem) -> Problem:
    """A toy-world problem as a Problem record (the prompt without its trailing newline)."""
    return Problem(id=problem.id, problem=problem.prompt.rstrip("\n"), answer=problem.answer, level=problem.level,
                   subject="arithmetic")


def toy_problems(count: int = TOY_TEST_SIZE, seed: int = 0) -> list[Problem]:
    """The toy world's held-out test problems as Problem records."""
    from experiments.toy.generator import held_out_problems

    return [_from_toy(p) for p in held_out_problems(count, seed=seed)]


def toy_train_problems(count: int = TOY_TEST_SIZE, seed: int = 0) -> list[Problem]:
    """Problems from the toy world's training split (e.g. to train a judge head without touching test)."""
    from experiments.toy.generator import generate_split

    return [_from_toy(p) for p in generate_split("train", count, seed=seed)]


def load_problems(name_or_path: str, skip_bad_rows: bool = False, report=None) -> list[Problem]:
    """Load a dataset by short name (toy, toy-train, math500, math, gsm8k) or local file path."""
    if name_or_path in ("toy", "toy-train"):
        problems = toy_problems() if name_or_path == "toy" else toy_train_problems()
        ids = [p.id for p in problems]
        if len(set(ids)) != len(ids):  # the generator's own guarantee, checked: a run's problem ids must be unique
            raise DatasetError(f"{name_or_path}: problem ids repeat ({len(ids) - len(set(ids))} duplicates)")
        return problems
    path = Path(name_or_path)
    lines, bad_lines = None, []
    if path.suffix.lower() in (".jsonl", ".json", ".parquet") or path.exists():
        (rows, lines, bad_lines), source = read_local_rows(path, skip_bad_rows), str(path)
    elif name_or_path in DATASET_NAMES:
        try:
            rows, source = _hub_rows(name_or_path), name_or_path
        except (OSError, ValueError) as exc:  # offline, not found, a failed download
            hub = MATH_HUB_NAME if name_or_path == "math" else HUB_DATASETS[name_or_path][0]
            raise DatasetError(
                f"could not load dataset {name_or_path!r} ({hub}) from the Hugging Face hub: {type(exc).__name__}: {exc}. "
                "Without network access, pass a local .jsonl/.parquet file with MATH, MATH-500 or GSM8K fields instead."
            ) from None
    else:
        raise DatasetError(
            f"unknown dataset {name_or_path!r}: use one of {', '.join(DATASET_NAMES)} or a .jsonl/.parquet path"
        )
    problems, bad_rows = normalise_rows(rows, source, skip_bad_rows=skip_bad_rows, lines=lines)
    skipped = bad_lines + bad_rows
    if skipped and report is not None:
        shown = "; ".join(why.removeprefix(f"{source}, ") for why in skipped[:3])
        more = f"; and {len(skipped) - 3} more" if len(skipped) > 3 else ""
        report(f"skipped {len(skipped)} bad row(s) of {source} (--skip-bad-rows): {shown}{more}")
    if not problems:
        raise DatasetError(f"{source}: no problems")
    return problems


def select_problems(
    problems: Sequence[Problem], limit: int | None = None, levels: Sequence[int] | None = None
) -> list[Problem]:
    """Deterministic selection: filter by level, then take the first `limit` in dataset order."""
    chosen = [p for p in problems if levels is None or p.level in set(levels)]
    if levels is not None and not chosen:
        have = sorted({p.level for p in problems if p.level is not None})
        raise DatasetError(f"no problems at levels {sorted(set(levels))}; "
                           + (f"the dataset's levels are {have}" if have else "the dataset has no levels"))
    if limit is not None:
        if limit <= 0:
            raise DatasetError(f"--problems must be positive, got {limit}")
        chosen = chosen[:limit]
    return chosen


def parse_levels(text: str | None) -> list[int] | None:
    """'1,2' -> [1, 2]; None -> None (an empty or malformed list is an error, not "all levels")."""
    if text is None:
        return None
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise DatasetError(f"--levels must be comma-separated integers, e.g. 1,2, got {text!r}") from None
