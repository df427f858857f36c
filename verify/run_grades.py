"""Grade a run directory: every ungraded sample once, grades and the dedup cache kept on disk.

Reads `RUN_DIR/_problems.parquet` and every visible
`RUN_DIR/samples/**/*.parquet` shard (config_id, problem_id, sample_index, text). Writes under
`RUN_DIR/_grades/` (skipped by `pandas.read_parquet(RUN_DIR)`; reading `_grades/` itself as a
Parquet dataset gives a `grader` column from the hive-style folder name, and skips `_cache`):

    _grades/grader=<grader>/part-g<generation>-<time>-<id>.parquet   config_id, problem_id, sample_index,
                                                       extracted, correct, answer_class (and in its metadata
                                                       the texts digest of each shard it graded)
    _grades/_cache/<grader>.pairs.parquet              reference, extracted, correct, key, how
    _grades/_cache/<grader>.classes.parquet            problem_id, key, answer_class
    _grades/_cache/<grader>.references.parquet         problem_id, reference (what was graded against)

`answer_class` is the equivalence class of `extracted` within its problem, shared by all configs:
0 is the reference's class (every correct answer), 1, 2, ... are wrong answers grouped by their
vote key (`verify.equivalence.answer_key`), numbered in order of first grading; -1 is no answer.
Every file is written under a temporary name and renamed, and the grades after the caches (the
record of references last), so an interrupted run leaves only complete files; re-running grades
only samples without a grade. Where parts overlap (a regrade interrupted before it removed the old
parts, a shard graded again) the newest part's grade counts: parts are numbered by generation, so the
newest sorts last whatever the clock says (parts from before generations sort first).
Samples are graded in chunks of whole shards (`CHUNK_SAMPLES`), so only one chunk's texts are in
memory; each chunk writes its own part. An interrupted call (Ctrl-C) keeps the finished chunks'
grades and the pairs it finished in the pair cache (GradingInterrupted says how many of each), so a
re-run grades only the rest and does not compare those pairs again.
Pairs that timed out or crashed their worker are graded wrong and cached as undecided, so the run's
later samples with the same answer get the same verdict; `regrade=True` (`study verify --regrade`)
grades every sample again, which re-tries just those. A run whose
class registry is missing (its `_cache` deleted) is regraded whole, so majority-vote classes stay
consistent. A reference answer that differs from the one its problem's samples were graded against
(the problems file rewritten) is refused until `regrade=True`: the stored grades would be stale; so
are grades of a config that `study sample` redefined after they were made (its samples replaced; the
definition each graded config had is recorded with the references). A shard replaced by other samples
under the same name (a damaged shard removed and sampled again, where the engine need not give the same
samples) is noticed by the texts digest in its footer, which differs from the one recorded, in the same
grade part as its grades, when it was graded: its samples are graded again. So are the graded samples of
a shard that has a digest where none was recorded (runs graded before digests existed had shards
without one, so such a shard was written since). Shards without a digest (written before it existed, or
by another tool) cannot be checked.
A regrade leaves a marker (`_cache/<grader>.regrading`) until it completes: an interrupted regrade
mixes old and new parts, so plain calls are refused until `regrade=True` finishes it.
Likewise grades made under other grading rules (`GRADING_RULES`, recorded with the references and the
pair cache; runs graded before it was recorded count as rules 1): an upgrade of study that changes
what a grade is refuses to add to them until `regrade=True`, and a regrade does not reuse the
pair cache's verdicts from other rules.
One grading call at a time per run and grader: a call holds an exclusive lock on
`_cache/<grader>.lock` (released when its process ends, however it ends), and a second call while
it is held is refused, rather than both writing the class registry.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from sampling.store import (GRADES_DIR, MANIFEST, PROBLEMS, SAMPLES_DIR, RunDirError, UnreadableManifestError,
                             footer_texts_digest, read_manifest,
                             unreadable_problems, unreadable_shard, write_table_atomic)
from verify.batch import UNDECIDED, BatchStats, grade_batch
from verify.pool import TaskPool
from verify.equivalence import DEFAULT_TIMEOUT, check_grader
from verify.progress import NullProgress, ProgressSink, rich_progress

__all__ = [
    "GRADE_COLUMNS",
    "GradingInterrupted",
    "KEY_COLUMNS",
    "RunDirError",
    "grade_run",
    "grade_run_with_stats",
    "read_grades",
    "read_problems",
    "read_sample_columns",
    "sample_files",
    "grades_dir",
]

KEY_COLUMNS = ["config_id", "problem_id", "sample_index"]
GRADE_COLUMNS = [*KEY_COLUMNS, "extracted", "correct", "answer_class"]
GRADE_SCHEMA = pa.schema(
    [
        ("config_id", pa.string()),
        ("problem_id", pa.string()),
        ("sample_index", pa.int32()),
        ("extracted", pa.string()),
        ("correct", pa.bool_()),
        ("answer_class", pa.int32()),
    ]
)
PAIR_SCHEMA = pa.schema(
    [("reference", pa.string()), ("extracted", pa.string()), ("correct", pa.bool_()), ("key", pa.string()), ("how", pa.string())]
)
CLASS_SCHEMA = pa.schema([("problem_id", pa.string()), ("key", pa.string()), ("answer_class", pa.int32())])
REFERENCE_SCHEMA = pa.schema([("problem_id", pa.string()), ("reference", pa.string())])
GRADING_RULES = 4  # bump whenever extraction or equivalence changes a grade (2: answer spans, digit groups, degrees, bases, box lists;
# 3: "####" headings, ", since", digits a base lacks, group braces, units in plain words;
# 4: differing units, a set for a tuple, named choices, digits past 6 decimal places, thousands inside \frac)
_RULES_KEY = b"study.grading_rules"
_DEFINITIONS_KEY = b"study.config_definitions"  # in the references record: what each config was when graded
_SHARDS_KEY = b"study.shard_texts_sha256"  # in a grade part: {shard: texts digest or null} of the shards it graded
_UNRECORDED = object()  # a shard that no grade part names


class GradingInterrupted(KeyboardInterrupt):
    """Ctrl-C while grading a run dir: `graded` samples (the finished chunks) were saved, and `saved` newly
    decided pairs of the unfinished chunk were kept in the pair cache."""

    def __init__(self, saved: int, graded: int = 0, regrade: bool = False, whole: bool = False) -> None:
        """Remember what was kept, whether a regrade was interrupted (it must be finished with regrade=True), and
        whether every sample of the call had its grade saved (interrupted while finishing)."""
        super().__init__(saved, graded, regrade, whole)
        self.saved = saved
        self.graded = graded
        self.regrade = regrade
        self.whole = whole


@dataclass
class RunGradeStats:
    """What one grade_run call did."""

    samples: int
    already_graded: int
    newly_graded: int
    batch: BatchStats | None
    seconds: float
    replaced_shards: int = 0  # shards whose texts changed since they were graded (their samples graded again)


def grades_dir(run_dir: str | os.PathLike[str], grader: str) -> Path:
    """Folder holding one grader's grade parts."""
    return Path(run_dir) / GRADES_DIR / f"grader={grader}"


