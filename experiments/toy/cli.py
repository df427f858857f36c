"""`study toy ...`: show toy problems, train the toy models, evaluate them."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from verify.progress import print_error, table_console

toy_app = typer.Typer(help="The toy world: synthetic MATH-format arithmetic and a tiny base/oracle pair.", no_args_is_help=True)
console = table_console()
MODELS_DIR = Path(__file__).resolve().parent / "models"


@toy_app.command("problems")
def problems(
    count: int = typer.Option(10, "--count", min=1, max=10_000, help="How many problems to show (at most 10,000)."),
    split: str = typer.Option("test", "--split", help="test (held out, balanced by level) or train."),
    solutions: bool = typer.Option(False, "--solutions", help="Also print the canonical solutions."),
) -> None:
    """Print toy problems with their reference answers."""
    from experiments.toy.generator import generate_split, held_out_problems

    if split not in ("test", "train"):
        print_error(f"--split must be test or train, got {split!r}")
        raise typer.Exit(2)
    try:
        chosen = held_out_problems(count) if split == "test" else generate_split("train", count)
    except ValueError as exc:
        print_error(str(exc))
        raise typer.Exit(2) from None
    table = Table(title=f"toy {split} problems")
    for column in ("id", "level", "problem", "answer") + (("solution",) if solutions else ()):
        table.add_column(column)
    for p in chosen:
        row = [p.id, str(p.level), p.prompt.strip(), p.answer] + ([p.solution] if solutions else [])
        table.add_row(*row)
    console.print(table)


def _output_file(path: Path, option: str) -> Path:
    """A file the command will write at the end, checked now, not after the work (`_write_parent` makes its folder)."""
    if path.is_dir():
        raise ValueError(f"{option} {path} is a folder; give a file path")
    existing = next(p for p in path.resolve().parents if p.exists())
    if not existing.is_dir():
        raise ValueError(f"{option} {path}: {existing} is a file, not a folder")
    return path


def _output_folder(path: Path, option: str) -> Path:
    """A folder the command will write into at the end, checked now: it and its parents must be folders where they exist."""
    existing = next(p for p in [path.resolve(), *path.resolve().parents] if p.exists())
    if not existing.is_dir():
        raise ValueError(f"{option} {path}: {existing} is a file, not a folder")
    return path


def _write_parent(path: Path) -> Path:
    """Create the folder an output file goes into."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


@toy_app.command("train")
def train(
    model: str = typer.Option("both", "--model", help="base, oracle or both."),
    out: Path = typer.Option(MODELS_DIR, "--out", help="Folder that receives base/ and oracle/ (default: the shipped "
                             "models, which are overwritten).", show_default=False),
    seed: int = typer.Option(0, "--seed", min=-(2**63), max=2**63 - 1, help="torch's seed range: a 64-bit integer."),
    threads: int = typer.Option(1, "--threads", min=1, help="torch CPU threads; the shipped weights used 1 (float results depend on it)."),
    steps: Optional[int] = typer.Option(None, "--steps", min=1, help="Override the schedule's step count (for quick tries)."),
    eval_every: int = typer.Option(0, "--eval-every", min=0, help="Every N steps: log pass@1 of one sample on 100 held-out problems."),
    checkpoints: bool = typer.Option(False, "--checkpoints", help="With --eval-every: also save the weights at each evaluation."),
) -> None:
    """Train the toy models deterministically; the defaults reproduce the shipped weights bit for bit.

    About 10 minutes for the base and 50–60 for the oracle on a 2-core laptop (run `--model base` and
    `--model oracle` in two shells to train both at once; `both` trains them one after the other). The shipped step counts were chosen from a
    longer run with `--steps 6000 --eval-every 250 --checkpoints` (a checkpoint equals a shorter run).
    """
    from dataclasses import replace

    from experiments.toy.train import SPECS, train_model

    names = ["base", "oracle"] if model == "both" else [model]
    if any(name not in SPECS for name in names):
        print_error(f"--model must be base, oracle or both, got {model!r}")
        raise typer.Exit(2)
    if checkpoints and not eval_every:
        print_error("--checkpoints saves the weights at each evaluation: give --eval-every N too")
        raise typer.Exit(2)
    try:  # before the work: a model takes minutes to an hour to train
        _output_folder(out, "--out")
    except ValueError as exc:
        print_error(str(exc))
        raise typer.Exit(2) from None
    for name in names:
        spec = SPECS[name] if steps is None else replace(SPECS[name], steps=steps)
        console.print(f"training {name}: {spec}")
        train_model(spec, out / name, seed=seed, threads=threads, eval_every=eval_every, checkpoints=checkpoints,
                    log=console.print)
        console.print(f"saved {out / name}")


