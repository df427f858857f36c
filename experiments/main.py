"""The `study` executable: loads the command line, so that Ctrl-C while it loads ends quietly."""
from __future__ import annotations

import sys

INTERRUPTED = 130  # exit code after Ctrl-C (128 + SIGINT), as a shell reports it


def main() -> None:
    """Run `study`; Ctrl-C during the imports before a command starts exits 130 with one line, not a traceback."""
    try:
        from experiments.cli import app
    except KeyboardInterrupt:
        sys.stderr.write("interrupted while starting: nothing was done\n")
        raise SystemExit(INTERRUPTED) from None
    app()
