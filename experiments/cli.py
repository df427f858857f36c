"""The `study` command line: thin wrappers that parse options and call stage functions."""
from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    help="Guided sampling study: small model + k oracle tokens vs repeated sampling at equal compute.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Each stage module defines `register(app)` adding its own commands.
_COMMAND_MODULES = (
    "experiments.toy.cli",
    "sampling.cli",
    "verify.cli",
    "fit.cli",
    "experiments.analyze_cli",
)

for _name in _COMMAND_MODULES:
    importlib.import_module(_name).register(app)


if __name__ == "__main__":  # `python -m experiments.cli` runs as the `study` executable does
    from experiments.main import main

    main()
