"""`study verify`: grade a run dir (per-config summary with CIs) or any JSONL file of completions."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

__all__ = ["register", "verify_command"]

_GRADER_HELP = "math-verify (default: math-verify behind an exact fast path) or strict (classic MATH string match)"


INTERRUPTED = 130  # exit code after Ctrl-C (128 + SIGINT), as a shell reports it


def _fail(message: str, code: int = 2) -> None:
    """Print an error (no traceback) and exit with a non-zero code."""
    from verify.progress import print_error

    print_error(message)
    raise typer.Exit(code)


def _ci(mean: float, lo: float, hi: float) -> str:
    """'0.523' over '[0.481, 0.566]' (two lines keep the table narrow); the mean and "(no CI: one problem)" where there is none."""
    if lo != lo or hi != hi:  # NaN: one problem, nothing to resample
        return f"{mean:.3f}\n(no CI: one problem)" if mean == mean else "—"
    return f"{mean:.3f}\n[{lo:.3f}, {hi:.3f}]"


def _run_table(summary: Any, grader: str) -> Any:
    """A rich table of summarize_grades output."""
    from rich.table import Table

    title = f"verify ({grader}): mean [95% CI over problems: bootstrap, Wilson for shares such as coverage@n]; distinct = answer classes per problem"
    table = Table(title=title, title_justify="left")
    for name in ("config", "problems", "n", "pass@1", "coverage@n", "maj@n", "no answer", "distinct"):
        table.add_column(name, justify="left" if name == "config" else "right", overflow="fold")
    for row in summary.to_dict("records"):
        n = str(row["n_min"]) if row["n_min"] == row["n_max"] else f"{row['n_min']}-{row['n_max']}"
        table.add_row(
            str(row["config"]),
            str(row["problems"]),
            n,
            _ci(row["pass@1"], row["pass@1_lo"], row["pass@1_hi"]),
            _ci(row["coverage@n"], row["coverage@n_lo"], row["coverage@n_hi"]),
            _ci(row["maj@n"], row["maj@n_lo"], row["maj@n_hi"]),
            f"{row['no_answer']:.1%}",
            f"{row['distinct_answers']:.1f}",
        )
    return table


def _breakdown_table(grades: Any, run_dir: Path, by: str) -> Any:
    """A rich table of pass@1 (with CI) per config and level/subject."""
    from rich.table import Table

    from verify.metrics import breakdown, level_label
    from verify.run_grades import read_problems
    from verify.tables import counts_from_grades

    counts = counts_from_grades(grades, read_problems(run_dir))
    table = Table(title=f"pass@1 by {by}: mean [95% CI over problems: bootstrap, Wilson where each problem is "
                        "always or never solved]", title_justify="left")
    for name in ("config", by, "problems", "pass@1"):
        table.add_column(name, justify="left" if name == "config" else "right")
    for row in breakdown(counts, ["config", by], ks=(1,)).to_dict("records"):
        table.add_row(
            str(row["config"]), level_label(row[by]), str(row["problems"]),
            _ci(row["pass@1"], row["pass@1_lo"], row["pass@1_hi"]).replace("\n", " "),
        )
    return table


def _batch_line(stats: Any) -> str:
    """One line on what grading did."""
    return (
        f"{stats.pairs:,} distinct (reference, answer) pairs: {stats.cached:,} cached, {stats.fast:,} fast path, "
        f"{stats.calls:,} math-verify calls ({stats.timeouts:,} timed out, {stats.errors:,} errors)"
    )


def _verify_run(
    run_dir: Path, grader: str, timeout: float, workers: int | None, progress: bool, by: str | None, regrade: bool
) -> None:
    """Grade a run dir and print the per-config summary."""
    from verify.progress import table_console
    from verify.run_grades import GradingInterrupted, RunDirError, grade_run_with_stats, grades_dir
    from sampling.status import unfinished_configs
    from verify.tables import summarize_grades

    if run_dir.is_file():
        _fail(f"{run_dir}: not a directory; to grade a JSONL file use `study verify --input {run_dir} --output OUT.jsonl`")
    console = table_console()
    try:
        grades, stats = grade_run_with_stats(run_dir, grader, progress, timeout, workers, regrade)
    except RunDirError as exc:
        _fail(str(exc))
        return
    except OSError as exc:  # a read-only or full disk: files are written whole or not at all
        _fail(f"cannot grade {run_dir}: {exc.filename or run_dir}: {exc.strerror or exc}; the grades saved before "
              "are intact, run the same command again once it can write")
        return
    except KeyboardInterrupt as exc:  # GradingInterrupted says what was kept
        saved = exc.saved if isinstance(exc, GradingInterrupted) else 0
        graded = exc.graded if isinstance(exc, GradingInterrupted) else 0
        kept = f" (the {saved:,} comparison(s) it finished are cached)" if saved else ""
        if isinstance(exc, GradingInterrupted) and exc.regrade:
            _fail(f"interrupted: the regrade is unfinished{kept}; `study verify {run_dir} --regrade` finishes it "
                  "(until then the run's grades are refused)", INTERRUPTED)
            return
        whole = isinstance(exc, GradingInterrupted) and exc.whole
        if whole:
            _fail(f"interrupted while finishing: the grades of all {graded:,} sample(s) of this call were saved{kept}",
                  INTERRUPTED)
            return
        done = (f"the grades of {graded:,} sample(s) were saved, the rest of this call's were not{kept}; "
                if graded else f"the grades of this call were not saved{kept}; ")
        _fail(f"interrupted: {done}re-running `study verify {run_dir}` grades the samples still ungraded", INTERRUPTED)
        return
    console.print(
        f"{stats.newly_graded:,} samples graded now, {stats.already_graded:,} already graded "
        f"({stats.seconds:.1f} s); grades in {grades_dir(run_dir, grader)}"
    )
    if stats.replaced_shards:
        console.print(f"{stats.replaced_shards:,} shard(s) hold other samples than when they were graded (sampled "
                      "again after being removed): their samples were graded again")
    if stats.batch is not None:
        console.print(_batch_line(stats.batch))
        undecided = stats.batch.timeouts + stats.batch.errors + stats.batch.undecided_cached
        if undecided:
            earlier = (f" ({stats.batch.undecided_cached:,} of them from the cache, left undecided earlier, so that one "
                       "answer gets one verdict)" if stats.batch.undecided_cached else "")
            console.print(f"{undecided:,} pair(s) timed out or failed (undecided) and are graded wrong{earlier}; "
                          f"`study verify {run_dir} --regrade --timeout {max(2 * timeout, 30):g}` tries them again")
    if grades.empty:
        console.print("no samples to summarise")
        return
    console.print(_run_table(summarize_grades(grades), grader))
    if by is not None:
        console.print(_breakdown_table(grades, run_dir, by))
    unfinished = unfinished_configs(run_dir)
    if unfinished:
        console.print(f"note: the run is still incomplete: {', '.join(unfinished)} samples drawn; these are the "
                      f"grades of those drawn so far (see `study status {run_dir}`)")


def _fraction(part: int, whole: int, style: str) -> str:
    """part / whole formatted with style, or a dash when whole is 0."""
    return style.format(part / whole) if whole else "-"


def _verify_jsonl(
    source: Path, output: Path, reference_field: str, completion_field: str, grader: str, timeout: float,
    workers: int | None, progress: bool,
) -> None:
    """Grade a JSONL file and print a one-table summary."""
    from rich.table import Table

    from verify.jsonl import InputError, grade_jsonl
    from verify.progress import print_warning, rich_progress, table_console

    try:
        with rich_progress(progress) as sink:
            result = grade_jsonl(
                source, output, reference_field, completion_field, grader, timeout, workers, sink, on_warning=print_warning
            )
    except InputError as exc:
        _fail(str(exc))
        return
    except KeyboardInterrupt:
        _fail(f"interrupted: nothing was written to {output}; re-running the command grades the file again", INTERRUPTED)
        return
    console = table_console()
    if not result.rows:
        console.print(f"{source} has no rows to grade; wrote an empty {output}")
    table = Table(title=f"verify ({grader}): {source} -> {output}", title_justify="left")
    for name in ("rows", "correct", "accuracy", "no answer", "distinct pairs", "math-verify calls", "timed out", "errors"):
        table.add_column(name, justify="right")
    stats = result.stats
    table.add_row(
        f"{result.rows:,}", f"{result.correct:,}", _fraction(result.correct, result.rows, "{:.3f}"),
        _fraction(result.no_answer, result.rows, "{:.1%}"), f"{stats.pairs:,}", f"{stats.calls:,}",
        f"{stats.timeouts:,}", f"{stats.errors:,}",
    )
    console.print(table)
    if result.undecided:
        console.print(f"{result.undecided:,} row(s) undecided (comparison timed out or failed): written with "
                      f'"correct": null and "undecided" saying why, counted as not correct in the accuracy; '
                      "a larger --timeout may decide them")


def verify_command(
    ctx: typer.Context,
    run_dir: Optional[Path] = typer.Argument(None, help="Run directory to grade (written by `study sample`)."),
    grader: str = typer.Option("math-verify", "--grader", help=_GRADER_HELP),
    input: Optional[Path] = typer.Option(None, "--input", help="Grade this JSONL file instead of a run dir."),
    output: Optional[Path] = typer.Option(None, "--output", help="Where to write the graded JSONL (with --input)."),
    reference_field: str = typer.Option("reference", "--reference-field", help="Field holding the reference answer."),
    completion_field: str = typer.Option("completion", "--completion-field", help="Field holding the completion."),
    timeout: float = typer.Option(5.0, "--timeout", help="Hard time limit per comparison, seconds."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Worker processes (default: all CPUs)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
    by: Optional[str] = typer.Option(None, "--by", help="Also print pass@1 per config and 'level' or 'subject'."),
    regrade: bool = typer.Option(False, "--regrade", help="Grade every sample of RUN_DIR again; decided pairs come from "
                                 "the cache, so this re-tries the comparisons that timed out (e.g. with a larger --timeout)."),
) -> None:
    """Grade samples: every ungraded sample of RUN_DIR, or a JSONL file with --input/--output."""
    from verify.equivalence import GRADERS
    from verify.pool import MAX_TIMEOUT
    from verify.progress import option_given

    if grader not in GRADERS:
        _fail(f"unknown grader {grader!r}; choose one of: {', '.join(GRADERS)}")
    if not 0 < timeout <= MAX_TIMEOUT:  # also refuses NaN
        _fail(f"--timeout must be a number of seconds in (0, {MAX_TIMEOUT:g}], got {timeout!r}")
    if workers is not None and workers < 1:
        _fail("--workers must be at least 1")
    if by is not None and by not in ("level", "subject"):
        _fail(f"--by must be 'level' or 'subject', not {by!r}")
    if input is not None:
        if run_dir is not None:
            _fail("give either RUN_DIR or --input FILE, not both")
        if output is None:
            _fail("--input needs --output OUT.jsonl")
        if reference_field == completion_field:
            _fail(f"--reference-field and --completion-field are both {reference_field!r}; give two different fields")
        if by is not None or regrade:
            _fail("--by and --regrade are only used with RUN_DIR")
        _verify_jsonl(input, output, reference_field, completion_field, grader, timeout, workers, progress)  # type: ignore[arg-type]
        return
    given = [flag for flag, name in (("--output", "output"), ("--reference-field", "reference_field"),
                                     ("--completion-field", "completion_field")) if option_given(ctx, name)]
    if given:
        _fail(f"{' and '.join(given)} {'is' if len(given) == 1 else 'are'} only used with --input")
    if run_dir is None:
        _fail("give a RUN_DIR, or --input FILE.jsonl --output OUT.jsonl")
    _verify_run(run_dir, grader, timeout, workers, progress, by, regrade)  # type: ignore[arg-type]


def register(app: typer.Typer) -> None:
    """Add the `verify` command to the study app."""
    app.command("verify")(verify_command)
