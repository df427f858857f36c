"""`study verify`: JSONL grading (output rows, custom fields), run dirs (summary table), clear errors."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from experiments.cli import app
from verify.synthetic import ProblemSpec, write_run_dir

runner = CliRunner()


def _invoke(*args: str) -> tuple[int, str]:
    """Run `study ARGS`; exit code and everything printed (stdout and stderr)."""
    result = runner.invoke(app, list(args), env={"COLUMNS": "160"})
    text = result.output
    try:
        text += result.stderr
    except (ValueError, AttributeError):  # older click mixes stderr into output
        pass
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, text


def _write_jsonl(path: Path, rows: list[object]) -> Path:
    """Write one JSON value per line."""
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_help_lists_the_command() -> None:
    """The verify command is registered on the study app with both modes documented."""
    code, text = _invoke("verify", "--help")
    assert code == 0
    for option in ("--grader", "--input", "--output", "--reference-field", "--completion-field"):
        assert option in text


def test_jsonl_rows_gain_extracted_and_correct(tmp_path: Path) -> None:
    """Each output row is the input row plus extracted (string or null) and correct (bool)."""
    rows = [
        {"id": 1, "reference": "\\frac{1}{2}", "completion": "so \\boxed{0.5}", "meta": {"k": [1, 2]}},
        {"id": 2, "reference": "5", "completion": "The answer is \\boxed{6}."},
        {"id": 3, "reference": 72, "completion": "48 + 24 = 72\n#### 72"},
        {"id": 4, "reference": "3", "completion": None},
        {"id": 5, "reference": "\\text{Evelyn}", "completion": "I think it's \\boxed{Evelyn}"},
    ]
    source = _write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.jsonl"
    code, text = _invoke("verify", "--input", str(source), "--output", str(out), "--no-progress")
    assert code == 0, text
    graded = [json.loads(line) for line in out.read_text().splitlines()]
    assert [{k: v for k, v in g.items() if k not in ("extracted", "correct")} for g in graded] == rows
    assert [g["extracted"] for g in graded] == ["0.5", "6", "72", None, "Evelyn"]
    assert [g["correct"] for g in graded] == [True, False, True, False, True]
    assert "rows" in text and "accuracy" in text


def test_jsonl_custom_fields_and_strict_grader(tmp_path: Path) -> None:
    """--reference-field/--completion-field pick the columns; --grader strict uses MATH's is_equiv."""
    rows = [{"gold": "\\text{Evelyn}", "sample": "\\boxed{Evelyn}"}, {"gold": "\\frac{1}{2}", "sample": "\\boxed{\\frac12}"}]
    source = _write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.jsonl"
    code, text = _invoke(
        "verify", "--input", str(source), "--output", str(out), "--reference-field", "gold",
        "--completion-field", "sample", "--grader", "strict", "--no-progress",
    )
    assert code == 0, text
    assert [json.loads(line)["correct"] for line in out.read_text().splitlines()] == [False, True]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ('{"reference": "1", "completion": "x"}\n{"reference": "1", "completion": \n', [":2:", "malformed JSON"]),
        ('{"reference": "1", "completion": "x"}\n\n{"completion": "x"}\n', [":3:", "missing field 'reference'", "'completion'"]),
        ('{"reference": "1"}\n', [":1:", "missing field 'completion'"]),
        ('[1, 2]\n', [":1:", "expected a JSON object"]),
        ('{"reference": ["1"], "completion": "x"}\n', [":1:", "field 'reference' must be"]),
        ('{"reference": "1", "completion": 7}\n', [":1:", "field 'completion' must be"]),
    ],
)
def test_bad_jsonl_is_a_clear_error(tmp_path: Path, content: str, expected: list[str]) -> None:
    """Malformed lines and missing fields name the file, row and field; exit non-zero; no traceback."""
    source = tmp_path / "bad.jsonl"
    source.write_text(content, encoding="utf-8")
    out = tmp_path / "out.jsonl"
    code, text = _invoke("verify", "--input", str(source), "--output", str(out), "--no-progress")
    assert code != 0
    assert "bad.jsonl" in text and "Traceback" not in text
    for fragment in expected:
        assert fragment in text
    assert not out.exists()


def test_missing_and_unreadable_inputs(tmp_path: Path) -> None:
    """A missing file, a non-UTF-8 file, a missing output folder and bad option combinations fail cleanly."""
    code, text = _invoke("verify", "--input", str(tmp_path / "nope.jsonl"), "--output", str(tmp_path / "o.jsonl"))
    assert code != 0 and "nope.jsonl" in text and "no such file" in text and "Traceback" not in text
    binary = tmp_path / "bin.jsonl"
    binary.write_bytes(b'{"reference": "\xff\xfe"}\n')
    code, text = _invoke("verify", "--input", str(binary), "--output", str(tmp_path / "o.jsonl"))
    assert code != 0 and "not UTF-8" in text
    good = _write_jsonl(tmp_path / "good.jsonl", [{"reference": "1", "completion": "\\boxed{1}"}])
    code, text = _invoke("verify", "--input", str(good), "--output", str(tmp_path / "missing" / "o.jsonl"))
    assert code != 0 and "does not exist" in text
    code, text = _invoke("verify", "--input", str(good))
    assert code != 0 and "--output" in text
    code, text = _invoke("verify")
    assert code != 0 and "RUN_DIR" in text
    code, text = _invoke("verify", str(tmp_path), "--grader", "fuzzy")
    assert code != 0 and "unknown grader" in text


