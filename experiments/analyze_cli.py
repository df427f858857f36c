"""`study analyze`: the first-wrong-token signal analysis of a run."""
from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from verify.progress import print_error, table_console

console = Console(stderr=True, soft_wrap=True)  # notes and paths on one line each, also in logs


def analyze(
    run_dir: Path = typer.Argument(..., help="A graded (or gradable) run directory: the toy world (exact locator) or any dataset (rollouts)."),
    config: str = typer.Option("base", "--config", help="Which config's wrong samples to analyse."),
    max_samples: int = typer.Option(1000, "--max-samples", min=1, help="Analyse at most this many wrong samples (random subset)."),
    boot: int = typer.Option(500, "--boot", min=2, help="Bootstrap replicates (over problems) for the AUC CIs."),
    seed: int = typer.Option(0, "--seed", min=0, max=2**32 - 1, help="Seed of the bootstrap and of the sample choice."),
    locator: str = typer.Option("auto", "--locator", help="exact (toy world), rollout (greedy oracle rollouts, any dataset), or auto."),
    grader: str = typer.Option(None, "--grader", help="Whose grades say which samples are wrong: math-verify or strict "
                               "(default: the one `study verify` graded the run with).", show_default=False),
) -> None:
    """Where do wrong samples first go wrong, and do entropy, top-1, margin or the oracle flag it (ROC AUC)?"""
    from experiments.analyze import AnalysisError, NothingWrong, analyze_run, check_grader_graded, check_request
    from fit.counts import CountsError
    from fit.report import auc_cell
    from fit.rundir import choose_grader
    from sampling.models import ModelError
    from sampling.store import RunDirError

    try:
        _, resolved = check_request(run_dir, config, locator)  # before models load or a progress bar shows
        check_grader_graded(run_dir, grader)
        grader = choose_grader(run_dir, grader)
        with Progress(TextColumn("rescoring wrong samples"), BarColumn(), MofNCompleteColumn(),
                      TimeRemainingColumn(), console=console) as progress:
            task = progress.add_task("rescore", total=None)
            table, counts, out = analyze_run(run_dir, config, max_samples, boot, seed,
                                             progress=lambda i, total: progress.update(task, completed=i + 1, total=total),
                                             locator=resolved, grader=grader)
    except NothingWrong as exc:
        console.print(f"note: {exc}")
        return
    except (AnalysisError, RunDirError, CountsError, ModelError) as exc:
        print_error(str(exc))
        raise typer.Exit(2) from None
    result = Table(title=f"first wrong token vs earlier base tokens — {config}, {counts['analysed']} wrong samples "
                         f"(first wrong token located by {resolved}; {grader} grades)")
    for column in ("signal", "ROC AUC", "95% CI", "first wrong", "earlier tokens"):
        result.add_column(column, justify="left" if column == "signal" else "right")
    for row in table.itertuples(index=False):
        auc, _, ci = auc_cell(row.auc, row.low, row.high).partition(" ")
        result.add_row(row.signal, auc, ci, f"{row.positives:,}", f"{row.negatives:,}")
    table_console().print(result)
    from fit.analysis import MIN_PROBLEMS_FOR_CI

    if counts["problems"] == 1:
        console.print("[yellow]warning[/] the analysed samples come from 1 problem: no CIs (a bootstrap over "
                      "problems needs two or more)", highlight=False)
    elif counts["problems"] < MIN_PROBLEMS_FOR_CI:
        console.print(f"[yellow]warning[/] the analysed samples come from {counts['problems']} problem(s): CIs "
                      "(a bootstrap over problems) are unreliable", highlight=False)
    subset = (f" (a random subset of {counts['selected']:,}: --max-samples {max_samples})"
              if counts["selected"] < counts["wrong"] else "")
    unlocated = ("cut off while still recoverable, or unsolved by the oracle" if resolved == "rollout"
                 else "no token leaves the canonical solution")
    if counts.get("replaced"):
        console.print(f"note: {counts['replaced']}", highlight=False)
    console.print(
        f"{counts['wrong']:,} of {counts['samples']:,} samples wrong{subset}; analysed {counts['analysed']:,}; "
        f"{counts['no_wrong_token']:,} without a located wrong token ({unlocated}); {counts['first_wrong_by_oracle']:,} first went wrong "
        f"in an oracle segment. Tables and plots in {out} (first_wrong_*_{counts['name']}.*)"
    )


def register(app: typer.Typer) -> None:
    """Add `study analyze` to the CLI."""
    app.command("analyze")(analyze)
