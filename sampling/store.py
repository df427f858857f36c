"""The run directory: manifest, problems, and append-only Parquet shards of samples.

Layout (everything that is not a samples shard starts with `_`, or `.` for temp files, so that
`pandas.read_parquet(run_dir)` reads exactly the samples table):

    RUN_DIR/_manifest.json      run-wide identity: models, dataset, seed, n, prompt, blocking, configs
    RUN_DIR/_problems.parquet   the problems sampled (id, problem, answer, level, subject)
    RUN_DIR/samples/CONFIG/BLOCK.parquet   one shard per finished block of samples (its Parquet
                                metadata records the engine, its device, its wall-clock seconds
                                for the block, and a digest of its texts)

A shard is written to a dot-prefixed temp name and renamed into place, so a crash never leaves a
half shard; a block either has its shard or is redone whole on resume.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from sampling.datasets import DATASET_NAMES, Problem
from sampling.records import SampleRecord

MANIFEST = "_manifest.json"
PROBLEMS = "_problems.parquet"
GRADES_DIR = "_grades"
FIT_DIR = "_fit"  # fit.json, report.md and plots of `study fit` / `study report`
ANALYSIS_DIR = "analysis"  # under FIT_DIR: `study analyze` tables and plots
SAMPLES_DIR = "samples"
CONFIG_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")  # no "=": pyarrow would read it as a partition

SAMPLES_SCHEMA = pa.schema(
    [
        ("config_id", pa.string()),
        ("problem_id", pa.string()),
        ("sample_index", pa.int32()),
        ("seed", pa.int64()),
        ("token_ids", pa.list_(pa.int32())),
        ("text", pa.string()),
        ("provenance", pa.list_(pa.int8())),
        ("base_entropy", pa.list_(pa.float32())),
        ("interventions", pa.int32()),
        ("finish_reason", pa.string()),
        ("base_decode", pa.int64()),
        ("base_prefill", pa.int64()),
        ("oracle_decode", pa.int64()),
        ("oracle_prefill", pa.int64()),
        ("discarded", pa.int64()),
    ]
)

# Keys of the manifest that must match for a run directory to be continued (prompts_sha256 only
# where the existing manifest has it: run directories from before it was recorded continue).
RUN_IDENTITY_KEYS = ("models", "dataset", "problems_sha256", "seed", "n", "prompt", "prompts_sha256", "blocking", "engine",
                     "engine_options")
OPTIONAL_IDENTITY_KEYS = ("prompts_sha256", "engine_options")  # not in run dirs written before they were recorded
SAMPLING_ONLY_KEYS = ("engine_options",)  # known only once an engine starts: absent from a call with nothing to sample
MISMATCH_WHY = {  # what a mismatch of these keys means, where the values alone do not say
    "prompts_sha256": " (the same prompt settings now give other token ids: the tokenizer or its chat template changed)",
    "engine_options": " (the engine settings that define what is sampled: [engine_options], or a default of this "
                      "machine's such as dtype)",
    "problems_sha256": " (the problems' ids, texts or answers: other --levels, or an edited dataset file; if the file "
                       "did not change, study now reads it otherwise: numbers in answer and id fields are read exactly, "
                       "1.0 as 1 and 1e-07 as 0.0000001)",
}
MISMATCH_FIX = {  # what to do instead of a new --out ({old}: the run's value)
    "engine": "Pass --engine {old} to continue it, or use a new --out directory.",
    "engine_options": "Set [engine_options] as the run had them (e.g. dtype explicitly where machines' defaults "
                      "differ), or use a new --out directory.",
}


class RunDirError(ValueError):
    """A run directory that cannot be used as asked (mismatch, corruption, bad input)."""


class UnreadableManifestError(RunDirError):
    """A run directory whose manifest is not JSON (damaged), as opposed to one that lacks what `study` writes."""


@dataclass
class _Staged:
    """A temp file being written beside its destination, and whether it was moved there."""

    tmp: Path
    placed: bool = False


@contextmanager
def _replacing(path: Path, keep_existing: bool = False) -> Iterator[_Staged]:
    """A dot-prefixed temp path beside `path` to write; once written it is fsynced and renamed over `path`
    (with `keep_existing`, moved there only if no `path` exists: an existing file is kept). The temp file
    is never left behind, whatever fails."""
    staged = _Staged(path.with_name(f".tmp-{uuid.uuid4().hex}-{path.name}"))  # unique across hosts too (pids are not)
    try:
        yield staged
        with open(staged.tmp, "rb") as handle:
            os.fsync(handle.fileno())
        if not keep_existing:
            os.replace(staged.tmp, path)
            staged.placed = True
        else:
            try:
                os.link(staged.tmp, path)  # atomic, and refuses an existing path
                staged.placed = True
            except FileExistsError:
                pass
            except OSError:  # a file system without hard links: check, then rename
                if not path.exists():
                    os.replace(staged.tmp, path)
                    staged.placed = True
    finally:
        if staged.tmp.exists():
            staged.tmp.unlink()


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write bytes to a temp file in the same folder, fsync, rename; never leaves the temp file."""
    with _replacing(path) as staged:
        staged.tmp.write_bytes(data)


