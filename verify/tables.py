"""Tables built from a graded run dir: the counts table (the seam to `fit`) and per-config summaries."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from sampling.store import footer_seconds, read_footer
from verify.run_grades import KEY_COLUMNS, grade_run, read_problems, read_sample_columns, sample_files
from verify.metrics import maj_at_k, mean_with_ci
from verify.progress import rich_progress

__all__ = ["SECONDS_COLUMN", "TOKEN_COLUMNS", "counts_from_grades", "counts_table", "class_votes", "grades_and_counts", "summarize_grades", "summarize_run", "wrong_samples_digest"]

TOKEN_COLUMNS = ["base_decode", "base_prefill", "oracle_decode", "oracle_prefill"]
SECONDS_COLUMN = "seconds"  # counts: the engine's measured seconds for the group's samples (NaN if unmeasured)


def counts_from_grades(grades: pd.DataFrame, problems: pd.DataFrame, tokens: pd.DataFrame | None = None,
                       same_samples: bool = False) -> pd.DataFrame:
    """Counts table (config, problem, n, correct, no_answer, level, subject, token sums, seconds) from grades.

    `same_samples`: the caller knows tokens has a row for exactly the graded samples (no per-sample merge needed)."""
    by = [grades["config_id"], grades["problem_id"]]  # no copy of the (large) grades frame
    counts = pd.DataFrame(
        {
            "n": grades.groupby(by, sort=True).size(),
            "correct": grades["correct"].groupby(by, sort=True).sum(),
            "no_answer": grades["extracted"].isna().groupby(by, sort=True).sum(),
        }
    ).rename_axis(["config_id", "problem_id"]).reset_index()
    if tokens is not None and len(tokens):
        present = [c for c in (*TOKEN_COLUMNS, SECONDS_COLUMN) if c in tokens.columns]
        if same_samples:
            merged = tokens[[*KEY_COLUMNS, *present]]
        else:
            merged = grades[KEY_COLUMNS].merge(tokens[[*KEY_COLUMNS, *present]], on=KEY_COLUMNS, how="left")
        # a group with any sample of unknown time has an unknown total (NaN), not a partial sum
        sums = merged.groupby(["config_id", "problem_id"], sort=True)[present].sum()
        if SECONDS_COLUMN in present:
            unknown = merged[SECONDS_COLUMN].isna().groupby([merged["config_id"], merged["problem_id"]]).any()
            sums.loc[unknown[unknown].index, SECONDS_COLUMN] = np.nan
        counts = counts.merge(sums.reset_index(), on=["config_id", "problem_id"], how="left")
    meta = problems[["id", "level", "subject"]].rename(columns={"id": "problem_id"})
    counts = counts.merge(meta, on="problem_id", how="left")
    counts = counts.rename(columns={"config_id": "config", "problem_id": "problem"})
    for column in ("n", "correct", "no_answer", *[c for c in TOKEN_COLUMNS if c in counts.columns]):
        counts[column] = counts[column].astype(np.int64)
    order = ["config", "problem", "n", "correct", "no_answer", "level", "subject"]
    order += [c for c in (*TOKEN_COLUMNS, SECONDS_COLUMN) if c in counts.columns]
    return counts[order]


def counts_table(run_dir: str | os.PathLike[str], grader: str = "math-verify", progress: bool = True) -> pd.DataFrame:
    """The counts table of a run dir (one row per config × problem), grading ungraded samples first."""
    return grades_and_counts(run_dir, grader, progress)[1]


def grades_and_counts(run_dir: str | os.PathLike[str], grader: str = "math-verify", progress: bool = True
                      ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A run dir's grades (grading ungraded samples first) and its counts table, each read once."""
    grades = grade_run(run_dir, grader, progress=progress)
    files = sample_files(run_dir)
    footers = [read_footer(f) for f in files]  # each shard's columns and block seconds, one read
    available = set.intersection(*(set(f.schema.to_arrow_schema().names) for f in footers)) if files else set()
    token_cols = [c for c in TOKEN_COLUMNS if c in available]
    tokens = None
    if token_cols:
        with rich_progress(progress) as sink:
            tokens = read_sample_columns(files, [*KEY_COLUMNS, *token_cols], sink)
        tokens[SECONDS_COLUMN] = _seconds_per_sample(files, footers, tokens["_shard"].to_numpy())
        tokens = tokens.drop(columns="_shard").drop_duplicates(KEY_COLUMNS, keep="first")
    # grades are of samples read before the tokens, and shards are only ever added: equal lengths, equal samples
    same = tokens is not None and len(tokens) == len(grades)
    return grades, counts_from_grades(grades, read_problems(run_dir), tokens, same_samples=same)


