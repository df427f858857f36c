"""A process pool with a hard time limit per task: a worker that overruns is killed and replaced.

Each worker runs one task at a time in its own main thread (so math-verify's `signal.alarm`
timeouts work there too). The parent owns the hard limit: it waits on the workers' pipes with a
deadline, SIGKILLs a worker whose task is past its deadline and starts a fresh one, so C code that
never returns to the interpreter (a huge integer power, a regex gone exponential) costs at most
`timeout` seconds. A worker that dies (segfault, out-of-memory kill) is reported as an error and
replaced too; a worker that dies on start-up (a script without an `if __name__ == "__main__":`
guard) is a RuntimeError. Workers also get an address-space limit, so a runaway allocation fails fast with
MemoryError instead of swapping the machine.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

__all__ = ["Outcome", "TaskPool", "default_workers"]

_PRELOAD = ["math_verify", "verify.equivalence"]
READY = "ready"  # a worker's first message
START_TIMEOUT = 120.0  # seconds a worker may take to start (imports math-verify and sympy)


@dataclass(frozen=True)
class Outcome:
    """Result of one task: status is "ok", "timeout" or "error"; value is the result or a message."""

    status: str
    value: Any = None

    @property
    def ok(self) -> bool:
        """Whether the task returned normally."""
        return self.status == "ok"


def default_workers() -> int:
    """Worker count: the CPUs this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def _context() -> mp.context.BaseContext:
    """forkserver where available (safe with threads in the parent, preloads math-verify), else spawn."""
    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(_PRELOAD)
        return ctx
    return mp.get_context("spawn")


def _start_forkserver_ignoring_sigint(ctx: mp.context.BaseContext) -> None:
    """Start the forkserver with SIGINT ignored, so a Ctrl-C while it imports math-verify (or after) prints no traceback.

    A process started with SIGINT ignored keeps ignoring it (Python installs no KeyboardInterrupt
    handler then), and so do the workers it forks; the parent handles Ctrl-C and kills them.
    """
    if ctx.get_start_method() != "forkserver" or threading.current_thread() is not threading.main_thread():
        return
    from multiprocessing import forkserver

    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        forkserver.ensure_running()
    finally:
        signal.signal(signal.SIGINT, previous)


def _send(conn: Connection, message: Any) -> bool:
    """Send a message to the parent; False (no traceback) if the parent is gone (interrupted or killed)."""
    try:
        conn.send(message)
    except (OSError, EOFError):
        return False
    return True


def _worker_main(conn: Connection, memory_limit_mb: int | None) -> None:
    """Worker loop: receive (task id, fn, args), send back (task id, status, value); None stops."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and kills us
    if memory_limit_mb:
        try:
            import resource

            limit = memory_limit_mb * 1024 * 1024
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        except (ImportError, ValueError, OSError):
            pass
    if not _send(conn, READY):  # started: task deadlines count from here, not from the process start
        return
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        task_id, fn, args = message
        try:
            reply = (task_id, "ok", fn(*args))
        except BaseException as exc:  # noqa: BLE001 - every failure becomes an "error" outcome
            reply = (task_id, "error", f"{type(exc).__name__}: {exc}"[:500])
        try:
            sent = _send(conn, reply)
        except Exception as exc:  # an unpicklable result
            sent = _send(conn, (task_id, "error", f"cannot send result: {exc}"[:500]))
        if not sent:
            return


class _Worker:
    """One worker process and the parent's end of its pipe."""

    def __init__(self, ctx: mp.context.BaseContext, memory_limit_mb: int | None) -> None:
        """Start the process."""
        self.conn, child = ctx.Pipe(duplex=True)
        self.process = ctx.Process(target=_worker_main, args=(child, memory_limit_mb), daemon=True)
        self.process.start()
        child.close()

    def wait_ready(self, seconds: float) -> None:
        """Wait for the worker's READY message; a worker that dies or hangs on start-up is an error, not a grade."""
        try:
            if self.conn.poll(seconds) and self.conn.recv() == READY:
                return
        except (EOFError, OSError):
            pass
        self.kill()
        raise RuntimeError(
            f"a verify worker process failed to start (exit code {self.process.exitcode}). Workers re-import the "
            "main module, so a script that grades must call verify under `if __name__ == \"__main__\":`"
        )

    def kill(self) -> None:
        """SIGKILL the process and release its pipe."""
        if self.process.is_alive():
            self.process.kill()
        self.process.join(timeout=5)
        self.conn.close()

    def stop(self) -> None:
        """Ask the process to exit, killing it if it does not."""
        try:
            self.conn.send(None)
        except (OSError, ValueError):
            pass
        self.process.join(timeout=1)
        self.kill()


