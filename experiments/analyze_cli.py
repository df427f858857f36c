"""`study analyze`: the first-wrong-token signal analysis of a run."""
from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from verify.progress import print_error, table_console

console = Console(stderr=True)


def analyze(
    run_dir: Path = typer.Argument(..., help="A graded (or gradable) run directory: the toy world (exact locator) or any dataset (rollouts)."),
    config: str = typer.Option("base", "--config", help="Which config's wrong samples to analyse."),
    max_samples: int = typer.Option(1000, "--max-samples", min=1, help="Analyse at most this many wrong samples (random subset)."),
    boot: int = typer.Option(500, "--boot", min=2, help="Bootstrap replicates (over problems) for the AUC CIs."),
    seed: int = typer.Option(0, "--seed"),
    locator: str = typer.Option("auto", "--locator", help="exact (toy world), rollout (greedy oracle rollouts, any dataset), or auto."),
) -> None:
    """Where do wrong samples first go wrong, and do entropy, top-1, margin or the oracle flag it (ROC AUC)?"""
    from experiments.analyze import AnalysisError, analyze_run
    from fit.report import auc_cell
    from sampling.store import RunDirError

    try:
        with Progress(TextColumn("rescoring wrong samples"), BarColumn(), MofNCompleteColumn(),
                      TimeRemainingColumn(), console=console) as progress:
            task = progress.add_task("rescore", total=None)
            table, counts, out = analyze_run(run_dir, config, max_samples, boot, seed,
                                             progress=lambda i, total: progress.update(task, completed=i + 1, total=total),
                                             locator=locator)
    except (AnalysisError, RunDirError) as exc:
        print_error(str(exc))
        raise typer.Exit(2) from None
    result = Table(title=f"first wrong token vs earlier base tokens — {config}, {counts['analysed']} wrong samples")
    for column in ("signal", "ROC AUC", "95% CI", "first wrong", "earlier tokens"):
        result.add_column(column, justify="left" if column == "signal" else "right")
    for row in table.itertuples(index=False):
        auc, _, ci = auc_cell(row.auc, row.low, row.high).partition(" ")
        result.add_row(row.signal, auc, ci, f"{row.positives:,}", f"{row.negatives:,}")
    table_console().print(result)
    console.print(
        f"{counts['wrong']:,} of {counts['samples']:,} samples wrong; analysed {counts['analysed']:,}; "
        f"{counts['no_wrong_token']:,} without a located wrong token (cut off while still recoverable, or unsolved by the oracle); {counts['first_wrong_by_oracle']:,} first went wrong "
        f"in an oracle segment. Tables and plots in {out}"
    )


def register(app: typer.Typer) -> None:
    """Add `study analyze` to the CLI."""
    app.command("analyze")(analyze)
