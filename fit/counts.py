"""Reading and validating counts tables (one row per group × problem; see docs/ARCHITECTURE.md).

Required columns: ``problem``, ``n`` (samples drawn, integer >= 1), ``correct`` (0 <= correct <= n).
Optional: a grouping column (``--by``; ``config`` by default when present), ``cost_per_sample``
(or another cost column named by the caller), the four token sums, ``level``, ``subject``,
``no_answer``. Every error names the file, the column and the first offending data row (row 1 is
the first row after the CSV header; for CSV the file line is given too).
"""
from __future__ import annotations

import csv
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

REQUIRED: tuple[str, ...] = ("problem", "n", "correct")
TOKEN_COLUMNS: tuple[str, ...] = ("base_decode", "base_prefill", "oracle_decode", "oracle_prefill")
NUMERIC_COLUMNS: tuple[str, ...] = ("level", "no_answer", "seconds")  # optional columns read as numbers (empty: NaN)
SECONDS_COLUMN = "seconds"  # measured engine seconds summed over the row's samples (the `seconds` cost model)
COST_COLUMN = "cost_per_sample"
ALL_GROUP = "all"
MAX_COUNT = 2**53  # the largest n (or correct) a float64 holds exactly


class CountsError(ValueError):
    """A counts table that cannot be used; the message says where and why."""


def read_counts(path: str | Path) -> pd.DataFrame:
    """Read a .csv or .parquet counts file (no validation)."""
    path = Path(path)
    if not path.exists():
        raise CountsError(f"{path}: no such file")
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":  # every cell as written: ids like 001 or 1e3 stay ids; numbers are parsed on validation
            return _read_csv(path)
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(path)
    except CountsError:
        raise
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        raise CountsError(f"{path}: cannot read as {suffix[1:]}: {exc}") from exc
    raise CountsError(f"{path}: unsupported file type {suffix or '(none)'}; use .csv or .parquet")