def _cache_dir(run_dir: Path) -> Path:
    """The folder of the graders' caches (skipped when `_grades/` is read as a dataset)."""
    return run_dir / GRADES_DIR / "_cache"


def _cache_path(run_dir: Path, grader: str, kind: str) -> Path:
    """Path of a grader's cache file (kind: pairs, classes or references)."""
    return _cache_dir(run_dir) / f"{grader}.{kind}.parquet"


def _regrade_marker(run_dir: Path, grader: str) -> Path:
    """A file that exists while a regrade is under way (or was interrupted)."""
    return _cache_dir(run_dir) / f"{grader}.regrading"


@contextlib.contextmanager
def _grading_lock(run_dir: Path, grader: str) -> Iterator[bool]:
    """Hold the run's grading lock for one grader (yields whether it is really held); RunDirError if another process holds it.

    An flock: the system releases it when its holder exits, so a killed call leaves no stale lock.
    Where no lock file can be made (a run folder this user may not write) nothing can write grades
    either, and the call goes on unlocked; so it does where the system or file system has no flock."""
    try:
        import fcntl

        _cache_dir(run_dir).mkdir(parents=True, exist_ok=True)
        # opened read-only (flock needs no more), so another user who may write the run can lock a file
        # the first one created; never written, so a call with nothing to grade changes no file's content
        descriptor: int | None = os.open(_cache_dir(run_dir) / f"{grader}.lock", os.O_RDONLY | os.O_CREAT, 0o666)
    except (ImportError, OSError):
        descriptor = None
    if descriptor is None:
        yield False
        return
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            locked = True
        except BlockingIOError:
            raise RunDirError(f"{run_dir}: another process (`study verify` or `study fit`) is grading this run with "
                              f"{grader} now; wait for it to finish, then run this again") from None
        except OSError:  # a file system without flock (some network ones)
            locked = False
        try:
            yield locked
        finally:
            if locked:
                fcntl.flock(descriptor, fcntl.LOCK_UN)
    finally:
        os.close(descriptor)


def _parquet_files(folder: Path) -> list[Path]:
    """Visible *.parquet files under folder (hidden and _-prefixed names are temporary or private)."""
    if not folder.is_dir():
        return []
    files = []
    for path in sorted(folder.rglob("*.parquet")):
        parts = path.relative_to(folder).parts
        if not any(part.startswith((".", "_")) for part in parts):
            files.append(path)
    return files