@toy_app.command("train-judge")
def train_judge(
    run_dir: Path = typer.Argument(..., help="A run over the toy training split with a base config (experiments/toy-judge-train.toml)."),
    config: str = typer.Option("base", "--config"),
    max_samples: int = typer.Option(2000, "--max-samples", min=1, help="Wrong samples to learn from."),
    out: Path = typer.Option(MODELS_DIR / "judge_head.safetensors", "--out", show_default=False,
                             help="Where to write the head (default: the shipped toy head, which is overwritten). "
                                  "Both halves of the problems (training, held out) need located mistakes."),
) -> None:
    """Train the learned judge (a linear mistake head on the oracle's hidden states) on exact toy labels."""
    from experiments.analyze import AnalysisError, collect_tokens
    from experiments.toy.judge_train import train_judge_head
    from sampling.judge_head import save_head
    from sampling.store import read_manifest

    try:
        _output_file(out, "--out")
        if read_manifest(run_dir).get("dataset") != "toy-train":
            raise AnalysisError(f"{run_dir} does not sample the toy training split (dataset toy-train); a judge trained on test problems would leak")
        tokens, counts = collect_tokens(run_dir, config, max_samples, with_hidden=True)
        fit = train_judge_head(tokens)
    except ValueError as exc:
        print_error(str(exc))
        raise typer.Exit(2) from None
    before = hashlib.sha256(out.read_bytes()).hexdigest() if out.is_file() else None
    save_head(_write_parent(out), fit.weight, fit.bias)
    replaced = before is not None and before != hashlib.sha256(out.read_bytes()).hexdigest()
    console.print(
        f"judge head from {counts['analysed']:,} wrong samples: ROC AUC {fit.train_auc:.3f} on {fit.train_rows:,} training tokens, "
        + f"{fit.heldout_auc:.3f} on {fit.heldout_rows:,} tokens of held-out problems; saved {out}"
    )
    if replaced:  # runs record a head by its sha256: those made with the old one cannot be continued with this one
        console.print(f"note: {out} was replaced; runs whose judge configs used the old head are refused if continued "
                      "with this one (give the new head another --out to keep both)", highlight=False)


@toy_app.command("eval")
def evaluate(
    base: str = typer.Option("toy:base", "--base"),
    oracle: str = typer.Option("toy:oracle", "--oracle"),
    problems: int = typer.Option(50, "--problems", min=1, help="Held-out test problems (balanced over levels)."),
    base_samples: int = typer.Option(1000, "--base-samples", min=1, help="Samples per problem for the base (coverage@N)."),
    oracle_samples: int = typer.Option(100, "--oracle-samples", min=1),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the numbers as JSON."),
) -> None:
    """pass@1 at temperature 1, greedy accuracy and coverage for the toy base and oracle."""
    from dataclasses import asdict

    from rich.progress import Progress

    from experiments.toy.evaluate import evaluate_pair

    try:
        if json_out is not None:
            _output_file(json_out, "--json")
        with Progress(console=Console(stderr=True)) as progress:
            results = evaluate_pair(base, oracle, problems, base_samples, oracle_samples, progress=progress)
    except ValueError as exc:  # ModelError (a model that does not load), too many problems
        print_error(str(exc))
        raise typer.Exit(2) from None
    table = Table(title=f"toy test set, {problems} problems (temperature 1 unless greedy)")
    for column in ("model", "samples/problem", "pass@1", "greedy acc", "coverage@N", "pass@1 by level"):
        table.add_column(column)
    for r in results:
        by_level = " ".join(f"L{lv}:{v:.0%}" for lv, v in r.pass_at_1_by_level.items())
        table.add_row(r.model, str(r.samples_per_problem), f"{r.pass_at_1:.1%}", f"{r.greedy_accuracy:.1%}", f"{r.coverage:.1%}", by_level)
    console.print(table)
    base_result, oracle_result = results
    console.print(f"oracle/base pass@1 ratio: {ratio_text(oracle_result.pass_at_1, base_result.pass_at_1)}")
    if json_out:
        _write_parent(json_out).write_text(json.dumps([asdict(r) for r in results], indent=2))


def ratio_text(oracle: float, base: float) -> str:
    """The oracle/base pass@1 ratio as printed: 0/0 is undefined, not infinite."""
    if base:
        return f"{oracle / base:.2f}"
    return "∞ (the base solved nothing)" if oracle else "n/a (neither model solved anything)"


def register(app: typer.Typer) -> None:
    """Add `study toy ...` to the CLI."""
    app.add_typer(toy_app, name="toy")
