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
    assert [{k: v for k, v in g.items() if k not in ("extracted", "correct", "undecided")} for g in graded] == rows
    assert [g["extracted"] for g in graded] == ["0.5", "6", "72", None, "Evelyn"]
    assert [g["correct"] for g in graded] == [True, False, True, False, True]
    assert [g["undecided"] for g in graded] == [None] * 5
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


def test_integers_longer_than_python_converts_are_graded_and_kept(tmp_path: Path) -> None:
    """A 5,000-digit reference (Python refuses to convert over 4,300 digits to int) is read exactly and graded; a
    4,500-digit extra field is written back digit for digit."""
    big, extra = "7" * 5000, "9" * 4500
    source = tmp_path / "big.jsonl"
    source.write_text(f'{{"reference": {big}, "completion": "\\\\boxed{{{big}}}", "x": {extra}}}\n', encoding="utf-8")
    out = tmp_path / "out.jsonl"
    code, text = _invoke("verify", "--input", str(source), "--output", str(out), "--no-progress")
    assert code == 0, text
    written = out.read_text()
    assert f'"x": {extra},' in written and f'"reference": {big},' in written and '"correct": true' in written


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ('{"reference": "1", "completion": "x"}\n{"reference": "1", "completion": \n', [":2:34:", "malformed JSON",
                                                                                        "at line 2, column 34"]),
        ('{"reference": "1", "completion": \r\n', [":1:34:", "at line 1, column 34"]),  # a cut-off row: its last column
        ('{"reference": "1", "completion": "x", "d": ' + "[" * 5000 + "]" * 5000 + "}\n", [":1:", "nests arrays or objects too deeply"]),
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


def test_a_damaged_shard_or_problems_file_is_named_not_a_traceback(tmp_path: Path) -> None:
    """An unreadable samples shard or problems file: `study verify` names it and says what to do."""
    problems = [ProblemSpec("a", "5", "", 1, "Algebra")]
    samples = pd.DataFrame({"config_id": ["base"] * 2, "problem_id": ["a"] * 2, "sample_index": [0, 1],
                            "text": ["\\boxed{5}", "\\boxed{4}"]})
    run = write_run_dir(tmp_path / "run", problems, samples)
    shard = next((run / "samples").rglob("*.parquet"))
    shard.write_bytes(shard.read_bytes()[:100])
    code, text = _invoke("verify", str(run))
    assert code == 2 and "Traceback" not in text, text
    assert shard.name in text and "unreadable samples shard" in text and "Remove it" in text, text
    (run / "_problems.parquet").write_bytes(b"")
    code, text = _invoke("verify", str(run))
    assert code == 2 and "_problems.parquet: unreadable" in text and "Traceback" not in text, text


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
    assert "0.333 (no CI: one problem)" in text and "0.667 (no CI: one problem)" in text  # not a zero-width interval
    code, text = _invoke("verify", str(run), "--by", "colour")
    assert code != 0 and "--by must be" in text


