"""Counts files: reading .csv/.parquet and errors that name the file, the column and the row."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from fit.counts import ALL_GROUP, CountsError, load_counts, validate_counts


def _write(tmp_path: Path, frame: pd.DataFrame, name: str = "counts.csv") -> Path:
    """Write a frame as CSV or Parquet by extension."""
    path = tmp_path / name
    frame.to_parquet(path) if path.suffix == ".parquet" else frame.to_csv(path, index=False)
    return path


GOOD = pd.DataFrame({"config": ["a", "a", "b"], "problem": [1, 2, 1], "n": [10, 12, 10], "correct": [0, 3, 10]})


@pytest.mark.parametrize("name", ["counts.csv", "counts.parquet"])
def test_reads_both_formats(tmp_path: Path, name: str) -> None:
    """Both formats load; 'config' is the default grouping column; problem ids become strings."""
    counts = load_counts(_write(tmp_path, GOOD, name))
    assert counts["group"].tolist() == ["a", "a", "b"]
    assert counts["problem"].tolist() == ["1", "2", "1"]
    assert counts["n"].dtype == "int64"


def test_csv_ids_and_names_are_read_as_written(tmp_path: Path) -> None:
    """Ids that look like numbers or missing values stay distinct strings; surrounding spaces are dropped;
    the numeric columns are still numbers."""
    path = tmp_path / "ids.csv"
    path.write_text("config,problem,n,correct,level\n1,001,4,1,2\n1,1,4,0,\n01,1e3,4,2,3\nNA, 1000 ,4,4,1\n A ,NA,4,0,1\n")
    counts = load_counts(path)
    assert counts["group"].tolist() == ["1", "1", "01", "NA", "A"]
    assert counts["problem"].tolist() == ["001", "1", "1e3", "1000", "NA"]
    assert counts["level"].tolist()[0] == 2 and pd.isna(counts["level"].iloc[1])
    path.write_text("config,problem,n,correct\na, p1 ,4,1\na,p1,4,0\n")
    with pytest.raises(CountsError, match="problem 'p1' appears again"):
        load_counts(path)
    path.write_text("config,problem,n,correct\na,  ,4,1\n")
    with pytest.raises(CountsError, match="row 1 \\(line 2\\): problem id is empty"):
        load_counts(path)


def test_csv_rows_longer_than_the_header_are_refused_not_shifted(tmp_path: Path) -> None:
    """A data row with an extra field must not turn the first column into the index (every value shifted by one)."""
    path = tmp_path / "shifted.csv"
    path.write_text("config,problem,n,correct\nbase,p1,20,5,1\nbase,p2,20,8,2\n")
    with pytest.raises(CountsError, match=r"shifted.csv: line 2 has 5 fields, the header has 4"):
        load_counts(path)
    path.write_text("config,problem,n,correct\nbase,p1,20,5\nbase,p2,20,8,2\n")
    with pytest.raises(CountsError, match=r"line 3"):
        load_counts(path)


def test_csv_header_names_are_stripped(tmp_path: Path) -> None:
    """`config, problem, n, correct` (spaces after the commas) names the usual columns."""
    path = tmp_path / "spaced.csv"
    path.write_text("config, problem, n, correct\na,p1,4,1\nb,p1,4,2\n")
    counts = load_counts(path)
    assert counts["group"].tolist() == ["a", "b"] and counts["correct"].tolist() == [1, 2]
    path.write_text("config,problem,n,correct, n\na,p1,4,1,4\n")
    with pytest.raises(CountsError, match=r"column\(s\) 'n' appear more than once"):
        load_counts(path)


@pytest.mark.parametrize("name", ["levels.csv", "levels.parquet"])
def test_text_levels_stay_text_and_numeric_levels_become_numbers(tmp_path: Path, name: str) -> None:
    """level "Level 1" is kept as written (the per-level plot groups by it), not turned into NaN."""
    frame = pd.DataFrame({"problem": ["a", "b", "c"], "n": 4, "correct": 1, "level": ["Level 1", "Level 2", ""]})
    counts = load_counts(_write(tmp_path, frame, name))
    assert counts["level"].tolist()[:2] == ["Level 1", "Level 2"] and pd.isna(counts["level"].iloc[2])
    counts = load_counts(_write(tmp_path, frame.assign(level=["1", "2", ""]), name))
    assert counts["level"].tolist()[:2] == [1, 2] and pd.isna(counts["level"].iloc[2])


def test_huge_counts_are_refused_as_written(tmp_path: Path) -> None:
    """An n past 2^53 names its value and the limit instead of overflowing."""
    path = tmp_path / "huge.csv"
    path.write_text("problem,n,correct\np1,1e20,1\n")
    with pytest.raises(CountsError, match=r"column 'n', row 1 \(line 2\): expected at most 9,007,199,254,740,992 \(2\^53\), got 1e20"):
        load_counts(path)


def test_single_group_without_config(tmp_path: Path) -> None:
    """No grouping column: one group named 'all'."""
    counts = load_counts(_write(tmp_path, GOOD.drop(columns="config").iloc[:2]))
    assert set(counts["group"]) == {ALL_GROUP}


@pytest.mark.parametrize("change,needle", [
    (lambda d: d.drop(columns="correct"), "missing required column(s) correct"),
    (lambda d: d.assign(n=[10, 12.5, 10]), "column 'n', row 2 (line 3): expected an integer, got 12.5"),
    (lambda d: d.assign(n=[10, 0, 10]), "column 'n', row 2 (line 3): n must be >= 1"),
    (lambda d: d.assign(correct=[0, 13, 1]), "column 'correct', row 2 (line 3): correct must be <= n, got correct=13 with n=12"),
    (lambda d: d.assign(correct=[0, -1, 1]), "column 'correct', row 2 (line 3): correct must be >= 0"),
    (lambda d: d.assign(correct=["0", "x", "1"]), "column 'correct', row 2 (line 3): expected an integer, got 'x'"),
    (lambda d: d.assign(problem=[1, 1, 1]), "problem '1' appears again in group 'a'; first at row 1"),
    (lambda d: d.assign(cost_per_sample=[1.0, -2.0, 1.0]), "column 'cost_per_sample', row 2 (line 3): cost per sample must be > 0"),
])
def test_errors_name_file_column_and_row(tmp_path: Path, change, needle: str) -> None:
    """Each bad input fails with a message naming the file and where."""
    path = _write(tmp_path, change(GOOD.copy()))
    with pytest.raises(CountsError) as err:
        load_counts(path, cost_column="cost_per_sample" if "cost" in needle else None)
    assert str(path) in str(err.value) and needle in str(err.value)


def test_file_level_errors(tmp_path: Path) -> None:
    """Missing files, unknown extensions, unknown grouping or cost columns, empty tables."""
    with pytest.raises(CountsError, match="no such file"):
        load_counts(tmp_path / "missing.csv")
    (tmp_path / "x.txt").write_text("a")
    with pytest.raises(CountsError, match="unsupported file type .txt"):
        load_counts(tmp_path / "x.txt")
    path = _write(tmp_path, GOOD)
    with pytest.raises(CountsError, match="grouping column 'model' not found"):
        load_counts(path, by="model")
    with pytest.raises(CountsError, match="cost column 'flops' not found"):
        load_counts(path, cost_column="flops")
    with pytest.raises(CountsError, match="no rows"):
        validate_counts(GOOD.iloc[:0], "empty.csv")


def test_parquet_rows_have_no_line_numbers(tmp_path: Path) -> None:
    """Parquet errors give the data row only."""
    path = _write(tmp_path, GOOD.assign(n=[10, 0, 10]), "c.parquet")
    with pytest.raises(CountsError, match=r"column 'n', row 2: n must be >= 1"):
        load_counts(path)