def _seconds_per_sample(files: list[Path], footers: list[pq.FileMetaData], shard: np.ndarray) -> np.ndarray:
    """Each sample's share of its block's measured engine seconds (NaN for shards written without timing)."""
    sizes = np.bincount(shard, minlength=len(files)).astype(float)
    measured = np.array([np.nan if (t := footer_seconds(m, f)) is None else t for f, m in zip(files, footers)], dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (measured / sizes)[shard]


def wrong_samples_digest(grades: pd.DataFrame, config: str) -> str:
    """A digest of which of one config's graded samples are wrong: a regrade that flips a verdict, or new wrong samples, change it."""
    wrong = grades[(grades["config_id"] == config) & (grades["correct"] == False)]  # noqa: E712
    keys = sorted(zip(wrong["problem_id"].astype(str), wrong["sample_index"].astype(int).tolist()))
    return hashlib.sha256(json.dumps(keys).encode()).hexdigest()[:16]


def class_votes(grades: pd.DataFrame) -> pd.DataFrame:
    """Per (config, problem): n, correct, votes (samples per answer class), correct_index, no_answer, distinct."""
    rows = []
    for (config, problem), part in grades.groupby(["config_id", "problem_id"], sort=True):
        classes = part["answer_class"].to_numpy()
        labels, counts = np.unique(classes[classes >= 0], return_counts=True)
        where = np.flatnonzero(labels == 0)
        rows.append(
            {
                "config": config,
                "problem": problem,
                "n": len(part),
                "correct": int(part["correct"].sum()),
                "votes": counts,
                "correct_index": int(where[0]) if len(where) else -1,
                "no_answer": int((classes < 0).sum()),
                "distinct": len(labels),
            }
        )
    columns = ["config", "problem", "n", "correct", "votes", "correct_index", "no_answer", "distinct"]
    return pd.DataFrame(rows, columns=columns)


def summarize_grades(grades: pd.DataFrame, n_boot: int = 1000, ci: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """One row per config: pass@1, coverage@n, maj@n (each with CI), no-answer fraction, distinct answers."""
    rows = []
    for config, part in class_votes(grades).groupby("config", sort=True):
        n, c = part["n"].to_numpy(), part["correct"].to_numpy()
        maj = np.array(
            [
                maj_at_k([v], [i], int(k), [a])[0]
                for v, i, a, k in zip(part["votes"], part["correct_index"], part["no_answer"], n)
            ]
        )
        metrics = {
            "pass@1": mean_with_ci(c / n, n_boot, ci, seed),  # c/n exactly: the same values as `study fit`'s
            "coverage@n": mean_with_ci((c > 0).astype(float), n_boot, ci, seed),
            "maj@n": mean_with_ci(maj, n_boot, ci, seed),
        }
        row: dict[str, object] = {
            "config": config,
            "problems": len(part),
            "samples": int(n.sum()),
            "n_min": int(n.min()),
            "n_max": int(n.max()),
        }
        for name, (mean, lo, hi) in metrics.items():
            row.update({name: mean, f"{name}_lo": lo, f"{name}_hi": hi})
        row["no_answer"] = float(part["no_answer"].sum() / n.sum())
        row["distinct_answers"] = float(part["distinct"].mean())
        rows.append(row)
    return pd.DataFrame(rows)


def summarize_run(
    run_dir: str | os.PathLike[str],
    grader: str = "math-verify",
    n_boot: int = 1000,
    ci: float = 0.95,
    seed: int = 0,
    progress: bool = True,
) -> pd.DataFrame:
    """Per-config summary of a run dir (see summarize_grades), grading ungraded samples first."""
    return summarize_grades(grade_run(run_dir, grader, progress=progress), n_boot, ci, seed)