def sample_files(run_dir: str | os.PathLike[str]) -> list[Path]:
    """The samples shards of a run dir."""
    return _parquet_files(Path(run_dir) / SAMPLES_DIR)


def _require_columns(table_columns: Iterable[str], needed: Iterable[str], path: Path) -> None:
    """Raise RunDirError naming the file if columns are missing."""
    missing = [c for c in needed if c not in set(table_columns)]
    if missing:
        raise RunDirError(f"{path}: missing column(s) {', '.join(missing)}")


def read_problems(run_dir: str | os.PathLike[str]) -> pd.DataFrame:
    """The problems of a run dir (id, answer, and level/subject when present)."""
    path = Path(run_dir) / PROBLEMS
    if not path.is_file():
        raise RunDirError(f"{path}: not found (is {run_dir} a run directory?)")
    try:
        frame = pq.read_table(path).to_pandas()
    except (pa.ArrowException, OSError) as exc:
        raise unreadable_problems(path, exc) from None
    _require_columns(frame.columns, ["id", "answer"], path)
    for column in ("level", "subject"):
        if column not in frame.columns:
            frame[column] = None
    frame["id"] = frame["id"].astype(str)
    if frame["id"].duplicated().any():
        dup = frame.loc[frame["id"].duplicated(), "id"].iloc[0]
        raise RunDirError(f"{path}: problem id {dup!r} appears more than once")
    if frame["answer"].isna().any():
        bad = frame.loc[frame["answer"].isna(), "id"].iloc[0]
        raise RunDirError(f"{path}: problem {bad!r} has no answer")
    frame["answer"] = frame["answer"].astype(str)
    return frame


def read_sample_columns(files: list[Path], columns: list[str], progress: ProgressSink | None = None) -> pd.DataFrame:
    """Selected columns of every samples shard, with a shard column (index into files); progress counts shards read."""
    return _read_shards(files, columns, progress)[0]


def _read_shards(files: list[Path], columns: list[str], progress: ProgressSink | None = None
                 ) -> tuple[pd.DataFrame, list[str | None]]:
    """read_sample_columns, and each shard's texts digest (None where its footer has none)."""
    sink = progress or NullProgress()
    sink.phase("read", len(files))
    parts = []
    digests = []
    for i, path in enumerate(files):
        try:
            schema = pq.read_schema(path)
            _require_columns(schema.names, columns, path)
            frame = pq.read_table(path, columns=columns).to_pandas()
        except (pa.ArrowException, OSError) as exc:
            raise unreadable_shard(path, exc) from None
        frame["_shard"] = i
        parts.append(frame)
        digests.append(footer_texts_digest(schema.metadata))
        sink.advance("read")
    if not parts:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in [*columns, "_shard"]}), digests
    frame = pd.concat(parts, ignore_index=True)
    frame["config_id"] = frame["config_id"].astype(str)
    frame["problem_id"] = frame["problem_id"].astype(str)
    frame["sample_index"] = frame["sample_index"].astype(np.int32)
    return frame, digests


def _empty_grades() -> pd.DataFrame:
    """A grades frame with no rows and the right dtypes."""
    return GRADE_SCHEMA.empty_table().to_pandas()


def read_grades(run_dir: str | os.PathLike[str], grader: str = "math-verify") -> pd.DataFrame:
    """All grades one grader wrote for a run dir (one row per sample), sorted by key."""
    check_grader(grader)
    files = _parquet_files(grades_dir(run_dir, grader))
    if not files:
        return _empty_grades()
    frame = pa.concat_tables([_read_table(f, GRADE_SCHEMA, _unreadable_part) for f in files]).to_pandas()
    frame = frame.drop_duplicates(KEY_COLUMNS, keep="last")  # parts sort by generation: the newer part's grade wins
    return frame.sort_values(KEY_COLUMNS, kind="stable").reset_index(drop=True)


def _read_table(path: Path, schema: pa.Schema, unreadable: Callable[[Path, Exception], RunDirError]) -> pa.Table:
    """A grade part or cache file; `unreadable(path, exc)`, the error naming it and the way out, if it cannot be read."""
    try:
        return pq.read_table(path, schema=schema)
    except (pa.ArrowException, OSError) as exc:
        raise unreadable(path, exc) from None


def _read_metadata(path: Path, unreadable: Callable[[Path, Exception], RunDirError]) -> dict[bytes, bytes]:
    """The Parquet metadata of a grade part or cache file; `unreadable(path, exc)` if it cannot be read."""
    try:
        return pq.read_schema(path).metadata or {}
    except (pa.ArrowException, OSError) as exc:
        raise unreadable(path, exc) from None


