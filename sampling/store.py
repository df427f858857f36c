"""The run directory: manifest, problems, and append-only Parquet shards of samples.

Layout (everything that is not a samples shard starts with `_`, or `.` for temp files, so that
`pandas.read_parquet(run_dir)` reads exactly the samples table):

    RUN_DIR/_manifest.json      run-wide identity: models, dataset, seed, n, prompt, blocking, configs
    RUN_DIR/_problems.parquet   the problems sampled (id, problem, answer, level, subject)
    RUN_DIR/samples/CONFIG/BLOCK.parquet   one shard per finished block of samples (its Parquet
                                metadata records the engine, its device and its wall-clock seconds
                                for the block)

A shard is written to a dot-prefixed temp name and renamed into place, so a crash never leaves a
half shard; a block either has its shard or is redone whole on resume.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Iterable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from sampling.datasets import Problem
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
RUN_IDENTITY_KEYS = ("models", "dataset", "problems_sha256", "seed", "n", "prompt", "prompts_sha256", "blocking", "engine")
OPTIONAL_IDENTITY_KEYS = ("prompts_sha256",)


class RunDirError(ValueError):
    """A run directory that cannot be used as asked (mismatch, corruption, bad input)."""


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a dot-prefixed temp file in the same folder, fsync, rename."""
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def write_table_atomic(table: pa.Table, path: Path, **options) -> None:
    """Write a Parquet file under a dot-prefixed temp name, fsync, rename; never leaves a half file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    try:
        pq.write_table(table, tmp, **options)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def read_manifest(run_dir: Path) -> dict[str, Any]:
    """The run's manifest, or a clear error if the folder is not a run directory."""
    path = Path(run_dir) / MANIFEST
    if not path.exists():
        raise RunDirError(f"{run_dir} is not a run directory (no {MANIFEST})")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise RunDirError(f"{path}: corrupt manifest ({exc.msg})") from None


def write_manifest(run_dir: Path, manifest: dict[str, Any]) -> None:
    """Atomically (re)write the manifest."""
    _atomic_write_bytes(Path(run_dir) / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True).encode())


def open_run(run_dir: Path, manifest: dict[str, Any], problems: list[Problem]) -> dict[str, Any]:
    """Create a run directory or check that an existing one matches; returns the manifest in force.

    New config ids are added to an existing run, and a given cost section replaces the recorded one;
    a config id whose definition changed, or any change of models, dataset, problems, seed, n,
    prompt settings or the prompts' token ids, or blocking, is refused.
    """
    run_dir = Path(run_dir)
    for config_id in manifest["configs"]:
        if not CONFIG_ID_PATTERN.match(config_id):
            raise RunDirError(f"config id {config_id!r} must be letters, digits and _.+- (no spaces or slashes)")
    if not (run_dir / MANIFEST).exists() and not _claim_creation(run_dir):
        _wait_for_manifest(run_dir)  # another shard worker is creating this run directory
    if (run_dir / MANIFEST).exists():
        existing = read_manifest(run_dir)
        for key in RUN_IDENTITY_KEYS:
            if key in OPTIONAL_IDENTITY_KEYS and key not in existing:
                continue
            if existing.get(key) != manifest.get(key):
                why = (" (the same prompt settings now give other token ids: the tokenizer or its chat template "
                       "changed)" if key == "prompts_sha256" else "")
                raise RunDirError(
                    f"{run_dir} was sampled with a different {key!r}{why}:\n  existing: {json.dumps(existing.get(key))}\n"
                    f"  now:      {json.dumps(manifest.get(key))}\nUse a new --out directory."
                )
        for config_id, config in manifest["configs"].items():
            old = existing["configs"].get(config_id)
            if old is not None and old != config:
                raise RunDirError(
                    f"config {config_id!r} in {run_dir} was sampled as {json.dumps(old)}; now {json.dumps(config)}. "
                    "Give the changed config a new id or use a new --out directory."
                )
        added = {cid: cfg for cid, cfg in manifest["configs"].items() if cid not in existing["configs"]}
        # the cost model only says how `study fit` reads the run: a config that gives one updates it
        new_cost = "cost" in manifest and manifest["cost"] != existing.get("cost")
        if added or new_cost:
            existing["configs"] = {**existing["configs"], **added}
            if new_cost:
                existing["cost"] = manifest["cost"]
            write_manifest(run_dir, existing)
        return existing
    try:
        # an empty folder, or one left by a creation that died before its manifest
        leftovers = [p for p in run_dir.iterdir() if not p.name.startswith(".") and p.name != PROBLEMS]
        if any(p.name != SAMPLES_DIR or any(p.iterdir()) for p in leftovers):
            raise RunDirError(f"{run_dir} exists and is not a run directory; choose an empty or new --out")
        (run_dir / SAMPLES_DIR).mkdir(parents=True, exist_ok=True)
        table = pa.Table.from_pylist([p.to_dict() for p in problems], schema=problems_schema())
        write_table_atomic(table, run_dir / PROBLEMS)
        write_manifest(run_dir, manifest)
    finally:
        (run_dir / CREATION_LOCK).rmdir()
    return manifest