def _read_csv(path: Path) -> pd.DataFrame:
    """A CSV's cells as text, header names stripped; a row with more fields than the header is an error (not an index)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", pd.errors.ParserWarning)
        try:
            frame = pd.read_csv(path, dtype=str, keep_default_na=False, index_col=False)
        except pd.errors.ParserWarning:
            raise CountsError(_long_row(path)) from None
    names = [str(name).strip() for name in frame.columns]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise CountsError(f"{path}: column(s) {', '.join(repr(n) for n in repeated)} appear more than once in the header")
    frame.columns = names
    return frame


def _long_row(path: Path) -> str:
    """The error for a CSV with a data row longer than its header: which line, how many fields."""
    with open(path, newline="", encoding="utf-8", errors="replace") as handle:
        rows = csv.reader(handle)
        header = len(next(rows, []))
        for row in rows:
            if len(row) > header:
                return f"{path}: line {rows.line_num} has {len(row)} fields, the header has {header}"
    return f"{path}: a data row has more fields than the header"


def _where(source: str, column: str, row: int, csv: bool) -> str:
    """Location text for an error: file, column, data row (and CSV line)."""
    line = f" (line {row + 2})" if csv else ""
    return f"{source}: column '{column}', row {row + 1}{line}"


def show_cell(value: object) -> str:
    """A cell as written: numbers bare (12.5, not np.float64(12.5) or '12.5'), other text quoted."""
    if isinstance(value, str):
        try:
            float(value)
            return value.strip()
        except ValueError:
            return repr(value)
    return repr(value.item() if hasattr(value, "item") else value)


def _integer_column(df: pd.DataFrame, column: str, source: str, csv: bool) -> np.ndarray:
    """The column as int64, or a CountsError naming the first non-integer (or too large) value."""
    values = pd.to_numeric(df[column], errors="coerce").to_numpy(dtype=float)
    bad = ~np.isfinite(values) | (values != np.round(values))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise CountsError(f"{_where(source, column, i, csv)}: expected an integer, got {show_cell(df[column].iloc[i])}")
    _check(np.abs(values) > MAX_COUNT, df, column, source, csv, f"expected at most {MAX_COUNT:,} (2^53)")
    return values.astype(np.int64)


def _names(column: pd.Series) -> pd.Series:
    """Ids and group names as stripped strings (NaN stays NaN: an empty cell)."""
    text = column.where(column.isna(), column.astype(str).str.strip())
    return text.where(text != "", np.nan)


def _check(mask: np.ndarray, df: pd.DataFrame, column: str, source: str, csv: bool, what: str) -> None:
    """Raise for the first row where `mask` is True."""
    if mask.any():
        i = int(np.flatnonzero(mask)[0])
        raise CountsError(f"{_where(source, column, i, csv)}: {what}, got {show_cell(df[column].iloc[i])}"
                          + (f" ({int(mask.sum())} rows affected)" if mask.sum() > 1 else ""))


def validate_counts(df: pd.DataFrame, source: str = "counts", by: str | None = None,
                    cost_column: str | None = None) -> pd.DataFrame:
    """Check a counts table; returns a clean copy with a string ``group`` column and int n/correct.

    `by` names the grouping column; None groups by ``config`` when that column exists, else one group.
    """
    if by is None and "config" in df.columns:
        by = "config"
    csv = source.lower().endswith(".csv")
    missing = [col for col in REQUIRED if col not in df.columns]
    if missing:
        raise CountsError(f"{source}: missing required column(s) {', '.join(missing)}; "
                          f"found {', '.join(map(str, df.columns)) or 'no columns'}")
    if len(df) == 0:
        raise CountsError(f"{source}: no rows")
    if by is not None and by not in df.columns:
        raise CountsError(f"{source}: grouping column '{by}' not found; found {', '.join(map(str, df.columns))}")
    out = df.copy().reset_index(drop=True)
    _check(_names(out["problem"]).isna().to_numpy(), out, "problem", source, csv, "problem id is empty")
    out["n"] = _integer_column(out, "n", source, csv)
    out["correct"] = _integer_column(out, "correct", source, csv)
    _check(out["n"].to_numpy() < 1, out, "n", source, csv, "n must be >= 1")
    _check(out["correct"].to_numpy() < 0, out, "correct", source, csv, "correct must be >= 0")
    over = out["correct"].to_numpy() > out["n"].to_numpy()
    if over.any():
        i = int(np.flatnonzero(over)[0])
        raise CountsError(f"{_where(source, 'correct', i, csv)}: correct must be <= n, "
                          f"got correct={out['correct'].iloc[i]} with n={out['n'].iloc[i]}")
    out["problem"] = _names(out["problem"])
    if by is not None:
        _check(_names(out[by]).isna().to_numpy(), out, by, source, csv, "group name is empty")
        out["group"] = _names(out[by])
    else:
        out["group"] = ALL_GROUP
    dup = out.duplicated(["group", "problem"], keep="first").to_numpy()
    if dup.any():
        i = int(np.flatnonzero(dup)[0])
        first = int(np.flatnonzero((out["group"] == out["group"].iloc[i]) & (out["problem"] == out["problem"].iloc[i]))[0])
        scope = f" in group {out['group'].iloc[i]!r}" if by is not None else " (pass --by to group rows)"
        raise CountsError(f"{_where(source, 'problem', i, csv)}: problem {out['problem'].iloc[i]!r} appears again"
                          f"{scope}; first at row {first + 1}")
    if cost_column is not None and cost_column not in out.columns:
        raise CountsError(f"{source}: cost column '{cost_column}' not found; found {', '.join(map(str, df.columns))}")
    for col in [c for c in (cost_column, *TOKEN_COLUMNS) if c is not None and c in out.columns]:
        vals = pd.to_numeric(out[col], errors="coerce").to_numpy(dtype=float)
        _check(~np.isfinite(vals), out, col, source, csv, "expected a finite number")
        if col == cost_column:
            _check(vals <= 0, out, col, source, csv, "cost per sample must be > 0")
        _check(vals < 0, out, col, source, csv, "must be >= 0")
        out[col] = vals
    for col in [c for c in NUMERIC_COLUMNS if c in out.columns]:  # CSV cells are read as text
        out[col] = _numbers_if_numeric(out[col])
    return out


def _numbers_if_numeric(column: pd.Series) -> pd.Series:
    """The column as numbers (empty cells NaN) when every filled cell is one; else as it is ("Level 1"), empty cells NaN."""
    filled = _names(column).notna()
    numbers = pd.to_numeric(column.where(filled), errors="coerce")
    return numbers if numbers[filled].notna().all() else column.where(filled)


def load_counts(path: str | Path, by: str | None = None, cost_column: str | None = None) -> pd.DataFrame:
    """Read and validate a counts file."""
    return validate_counts(read_counts(path), str(path), by, cost_column)