def write_table_atomic(table: pa.Table, path: Path, keep_existing: bool = False, **options) -> bool:
    """Write a Parquet file under a dot-prefixed temp name, fsync, rename; never leaves a half file.
    With `keep_existing`, a file already at `path` is kept and this table dropped: returns False."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with _replacing(path, keep_existing) as staged:
        pq.write_table(table, staged.tmp, **options)
    return staged.placed


def read_manifest(run_dir: Path) -> dict[str, Any]:
    """The run's manifest, or a clear error if the folder is not a run directory."""
    path = Path(run_dir) / MANIFEST
    if not Path(run_dir).exists():
        raise RunDirError(f"{run_dir} does not exist")
    if not path.exists():
        raise RunDirError(f"{run_dir} is not a run directory (no {MANIFEST})")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UnreadableManifestError(f"{path}: corrupt manifest ({exc.msg} at line {exc.lineno} column {exc.colno}); "
                                      "it is not JSON") from None
    except UnicodeDecodeError as exc:
        raise UnreadableManifestError(f"{path}: corrupt manifest (not UTF-8 text: {exc.reason} at byte {exc.start})") from None
    missing = [key for key in ("models", "configs") if not isinstance(manifest, dict) or not isinstance(manifest.get(key), dict)]
    if missing:
        raise RunDirError(f"{path}: corrupt manifest (no {' or '.join(repr(k) for k in missing)} table)")
    return manifest


def write_manifest(run_dir: Path, manifest: dict[str, Any]) -> None:
    """Atomically (re)write the manifest."""
    _atomic_write_bytes(Path(run_dir) / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True).encode())


