"""The worker pool: hard per-task limits (kill + replace), crashes, errors, order, memory limit."""
from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from verify.pool import Outcome, TaskPool

REPO = Path(__file__).resolve().parents[1]


def test_results_in_order_and_reused_workers() -> None:
    """Results come back in task order; a pool serves several map() calls."""
    with TaskPool(workers=2, timeout=10) as pool:
        assert [o.value for o in pool.map(math.factorial, [(i,) for i in range(8)])] == [math.factorial(i) for i in range(8)]
        assert pool.map(abs, [(-3,)]) == [Outcome("ok", 3)]
        assert pool.killed == 0


def test_overrunning_tasks_are_killed_and_replaced() -> None:
    """Tasks stuck in C (a sleep, a huge integer power) cost the limit, then later tasks still run."""
    seen: list[tuple[int, str]] = []
    with TaskPool(workers=2, timeout=0.5) as pool:
        start = time.perf_counter()
        outcomes = pool.map(
            pow,
            [(10, 10**9), (2, 10), (7, 10**9), (3, 2)],
            on_result=lambda i, o: seen.append((i, o.status)),
        )
        elapsed = time.perf_counter() - start
        assert [o.status for o in outcomes] == ["timeout", "ok", "timeout", "ok"]
        assert outcomes[1].value == 1024 and outcomes[3].value == 9
        assert pool.killed == 2
        assert elapsed < 3.0
        assert sorted(seen) == [(0, "timeout"), (1, "ok"), (2, "timeout"), (3, "ok")]
        assert pool.map(time.sleep, [(30,)], timeout=0.3)[0].status == "timeout"  # per-call limit
        assert pool.map(abs, [(-1,)])[0] == Outcome("ok", 1)  # replacements work


def test_exceptions_and_dead_workers_become_errors() -> None:
    """An exception is an 'error' outcome; a worker that dies is reported and replaced."""
    with TaskPool(workers=1, timeout=10) as pool:
        outcomes = pool.map(int, [("not a number",), ("12",)])
        assert outcomes[0].status == "error" and "ValueError" in outcomes[0].value
        assert outcomes[1] == Outcome("ok", 12)
        died = pool.map(os._exit, [(3,)])[0]
        assert died.status == "error" and "exit code 3" in died.value
        assert pool.map(int, [("5",)])[0] == Outcome("ok", 5)


def test_memory_limit_turns_runaway_allocation_into_error() -> None:
    """A worker's address-space limit makes a huge allocation fail fast instead of eating the machine."""
    with TaskPool(workers=1, timeout=20, memory_limit_mb=1024) as pool:
        outcome = pool.map(bytearray, [(4 * 1024**3,)])[0]
        assert outcome.status == "error" and "MemoryError" in outcome.value


def test_rejects_bad_timeouts() -> None:
    """Non-positive limits are refused."""
    with pytest.raises(ValueError):
        TaskPool(timeout=0)
    with TaskPool(workers=1) as pool, pytest.raises(ValueError):
        pool.map(abs, [(1,)], timeout=-1)
    for bad in (float("nan"), float("inf"), 1e10):  # NaN slipped through `<= 0`; huge waits overflow select()
        with pytest.raises(ValueError, match="timeout must be"):
            TaskPool(timeout=bad)


def test_a_script_without_main_guard_gets_an_error_not_a_wrong_grade(tmp_path: Path) -> None:
    """Workers re-import the main module: without `if __name__ == "__main__":` they die on start-up, which
    is a clear RuntimeError (it used to be graded False silently); with the guard the same call works."""
    script = tmp_path / "grade.py"
    script.write_text('import verify\nprint("RESULT", verify.is_equivalent("0.5", "\\\\frac{1}{2}"))\n')
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, env=env)
    assert run.returncode != 0 and "RESULT" not in run.stdout
    assert 'if __name__ == "__main__":' in run.stderr
    script.write_text('import verify\nif __name__ == "__main__":\n    print("RESULT", verify.is_equivalent("0.5", "\\\\frac{1}{2}"))\n')
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, env=env)
    assert run.returncode == 0 and "RESULT True" in run.stdout, run.stderr[-2000:]


_INTERRUPTED_SCRIPT = """
import time
from verify.pool import TaskPool
if __name__ == "__main__":
    print("start", flush=True)
    try:
        with TaskPool(workers=2, timeout=10) as pool:
            pool.map(time.sleep, [(0.5,)] * 40)
    except KeyboardInterrupt:
        print("parent interrupted", flush=True)
"""


@pytest.mark.parametrize("delay", [0.05, 0.3, 2.5])
def test_ctrl_c_prints_no_traceback_from_the_forkserver_or_workers(tmp_path: Path, delay: float) -> None:
    """A Ctrl-C (SIGINT to the whole process group, as a terminal sends it) while workers start, while the
    forkserver imports math-verify, or while tasks run is the parent's to handle: no child prints a traceback."""
    import signal

    script = tmp_path / "interrupt.py"
    script.write_text(_INTERRUPTED_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, start_new_session=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "start\n"
        time.sleep(delay)
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "parent interrupted" in out
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err[-3000:]