def _unreadable_part(path: Path, exc: Exception) -> RunDirError:
    """The error for a damaged grade part: `--regrade` grades every sample again and replaces the parts."""
    run = path.parent.parent.parent
    return RunDirError(f"{path}: unreadable grade part ({exc}); `study verify {run} --regrade` grades every sample "
                       "again and replaces it")


def _with_rules(table: pa.Table) -> pa.Table:
    """The table with the current grading rules recorded in its Parquet metadata."""
    return table.replace_schema_metadata({**(table.schema.metadata or {}), _RULES_KEY: str(GRADING_RULES).encode()})


def _unreadable_cache(path: Path, exc: Exception) -> RunDirError:
    """The error for a damaged cache file: without the cache, `--regrade` grades every sample again and rebuilds it."""
    run = path.parent.parent.parent
    return RunDirError(f"{path}: unreadable grading cache ({exc}); remove {path.parent} (the comparisons and answer "
                       f"classes already made; samples and grades stay) and run `study verify {run} --regrade`")


def _rules_of(path: Path) -> int:
    """The grading rules a cache file was written under (1 for files from before they were recorded)."""
    return int(_read_metadata(path, _unreadable_cache).get(_RULES_KEY, b"1"))


def _load_pairs(run_dir: Path, grader: str, undecided: bool = True) -> dict[tuple[str, str], tuple[bool, str, str]]:
    """The on-disk (reference, extracted) -> (correct, key, how) cache; empty if made under other grading rules.

    Pairs that timed out or failed (`how` in UNDECIDED, graded wrong) are kept so that new samples with the same
    answer get the same verdict; `undecided=False` (a regrade) leaves them out, to be compared again."""
    path = _cache_path(run_dir, grader, "pairs")
    if not path.is_file() or _rules_of(path) != GRADING_RULES:
        return {}
    table = _read_table(path, PAIR_SCHEMA, _unreadable_cache).to_pydict()
    columns = (table["reference"], table["extracted"], table["correct"], table["key"], table["how"])
    return {(r, e): (bool(c), k, h) for r, e, c, k, h in zip(*columns) if undecided or h not in UNDECIDED}


def _save_pairs(run_dir: Path, grader: str, cache: dict[tuple[str, str], tuple[bool, str, str]]) -> None:
    """Write the pair cache."""
    pairs = list(cache)
    values = list(cache.values())
    table = pa.table(
        {
            "reference": [p[0] for p in pairs],
            "extracted": [p[1] for p in pairs],
            "correct": [v[0] for v in values],
            "key": [v[1] for v in values],
            "how": [v[2] for v in values],
        },
        schema=PAIR_SCHEMA,
    )
    write_table_atomic(_with_rules(table), _cache_path(run_dir, grader, "pairs"))


def _save_interrupted(
    run_dir: Path, grader: str, cache: dict[tuple[str, str], tuple[bool, str, str]], known: int
) -> int:
    """Persist the pairs decided before an interruption (atomically); how many were new (0 if none or unwritable)."""
    added = len(cache) - known
    if added <= 0:
        return 0
    try:
        _save_pairs(run_dir, grader, cache)
    except OSError:
        return 0
    return added


def _load_classes(run_dir: Path, grader: str) -> pd.DataFrame:
    """The (problem_id, key) -> answer_class registry."""
    path = _cache_path(run_dir, grader, "classes")
    if not path.is_file():
        return CLASS_SCHEMA.empty_table().to_pandas()
    return _read_table(path, CLASS_SCHEMA, _unreadable_cache).to_pandas()


def _load_references(run_dir: Path, grader: str) -> dict[str, str]:
    """problem_id -> the reference its samples were graded against (empty for runs graded before this was kept)."""
    path = _cache_path(run_dir, grader, "references")
    if not path.is_file():
        return {}
    table = _read_table(path, REFERENCE_SCHEMA, _unreadable_cache).to_pandas()
    return dict(zip(table["problem_id"], table["reference"]))


def config_definitions(run_dir: Path) -> dict[str, str]:
    """config id -> sha256 of its definition in the run's manifest (a config redefined by `study sample` gets
    another); {} for a run dir without a manifest (one written by hand)."""
    try:
        configs = read_manifest(run_dir)["configs"] if (run_dir / MANIFEST).is_file() else {}
    except UnreadableManifestError:  # damaged: grading would skip the check that its grades are current
        raise
    except RunDirError:  # a manifest another tool wrote: nothing to compare
        return {}
    return {config_id: hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()
            for config_id, config in configs.items()}


def _load_definitions(run_dir: Path, grader: str) -> dict[str, str]:
    """config id -> the definition digest its samples were graded under (empty for runs graded before this was kept)."""
    path = _cache_path(run_dir, grader, "references")
    if not path.is_file():
        return {}
    recorded = _read_metadata(path, _unreadable_cache).get(_DEFINITIONS_KEY)
    return json.loads(recorded) if recorded else {}


