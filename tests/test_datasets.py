"""Dataset loading and normalisation on local copies of the real files."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from sampling.datasets import DatasetError, load_problems, normalise_rows, parse_levels, select_problems

FIXTURES = Path(__file__).parent / "fixtures"
DATA = FIXTURES / "datasets"


def test_math_jsonl_extracts_answers_from_boxed_solutions() -> None:
    problems = load_problems(str(DATA / "math_test_head40.jsonl"))
    assert len(problems) == 40
    first = problems[0]
    assert first.answer == "2" and first.level == 3 and first.subject == "Algebra"
    assert all(p.answer and p.problem for p in problems)
    assert len({p.id for p in problems}) == 40


def test_math500_parquet_keeps_fields() -> None:
    problems = load_problems(str(DATA / "math500_head30.parquet"))
    assert len(problems) == 30
    assert problems[0].id.startswith("test/") and isinstance(problems[0].level, int)
    assert problems[0].answer == "\\left( 3, \\frac{\\pi}{2} \\right)"


def test_gsm8k_answer_after_hashes() -> None:
    problems = load_problems(str(DATA / "gsm8k_test_head30.jsonl"))
    assert problems[0].answer == "18"
    assert problems[0].level is None
    assert all("####" not in p.answer and "," not in p.answer for p in problems)


def test_all_math500_boxed_solutions_match_answer_field() -> None:
    from verify import grade

    rows = [json.loads(line) for line in (FIXTURES / "math500.jsonl").read_text().splitlines() if line.strip()]
    assert len(rows) == 500
    without_answer = [{k: v for k, v in row.items() if k != "answer"} for row in rows]
    extracted, _ = normalise_rows(without_answer, "math500")
    mismatched = [
        (row["answer"], problem.answer)
        for row, problem in zip(rows, extracted)
        if not grade(f"\\boxed{{{problem.answer}}}", row["answer"], grader="strict")
    ]
    assert mismatched == []


def test_toy_dataset_by_name_is_deterministic_and_spread_over_levels() -> None:
    first, second = load_problems("toy"), load_problems("toy")
    assert first == second
    assert {p.level for p in select_problems(first, limit=20)} == {1, 2, 3, 4, 5}


def test_malformed_rows_error_names_file_and_row(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"problem": "1+1?", "answer": "2"}) + "\n" + json.dumps({"problem": "no answer", "solution": "none"}) + "\n")
    with pytest.raises(DatasetError, match=r"bad.jsonl, row 2 \(line 2\): no reference answer"):
        load_problems(str(path))
    messages: list[str] = []
    problems = load_problems(str(path), skip_bad_rows=True, report=messages.append)
    assert [p.answer for p in problems] == ["2"]
    assert messages == [f"skipped 1 bad row(s) of {path} (--skip-bad-rows): row 2 (line 2): no reference answer "
                        "('answer' field or \\boxed{} in 'solution')"], messages


def test_duplicate_ids_are_bad_rows(tmp_path: Path) -> None:
    """A second row with an id already seen is an error naming the row, or (--skip-bad-rows) skipped and counted."""
    path = tmp_path / "dup.jsonl"
    path.write_text("".join(json.dumps({"id": "a", "problem": f"{i}+1?", "answer": str(i + 1)}) + "\n" for i in range(2)))
    with pytest.raises(DatasetError, match=r"dup.jsonl, row 2 \(line 2\): duplicate problem id 'a'"):
        load_problems(str(path))
    messages: list[str] = []
    assert [p.answer for p in load_problems(str(path), skip_bad_rows=True, report=messages.append)] == ["1"]
    assert messages == [f"skipped 1 bad row(s) of {path} (--skip-bad-rows): row 2 (line 2): duplicate problem id 'a'"]


def test_skip_bad_rows_skips_lines_that_are_not_json_and_names_what_it_skipped(tmp_path: Path) -> None:
    """--skip-bad-rows also skips a JSONL line that is not JSON or not UTF-8 (without it: an error naming the
    line); the note names the first three rows skipped and counts the rest."""
    path = tmp_path / "mixed.jsonl"
    good = [json.dumps({"problem": f"{i}+1?", "answer": str(i + 1)}) for i in range(3)]
    path.write_bytes("\n".join([good[0], "{not json", good[1], json.dumps({"problem": "x"}), good[2]]).encode()
                     + b"\n\xff\xfe\n[1]\n")
    with pytest.raises(DatasetError, match=r"mixed.jsonl, line 2: invalid JSON"):
        load_problems(str(path))
    messages: list[str] = []
    assert [p.answer for p in load_problems(str(path), skip_bad_rows=True, report=messages.append)] == ["1", "2", "3"]
    assert messages == [f"skipped 4 bad row(s) of {path} (--skip-bad-rows): line 2: invalid JSON (Expecting "
                        "property name enclosed in double quotes); line 6: not UTF-8 text (invalid start byte at byte "
                        "132 of the file); row 3 (line 4): no reference answer ('answer' field or "
                        "\\boxed{} in 'solution'); and 1 more"], messages


def test_missing_problem_text_and_bad_json(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_text(json.dumps({"answer": "2"}) + "\n")
    with pytest.raises(DatasetError, match=r"x.jsonl, row 1 \(line 1\): missing 'problem'"):
        load_problems(str(path))
    path.write_text("{not json}\n")
    with pytest.raises(DatasetError, match="x.jsonl, line 1: invalid JSON"):
        load_problems(str(path))
    with pytest.raises(DatasetError, match="not found"):
        load_problems(str(tmp_path / "missing.jsonl"))
    with pytest.raises(DatasetError, match="unknown dataset"):
        load_problems("mathh")


def test_odd_but_valid_fields(tmp_path: Path) -> None:
    """Float levels (a Parquet level column with a gap is float64), id 0, and a numeric subject are kept."""
    import pandas as pd

    path = tmp_path / "levels.parquet"
    pd.DataFrame({"problem": ["a?", "b?", "c?"], "answer": ["1", "2", "3"], "level": [1, 3, None],
                  "id": [0, 1, 2], "subject": ["x", "y", "z"]}).to_parquet(path)
    problems = load_problems(str(path))
    assert [(p.id, p.level) for p in problems] == [("0", 1), ("1", 3), ("2", None)]
    assert [p.id for p in select_problems(problems, levels=[3])] == ["1"]
    path = tmp_path / "subject.jsonl"
    path.write_text(json.dumps({"problem": "1+1?", "answer": "2", "subject": 5, "id": 0}) + "\n")
    assert [(p.id, p.subject) for p in load_problems(str(path))] == [("0", "5")]


def test_rows_that_are_not_objects_and_unreadable_files(tmp_path: Path) -> None:
    """A row that is not an object is a bad row (skippable); unreadable JSON or non-UTF-8 names the file."""
    path = tmp_path / "list_row.jsonl"
    path.write_text(json.dumps({"problem": "1+1?", "answer": "2"}) + "\n[1, 2]\nnull\n")
    with pytest.raises(DatasetError, match=r"list_row.jsonl, row 2 \(line \d\): expected an object .* got list"):
        load_problems(str(path))
    assert len(load_problems(str(path), skip_bad_rows=True, report=lambda _: None)) == 1
    good = (json.dumps({"problem": "1+1?", "answer": "2"}) + "\n").encode()
    unreadable = [  # file, its bytes, the error
        ("trailing.json", b'[{"problem": "1+1?", "answer": "2"},]', r"trailing.json: invalid JSON"),
        ("latin1.jsonl", b'{"problem": "caf\xe9?", "answer": "2"}\n',
         r"latin1.jsonl, line 1: not UTF-8 text \(invalid continuation byte at byte 16 of"),
        # the offset is the file's, past the decoder's buffer, and the line is named
        ("deep.jsonl", good * 1500 + b"\n" + b'{"problem": "x\xff", "answer": "1"}\n',
         rf"deep.jsonl, line 1502: not UTF-8 text \(invalid start byte at byte {1500 * len(good) + 1 + 14} "),
        ("junk.parquet", b"not parquet at all", r"junk.parquet: not a readable Parquet file"),
    ]
    for name, data, error in unreadable:
        (tmp_path / name).write_bytes(data)
        with pytest.raises(DatasetError, match=error):
            load_problems(str(tmp_path / name))


@pytest.mark.parametrize("answer, error", [
    (True, "'answer' must be a string or a number, got bool True"),
    ([1, 2], "'answer' must be a string or a number, got list"),
    ({"x": 1}, "'answer' must be a string or a number, got dict"),
    (float("nan"), "'answer' must be a finite number, got nan"),
])
def test_answers_that_are_not_strings_or_numbers_are_refused(tmp_path: Path, answer, error: str) -> None:
    """An answer that is true, a list, an object or NaN is a bad row naming the field, not str() of it."""
    path = tmp_path / "types.jsonl"
    path.write_text(json.dumps({"problem": "1+1?", "answer": "2"}) + "\n\n" + json.dumps({"problem": "2+2?", "answer": answer}) + "\n")
    with pytest.raises(DatasetError, match=rf"types.jsonl, row 2 \(line 3\): {re.escape(error)}"):
        load_problems(str(path))
    path.write_text(json.dumps({"problem": "1+1?", "answer": "2", "id": [1]}) + "\n")
    with pytest.raises(DatasetError, match=r"row 1 \(line 1\): 'id' must be a string or a number, got list"):
        load_problems(str(path))


def test_numeric_answers_are_read_exactly(tmp_path: Path) -> None:
    """A JSON or Parquet number is its exact value written out, as `study verify --input` reads references."""
    import pandas as pd

    rows = [{"problem": "a", "answer": 1e20}, {"problem": "b", "answer": 0.1}, {"problem": "c", "answer": -7},
            {"problem": "d", "answer": 2.50, "level": 3.0}]
    path = tmp_path / "numbers.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows).replace("2.5", "2.50"))
    problems = load_problems(str(path))
    assert [p.answer for p in problems] == ["100000000000000000000", "0.1", "-7", "2.5"] and problems[3].level == 3
    pd.DataFrame(rows).to_parquet(tmp_path / "numbers.parquet")
    assert [p.answer for p in load_problems(str(tmp_path / "numbers.parquet"))] == ["100000000000000000000", "0.1", "-7", "2.5"]


def test_selection_by_level_and_count() -> None:
    problems = load_problems(str(DATA / "math_test_head40.jsonl"))
    chosen = select_problems(problems, limit=3, levels=parse_levels("2,3"))
    assert len(chosen) == 3 and all(p.level in (2, 3) for p in chosen)
    assert chosen == select_problems(problems, limit=3, levels=[2, 3])
    with pytest.raises(DatasetError, match="no problems at levels"):
        select_problems(problems, levels=[9])
    with pytest.raises(DatasetError, match="comma-separated"):
        parse_levels("a,b")
    for typo in ("", "1,,2", "1,"):  # an empty or half-written list is an error, not "all levels" or a guess
        with pytest.raises(DatasetError, match="--levels must be comma-separated integers"):
            parse_levels(typo)


def test_hub_dataset_unreachable_is_a_clear_error(tmp_path: Path) -> None:
    """Offline (as here and in CI), a hub dataset name fails with a DatasetError that names the hub repo and the way out."""
    import os
    import subprocess
    import sys

    code = ("from sampling.datasets import DatasetError, load_problems\n"
            "try:\n    load_problems('gsm8k')\nexcept DatasetError as exc:\n    print(exc)\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120,
                         cwd=Path(__file__).resolve().parent.parent)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "could not load dataset 'gsm8k' (openai/gsm8k) from the Hugging Face hub" in out.stdout
    assert "pass a local .jsonl/.parquet file" in out.stdout
