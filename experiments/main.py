"""The `study` executable: loads the command line, so that Ctrl-C while it loads ends quietly."""
from __future__ import annotations

import signal
import sys

INTERRUPTED = 130  # exit code after Ctrl-C (128 + SIGINT), as a shell reports it


def _terminated(signum: int, frame: object) -> None:
    """SIGTERM (`kill`, `timeout`, a Slurm job's time limit) ends a command as Ctrl-C does: what is finished is kept,
    and one line says so."""
    raise KeyboardInterrupt


def main() -> None:
    """Run `study`; Ctrl-C during the imports before a command starts exits 130 with one line, not a traceback."""
    signal.signal(signal.SIGTERM, _terminated)
    try:
        from experiments.cli import app
    except KeyboardInterrupt:
        sys.stderr.write("interrupted while starting: nothing was done\n")
        raise SystemExit(INTERRUPTED) from None
    app()