CREATION_LOCK = ".creating"


def _claim_creation(run_dir: Path) -> bool:
    """Whether this process may create the run directory (first of concurrent shard workers wins)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        (run_dir / CREATION_LOCK).mkdir()
    except FileExistsError:
        return False
    return True


def _wait_for_manifest(run_dir: Path, timeout: float = 120.0) -> None:
    """Wait until the worker that claimed creation has written the manifest."""
    import time

    deadline = time.time() + timeout
    while not (run_dir / MANIFEST).exists():
        if time.time() > deadline:
            raise RunDirError(
                f"{run_dir}: another process claimed its creation ({CREATION_LOCK}) but wrote no manifest; "
                f"if that process died, remove {run_dir / CREATION_LOCK} and retry"
            )
        time.sleep(0.2)


def problems_schema() -> pa.Schema:
    """Schema of _problems.parquet."""
    return pa.schema(
        [("id", pa.string()), ("problem", pa.string()), ("answer", pa.string()), ("level", pa.int32()), ("subject", pa.string())]
    )


def read_problems(run_dir: Path) -> list[Problem]:
    """The problems of a run."""
    path = Path(run_dir) / PROBLEMS
    if not path.exists():
        raise RunDirError(f"{run_dir}: missing {PROBLEMS}")
    return [Problem(**row) for row in pq.read_table(path).to_pylist()]


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
# about the run, not part of the samples.
SECONDS_KEY = b"study.seconds"
ENGINE_KEY = b"study.engine"
DEVICE_KEY = b"study.device"


def write_shard(run_dir: Path, config_id: str, block_key: str, records: list[SampleRecord],
                seconds: float | None = None, engine: str | None = None, device: str | None = None) -> Path:
    """Write one finished block atomically (zstd Parquet), with its measured engine seconds if given."""
    path = shard_path(run_dir, config_id, block_key)
    table = records_table(records)
    extra = {key: value.encode() for key, value in ((ENGINE_KEY, engine), (DEVICE_KEY, device)) if value}
    if seconds is not None:
        extra[SECONDS_KEY] = repr(float(seconds)).encode()
    if extra:
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), **extra})
    write_table_atomic(table, path, compression="zstd")
    return path


def shard_timings(run_dir: Path) -> Iterator[tuple[str, float, int, str]]:
    """(config, seconds, rows, device) of every timed shard of a run."""
    for path in sorted((Path(run_dir) / SAMPLES_DIR).glob("*/*.parquet")):
        if path.name.startswith("."):
            continue
        metadata = pq.read_metadata(path)
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
    return footer_seconds(pq.read_metadata(path), path)


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
    return pq.read_table(root, columns=columns, schema=SAMPLES_SCHEMA).to_pandas()
