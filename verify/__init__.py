"""Verifier and metrics: extract final answers, grade them against references, score runs.

Grading
    extract_answer(text)                         final answer of a completion, or None
    grade(completion, reference)                 is the completion's answer equivalent? (bool)
    is_equivalent(answer, reference)             same, for an already extracted answer
    grade_many(completions, references)          DataFrame: extracted, correct, key, undecided (deduped, pooled)
    grade_run(run_dir)                           grade a run dir's samples into RUN_DIR/_grades/
    read_grades(run_dir)                         the grades written so far

Tables and metrics
    counts_table(run_dir)                        config × problem counts (the input of `study fit`)
    summarize_run(run_dir)                       per config: pass@1, coverage@n, maj@n with CIs
    verify.metrics                               pass_at_k, coverage_curve, maj_at_k, bootstrap_ci, ...

Graders: "math-verify" (default; math-verify behind an exact fast path, each comparison in a worker
process with a hard time limit) and "strict" (the classic MATH normalised string match).
Heavy imports (sympy, math-verify) happen only when grading needs them.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from verify.equivalence import DEFAULT_TIMEOUT, GRADERS
from verify.extract import extract_answer

if TYPE_CHECKING:
    from verify.batch import grade, grade_batch, grade_many, is_equivalent
    from verify.run_grades import grade_run, read_grades
    from verify.tables import counts_table, summarize_run

__all__ = [
    "DEFAULT_TIMEOUT",
    "GRADERS",
    "extract_answer",
    "grade",
    "is_equivalent",
    "grade_many",
    "grade_batch",
    "grade_run",
    "read_grades",
    "counts_table",
    "summarize_run",
]

_SUBMODULES = {"batch", "cli", "equivalence", "extract", "literal", "run_grades", "jsonl", "metrics", "pool", "progress", "strict", "synthetic", "tables"}
_LAZY = {
    "grade": "verify.batch",
    "is_equivalent": "verify.batch",
    "grade_many": "verify.batch",
    "grade_batch": "verify.batch",
    "grade_run": "verify.run_grades",
    "read_grades": "verify.run_grades",
    "counts_table": "verify.tables",
    "summarize_run": "verify.tables",
}


def __getattr__(name: str) -> Any:
    """Import the grading and table functions on first use (keeps `import verify` light)."""
    import importlib

    if name in _SUBMODULES:
        return importlib.import_module(f"verify.{name}")
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'verify' has no attribute {name!r}")

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
