"""Grading many completions: extract, dedupe (reference, answer) pairs, fast path, then the pool.

Most of a problem's samples repeat a few answers, so each distinct (reference, extracted answer)
pair is graded once; a cache dict (persisted by `verify.grade_run`) skips pairs graded before and
gains each decided pair as soon as it is graded (so an interrupted batch keeps its finished work).
Pairs the fast path cannot decide go to math-verify in a `TaskPool` with a hard per-task time
limit; a pair that times out or crashes its worker is undecided: graded wrong (the frame's
`undecided` column says "timeout" or "error"), and not cached unless asked (`keep_undecided`: a run's
cache keeps them so its later samples get the same verdict); a cached undecided pair is reported
undecided again (`BatchStats.undecided_cached`).
"""
from __future__ import annotations

import atexit
import threading
import time
from collections.abc import Callable, MutableMapping, Sequence
from dataclasses import dataclass, field, fields

import numpy as np
import pandas as pd

from verify.equivalence import DEFAULT_TIMEOUT, check_grader, compare, compare_cached
from verify.extract import extract_answer
from verify.pool import Outcome, TaskPool
from verify.progress import NullProgress, ProgressSink
from verify.strict import normalize_strict

__all__ = [
    "PairGrade",
    "BatchStats",
    "BatchResult",
    "grade_pairs",
    "grade_batch",
    "grade_many",
    "grade",
    "is_equivalent",
]

UNDECIDED = ("timeout", "error")  # outcomes graded wrong; cached only with keep_undecided (a run's, until a regrade)
PairCache = MutableMapping[tuple[str, str], tuple[bool, str, str]]  # -> (correct, key, how)
_EXTRACT_CHUNK = 20_000
_MAX_KEY_CHARS = 512


@dataclass(frozen=True)
class PairGrade:
    """Verdict for one (reference, answer) pair: correct, vote key, and how it was decided."""

    correct: bool
    key: str
    how: str  # "fast" | "math-verify" | "strict" | "timeout" | "error"


@dataclass
class BatchStats:
    """Counts and timings of one grading batch."""

    samples: int = 0
    no_answer: int = 0
    pairs: int = 0
    cached: int = 0
    fast: int = 0
    verified: int = 0
    timeouts: int = 0
    errors: int = 0
    undecided_cached: int = 0  # of `cached`: pairs a run's earlier call left undecided (graded wrong until --regrade)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def calls(self) -> int:
        """math-verify calls made: decided ones plus those that timed out or failed."""
        return self.verified + self.timeouts + self.errors

    def add(self, other: BatchStats) -> None:
        """Add another batch's counts and phase timings to these (one call graded in several batches)."""
        for item in fields(self):
            if item.name != "seconds":
                setattr(self, item.name, getattr(self, item.name) + getattr(other, item.name))
        for phase, seconds in other.seconds.items():
            self.seconds[phase] = self.seconds.get(phase, 0.0) + seconds


@dataclass
class BatchResult:
    """Per-sample grades plus the batch's stats.

    frame columns: extracted (str or None), correct (bool; False when undecided), key (vote key or
    None), undecided (None, or "timeout"/"error" when the comparison gave no verdict).
    """

    frame: pd.DataFrame
    stats: BatchStats


def _short_key(key: str) -> str:
    """Keys of huge garbage answers are replaced by a digest, so caches stay small."""
    if len(key) <= _MAX_KEY_CHARS:
        return key
    import hashlib

    return "h:" + hashlib.sha1(key.encode("utf-8", "surrogatepass")).hexdigest()


def _fallback_key(answer: str) -> str:
    """Vote key when math-verify gave no result."""
    return _short_key("s:" + normalize_strict(answer))


def grade_pairs(
    pairs: Sequence[tuple[str, str]],
    grader: str = "math-verify",
    timeout: float = DEFAULT_TIMEOUT,
    workers: int | None = None,
    pool: TaskPool | None = None,
    on_done: Callable[[int, PairGrade], None] | None = None,
) -> list[PairGrade]:
    """Grade (reference, answer) pairs: fast path in this process, the rest in a timed worker pool.

    on_done(i, grade) is called as each pair is graded (in completion order).
    """
    check_grader(grader)
    results: list[PairGrade | None] = [None] * len(pairs)
    pending: list[int] = []
    for i, (reference, answer) in enumerate(pairs):
        known = compare(reference, answer, grader)
        if known is None:
            pending.append(i)
            continue
        how = "strict" if grader == "strict" else "fast"
        results[i] = PairGrade(known[0], _short_key(known[1]), how)
        if on_done is not None:
            on_done(i, results[i])
    if pending:
        own_pool = pool is None
        active = pool or TaskPool(workers=workers, timeout=timeout)

        def finished(j: int, outcome: Outcome) -> None:
            index = pending[j]
            if outcome.ok:
                correct, key = outcome.value
                results[index] = PairGrade(bool(correct), _short_key(key), "math-verify")
            else:
                results[index] = PairGrade(False, _fallback_key(pairs[index][1]), outcome.status)
            if on_done is not None:
                on_done(index, results[index])

        try:
            active.map(
                compare_cached,
                [(pairs[i][0], pairs[i][1], timeout) for i in pending],
                on_result=finished,
                timeout=timeout,
            )
        finally:
            if own_pool:
                active.close()
    return [r if r is not None else PairGrade(False, _fallback_key(pairs[i][1]), "error") for i, r in enumerate(results)]