def _check_definitions(run_dir: Path, grader: str, current: dict[str, str], recorded: dict[str, str],
                       sampled: set[str]) -> None:
    """Refuse to keep grades of a config that was redefined after they were made and has samples again (its old
    grades name the same keys); until it has, its old grades match no sample and are not read."""
    changed = sorted(c for c, digest in recorded.items() if c in current and current[c] != digest and c in sampled)
    if changed:
        shown = ", ".join(repr(c) for c in changed)
        raise RunDirError(f"{run_dir}: config(s) {shown} were redefined after their samples were graded ({grader}): "
                          "`study sample` replaced those samples, so the stored grades are stale: run "
                          f"`study verify {run_dir} --regrade`")


def _check_rules(run_dir: Path, grader: str, graded: bool) -> None:
    """Refuse to add to grades made under other grading rules than this version of study's."""
    path = _cache_path(run_dir, grader, "references")
    if graded and not path.is_file():
        raise RunDirError(f"{run_dir}: its {grader} grades carry no record of their grading rules (made by a version of "
                          f"study from before rules 2, or {path.relative_to(run_dir)} was removed); run "
                          f"`study verify {run_dir} --regrade` to grade every sample under the current rules")
    rules = _rules_of(path) if path.is_file() else GRADING_RULES
    if rules != GRADING_RULES:
        raise RunDirError(f"{run_dir}: its {grader} grades were made under grading rules {rules}, and this version of "
                          f"study grades under rules {GRADING_RULES} (answer extraction or equivalence changed); "
                          f"run `study verify {run_dir} --regrade` to grade every sample under the current rules")


def _check_references(run_dir: Path, grader: str, answers: dict[str, str], recorded: dict[str, str]) -> None:
    """Refuse to add to grades that were made against other reference answers than the problems file's."""
    changed = [p for p, ref in recorded.items() if p in answers and answers[p] != ref]
    if changed:
        shown = ", ".join(repr(p) for p in changed[:5]) + (f" and {len(changed) - 5} more" if len(changed) > 5 else "")
        raise RunDirError(f"{run_dir}: the reference answer of problem(s) {shown} differs from the one their samples were "
                          f"graded against ({grader}); the stored grades are stale: run `study verify {run_dir} --regrade`")


def _save_references(run_dir: Path, grader: str, references: dict[str, str], definitions: dict[str, str]) -> None:
    """Record the reference each graded problem was graded against, and the definition of each graded config."""
    table = pd.DataFrame({"problem_id": list(references), "reference": list(references.values())})
    table = _with_rules(pa.Table.from_pandas(table, schema=REFERENCE_SCHEMA, preserve_index=False))
    metadata = {**table.schema.metadata, _DEFINITIONS_KEY: json.dumps(definitions, sort_keys=True).encode()}
    write_table_atomic(table.replace_schema_metadata(metadata), _cache_path(run_dir, grader, "references"))


def _shard_names(run_dir: Path, files: list[Path]) -> list[str]:
    """Each shard's path under the run's samples folder (how the shards record names it)."""
    return [path.relative_to(run_dir / SAMPLES_DIR).as_posix() for path in files]


def _graded_digests(parts: list[Path]) -> dict[str, str | None]:
    """shard name -> the texts digest it had when its samples were graded (None: it had none), from the grade parts
    (the newest last); shards graded before digests were recorded are missing."""
    digests: dict[str, str | None] = {}
    for path in parts:
        recorded = _read_metadata(path, _unreadable_part).get(_SHARDS_KEY)
        if recorded:
            digests.update(json.loads(recorded))
    return digests


def _assign_classes(graded: pd.DataFrame, registry: pd.DataFrame) -> tuple[np.ndarray, pd.DataFrame]:
    """answer_class for each graded row (needs problem_id, extracted, correct, key); the grown registry."""
    classes = np.full(len(graded), -1, dtype=np.int32)
    classes[graded["correct"].to_numpy()] = 0
    wrong = graded["extracted"].notna().to_numpy() & ~graded["correct"].to_numpy()
    if not wrong.any():
        return classes, registry
    lookup = {(p, k): c for p, k, c in zip(registry["problem_id"], registry["key"], registry["answer_class"])}
    next_id = registry.groupby("problem_id")["answer_class"].max().to_dict() if len(registry) else {}
    new_rows: list[tuple[str, str, int]] = []
    problems = graded["problem_id"].to_numpy()
    keys = graded["key"].to_numpy()
    for i in np.flatnonzero(wrong):
        pk = (problems[i], keys[i])
        cls = lookup.get(pk)
        if cls is None:
            cls = next_id.get(pk[0], 0) + 1
            next_id[pk[0]] = cls
            lookup[pk] = cls
            new_rows.append((pk[0], pk[1], cls))
        classes[i] = cls
    if new_rows:
        added = pd.DataFrame(new_rows, columns=["problem_id", "key", "answer_class"])
        added["answer_class"] = added["answer_class"].astype(np.int32)
        registry = pd.concat([registry, added], ignore_index=True) if len(registry) else added
    return classes, registry