def test_timed_out_pairs_are_not_decided_and_regrade_retries_them(tmp_path: Path) -> None:
    """A comparison that times out is graded wrong and never cached as decided; --regrade with a larger --timeout
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


def test_an_answer_left_undecided_keeps_its_verdict_for_later_samples_until_a_regrade(tmp_path: Path) -> None:
    """Samples added after a call that timed out on an answer get that answer's verdict (wrong, undecided), not a
    fresh comparison: one answer, one verdict and one class within a problem; --regrade compares it again for all."""
    from verify.run_grades import read_grades

    problems = [ProblemSpec("a", "3\\sqrt{13}", "", 1, "Algebra")]
    first = pd.DataFrame({"config_id": "base", "problem_id": ["a"], "sample_index": [0], "text": ["\\boxed{\\sqrt{117}}"]})
    run = write_run_dir(tmp_path / "run", problems, first)
    code, text = _invoke("verify", str(run), "--no-progress", "--timeout", "0.001")
    assert code == 0 and "1 timed out" in text, text
    write_run_dir(run, problems, first.assign(sample_index=1))  # a resumed run's new sample, same answer
    code, text = _invoke("verify", str(run), "--no-progress")  # the default timeout would decide it (correct)
    assert code == 0, text
    assert "1 samples graded now" in text and "1 of them from the cache, left undecided earlier" in text and "--regrade" in text
    grades = read_grades(run)
    assert grades["correct"].tolist() == [False, False] and grades["answer_class"].nunique() == 1
    code, text = _invoke("verify", str(run), "--no-progress", "--regrade", "--timeout", "30")
    assert code == 0 and "0 timed out" in text and "timed out or failed" not in text, text
    grades = read_grades(run)
    assert grades["correct"].tolist() == [True, True] and grades["answer_class"].tolist() == [0, 0]


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
    # in the answer itself (wrong), and as the reference too (the same string: right)
    source.write_text('{"reference": "5", "completion": "\\\\boxed{\\ud83d5}"}\n'
                      '{"reference": "\\ud83d", "completion": "\\\\boxed{\\ud83d}"}\n', encoding="utf-8")
    code, text = _invoke("verify", "--input", str(source), "--output", str(out), "--no-progress")
    assert code == 0, text
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [(r["extracted"], r["correct"]) for r in rows] == [("\ud83d5", False), ("\ud83d", True)]


def test_bad_run_dir_is_a_clear_error(tmp_path: Path) -> None:
    """Not a run dir: exit non-zero with the path in the message, no traceback."""
    code, text = _invoke("verify", str(tmp_path / "missing"))
    assert code != 0 and "missing" in text and "Traceback" not in text
    (tmp_path / "empty").mkdir()
    code, text = _invoke("verify", str(tmp_path / "empty"))
    assert code != 0 and "_problems.parquet" in text


def test_by_level_shows_whole_levels_and_names_problems_without_one(tmp_path: Path) -> None:
    """Levels with a gap (a problem without one, as in GSM8K) are shown as 1, 2 and '(none)', not 1.0 and nan."""
    problems = [ProblemSpec("a", "5", "", 1), ProblemSpec("b", "6", "", 2), ProblemSpec("c", "7", "")]
    samples = pd.DataFrame({"config_id": "base", "problem_id": ["a", "b", "c"], "sample_index": 0,
                            "text": ["\\boxed{5}", "\\boxed{6}", "\\boxed{1}"]})
    run = write_run_dir(tmp_path / "run", problems, samples)
    code, text = _invoke("verify", str(run), "--no-progress", "--by", "level")
    assert code == 0, text
    breakdown = text[text.index("pass@1 by level"):]
    rows = [line.split("│")[1:3] for line in breakdown.splitlines() if line.count("│") >= 4 and "base" in line]
    assert [level.strip() for _, level in rows] == ["1", "2", "(none)"], text
    code, text = _invoke("verify", str(run), "--no-progress", "--by", "subject")
    assert code == 0 and "(none)" in text and "nan" not in text, text


def test_jsonl_options_given_with_a_run_dir_are_refused(tmp_path: Path) -> None:
    """--output, --reference-field and --completion-field grade a JSONL file: with a RUN_DIR they are refused,
    not silently ignored (even when given their default value)."""
    for args, said in ((["--output", "o.jsonl"], "--output is only used with --input"),
                       (["--reference-field", "foo"], "--reference-field is only used with --input"),
                       (["--completion-field", "completion", "--reference-field", "answer"],
                        "--reference-field and --completion-field are only used with --input")):
        code, text = _invoke("verify", str(tmp_path / "run"), *args)
        assert code == 2 and said in text, text


def test_timed_out_rows_are_written_undecided_and_counted_as_calls(tmp_path: Path) -> None:
    """A comparison that times out is written as "correct": null with "undecided": "timeout" (not as a wrong
    answer), and the summary counts it as a math-verify call that timed out."""
    from verify.jsonl import grade_jsonl

    rows = [{"reference": "3\\sqrt{13}", "completion": "\\boxed{\\sqrt{117}}"}, {"reference": "5", "completion": "\\boxed{6}"}]
    source = _write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.jsonl"
    code, text = _invoke("verify", "--input", str(source), "--output", str(out), "--no-progress", "--timeout", "0.001")
    assert code == 0, text
    graded = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(g["correct"], g["undecided"]) for g in graded] == [(None, "timeout"), (False, None)]
    assert "1 row(s) undecided" in text
    result = grade_jsonl(source, tmp_path / "again.jsonl", timeout=0.001, workers=1)
    assert (result.stats.timeouts, result.stats.calls, result.undecided, result.correct) == (1, 1, 1, 0)


def test_output_that_is_the_input_is_refused(tmp_path: Path) -> None:
    """--output naming the input file (however spelled, or through a link) is refused before anything is written."""
    source = _write_jsonl(tmp_path / "in.jsonl", [{"reference": "1", "completion": "\\boxed{1}"}])
    before = source.read_bytes()
    (tmp_path / "sub").mkdir()
    link = tmp_path / "link.jsonl"
    link.symlink_to(source)
    for output in (source, tmp_path / "sub" / ".." / "in.jsonl", link):
        code, text = _invoke("verify", "--input", str(source), "--output", str(output), "--no-progress")
        assert code == 2 and "the output is the input file" in text and "Traceback" not in text
    assert source.read_bytes() == before and link.is_symlink()


def test_grading_fields_already_in_the_input_are_warned_about(tmp_path: Path) -> None:
    """Rows that already have a field grading writes get a warning naming the field and how many rows."""
    rows = [{"reference": "1", "completion": "\\boxed{1}", "correct": False}, {"reference": "2", "completion": "\\boxed{2}"}]
    source = _write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.jsonl"
    code, text = _invoke("verify", "--input", str(source), "--output", str(out), "--no-progress")
    assert code == 0, text
    assert "warning" in text and "1 of 2 row(s) already have a 'correct' field" in text
    assert [json.loads(line)["correct"] for line in out.read_text().splitlines()] == [True, True]


@pytest.mark.parametrize(
    ("reference", "completion", "grader"),
    [
        ("1e20", "\\boxed{100000000000000000000}", "math-verify"),
        ("1e-7", "\\boxed{0.0000001}", "math-verify"),
        ("1.0", "\\boxed{1}", "strict"),
        ("0.10", "\\boxed{0.1}", "strict"),
        ("123456789012345678901234567890", "\\boxed{123456789012345678901234567890}", "strict"),
    ],
)
def test_numeric_references_are_converted_exactly(tmp_path: Path, reference: str, completion: str, grader: str) -> None:
    """A JSON-number reference is read from its text (no float repr): integral values as integers, others positional."""
    source = tmp_path / "in.jsonl"
    source.write_text(f'{{"reference": {reference}, "completion": {json.dumps(completion)}}}\n', encoding="utf-8")
    out = tmp_path / "out.jsonl"
    code, text = _invoke("verify", "--input", str(source), "--output", str(out), "--no-progress", "--grader", grader)
    assert code == 0, text
    assert json.loads(out.read_text())["correct"] is True


def test_exact_number_text() -> None:
    """Decimal and int references as plain text without exponent or trailing zeros."""
    from decimal import Decimal

    from verify.jsonl import exact_number_text

    cases = {"1e20": "100000000000000000000", "1e-7": "0.0000001", "1.0": "1", "0.10": "0.1", "-0.0": "0",
             "-2.50": "-2.5", "1.5E3": "1500", "12345678901234567890123456789012.5": "12345678901234567890123456789012.5"}
    assert {k: exact_number_text(Decimal(k)) for k in cases} == cases
    assert exact_number_text(72) == "72"


@pytest.mark.parametrize("output", [".", "..", "outdir", "outdir/"])
def test_output_folder_is_refused_before_grading(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, output: str) -> None:
    """--output naming an existing folder is a clear error before any grading (no traceback)."""
    import verify.jsonl

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("graded before checking --output")

    work = tmp_path / "work"
    (work / "outdir").mkdir(parents=True)
    source = _write_jsonl(work / "in.jsonl", [{"reference": "1", "completion": "\\boxed{1}"}])
    monkeypatch.chdir(work)
    monkeypatch.setattr(verify.jsonl, "grade_batch", forbidden)
    code, text = _invoke("verify", "--input", str(source), "--output", output, "--no-progress")
    assert code == 2 and "is a folder" in text and "Traceback" not in text


def test_empty_input_shows_a_dash_not_nan(tmp_path: Path) -> None:
    """A file with no rows says so; accuracy is a dash, never nan."""
    source = tmp_path / "empty.jsonl"
    source.write_text("\n\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    code, text = _invoke("verify", "--input", str(source), "--output", str(out), "--no-progress")
    assert code == 0, text
    assert "no rows to grade" in text and "nan" not in text
    assert out.read_text() == ""


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ('{"reference": "1", "completion": "x"}\n{"reference": NaN, "completion": "x"}\n', ["bad.jsonl:2:", "NaN is not valid JSON"]),
        ('{"reference": "1", "completion": "x", "score": -Infinity}\n', ["bad.jsonl:1:", "-Infinity is not valid JSON"]),
        ('{"reference": 1e400, "completion": "x"}\n', ["bad.jsonl:1:", "too large for a double"]),
        ('{"reference": "1", "completion": "x"}\n{"reference": "1", "completion": x}\n',
         ["bad.jsonl:2:34:", "line 2, column 34"]),
        ('{"reference": "", "completion": "x"}\n', ["bad.jsonl:1:", "empty reference"]),
        ('{"reference": "  ", "completion": "x"}\n', ["bad.jsonl:1:", "empty reference"]),
    ],
)
def test_invalid_json_values_are_refused_naming_the_line(tmp_path: Path, content: str, expected: list[str]) -> None:
    """NaN/Infinity (which would make the output invalid JSON), overflowing numbers, malformed lines (line and
    column) and empty references are errors naming the line."""
    source = tmp_path / "bad.jsonl"
    source.write_text(content, encoding="utf-8")
    out = tmp_path / "out.jsonl"
    code, text = _invoke("verify", "--input", str(source), "--output", str(out), "--no-progress")
    assert code == 2 and "Traceback" not in text
    for fragment in expected:
        assert fragment in text
    assert not out.exists()


def test_utf8_bom_is_accepted(tmp_path: Path) -> None:
    """A UTF-8 byte-order mark at the start of the file is skipped."""
    source = tmp_path / "bom.jsonl"
    source.write_bytes(b"\xef\xbb\xbf" + b'{"reference": "5", "completion": "\\\\boxed{5}"}\n')
    out = tmp_path / "out.jsonl"
    code, text = _invoke("verify", "--input", str(source), "--output", str(out), "--no-progress")
    assert code == 0, text
    assert json.loads(out.read_text())["correct"] is True


def test_same_field_for_reference_and_completion_is_refused(tmp_path: Path) -> None:
    """--reference-field and --completion-field must differ (CLI and library)."""
    from verify.jsonl import InputError, read_jsonl

    source = _write_jsonl(tmp_path / "in.jsonl", [{"text": "\\boxed{1}"}])
    code, text = _invoke("verify", "--input", str(source), "--output", str(tmp_path / "o.jsonl"),
                         "--reference-field", "text", "--completion-field", "text")
    assert code == 2 and "both 'text'" in text
    with pytest.raises(InputError, match="both 'text'"):
        read_jsonl(source, "text", "text")


def test_a_file_given_as_run_dir_suggests_input(tmp_path: Path) -> None:
    """`study verify a.jsonl` points at --input/--output."""
    source = _write_jsonl(tmp_path / "a.jsonl", [{"reference": "1", "completion": "\\boxed{1}"}])
    code, text = _invoke("verify", str(source))
    assert code == 2 and "--input" in text and "not a directory" in text


def test_interrupted_run_keeps_finished_pairs_and_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C while grading a run dir: exit 130, a message that the grades were not saved, the pairs finished
    so far kept in the pair cache (written atomically), and a re-run takes them from the cache."""
    import verify.batch
    from verify.run_grades import read_grades

    problems = [ProblemSpec("a", "5", "", 1, "Algebra"), ProblemSpec("b", "7", "", 1, "Algebra")]
    samples = pd.DataFrame({"config_id": "base", "problem_id": ["a", "b"], "sample_index": [0, 0],
                            "text": ["\\boxed{5}", "\\boxed{8}"]})
    run = write_run_dir(tmp_path / "run", problems, samples)
    real = verify.batch.grade_pairs

    def first_then_interrupt(pairs, grader, timeout, workers, pool=None, on_done=None):  # type: ignore[no-untyped-def]
        grades = real(pairs[:1], grader, timeout, workers, pool=pool)
        if on_done is not None:
            on_done(0, grades[0])
        raise KeyboardInterrupt

    monkeypatch.setattr(verify.batch, "grade_pairs", first_then_interrupt)
    code, text = _invoke("verify", str(run), "--no-progress")
    assert code == 130 and "grades of this call were not saved" in text and "1 comparison(s)" in text
    assert read_grades(run).empty
    cache_dir = run / "_grades" / "_cache"
    assert sorted(p.name for p in cache_dir.iterdir()) == ["math-verify.lock", "math-verify.pairs.parquet"]  # no temp file left behind
    monkeypatch.setattr(verify.batch, "grade_pairs", real)
    code, text = _invoke("verify", str(run), "--no-progress")
    assert code == 0 and "2 samples graded now" in text and "1 cached" in text


