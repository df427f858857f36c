"""`study sample`: draw samples for an experiment into a resumable run directory."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from verify.progress import LoggedProgress, print_error, table_console

console = Console(stderr=True, soft_wrap=True)  # notes and paths on one line each, also in logs (80 columns there)


class TokenRate(TextColumn):
    """Generated tokens per second so far."""

    def __init__(self) -> None:
        super().__init__("")

    def render(self, task):  # type: ignore[override]
        elapsed = task.elapsed or 0.0
        rate = task.fields.get("tokens", 0) / elapsed if elapsed > 0 else 0.0
        return f"{rate:,.0f} tok/s"


def progress_bar() -> LoggedProgress:
    """Samples done / total, samples/s, tokens/s, elapsed and ETA."""
    return LoggedProgress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("samples"),
        TokenRate(), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=console,
    )


def summary_table(run_dir: Path) -> Table:
    """Per config: samples, mean tokens by model and phase, mean interventions, finish reasons, engine time."""
    from sampling.store import config_seconds, read_samples

    frame = read_samples(run_dir, columns=[
        "config_id", "interventions", "finish_reason", "base_decode", "base_prefill", "oracle_decode", "oracle_prefill",
    ])
    table = Table(title=f"samples in {run_dir}")
    seconds = config_seconds(run_dir)
    for column in ("config", "samples", "base decode", "base prefill", "oracle decode", "oracle prefill", "interventions",
                   "hit max_tokens", "engine ms/sample"):
        table.add_column(column, justify="left" if column == "config" else "right")
    for config_id, group in frame.groupby("config_id", sort=False):
        ms = seconds.get(str(config_id))
        table.add_row(
            str(config_id), f"{len(group):,}", f"{group.base_decode.mean():.1f}", f"{group.base_prefill.mean():.1f}",
            f"{group.oracle_decode.mean():.1f}", f"{group.oracle_prefill.mean():.1f}", f"{group.interventions.mean():.2f}",
            f"{(group.finish_reason == 'length').mean():.1%}", "—" if ms is None else f"{1000 * ms:.2f}",
        )
    return table


def _io_failure(exc: OSError, run_dir: Path | None) -> str:
    """'cannot write PATH' for the run directory and what is in it, 'cannot read PATH' for inputs (datasets, heads)."""
    if not exc.filename:
        return "cannot read or write"
    path = Path(exc.filename).absolute()
    out = Path(run_dir).absolute() if run_dir is not None else None
    inside = out is not None and (path == out or out in path.parents or path in out.parents)
    return f"cannot {'write' if inside else 'read'} {exc.filename}"


def sample(
    config: Optional[Path] = typer.Option(None, "--config", help="Experiment TOML (default: the toy experiment)."),
    n: Optional[int] = typer.Option(None, "--n", help="Samples per problem and config."),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="toy, math500, math, gsm8k, or a .jsonl/.json/.parquet path."),
    problems: Optional[int] = typer.Option(None, "--problems", help="Use the first N problems (after --levels)."),
    levels: Optional[str] = typer.Option(None, "--levels", help="Comma-separated levels, e.g. 1,2."),
    out: Optional[Path] = typer.Option(None, "--out", help="Run directory (default runs/NAME-nN, with -DATASET, -pN, -LEVELS added for --dataset, --problems, --levels)."),
    shard: Optional[str] = typer.Option(None, "--shard", help="i/N: this worker's share of the problems."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Run seed (per-sample seeds derive from it)."),
    engine: Optional[str] = typer.Option(None, "--engine", help="torch (exact CPU reference) or vllm (overrides the config's engine)."),
    block_size: Optional[int] = typer.Option(None, "--block-size", help="Samples decoded together (default 512; fixed per run dir).",
                                             show_default=False),
    threads: Optional[int] = typer.Option(None, "--threads", help="torch CPU threads."),
    skip_bad_rows: bool = typer.Option(False, "--skip-bad-rows", help="Skip malformed dataset rows, and JSONL lines that are not JSON (reports how many, and why for the first three)."),
) -> None:
    """Draw n samples per problem for every config; re-running continues where it stopped."""
    from sampling.config import ConfigError, default_experiment, load_experiment
    from sampling.datasets import DatasetError, parse_levels
    from sampling.models import ModelError
    from sampling.runner import parse_shard, run_experiment
    from sampling.store import MANIFEST, RunDirError

    run_dir: Path | None = None
    try:
        experiment = load_experiment(config) if config else default_experiment()
        overrides = {key: value for key, value in {
            "n": n, "dataset": dataset, "problems": problems, "seed": seed, "levels": parse_levels(levels),
            "engine": engine,
        }.items() if value is not None}
        if engine is not None and engine not in ("torch", "vllm"):
            raise ConfigError(f"--engine must be torch or vllm, got {engine!r}")
        if "n" in overrides and overrides["n"] < 1:
            raise ConfigError(f"--n must be >= 1, got {overrides['n']}")
        data_tag = "".join(f"-{tag}" for tag, given in (
            (Path(dataset or "").stem, dataset is not None and dataset != experiment.dataset),
            (f"p{problems}", problems is not None and problems != experiment.problems),
            ("L" + "+".join(map(str, overrides.get("levels") or [])), levels is not None and overrides.get("levels") != experiment.levels),
        ) if given)  # a trial run with fewer problems does not take the full run's default folder
        experiment = replace(experiment, **overrides)
        shard_spec = parse_shard(shard)
        run_dir = out or Path("runs") / f"{experiment.name}{data_tag}-n{experiment.n}"
        if Path(run_dir).exists() and not Path(run_dir).is_dir():
            raise RunDirError(f"--out {run_dir} is a file, not a run directory; choose a folder (new, empty, or a run to continue)")
        with progress_bar() as progress:
            result = run_experiment(
                experiment, run_dir, shard=shard_spec, block_size=block_size, skip_bad_rows=skip_bad_rows,
                progress=progress, report=console.print, threads=threads,
            )
    except (ConfigError, DatasetError, ModelError, RunDirError, ValueError) as exc:
        print_error(str(exc))
        raise typer.Exit(2) from None
    except OSError as exc:  # a read-only or full disk, an input that is a folder: what was written stays valid
        started = run_dir is not None and (Path(run_dir) / MANIFEST).is_file()
        saved = f"; the finished blocks are saved in {run_dir}, run the same command again to continue" if started else ""
        print_error(f"{_io_failure(exc, run_dir)}: {exc.strerror or exc}{saved}")
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        if run_dir is not None and (Path(run_dir) / MANIFEST).is_file():
            console.print(f"interrupted: the finished blocks are saved in {run_dir}; run the same command again to continue")
        else:
            console.print("interrupted before the run directory was written: nothing was saved")
        raise typer.Exit(130) from None
    console.print(
        f"{result.samples_written:,} samples in {result.blocks_done} block(s) written to {result.run_dir} "
        f"({result.blocks_skipped} block(s) already done) in {result.seconds:.1f} s"
    )
    try:
        table_console().print(summary_table(result.run_dir))
    except RunDirError as exc:  # a shard damaged by something else: what this call wrote is saved
        print_error(str(exc))
        raise typer.Exit(2) from None


def duration(seconds: float) -> str:
    """12.3 s, 4 min 10 s, 2 h 05 min."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"