def grade_batch(
    completions: Sequence[str | None],
    references: Sequence[str],
    grader: str = "math-verify",
    timeout: float = DEFAULT_TIMEOUT,
    workers: int | None = None,
    cache: PairCache | None = None,
    progress: ProgressSink | None = None,
    pool: TaskPool | None = None,
    keep_undecided: bool = False,
) -> BatchResult:
    """Grade completions against references (same length); cache gains the newly decided pairs, and with
    `keep_undecided` (a run's cache: one answer, one verdict until a regrade) the undecided ones too."""
    check_grader(grader)
    if len(completions) != len(references):
        raise ValueError(f"{len(completions)} completions but {len(references)} references")
    sink = progress or NullProgress()
    stats = BatchStats(samples=len(completions))
    clock = time.perf_counter()

    sink.phase("extract", len(completions))
    extracted: list[str | None] = []
    for start in range(0, len(completions), _EXTRACT_CHUNK):
        chunk = completions[start : start + _EXTRACT_CHUNK]
        extracted.extend(extract_answer(text) if text else None for text in chunk)
        sink.advance("extract", len(chunk))
    stats.seconds["extract"] = time.perf_counter() - clock

    clock = time.perf_counter()
    pair_ids: dict[tuple[str, str], int] = {}
    sample_pair = np.full(len(completions), -1, dtype=np.int64)
    for i, (answer, reference) in enumerate(zip(extracted, references)):
        if answer is not None:
            sample_pair[i] = pair_ids.setdefault((reference, answer), len(pair_ids))
    pairs = list(pair_ids)
    multiplicity = np.bincount(sample_pair[sample_pair >= 0], minlength=len(pairs))
    stats.no_answer = int((sample_pair < 0).sum())
    stats.pairs = len(pairs)

    correct = np.zeros(len(pairs), dtype=bool)
    keys: list[str | None] = [None] * len(pairs)
    pair_undecided: list[str | None] = [None] * len(pairs)
    todo: list[int] = []
    for j, pair in enumerate(pairs):
        hit = cache.get(pair) if cache is not None else None
        if hit is None:
            todo.append(j)
        else:
            correct[j], keys[j] = hit[0], hit[1]
            if hit[2] in UNDECIDED:  # kept by a run's cache so one answer gets one verdict until a regrade
                pair_undecided[j] = hit[2]
                stats.undecided_cached += 1
    stats.cached = len(pairs) - len(todo)
    stats.seconds["dedupe"] = time.perf_counter() - clock

    clock = time.perf_counter()
    answered = int(multiplicity.sum())
    sink.phase("grade", answered)
    sink.advance("grade", answered - int(multiplicity[todo].sum()))
    todo_pairs = [pairs[j] for j in todo]

    def done(t: int, result: PairGrade) -> None:
        if cache is not None and (keep_undecided or result.how not in UNDECIDED):  # a timeout may pass with a larger --timeout
            cache[todo_pairs[t]] = (result.correct, result.key, result.how)
        sink.advance("grade", int(multiplicity[todo[t]]))

    grades = grade_pairs(todo_pairs, grader, timeout, workers, pool=pool, on_done=done)
    for j, result in zip(todo, grades):
        correct[j], keys[j] = result.correct, result.key
        if result.how in UNDECIDED:
            pair_undecided[j] = result.how
        if result.how == "fast" or result.how == "strict":
            stats.fast += 1
        elif result.how == "math-verify":
            stats.verified += 1
        elif result.how == "timeout":
            stats.timeouts += 1
        else:
            stats.errors += 1
    stats.seconds["grade"] = time.perf_counter() - clock

    has = sample_pair >= 0
    sample_correct = np.zeros(len(completions), dtype=bool)
    sample_correct[has] = correct[sample_pair[has]]
    key_array = np.array(keys + [None], dtype=object)
    undecided_array = np.array(pair_undecided + [None], dtype=object)
    frame = pd.DataFrame(
        {
            "extracted": pd.Series(extracted, dtype=object),
            "correct": sample_correct,
            # object columns, not pandas' Arrow strings: a lone surrogate in a JSONL answer must not fail the grade
            "key": pd.Series(key_array[sample_pair], dtype=object),
            "undecided": pd.Series(undecided_array[sample_pair], dtype=object),
        }
    )
    return BatchResult(frame, stats)


def grade_many(
    completions: Sequence[str | None],
    references: Sequence[str],
    grader: str = "math-verify",
    timeout: float = DEFAULT_TIMEOUT,
    workers: int | None = None,
) -> pd.DataFrame:
    """Per-completion grades as a DataFrame: extracted (str or None), correct (bool), key (vote key), undecided."""
    return grade_batch(completions, references, grader, timeout, workers).frame


_shared_pool: TaskPool | None = None
_shared_lock = threading.Lock()


def _pool() -> TaskPool:
    """The process-wide one-worker pool behind grade() and is_equivalent()."""
    global _shared_pool
    if _shared_pool is None:
        _shared_pool = TaskPool(workers=1, timeout=DEFAULT_TIMEOUT)
        atexit.register(_shared_pool.close)
    return _shared_pool


def is_equivalent(
    answer: str, reference: str, grader: str = "math-verify", timeout: float = DEFAULT_TIMEOUT
) -> bool:
    """Whether an extracted answer is equivalent to the reference answer (False on timeout)."""
    check_grader(grader)
    if not answer or not answer.strip():
        return False
    known = compare(reference, answer, grader)
    if known is not None:
        return known[0]
    with _shared_lock:
        outcome = _pool().map(compare_cached, [(reference, answer, timeout)], timeout=timeout)[0]
    return bool(outcome.ok and outcome.value[0])


def grade(completion: str, reference: str, grader: str = "math-verify", timeout: float = DEFAULT_TIMEOUT) -> bool:
    """Whether a completion's final answer (see extract_answer) is equivalent to the reference answer."""
    answer = extract_answer(completion)
    if answer is None:
        return False
    return is_equivalent(answer, reference, grader, timeout)