def test_interrupted_regrade_says_how_to_finish_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C during --regrade: exit 130 and the advice to finish it with --regrade (a plain re-run is refused)."""
    import verify.run_grades

    problems = [ProblemSpec("a", "5", "", 1, "Algebra")]
    run = write_run_dir(tmp_path / "run", problems, pd.DataFrame(
        {"config_id": "base", "problem_id": ["a"], "sample_index": [0], "text": ["\\boxed{5}"]}))
    assert _invoke("verify", str(run), "--no-progress")[0] == 0

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(verify.run_grades, "grade_batch", interrupted)
    code, text = _invoke("verify", str(run), "--regrade", "--no-progress")
    assert code == 130 and "regrade is unfinished" in text and "--regrade` finishes it" in text
    monkeypatch.undo()
    code, text = _invoke("verify", str(run), "--no-progress")
    assert code == 2 and "was interrupted" in text
    assert _invoke("verify", str(run), "--regrade", "--no-progress")[0] == 0


def test_interrupted_jsonl_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C while grading a JSONL file: exit 130, a one-line message, no output file."""
    import verify.jsonl

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    source = _write_jsonl(tmp_path / "in.jsonl", [{"reference": "1", "completion": "\\boxed{1}"}])
    out = tmp_path / "out.jsonl"
    monkeypatch.setattr(verify.jsonl, "grade_batch", interrupted)
    code, text = _invoke("verify", "--input", str(source), "--output", str(out), "--no-progress")
    assert code == 130 and "nothing was written" in text and not out.exists()