def open_run(run_dir: Path, manifest: dict[str, Any], problems: list[Problem],
             on_wait: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Create a run directory or check that an existing one matches; returns the manifest in force.

    New config ids are added to an existing run, and a given cost section replaces the recorded one;
    a config id whose definition changed (unless it has no samples yet: then the new definition
    replaces it, and `on_wait` is told), or any change of models, dataset, problems, seed, n,
    prompt settings or the prompts' token ids, or blocking, is refused. Concurrent shard workers
    take turns (`_manifest_lock`): one creates the run, and no worker's additions are lost.
    """
    run_dir = Path(run_dir)
    for config_id in manifest["configs"]:
        if not CONFIG_ID_PATTERN.match(config_id):
            raise RunDirError(f"config id {config_id!r} must be letters, digits and _.+- (no spaces or slashes)")
    table = pa.Table.from_pylist([p.to_dict() for p in problems], schema=problems_schema())
    with _manifest_lock(run_dir, on_wait):
        if (run_dir / MANIFEST).exists():
            joined = _join_run(run_dir, manifest, on_wait)
            if not (run_dir / PROBLEMS).exists():  # removed after damage (see `read_problems`); the problems matched
                write_table_atomic(table, run_dir / PROBLEMS, keep_existing=True)
                if on_wait is not None:
                    on_wait(f"note: wrote {run_dir / PROBLEMS} again (it was missing)")
            return joined
        # an empty folder, or one left by a creation that died before its manifest
        leftovers = [p for p in run_dir.iterdir() if not p.name.startswith(".") and p.name != PROBLEMS]
        if any(p.name != SAMPLES_DIR or any(p.iterdir()) for p in leftovers):
            raise RunDirError(f"{run_dir} exists and is not a run directory; choose an empty or new --out")
        (run_dir / SAMPLES_DIR).mkdir(parents=True, exist_ok=True)
        write_table_atomic(table, run_dir / PROBLEMS)
        write_manifest(run_dir, manifest)
    return manifest


def check_not_nested(run_dir: Path) -> None:
    """Refuse an --out inside another run directory: its shards would be read as that run's samples."""
    resolved = Path(run_dir).resolve()
    for parent in resolved.parents:
        if (parent / MANIFEST).is_file():
            raise RunDirError(f"{run_dir} is inside the run directory {parent}: its samples would be read as that "
                              "run's; choose an --out outside it")


def check_join(run_dir: Path, manifest: dict[str, Any]) -> bool:
    """Refuse a manifest that does not match the run's (nothing is written; `open_run` checks again); whether
    joining would change the run (new or redefined configs, a new cost section, a missing problems file)."""
    existing = read_manifest(Path(run_dir))
    redefined = _check_compatible(Path(run_dir), existing, manifest)
    return bool(redefined) or _updated(existing, manifest) is not None or not (Path(run_dir) / PROBLEMS).exists()


def _updated(existing: dict[str, Any], manifest: dict[str, Any]) -> dict[str, Any] | None:
    """The run's manifest with the new manifest's new configs (and cost) added; None when nothing is new."""
    added = {cid: cfg for cid, cfg in manifest["configs"].items() if cid not in existing["configs"]}
    # the cost model only says how `study fit` reads the run: a config that gives one updates it
    new_cost = "cost" in manifest and manifest["cost"] != existing.get("cost")
    first_options = "engine_options" in manifest and "engine_options" not in existing  # a run dir from before they were recorded
    if not (added or new_cost or first_options):
        return None
    updated = {**existing, "configs": {**existing["configs"], **added}}
    if new_cost:
        updated["cost"] = manifest["cost"]
    if first_options:
        updated["engine_options"] = manifest["engine_options"]
    return updated


def _join_run(run_dir: Path, manifest: dict[str, Any], report: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Check a new manifest against the run's and add its new configs (and cost); the manifest in force."""
    existing = read_manifest(run_dir)
    redefined = _check_compatible(run_dir, existing, manifest)
    for config_id in redefined:
        if report is not None:
            stale = (f"; if its old samples were graded, `study verify {run_dir} --regrade` grades the new ones once "
                     "they are drawn" if (run_dir / GRADES_DIR).is_dir() else "")
            report(f"note: config {config_id!r} was defined otherwise in {run_dir} but has no samples there yet: "
                   f"its new definition replaces the old one{stale}")
        del existing["configs"][config_id]
    updated = _updated(existing, manifest)
    if updated is None:
        return existing
    write_manifest(run_dir, updated)
    return updated


def _check_compatible(run_dir: Path, existing: dict[str, Any], manifest: dict[str, Any]) -> list[str]:
    """A RunDirError naming the first run setting that differs, or every config whose definition does and that
    has samples; the configs defined otherwise that have none yet (added by a worker that then drew nothing)."""
    for key in RUN_IDENTITY_KEYS:
        if key in OPTIONAL_IDENTITY_KEYS and key not in existing:
            continue
        if key in SAMPLING_ONLY_KEYS and key not in manifest:
            continue
        old, new = _identity(key, existing.get(key)), _identity(key, manifest.get(key))
        if key == "models" and isinstance(old, dict) and isinstance(new, dict):  # what older runs did not record (stop_ids)
            new = {role: {k: v for k, v in entry.items() if k in old[role]}
                   if isinstance(entry, dict) and isinstance(old.get(role), dict) else entry for role, entry in new.items()}
        if old != new:
            why = MISMATCH_WHY.get(key, "")
            if key == "problems_sha256" and existing.get("num_problems") != manifest.get("num_problems"):
                why = f" ({existing.get('num_problems')} problems, now {manifest.get('num_problems')}: check --problems/--levels)"
            elif key == "problems_sha256" and existing.get("dataset") != manifest.get("dataset"):
                why = (f" (the dataset was {existing.get('dataset')!r} and is {manifest.get('dataset')!r} now: files of one name "
                       "whose problems differ are different datasets, and a run's default --out is named after the file name)")
            fix = MISMATCH_FIX.get(key, "Use a new --out directory.").format(old=old)
            raise RunDirError(
                f"{run_dir} was sampled with a different {key!r}{why}:\n  existing: {json.dumps(old, sort_keys=True)}\n"
                f"  now:      {json.dumps(new, sort_keys=True)}\n{fix}"
            )
    changed: dict[str, str] = {}
    unsampled: list[str] = []
    for config_id, config in manifest["configs"].items():
        old = existing["configs"].get(config_id)
        if old is not None:
            old, config = _config_identity(old, config)
        if old is not None and old != config:
            if not config_has_samples(run_dir, config_id):
                unsampled.append(config_id)
                continue
            changed[config_id] = ", ".join(f"{k}: {json.dumps(old.get(k))} -> {json.dumps(config.get(k))}"
                                           for k in sorted(set(old) | set(config)) if old.get(k) != config.get(k))
            temps = _unfinished_only(run_dir, config_id)
            if temps:
                changed[config_id] += (f"; its only files are unfinished ones ({', '.join(temps[:3])}): a worker is writing "
                                       "them, or one was killed mid-write; if no `study sample` runs, remove them")
    if len(changed) == 1:
        (config_id, what), = changed.items()
        raise RunDirError(f"config {config_id!r} in {run_dir} was sampled with other settings ({what}). "
                          "Give the changed config a new id or use a new --out directory.")
    if changed:  # e.g. max_tokens or a [sampling] temperature: every config at once
        listed = "\n".join(f"  {config_id}: {what}" for config_id, what in changed.items())
        raise RunDirError(f"{len(changed)} configs in {run_dir} were sampled with other settings:\n{listed}\n"
                          "Use a new --out directory (or give the changed configs new ids).")
    return unsampled


def _unfinished_only(run_dir: Path, config_id: str) -> list[str]:
    """The config's temp shard files, when they are all it has (else [])."""
    names = [p.name for p in (Path(run_dir) / SAMPLES_DIR / config_id).iterdir() if p.suffix == ".parquet"]
    return sorted(names) if all(name.startswith(".tmp-") for name in names) else []


def config_has_samples(run_dir: Path, config_id: str) -> bool:
    """Whether any shard of the config is in the run (temp files of a block being written count: it will be)."""
    folder = Path(run_dir) / SAMPLES_DIR / config_id
    return folder.is_dir() and any(path.suffix == ".parquet" for path in folder.iterdir())


def config_definition_changed(run_dir: Path, config_id: str, definition: dict[str, Any]) -> bool:
    """Whether the run's manifest now defines the config otherwise (another worker redefined it while it had no samples)."""
    recorded = read_manifest(Path(run_dir))["configs"].get(config_id)
    if recorded is None:
        return True
    old, new = _config_identity(recorded, definition)
    return old != new


def withdraw_if_redefined(run_dir: Path, config_id: str, definition: dict[str, Any], shard: Path) -> bool:
    """After writing a shard: if another worker redefined its config meanwhile, remove the shard (True).

    Under the manifest lock, so a redefinition (which needs a config with no shard) either came before
    this check, and is seen, or comes after it, and sees the shard and is refused."""
    with _manifest_lock(Path(run_dir)):
        if not config_definition_changed(run_dir, config_id, definition):
            return False
        shard.unlink(missing_ok=True)
        return True


def _config_identity(old: dict[str, Any], new: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The parts of a config's old and new definitions that must match: a judge head by its content (sha256), not
    the path it is read from; by its path where the run recorded no content (a run made before heads were hashed)."""
    if "head_sha256" in old and "head_sha256" in new:
        drop = "head"
    elif "head_sha256" in old or "head_sha256" in new:
        drop = "head_sha256"
    else:
        return old, new
    return ({k: v for k, v in old.items() if k != drop}, {k: v for k, v in new.items() if k != drop})


def _identity(key: str, value: Any) -> Any:
    """What must match for a run to be continued: the models by content (sha256 of config and weights,
    sizes), not by the name or path they were loaded from (node-local copies, other mount points); a
    dataset file by its name, not the path it was reached by (its problems are compared by digest)."""
    if key == "dataset" and isinstance(value, str) and value not in DATASET_NAMES:
        return Path(value).name
    if key == "prompt" and isinstance(value, dict) and not value.get("chat"):  # a system message applies only to chat
        return {k: v for k, v in value.items() if k != "system"}  # (runs made when it was ignored recorded one)
    if key != "models" or not isinstance(value, dict):
        return value
    return {role: {k: v for k, v in model.items() if k not in ("name", "path")} if isinstance(model, dict) else model
            for role, model in value.items()}


MANIFEST_LOCK = ".creating"  # held while a worker creates the run dir or updates its manifest
LOCK_TIMEOUT = 120.0  # seconds: the lock is held for well under a second; longer means its holder died


@contextmanager
def _manifest_lock(run_dir: Path, on_wait: Callable[[str], None] | None = None, timeout: float | None = None) -> Iterator[None]:
    """Hold the run dir's manifest lock (a directory: mkdir is atomic on every file system), waiting for another holder."""
    import time

    timeout = LOCK_TIMEOUT if timeout is None else timeout
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = run_dir / MANIFEST_LOCK
    deadline, told = time.time() + timeout, False
    while True:
        try:
            lock.mkdir()
            break
        except FileExistsError:
            if time.time() > deadline:
                raise RunDirError(
                    f"{run_dir}: another process has held {lock} for over {timeout:g} s (creating the run or updating "
                    f"its manifest); if no `study sample` is writing there, it died: remove it (rmdir {lock}) and retry"
                ) from None
            if not told and on_wait is not None:
                on_wait(f"waiting for another process creating or updating {run_dir} ({lock})")
                told = True
            time.sleep(0.2)
    try:
        yield
    finally:
        lock.rmdir()


def problems_schema() -> pa.Schema:
    """Schema of _problems.parquet."""
    return pa.schema(
        [("id", pa.string()), ("problem", pa.string()), ("answer", pa.string()), ("level", pa.int32()), ("subject", pa.string())]
    )


def read_problems(run_dir: Path) -> list[Problem]:
    """The problems of a run."""
    path = Path(run_dir) / PROBLEMS
    if not path.exists():
        raise RunDirError(f"{run_dir}: missing {PROBLEMS}; `study sample` with the run's experiment writes it again")
    try:
        return [Problem(**row) for row in pq.read_table(path).to_pylist()]
    except (pa.ArrowException, OSError) as exc:
        raise unreadable_problems(path, exc) from None


def unreadable_problems(path: Path, exc: Exception) -> RunDirError:
    """The error for a problems file that cannot be read."""
    return RunDirError(f"{path}: unreadable ({exc}); was it damaged? `study sample` with the run's experiment "
                       "writes it again if you remove it")


def unreadable_shard(path: Path, exc: Exception) -> RunDirError:
    """The error for a samples shard that cannot be read."""
    return RunDirError(f"{path}: unreadable samples shard ({exc}); was it damaged? Remove it and run the same "
                       "`study sample` command again: its block is sampled again, identically")


def read_footer(path: Path) -> pq.FileMetaData:
    """A shard's Parquet footer; RunDirError naming the file if it cannot be read."""
    try:
        return pq.read_metadata(path)
    except (pa.ArrowException, OSError) as exc:
        raise unreadable_shard(path, exc) from None


def shard_path(run_dir: Path, config_id: str, block_key: str) -> Path:
    """Where a block's shard lives."""
    return Path(run_dir) / SAMPLES_DIR / config_id / f"{block_key}.parquet"


def finished_blocks(run_dir: Path) -> set[tuple[str, str]]:
    """(config_id, block_key) of every complete shard."""
    root = Path(run_dir) / SAMPLES_DIR
    if not root.exists():
        return set()
    return {
        (path.parent.name, path.stem)
        for path in root.glob("*/*.parquet")
        if not path.name.startswith(".")
    }


def records_table(records: Iterable[SampleRecord]) -> pa.Table:
    """Samples as an Arrow table with the samples schema."""
    rows = [
        {
            "config_id": r.config_id, "problem_id": r.problem_id, "sample_index": r.sample_index, "seed": r.seed,
            "token_ids": r.token_ids, "text": r.text, "provenance": r.provenance, "base_entropy": r.base_entropy,
            "interventions": r.interventions, "finish_reason": r.finish_reason, "base_decode": r.base_decode,
            "base_prefill": r.base_prefill, "oracle_decode": r.oracle_decode, "oracle_prefill": r.oracle_prefill,
            "discarded": r.discarded,
        }
        for r in records
    ]
    return pa.Table.from_pylist(rows, schema=SAMPLES_SCHEMA)


# Parquet key-value metadata of a samples shard: the engine's wall-clock seconds for the block, the
# engine's name and the device it ran on (the `seconds` cost model of `study fit`); measurements
# about the run, not part of the samples. TEXTS_KEY: what grading reads (`texts_digest`), so that
# grades made from a shard later replaced by other samples under the same name are known stale.
SECONDS_KEY = b"study.seconds"
ENGINE_KEY = b"study.engine"
DEVICE_KEY = b"study.device"
TEXTS_KEY = b"study.texts_sha256"


def texts_digest(table: pa.Table) -> str:
    """sha256 of a samples table's keys and texts, row by row (what a grade depends on)."""
    digest = hashlib.sha256()
    columns = [table.column(name).to_pylist() for name in ("config_id", "problem_id", "sample_index", "text")]
    for row in zip(*columns):
        digest.update(json.dumps(row).encode())
        digest.update(b"\n")
    return digest.hexdigest()


def footer_texts_digest(metadata: dict[bytes, bytes] | None) -> str | None:
    """The texts digest a shard's Parquet metadata records (None for shards written without one)."""
    value = (metadata or {}).get(TEXTS_KEY)
    return value.decode(errors="replace") if value else None


def write_shard(run_dir: Path, config_id: str, block_key: str, records: list[SampleRecord],
                seconds: float | None = None, engine: str | None = None, device: str | None = None) -> bool:
    """Write one finished block atomically (zstd Parquet), with its measured engine seconds if given.

    A block is written once: if another process (a second worker on the same shard) wrote it first,
    its file is kept and False returned, so grades made from it never go stale."""
    path = shard_path(run_dir, config_id, block_key)
    if path.exists():
        return False
    table = records_table(records)
    extra = {key: value.encode() for key, value in ((ENGINE_KEY, engine), (DEVICE_KEY, device)) if value}
    if seconds is not None:
        extra[SECONDS_KEY] = repr(float(seconds)).encode()
    extra[TEXTS_KEY] = texts_digest(table).encode()
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), **extra})
    return write_table_atomic(table, path, keep_existing=True, compression="zstd")