def grade_run_with_stats(
    run_dir: str | os.PathLike[str],
    grader: str = "math-verify",
    progress: bool = True,
    timeout: float = DEFAULT_TIMEOUT,
    workers: int | None = None,
    regrade: bool = False,
) -> tuple[pd.DataFrame, RunGradeStats]:
    """grade_run, also returning what was done (counts, timings, timeouts).

    `regrade` grades every sample again: decided pairs come from the pair cache, so what is
    graded anew is the pairs that timed out or crashed before (e.g. with a larger timeout); the
    old grade parts are removed once the new ones are written.
    """
    check_grader(grader)
    with rich_progress(progress) as sink:
        return _grade_run(Path(run_dir), grader, sink, timeout, workers, regrade)


def _grade_run(run: Path, grader: str, sink: ProgressSink, timeout: float, workers: int | None, regrade: bool
               ) -> tuple[pd.DataFrame, RunGradeStats]:
    """grade_run_with_stats, reporting progress (reading shards, extracting, grading) to sink."""
    started = time.perf_counter()
    if not run.exists():
        raise RunDirError(f"{run} does not exist")
    if not run.is_dir():
        raise RunDirError(f"{run}: not a directory")
    problems = read_problems(run)
    files = sample_files(run)
    if not files:
        raise RunDirError(f"{run / SAMPLES_DIR}: no samples shards (*.parquet) found")
    with _grading_lock(run, grader) as locked:
        if locked:  # no other call of this grader is writing: temp files of its are a killed call's
            _remove_stale_temps(run, grader)
        return _grade_files(run, grader, sink, timeout, workers, regrade, problems, files, started)


def _remove_stale_temps(run: Path, grader: str) -> None:
    """Remove this grader's temp files left by a grading call that was killed mid-write (readers skip them);
    best effort: a run this user may only read keeps them."""
    for stale in [*grades_dir(run, grader).glob(".tmp-*"), *_cache_dir(run).glob(f".tmp-*-{grader}.*")]:
        try:
            stale.unlink(missing_ok=True)
        except OSError:
            return