def status_table(run_dir: Path) -> tuple[Table, str]:
    """Per config: samples and blocks done, engine time and rate, engine time left; and a summary line.

    A config without a timed block yet is estimated at the mean rate of the timed samples (marked ≈).
    """
    from sampling.status import run_status

    rows = run_status(run_dir)
    timed = sum(r.timed_samples for r in rows)
    mean_rate = sum(r.engine_seconds for r in rows) / timed if timed else None
    table = Table(title=f"progress of {run_dir}", title_justify="left")
    for column in ("config", "samples", "blocks", "engine time", "engine ms/sample", "engine time left"):
        table.add_column(column, justify="left" if column == "config" else "right")
    left_total, guessed = 0.0, []
    for row in rows:
        rate, left = row.seconds_per_sample, row.seconds_left
        if left is None and row.samples_done < row.samples_total:
            guessed.append(row.config)
            left = None if mean_rate is None else mean_rate * (row.samples_total - row.samples_done)
            left_text = "—" if left is None else f"≈ {duration(left)}"
        else:
            left_text = duration(left or 0.0)
        left_total += left or 0.0
        table.add_row(row.config, f"{row.samples_done:,} / {row.samples_total:,}", f"{row.blocks_done} / {row.blocks_total}",
                      "—" if rate is None else duration(row.engine_seconds), "—" if rate is None else f"{1000 * rate:.2f}",
                      left_text)
    done, total = sum(r.samples_done for r in rows), sum(r.samples_total for r in rows)
    line = f"{done:,} of {total:,} samples ({done / total:.0%})"
    if timed:
        line += f"; engine time so far {duration(sum(r.engine_seconds for r in rows))}"
    if done < total:
        if mean_rate is None:
            line += "; engine time left unknown (no timed block yet)"
        else:
            line += f"; engine time left {'≈ ' if guessed else ''}{duration(left_total)}, summed over workers (divide by the number of --shard workers)"
            if guessed:
                line += f"; ≈: no timed block yet, estimated at the mean rate ({', '.join(guessed)})"
    return table, line


def status(run_dir: Path = typer.Argument(..., help="A run directory of `study sample`.")) -> None:
    """How far a run is (all shards): samples and blocks done per config, engine time spent and left."""
    from sampling.store import RunDirError

    try:
        table, line = status_table(run_dir)
    except RunDirError as exc:
        print_error(str(exc))
        raise typer.Exit(2) from None
    table_console().print(table)
    table_console().print(line, highlight=False)


def register(app: typer.Typer) -> None:
    """Add `study sample` and `study status` to the CLI."""
    app.command("sample")(sample)
    app.command("status")(status)