def shard_timings(run_dir: Path) -> Iterator[tuple[str, float, int, str]]:
    """(config, seconds, rows, device) of every timed shard of a run."""
    for path in sorted((Path(run_dir) / SAMPLES_DIR).glob("*/*.parquet")):
        if path.name.startswith("."):
            continue
        metadata = read_footer(path)
        seconds = footer_seconds(metadata, path)
        if seconds is not None:
            device = (metadata.metadata or {}).get(DEVICE_KEY, b"unrecorded").decode(errors="replace")
            yield path.parent.name, seconds, metadata.num_rows, device


def config_timings(run_dir: Path) -> dict[str, tuple[int, float]]:
    """Per config with timed shards: (samples in them, their engine seconds)."""
    timings: dict[str, tuple[int, float]] = {}
    for config, measured, count, _ in shard_timings(run_dir):
        rows, seconds = timings.get(config, (0, 0.0))
        timings[config] = (rows + count, seconds + measured)
    return timings


def config_seconds(run_dir: Path) -> dict[str, float]:
    """Measured engine seconds per sample of each config, over its timed shards (configs with none left out)."""
    return {config: seconds / rows for config, (rows, seconds) in config_timings(run_dir).items() if rows}


def timing_devices(run_dir: Path) -> dict[str, set[str]]:
    """Per config, the devices its timed shards ran on ("unrecorded" for timed shards without one)."""
    devices: dict[str, set[str]] = {}
    for config, _, _, device in shard_timings(run_dir):
        devices.setdefault(config, set()).add(device)
    return devices