def _grade_files(run: Path, grader: str, sink: ProgressSink, timeout: float, workers: int | None, regrade: bool,
                 problems: pd.DataFrame, files: list[Path], started: float) -> tuple[pd.DataFrame, RunGradeStats]:
    """_grade_run's work, with the run's grading lock held."""
    keys, digests = _read_shards(files, KEY_COLUMNS, sink)
    names = _shard_names(run, files)
    parts = _parquet_files(grades_dir(run, grader))
    marker = _regrade_marker(run, grader)
    if not regrade and marker.exists():  # its parts mix grades from before and during that regrade
        raise RunDirError(f"{run}: a regrade of its {grader} grades was interrupted; run `study verify {run} "
                          "--regrade` to finish it")
    if not regrade and parts and not _cache_path(run, grader, "classes").is_file():
        # the answer-class registry is gone (deleted by hand): numbering only the new samples' answers
        # could give one answer two classes, or two answers one, so every sample is graded again
        regrade = True
    answers = dict(zip(problems["id"], problems["answer"]))
    if not regrade:
        _check_rules(run, grader, graded=bool(parts))
    recorded = {} if regrade else _load_references(run, grader)  # a regrade starts the record over
    _check_references(run, grader, answers, recorded)
    definitions = config_definitions(run)
    graded_definitions = {} if regrade else _load_definitions(run, grader)
    _check_definitions(run, grader, definitions, graded_definitions, set(keys["config_id"].unique()))
    replaced = parts if regrade else []
    existing = _empty_grades() if regrade else read_grades(run, grader)
    for config_id in set(existing["config_id"]) - set(graded_definitions):  # graded by an older study: taken as
        if config_id in definitions:  # made under today's definition (recorded with the next references written)
            graded_definitions[config_id] = definitions[config_id]
    key_code, graded_code = _key_codes(keys, existing)
    first = ~pd.Series(key_code).duplicated().to_numpy()  # a sample in two shards counts once (the first)
    keys, key_code = keys[first].reset_index(drop=True), key_code[first]
    graded_digests = {} if regrade else _graded_digests(parts)
    source = keys["_shard"].to_numpy()  # each sample's (first) shard
    # a shard whose texts digest is not the one recorded with its grades holds other samples than were graded: so
    # does one with a digest where none was recorded (written since by `study sample`; every shard of a run graded
    # before digests existed had none); a shard without a digest cannot be checked
    suspect = [i for i in np.unique(source).tolist()
               if digests[i] is not None and graded_digests.get(names[i], _UNRECORDED) != digests[i]]
    changed_shards: list[int] = []
    if suspect:
        in_suspect = np.isin(source, suspect)
        stale = np.isin(graded_code, key_code[in_suspect])
        changed_shards = np.unique(source[in_suspect & np.isin(key_code, graded_code)]).tolist()  # those with grades
        existing, graded_code = existing[~stale], graded_code[~stale]
    todo = keys[~np.isin(key_code, graded_code)]
    already = len(keys) - len(todo)
    if todo.empty:
        grades = existing[np.isin(graded_code, key_code)].reset_index(drop=True)
        return grades, RunGradeStats(len(keys), already, 0, None, time.perf_counter() - started)

    unknown = sorted(set(todo["problem_id"]) - set(problems["id"]))
    if unknown:
        shown = ", ".join(repr(p) for p in unknown[:5])
        raise RunDirError(f"{run}: samples refer to problem id(s) missing from the problems file: {shown}")

    cache = _load_pairs(run, grader, undecided=not regrade)
    known = len(cache)
    registry = _load_classes(run, grader)
    newly = 0
    batch = BatchStats()
    pairs_saved = time.monotonic()
    todo = todo.sort_values("_shard", kind="stable").reset_index(drop=True)
    shard_of = todo["_shard"].to_numpy()
    if regrade:  # until the regrade completes, plain calls are refused: old and new parts coexist
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
    pool = TaskPool(workers=workers, timeout=timeout)
    generation = None  # of the last grade part written (looked up at the first)
    try:
        overall = _OverallProgress(sink, len(todo))
        for shards in _shard_chunks(shard_of, CHUNK_SAMPLES):
            rows = slice(np.searchsorted(shard_of, shards[0], "left"), np.searchsorted(shard_of, shards[-1], "right"))
            chunk = todo.iloc[rows].drop(columns="_shard")
            texts, read_digests = _read_shards([files[i] for i in shards], [*KEY_COLUMNS, "text"])
            texts = texts.drop(columns="_shard").drop_duplicates(KEY_COLUMNS, keep="first")
            chunk = chunk.merge(texts, on=KEY_COLUMNS, how="left")
            del texts
            chunk = chunk.sort_values(KEY_COLUMNS, kind="stable").reset_index(drop=True)
            references = [answers[p] for p in chunk["problem_id"]]
            completions = [t if isinstance(t, str) else None for t in chunk["text"]]
            overall.chunk(len(chunk))
            result = grade_batch(completions, references, grader, timeout, workers, cache=cache,
                                 progress=overall, pool=pool, keep_undecided=True)  # `--regrade` retries them: `_load_pairs`
            del completions
            graded = pd.concat([chunk[KEY_COLUMNS], result.frame], axis=1)
            classes, registry = _assign_classes(graded, registry)
            graded["answer_class"] = classes
            # the registry and the references before the grades that use them (a reference recorded for grades
            # that an interruption never wrote only makes a later check stricter); a regrade records its
            # references once every part is written (below)
            write_table_atomic(pa.Table.from_pandas(registry, schema=CLASS_SCHEMA, preserve_index=False),
                               _cache_path(run, grader, "classes"))
            for problem in chunk["problem_id"].unique():
                recorded[problem] = answers[problem]
            graded_definitions.update({c: definitions[c] for c in chunk["config_id"].unique() if c in definitions})
            if not regrade:
                _save_references(run, grader, recorded, graded_definitions)
            graded_shards = {names[i]: digest for i, digest in zip(shards, read_digests)}  # None: it has none
            generation = _write_part(run, grader, graded, graded_shards, generation)  # grades and digests at once
            newly += len(graded)
            batch.add(result.stats)
            if time.monotonic() - pairs_saved > PAIRS_SAVE_SECONDS:
                _save_pairs(run, grader, cache)
                pairs_saved = time.monotonic()
        _save_pairs(run, grader, cache)
        for old in replaced:  # after the new parts are complete (which outrank them: read_grades keeps the newest)
            old.unlink(missing_ok=True)
        _save_references(run, grader, recorded, graded_definitions)
        marker.unlink(missing_ok=True)  # last: until here an interrupted regrade is refused, never accepted half done
    except KeyboardInterrupt:  # also while finishing: every part is written, a regrade's marker may remain
        raise GradingInterrupted(_save_interrupted(run, grader, cache, known), newly, regrade and marker.exists(),
                                 whole=newly == len(todo)) from None
    finally:
        pool.close()

    grades = read_grades(run, grader)
    grade_code, key_code = _key_codes(grades, keys)  # codes compare within one call only
    grades = grades[np.isin(grade_code, key_code)].reset_index(drop=True)
    stats = RunGradeStats(len(keys), already, newly, batch, time.perf_counter() - started, len(changed_shards))
    return grades, stats