def test_a_full_disk_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No space to write the grades: one line naming the file and the cause, no traceback, nothing half-written."""
    import verify.run_grades as run_grades

    run = write_run_dir(tmp_path / "run", [ProblemSpec("p", "3", "", 1, "Algebra")],
                        pd.DataFrame({"config_id": "c", "problem_id": "p", "sample_index": [0], "text": ["\\boxed{3}"]}))

    def full(table, path, **options):
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(run_grades, "write_table_atomic", full)
    code, text = _invoke("verify", str(run), "--no-progress")
    assert code == 2 and "No space left on device" in text and "Traceback" not in text and "run the same command again" in text
    assert not (run / "_grades" / "grader=math-verify").exists()


def test_numbers_are_written_back_as_given(tmp_path: Path) -> None:
    """Fields grading does not touch keep their numbers exactly as written: no underflow to 0.0, no rounding of a
    long decimal, no re-spelling of an exponent; a string that looks like the writer's placeholder stays a string."""
    source = tmp_path / "in.jsonl"
    line = ('{"reference": 0.5, "completion": "\\\\boxed{1/2}", "score": 1e-400, "big": 12345678901234567890.123456789, '
            '"e": 1e20, "nested": {"x": [0.1, 2.50, -0]}, "s": "\\u0000x:0\\u0000"}')
    source.write_text(line + "\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    code, text = _invoke("verify", "--input", str(source), "--output", str(out), "--no-progress")
    assert code == 0, text
    written = out.read_text(encoding="utf-8").strip()
    assert written.startswith(line[:-1] + ", ") and json.loads(written)["correct"] is True
    deep = '{"reference": "1", "completion": "\\\\boxed{1}", "meta": ' + "[" * 900 + "1.50" + "]" * 900 + "}"
    source.write_text(deep + "\n", encoding="utf-8")  # deeper than Python recurses: written (numbers as Python spells them)
    code, text = _invoke("verify", "--input", str(source), "--output", str(out), "--no-progress")
    assert code == 0, text
    assert json.loads(out.read_text(encoding="utf-8"))["correct"] is True


def test_a_replaced_shard_is_named_as_graded_again(tmp_path: Path) -> None:
    """`study verify` says when a shard holds other samples than it was graded from, and that they were graded again."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from sampling.store import TEXTS_KEY, texts_digest

    problems = [ProblemSpec("p", "5", "", 1, "Algebra")]
    samples = pd.DataFrame({"config_id": "c", "problem_id": "p", "sample_index": [0, 1], "text": ["\\boxed{5}"] * 2})
    run = write_run_dir(tmp_path / "run", problems, samples)
    assert _invoke("verify", str(run), "--no-progress")[0] == 0
    shard = next((run / "samples" / "c").glob("*.parquet"))
    table = pq.read_table(shard)
    table = table.set_column(table.schema.get_field_index("text"), "text", pa.array(["\\boxed{4}"] * 2))
    pq.write_table(table.replace_schema_metadata({TEXTS_KEY: texts_digest(table).encode()}), shard)
    code, text = _invoke("verify", str(run), "--no-progress")
    assert code == 0, text
    assert "2 samples graded now, 0 already graded" in text
    assert "1 shard(s) hold other samples than when they were graded" in text and "graded again" in text
    from verify import read_grades

    assert read_grades(run)["extracted"].tolist() == ["4", "4"] and not read_grades(run)["correct"].any()
