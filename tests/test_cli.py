"""The `study` command line: commands exist, bad input is a clear error."""
from __future__ import annotations

import os
from pathlib import Path

from typer.testing import CliRunner

from experiments.cli import app

runner = CliRunner()


def test_help_lists_the_stages() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("sample", "status", "verify", "fit", "report", "analyze", "toy"):
        assert command in result.output


def test_toy_problems_prints_problems() -> None:
    result = runner.invoke(app, ["toy", "problems", "--count", "5", "--solutions"])
    assert result.exit_code == 0, result.output
    assert "Compute" in result.output and "boxed" in result.output


def test_sample_rejects_bad_input_without_traceback(tmp_path: Path) -> None:
    missing = runner.invoke(app, ["sample", "--config", str(tmp_path / "nope.toml")])
    assert missing.exit_code == 2 and "experiment config not found" in missing.output
    bad = tmp_path / "bad.toml"
    bad.write_text('dataset = "toy"\n[models]\nbase = "toy:base"\n[[configs]]\npolicy = "random"\nc = 2\n')
    result = runner.invoke(app, ["sample", "--config", str(bad), "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and "policy 'random' needs k (oracle tokens per intervention); it is missing" in result.output
    assert "Traceback" not in result.output
    bad.write_text('dataset = "toy"\n[models]\nbase = "toy:base"\n[[configs]]\npolicy = "base"\n[cost]\nmodel = "wall"\n')
    result = runner.invoke(app, ["sample", "--config", str(bad), "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and "[cost] model must be one of" in result.output  # brackets are text, not markup
    assert runner.invoke(app, ["sample", "--shard", "3/2", "--out", str(tmp_path / "s")]).exit_code == 2
    for option, value in (("--block-size", "0"), ("--threads", "0")):
        result = runner.invoke(app, ["sample", "--n", "1", "--problems", "1", option, value, "--out", str(tmp_path / "b")])
        assert result.exit_code == 2 and f"{option} must be >= 1, got 0" in result.output
        assert not (tmp_path / "b").exists()  # refused before a run directory is created
    assert runner.invoke(app, ["sample", "--dataset", "nosuch", "--out", str(tmp_path / "t")]).exit_code == 2


def test_sample_refuses_a_folder_that_is_not_a_run(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    result = runner.invoke(app, ["sample", "--n", "1", "--problems", "1", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "not a run directory" in result.output
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_sample_into_an_unwritable_place_is_a_clear_error(tmp_path: Path) -> None:
    """--out naming a file, or inside a read-only folder: one line naming the path, exit 2, no traceback."""
    (tmp_path / "file").write_text("mine")
    result = runner.invoke(app, ["sample", "--n", "1", "--problems", "1", "--out", str(tmp_path / "file")])
    assert result.exit_code == 2 and "file" in result.output and "is a file, not a run directory" in result.output, result.output
    assert "Traceback" not in result.output and (tmp_path / "file").read_text() == "mine"
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        result = runner.invoke(app, ["sample", "--n", "1", "--problems", "1", "--out", str(locked / "run")])
        if os.geteuid() != 0:  # root writes anyway
            assert result.exit_code == 2 and "cannot write" in result.output and "Permission denied" in result.output, result.output
    finally:
        locked.chmod(0o700)
    folder = tmp_path / "data.jsonl"  # an input that cannot be read is not called a write failure
    folder.mkdir()
    result = runner.invoke(app, ["sample", "--n", "1", "--problems", "1", "--dataset", str(folder), "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and "cannot read" in result.output and "data.jsonl" in result.output, result.output
    assert "Traceback" not in result.output and not (tmp_path / "r").exists()


def test_counts_below_their_minimum_are_usage_errors(tmp_path: Path) -> None:
    """Counts that make no sense (0 problems, 0 bootstrap replicates) are refused before any work."""
    for args, option in ((["toy", "problems", "--count", "-1"], "--count"), (["toy", "eval", "--problems", "0"], "--problems"),
                         (["analyze", str(tmp_path), "--boot", "0"], "--boot"),
                         (["analyze", str(tmp_path), "--max-samples", "0"], "--max-samples")):
        result = runner.invoke(app, args)
        assert result.exit_code == 2 and f"Invalid value for '{option}'" in result.output, result.output


def test_sample_says_what_it_does_not_do(tmp_path: Path, monkeypatch) -> None:
    """--dataset gets its own default run dir; asking for more problems than there are, a shard without
    work, and a --block-size a run dir does not use are said, not silent; a missing level names the levels."""
    data = tmp_path / "mine.jsonl"
    data.write_text('{"id": "q1", "problem": "Compute $1+2$.", "answer": "3"}\n')
    config = tmp_path / "base.toml"
    config.write_text('name = "b"\nmax_tokens = 8\n[models]\nbase = "toy:base"\n[[configs]]\npolicy = "base"\n')
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["sample", "--config", str(config), "--dataset", str(data), "--problems", "5", "--n", "1"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "runs" / "b-mine-p5-n1" / "_manifest.json").exists()
    output = " ".join(result.output.split())  # the console wraps long lines
    assert "5 problems asked for (`problems` in the experiment, or --problems), the dataset has 1" in output
    run = tmp_path / "runs" / "b-mine-p5-n1"
    again = ["sample", "--config", str(config), "--dataset", str(data), "--n", "1", "--problems", "5", "--out", str(run)]
    result = runner.invoke(app, again + ["--block-size", "64", "--shard", "1/2"])
    assert result.exit_code == 0, result.output
    assert "--block-size 64 ignored" in result.output and "keeps its block size 512" in result.output
    output = " ".join(result.output.split())
    assert "shard 1/2 has no work: the run's 1 problem(s) form 1 group(s) of up to 512" in output
    result = runner.invoke(app, ["sample", "--config", str(config), "--dataset", str(data), "--levels", "2", "--n", "1"])
    assert result.exit_code == 2 and "the dataset has no levels" in result.output


def test_status_of_a_missing_folder_says_so(tmp_path: Path) -> None:
    result = runner.invoke(app, ["status", str(tmp_path / "gone")])
    assert result.exit_code == 2 and "gone does not exist" in result.output


def test_ctrl_c_while_study_loads_is_one_line() -> None:
    """Ctrl-C during the imports (a second or two before any command runs) exits 130 without a traceback."""
    import subprocess
    import sys
    from importlib.metadata import entry_points

    assert [e.value for e in entry_points(group="console_scripts", name="study")] == ["experiments.main:main"]
    interrupt_at_scipy = (  # a real SIGINT, delivered while experiments.cli imports its stages
        "import os, signal, sys\n"
        "class Interrupt:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'scipy':\n"
        "            os.kill(os.getpid(), signal.SIGINT)\n"
        "sys.meta_path.insert(0, Interrupt())\n"
        "from experiments.main import main\n"
        "main()\n"
    )
    done = subprocess.run([sys.executable, "-c", interrupt_at_scipy, "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 130, done.stderr
    assert done.stderr.strip() == "interrupted while starting: nothing was done"
    assert done.stdout == ""


def test_seeds_out_of_range_are_refused_by_name(tmp_path: Path) -> None:
    """Seeds that torch, numpy or pandas cannot take are refused as --seed, not with the library's traceback."""
    for args in (["toy", "train", "--seed", str(2**64), "--out", str(tmp_path / "m")],
                 ["fit", "--counts", str(tmp_path / "c.csv"), "--seed", "-1"],
                 ["analyze", str(tmp_path), "--seed", str(2**32)]):
        result = runner.invoke(app, args)
        assert result.exit_code == 2 and "--seed" in result.output, (args, result.output)
    assert not (tmp_path / "m").exists()


def test_progress_in_a_log_is_plain_lines_and_on_a_terminal_a_bar() -> None:
    """Written to a file (a Slurm log) a progress bar prints plain lines — count, rate, ETA, never a bar — when it
    starts, every few seconds and when it stops; on a terminal it draws rich's live bar and no such lines."""
    import io

    from rich.console import Console

    from verify.progress import LoggedProgress, RateColumn
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn

    def run(console: Console, every: float) -> str:
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), RateColumn(), TextColumn("ETA"),
                   TimeRemainingColumn())
        with LoggedProgress(*columns, console=console, every=every) as progress:
            task = progress.add_task("grade", total=4)
            for _ in range(4):
                progress.advance(task)
        return console.file.getvalue()

    logged = run(Console(file=io.StringIO(), width=40), every=0.0)
    lines = logged.splitlines()
    assert lines[0].startswith("grade 1/4 ") and lines[-1].startswith("grade 4/4 ") and len(lines) == 4, logged
    assert all("ETA" in line for line in lines) and "━" not in logged
    rare = run(Console(file=io.StringIO(), width=40), every=3600.0).splitlines()  # no line due: the first and last
    assert len(rare) == 2 and rare[0].startswith("grade 1/4 ") and rare[1].startswith("grade 4/4 "), rare
    terminal = run(Console(file=io.StringIO(), width=80, force_terminal=True), every=0.0)
    assert "━" in terminal and "grade 1/4 " not in terminal