def shard_seconds(path: Path) -> float | None:
    """The engine's wall-clock seconds for a shard's block (None for shards written without timing)."""
    return footer_seconds(read_footer(path), path)


def footer_seconds(footer: pq.FileMetaData, path: Path) -> float | None:
    """The block seconds in a shard's footer (read by the caller, `pq.read_metadata(path)`), checked."""
    value = (footer.metadata or {}).get(SECONDS_KEY)
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        raise RunDirError(f"{path}: unreadable {SECONDS_KEY.decode()} metadata {value!r}") from None
    return seconds if seconds >= 0 and seconds == seconds else None


def read_samples(run_dir: Path, columns: list[str] | None = None):
    """All samples of a run as a pandas DataFrame (empty with the right columns if none yet)."""
    root = Path(run_dir) / SAMPLES_DIR
    if not any(root.glob("*/*.parquet")):
        return SAMPLES_SCHEMA.empty_table().to_pandas()[columns or SAMPLES_SCHEMA.names]
    try:
        return pq.read_table(root, columns=columns, schema=SAMPLES_SCHEMA).to_pandas()
    except (pa.ArrowException, OSError) as exc:
        for path in sorted(root.glob("*/*.parquet")):  # name the shard that fails
            if not path.name.startswith("."):
                read_footer(path)
        raise RunDirError(f"{root}: unreadable samples ({exc})") from None