def test_run_dir_summary_and_rerun(tmp_path: Path) -> None:
    """A run dir is graded, summarised per config with CIs, and a re-run grades nothing."""
    problems = [ProblemSpec("a", "5", "", 1, "Algebra"), ProblemSpec("b", "\\frac{1}{2}", "", 2, "Algebra")]
    texts = ["\\boxed{5}", "\\boxed{4}", "no idea", "\\boxed{0.5}", "\\boxed{1/2}", "\\boxed{2}"]
    samples = pd.DataFrame(
        {
            "config_id": ["base"] * 6 + ["guided"] * 6,
            "problem_id": ["a", "a", "a", "b", "b", "b"] * 2,
            "sample_index": [0, 1, 2, 0, 1, 2] * 2,
            "text": texts + texts[::-1],
        }
    )
    run = write_run_dir(tmp_path / "run", problems, samples)
    code, text = _invoke("verify", str(run), "--no-progress")
    assert code == 0, text
    assert "12 samples graded now" in text
    for token in ("base", "guided", "pass@1", "maj@n", "coverage@n"):
        assert token in text
    code, text = _invoke("verify", str(run), "--no-progress")
    assert code == 0 and "0 samples graded now, 12 already graded" in text
    code, text = _invoke("verify", str(run), "--grader", "strict", "--no-progress")
    assert code == 0 and "12 samples graded now" in text
    code, text = _invoke("verify", str(run), "--no-progress", "--by", "level")
    assert code == 0 and "pass@1 by level" in text
    # base: level 1 (problem a) has 1 of 3 correct, level 2 (problem b) 2 of 3
    assert "0.333 [0.333, 0.333]" in text and "0.667 [0.667, 0.667]" in text
    code, text = _invoke("verify", str(run), "--by", "colour")
    assert code != 0 and "--by must be" in text


def test_timed_out_pairs_are_not_cached_and_regrade_retries_them(tmp_path: Path) -> None:
    """A comparison that times out is graded wrong but never cached; --regrade with a larger --timeout
    grades it again (and only it: decided pairs come from the cache), replacing the old grades."""
    from verify.run_grades import grades_dir, read_grades

    problems = [ProblemSpec("a", "3\\sqrt{13}", "", 1, "Algebra"), ProblemSpec("b", "5", "", 1, "Algebra")]
    samples = pd.DataFrame({"config_id": "base", "problem_id": ["a", "a", "b"], "sample_index": [0, 1, 0],
                            "text": ["\\boxed{\\sqrt{117}}", "\\boxed{\\sqrt{117}}", "\\boxed{5}"]})
    run = write_run_dir(tmp_path / "run", problems, samples)
    code, text = _invoke("verify", str(run), "--no-progress", "--timeout", "0.001")  # math-verify needs far longer
    assert code == 0, text
    assert "1 timed out" in text and "--regrade" in text
    assert read_grades(run)["correct"].tolist() == [False, False, True]
    code, text = _invoke("verify", str(run), "--no-progress", "--regrade", "--timeout", "30")
    assert code == 0, text
    assert "3 samples graded now" in text and "1 cached" in text and "1 math-verify" in text and "0 timed out" in text
    assert read_grades(run)["correct"].tolist() == [True, True, True]
    assert len(list(grades_dir(run, "math-verify").glob("*.parquet"))) == 1  # the old part is gone
    code, text = _invoke("verify", str(run), "--no-progress", "--regrade")
    assert code == 0 and "2 cached" in text and "0 math-verify" in text  # now decided: from the cache


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "1e10"])
def test_timeout_out_of_range_is_refused(tmp_path: Path, value: str) -> None:
    """--timeout must be finite seconds in (0, a day]."""
    source = _write_jsonl(tmp_path / "in.jsonl", [{"reference": "1", "completion": "\\boxed{1}"}])
    code, text = _invoke("verify", "--input", str(source), "--output", str(tmp_path / "o.jsonl"), "--timeout", value)
    assert code == 2 and "--timeout must be" in text and "Traceback" not in text


def test_lone_surrogate_is_written_escaped(tmp_path: Path) -> None:
    """A completion with a lone UTF-16 surrogate (a truncated emoji) is graded and written, escaped."""
    source = tmp_path / "in.jsonl"
    source.write_text('{"reference": "5", "completion": "\\\\boxed{5} \\ud83d"}\n', encoding="utf-8")
    out = tmp_path / "out.jsonl"
    code, text = _invoke("verify", "--input", str(source), "--output", str(out), "--no-progress")
    assert code == 0, text
    row = json.loads(out.read_text(encoding="utf-8"))
    assert row["correct"] is True and row["completion"] == "\\boxed{5} \ud83d"


def test_bad_run_dir_is_a_clear_error(tmp_path: Path) -> None:
    """Not a run dir: exit non-zero with the path in the message, no traceback."""
    code, text = _invoke("verify", str(tmp_path / "missing"))
    assert code != 0 and "missing" in text and "Traceback" not in text
    (tmp_path / "empty").mkdir()
    code, text = _invoke("verify", str(tmp_path / "empty"))
    assert code != 0 and "_problems.parquet" in text