MAX_TIMEOUT = 86_400.0  # seconds (a day): the most a task may be given; larger waits overflow select()


def _check_timeout(timeout: float) -> float:
    """The per-task limit as a float, refused unless 0 < timeout <= MAX_TIMEOUT (NaN and inf included)."""
    if not 0 < float(timeout) <= MAX_TIMEOUT:
        raise ValueError(f"timeout must be a number of seconds in (0, {MAX_TIMEOUT:g}], got {timeout!r}")
    return float(timeout)


class TaskPool:
    """Run picklable module-level functions in worker processes with a hard per-task time limit."""

    def __init__(
        self, workers: int | None = None, timeout: float = 5.0, memory_limit_mb: int | None = 4096
    ) -> None:
        """Configure the pool; workers start lazily on the first map()."""
        self.timeout = _check_timeout(timeout)
        self.n_workers = workers or default_workers()
        self.memory_limit_mb = memory_limit_mb
        self._ctx = _context()
        self._idle: list[_Worker] = []
        self.killed = 0  # workers killed for overrunning, over the pool's life

    def _start(self, count: int) -> list[_Worker]:
        """`count` fresh workers, started together and each ready for a task."""
        _start_forkserver_ignoring_sigint(self._ctx)
        workers = [_Worker(self._ctx, self.memory_limit_mb) for _ in range(count)]
        try:
            for worker in workers:
                worker.wait_ready(START_TIMEOUT)
        except BaseException:
            for worker in workers:
                worker.kill()
            raise
        return workers

    def map(
        self,
        fn: Callable[..., Any],
        tasks: Sequence[tuple[Any, ...]],
        on_result: Callable[[int, Outcome], None] | None = None,
        timeout: float | None = None,
    ) -> list[Outcome]:
        """Outcome of fn(*args) for each args in tasks (same order); on_result(i, outcome) as each ends.

        timeout overrides the pool's per-task limit for this call.
        """
        limit = _check_timeout(timeout if timeout is not None else self.timeout)
        results: list[Outcome | None] = [None] * len(tasks)
        queue = deque(range(len(tasks)))
        busy: dict[Connection, tuple[_Worker, int, float]] = {}
        failed_sends = 0

        def finish(index: int, outcome: Outcome) -> None:
            results[index] = outcome
            if on_result is not None:
                on_result(index, outcome)

        try:
            while queue or busy:
                missing = min(self.n_workers - len(busy), len(queue)) - len(self._idle)
                if missing > 0:
                    self._idle.extend(self._start(missing))
                while queue and len(busy) < self.n_workers:
                    if not self._idle:
                        self._idle.extend(self._start(1))
                    worker = self._idle.pop()
                    index = queue[0]
                    try:
                        worker.conn.send((index, fn, tasks[index]))
                    except (OSError, ValueError):  # died while idle: replace it, retry the task
                        worker.kill()
                        failed_sends += 1
                        if failed_sends > 3 * self.n_workers + 3:
                            raise RuntimeError("verify workers keep dying before taking a task")
                        continue
                    queue.popleft()
                    busy[worker.conn] = (worker, index, time.monotonic() + limit)
                next_deadline = min(deadline for _, _, deadline in busy.values())
                ready = wait(list(busy), timeout=max(0.0, next_deadline - time.monotonic()))
                for conn in ready:
                    worker, index, _ = busy.pop(conn)  # type: ignore[arg-type]
                    try:
                        _, status, value = conn.recv()  # type: ignore[union-attr]
                    except (EOFError, OSError):
                        worker.kill()
                        code = worker.process.exitcode
                        finish(index, Outcome("error", f"worker died (exit code {code})"))
                        continue
                    self._idle.append(worker)
                    finish(index, Outcome(status, value))
                now = time.monotonic()
                for conn, (worker, index, deadline) in list(busy.items()):
                    if now >= deadline:
                        del busy[conn]
                        worker.kill()
                        self.killed += 1
                        finish(index, Outcome("timeout", f"no result within {limit:g} s"))
        except BaseException:
            for worker, _, _ in busy.values():
                worker.kill()
            raise
        return [r if r is not None else Outcome("error", "not run") for r in results]

    def close(self) -> None:
        """Stop all idle workers."""
        while self._idle:
            self._idle.pop().stop()

    def __enter__(self) -> TaskPool:
        """Context manager entry."""
        return self

    def __exit__(self, *exc: object) -> None:
        """Stop the workers."""
        self.close()
