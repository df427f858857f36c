"""The run directory's manifest: one lock for creating and updating it, models matched by content."""
from __future__ import annotations

import copy
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from sampling import store
from sampling.datasets import Problem
from sampling.store import MANIFEST_LOCK, RunDirError, open_run, read_manifest

PROBLEMS = [Problem("p1", "1+1", "2", 1, "Arithmetic"), Problem("p2", "2+2", "4", 2, "Arithmetic")]


def _manifest(*config_ids: str, path: str = "/models/base", sha: str = "abc") -> dict[str, Any]:
    """A minimal manifest naming one model and the given configs."""
    return {"models": {"base": {"name": "toy:base", "path": path, "sha256": sha, "n_params": 10}},
            "dataset": "toy", "problems_sha256": "p", "seed": 0, "n": 4, "prompt": {}, "blocking": {"block_size": 8},
            "engine": "torch", "configs": {cid: {"policy": "base", "tag": cid} for cid in config_ids}}


def test_lock_is_released_whichever_way_the_run_is_opened(tmp_path: Path) -> None:
    """Creating, joining, and a refused join all leave no lock behind."""
    run = tmp_path / "run"
    open_run(run, _manifest("a"), PROBLEMS)
    assert not (run / MANIFEST_LOCK).exists()
    open_run(run, _manifest("a", "b"), PROBLEMS)
    assert not (run / MANIFEST_LOCK).exists() and set(read_manifest(run)["configs"]) == {"a", "b"}
    with pytest.raises(RunDirError, match="different 'n'"):
        open_run(run, {**_manifest("a"), "n": 5}, PROBLEMS)
    assert not (run / MANIFEST_LOCK).exists()


def test_a_worker_waits_for_the_lock_holder_and_keeps_its_additions(tmp_path: Path) -> None:
    """While another process holds the lock (creating the run), a worker waits, says so, then adds its configs
    to the manifest the holder wrote: concurrent additions are never lost."""
    run = tmp_path / "run"
    run.mkdir()
    (run / MANIFEST_LOCK).mkdir()  # the other worker, mid-creation
    said: list[str] = []
    result: dict[str, Any] = {}
    worker = threading.Thread(target=lambda: result.update(open_run(run, _manifest("mine"), PROBLEMS, on_wait=said.append)))
    worker.start()
    time.sleep(0.5)
    assert worker.is_alive() and said and MANIFEST_LOCK in said[0]
    store.write_manifest(run, _manifest("theirs"))  # what the holder wrote, then it lets go
    (run / store.PROBLEMS).write_bytes(b"")
    (run / MANIFEST_LOCK).rmdir()
    worker.join(timeout=10)
    assert set(result["configs"]) == {"theirs", "mine"} == set(read_manifest(run)["configs"])
    assert not (run / MANIFEST_LOCK).exists()


def test_many_concurrent_additions_all_land(tmp_path: Path) -> None:
    """Eight threads each add their own config to one new run dir: all eight are in the manifest."""
    run = tmp_path / "run"
    threads = [threading.Thread(target=open_run, args=(run, _manifest(f"c{i}"), PROBLEMS)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert set(read_manifest(run)["configs"]) == {f"c{i}" for i in range(8)}
    assert not (run / MANIFEST_LOCK).exists()


def test_a_stale_lock_is_a_clear_error(tmp_path: Path) -> None:
    """A lock left by a killed process is reported with the path to remove, after the timeout."""
    run = tmp_path / "run"
    (run / MANIFEST_LOCK).mkdir(parents=True)
    with pytest.raises(RunDirError, match=r"remove it \(rmdir .*creating\) and retry"):
        with store._manifest_lock(run, timeout=0.3):
            pass


def test_models_match_by_content_not_path(tmp_path: Path) -> None:
    """The same weights at another path (a node-local copy) continue the run; other weights are refused,
    and the message shows only what identifies them."""
    run = tmp_path / "run"
    open_run(run, _manifest("a"), PROBLEMS)
    moved = copy.deepcopy(_manifest("a", path="/node7/scratch/base"))
    moved["models"]["base"]["name"] = "/node7/scratch/base"
    assert set(open_run(run, moved, PROBLEMS)["configs"]) == {"a"}
    with pytest.raises(RunDirError, match="different 'models'") as error:
        open_run(run, _manifest("a", sha="other"), PROBLEMS)
    assert "/models/base" not in str(error.value) and json.dumps("other") in str(error.value)


def test_a_block_written_once_keeps_a_file_that_appears_while_it_writes(tmp_path: Path, monkeypatch) -> None:
    """The race the early check cannot see: another worker's file lands between this write's check and its
    move into place. The first file is kept (an atomic hard link refuses to replace it), False is returned,
    and no temp file is left; where hard links fail (EPERM), an existing file is still kept."""
    import errno
    import os

    import pyarrow as pa

    path = tmp_path / "samples" / "cfg" / "block.parquet"
    theirs = pa.table({"who": ["theirs"]})
    write_table = store.pq.write_table

    def theirs_land_first(table, where, **options):
        write_table(table, where, **options)
        if not path.exists():
            write_table(theirs, path)

    monkeypatch.setattr(store.pq, "write_table", theirs_land_first)
    assert store.write_table_atomic(pa.table({"who": ["mine"]}), path, keep_existing=True) is False
    assert store.pq.read_table(path)["who"].to_pylist() == ["theirs"]
    assert [p.name for p in path.parent.iterdir()] == ["block.parquet"]
    monkeypatch.setattr(store.pq, "write_table", write_table)

    def no_links(src, dst):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    assert store.write_table_atomic(pa.table({"who": ["mine"]}), path, keep_existing=True) is False
    assert store.pq.read_table(path)["who"].to_pylist() == ["theirs"]
    fresh = path.with_name("other.parquet")
    assert store.write_table_atomic(pa.table({"who": ["mine"]}), fresh, keep_existing=True) is True
    assert store.pq.read_table(fresh)["who"].to_pylist() == ["mine"]
    assert sorted(p.name for p in path.parent.iterdir()) == ["block.parquet", "other.parquet"]