def _key_codes(*frames: pd.DataFrame) -> list[np.ndarray]:
    """One exact int64 per (config_id, problem_id, sample_index) row of each frame, equal for equal keys (within one call).

    Compares the keys of millions of samples in 8 bytes each, without a merge on string columns."""
    configs = pd.Index(pd.unique(pd.concat([f["config_id"] for f in frames], ignore_index=True)))
    problems = pd.Index(pd.unique(pd.concat([f["problem_id"] for f in frames], ignore_index=True)))
    indices = [f["sample_index"].to_numpy(dtype=np.int64) for f in frames]
    low = min((int(i.min()) for i in indices if len(i)), default=0)
    width = max((int(i.max()) for i in indices if len(i)), default=0) - low + 1
    if len(configs) * len(problems) * width >= 2**62:
        raise RunDirError(f"too many distinct sample keys to index ({len(configs)} configs x {len(problems)} problems "
                          f"x sample indices {low}..{low + width - 1})")
    return [(configs.get_indexer(f["config_id"]).astype(np.int64) * len(problems)
             + problems.get_indexer(f["problem_id"])) * width + (i - low) for f, i in zip(frames, indices)]


CHUNK_SAMPLES = 100_000  # samples graded per chunk: bounds the texts held in memory on runs of any size
PAIRS_SAVE_SECONDS = 60.0  # the pair cache is rewritten at most this often between chunks (and at the end)


def _shard_chunks(shard_of_sample: np.ndarray, limit: int) -> list[list[int]]:
    """Shard indices grouped so that each group holds about `limit` samples to grade (a bigger shard alone)."""
    shards, counts = np.unique(shard_of_sample, return_counts=True)
    chunks: list[list[int]] = []
    current: list[int] = []
    size = 0
    for shard, count in zip(shards.tolist(), counts.tolist()):
        if current and size + count > limit:
            chunks.append(current)
            current, size = [], 0
        current.append(shard)
        size += count
    if current:
        chunks.append(current)
    return chunks


def _write_part(run: Path, grader: str, graded: pd.DataFrame, shards: dict[str, str | None],
                generation: int | None) -> int:
    """Write one grade part with the texts digests of the shards it graded; return its generation (pass it to the
    next call). Generations count up past every existing part's, so newer parts sort (and win) last whatever the
    clock says (another time zone, a node whose clock is behind); `None` looks the last one up."""
    if generation is None:
        numbers = [int(match.group(1)) for path in _parquet_files(grades_dir(run, grader))
                   if (match := _GENERATION.match(path.name))]
        generation = max(numbers, default=0)
    generation += 1
    table = pa.Table.from_pandas(graded[GRADE_COLUMNS], schema=GRADE_SCHEMA, preserve_index=False)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), _SHARDS_KEY: json.dumps(shards).encode()})
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    name = f"part-g{generation:09d}-{stamp}-{uuid.uuid4().hex[:8]}.parquet"  # "g" sorts after the digits of older names
    write_table_atomic(table, grades_dir(run, grader) / name)
    return generation


_GENERATION = re.compile(r"^part-g(\d+)-")


class _OverallProgress:
    """One bar per phase over every chunk of a call (a chunk's samples without an answer need no grading)."""

    def __init__(self, sink: ProgressSink, total: int) -> None:
        """Start the call's bars."""
        self._sink = sink
        self._size = 0
        sink.phase("extract", total)
        sink.phase("grade", total)

    def chunk(self, size: int) -> None:
        """The next chunk has `size` samples."""
        self._size = size

    def phase(self, name: str, total: int) -> None:
        """A chunk's phase starts: samples it will not grade (no answer) count as done."""
        if name == "grade":
            self._sink.advance("grade", self._size - total)

    def advance(self, name: str, n: int = 1) -> None:
        """Pass a chunk's progress on."""
        self._sink.advance(name, n)


def grade_run(
    run_dir: str | os.PathLike[str],
    grader: str = "math-verify",
    progress: bool = True,
    timeout: float = DEFAULT_TIMEOUT,
    workers: int | None = None,
    regrade: bool = False,
) -> pd.DataFrame:
    """Grade every ungraded sample of a run dir (every sample with `regrade`), store grades in RUN_DIR/_grades/; return all its grades."""
    return grade_run_with_stats(run_dir, grader, progress, timeout, workers, regrade)[0]
