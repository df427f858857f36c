"""`study fit` and `study report`: fit coverage curves, compare at equal compute, write fit.json, plots, report."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Optional

import typer
from rich.table import Table

from fit import beta_binomial, power_law
from fit.analysis import DEFAULT_ESTIMATOR, ESTIMATORS, FitOptions
from fit.compare import DEFAULT_TARGETS
from fit.cost import COST_MODELS, Prices
from fit.pipeline import FitRun, fit_counts_file, fit_run_dir, parse_floats
from sampling.store import FIT_DIR
from verify.progress import option_given, print_error, table_console

console = table_console()


def _fail(message: str) -> None:
    """Print a clear error (no traceback) and exit non-zero."""
    print_error(message)
    raise typer.Exit(2)


def _n_params(text: str | None) -> dict[str, float] | None:
    """'BASE,ORACLE' parameter counts."""
    values = parse_floats(text, "--n-params")
    if values is None:
        return None
    if len(values) != 2:
        raise ValueError(f"--n-params: expected BASE,ORACLE, got {text!r}")
    return {"base": values[0], "oracle": values[1]}


def _targets(text: str) -> tuple[float, ...]:
    """Target coverages in (0, 1)."""
    values = parse_floats(text, "--targets") or []
    if not values or any(v >= 1 for v in values):
        raise ValueError(f"--targets: expected coverages in (0, 1), got {text!r}")
    return tuple(values)


def _predict_ks(text: str | None) -> list[float] | None:
    """--predict: whole numbers of samples k (pass@k is defined for integers only)."""
    if text is not None and not text.strip():
        raise ValueError("--predict: expected comma-separated numbers of samples, got ''")
    values = parse_floats(text, "--predict")
    if values is not None and any(v != round(v) for v in values):
        raise ValueError(f"--predict: numbers of samples must be whole, got {text!r}")
    return values


def _run(run_dir: Path | None, counts: Path | None, *, by: str | None, predict: str | None, cost: str | None,
         prices: str | None, cost_column: str | None, n_params: str | None, base: str | None, oracle: str | None,
         targets: str, budgets: str | None, estimator: str, power_law_method: str, family: str, boot: int,
         seed: int, runs_root: Path, grader: str | None = None) -> FitRun:
    """Parse options and fit a counts file or a run dir (ValueError/OSError on bad input)."""
    if cost is not None and cost not in COST_MODELS:
        raise ValueError(f"--cost: choose from {', '.join(COST_MODELS)}, got {cost!r}")
    if cost is None and prices and n_params:
        raise ValueError("--prices and --n-params ask for different cost models (price, flops/decode): add --cost")
    if cost is None and prices:
        cost = "price"  # prices alone ask for the price model
    if prices and cost != "price":
        raise ValueError(f"--prices applies to --cost price, not --cost {cost}")
    if n_params and cost in ("price", "seconds"):
        raise ValueError(f"--n-params applies to the flops and decode cost models, not --cost {cost}")
    if base and base == oracle:
        raise ValueError(f"--base and --oracle name the same group {base!r}")
    if boot < 2:
        raise ValueError(f"--boot: expected at least 2 bootstrap replicates, got {boot}")
    options = FitOptions(estimator=estimator, power_law_method=power_law_method, family=family, n_boot=boot, seed=seed)
    kw: dict[str, Any] = dict(options=options, predict_ks=_predict_ks(predict), cost_model=cost,
                              prices=Prices.parse(prices) if prices else None, targets=_targets(targets),
                              budgets=parse_floats(budgets, "--budgets"))
    if counts is not None:
        if grader is not None:
            raise ValueError("--grader applies to run dirs only (a counts file is already graded)")
        if run_dir is not None:
            raise ValueError("give either RUN_DIR or --counts, not both")
        refs = {role: name for role, name in (("base", base), ("oracle", oracle)) if name}
        return fit_counts_file(counts, by, cost_column=cost_column, n_params=_n_params(n_params), references=refs, **kw)
    if by or cost_column or n_params or base or oracle:
        raise ValueError("--by, --cost-column, --n-params, --base and --oracle apply to --counts only")
    from fit.rundir import latest_run

    return fit_run_dir(run_dir if run_dir is not None else latest_run(runs_root), grader=grader, **kw)


def print_table(run: FitRun, doc: dict[str, Any]) -> None:
    """The per-config table on the console."""
    from fit.report import extrapolation_methods, group_list, grouped_warnings, table_rows

    rows = table_rows(run, doc)
    title = "study fit" + (f" — graded by {run.source['grader']}" if run.source.get("grader") else "") + (
        f" — cost: {doc['cost_model']} ({doc['cost_unit']})" if doc.get("cost_unit") else "")
    table = Table(title=title, title_justify="left")
    cols = list(dict.fromkeys(k for r in rows for k in r))
    for c in cols:
        table.add_column(c, justify="left" if c == "config" else "right", overflow="fold")
    for r in rows:
        table.add_row(*(r.get(c, "—") for c in cols))
    console.print(table)
    console.print("[dim]\\[lo, hi]: 95% CI over problems (bootstrap; Wilson for coverage@n); †: extrapolated beyond the sampled n "
                  f"({extrapolation_methods(doc)}); a, b: coverage(k) = exp(a·k^b).[/]", highlight=False)
    for w, names in grouped_warnings(doc):
        console.print(f"[yellow]warning[/] {group_list(names)}: {w}", highlight=False)
    for note in doc.get("notes", []):
        console.print(f"[dim]note: {note}[/]", highlight=False)


def counts_path(json_out: Path, run_dir: Path) -> Path:
    """Where the run's counts table goes beside its JSON: counts.csv beside the run's own _fit/fit.json, else
    JSON-STEM.counts.csv (so another fit, e.g. `--cost decode --json RUN_DIR/_fit/fit_decode.json`, or a --json
    elsewhere never overwrites the run's counts.csv or a file of the user's)."""
    if json_out.resolve() == (run_dir / FIT_DIR / "fit.json").resolve():
        return json_out.parent / "counts.csv"
    return json_out.with_name(f"{json_out.stem}.counts.csv")


# The options that decide what a fit computes, as `study fit` takes them; fit.json records them under
# "options", and `study report` fits again with those it is not given.
FIT_OPTIONS = ("by", "predict", "cost", "prices", "cost_column", "n_params", "base", "oracle", "targets", "budgets",
               "estimator", "power_law_method", "family", "boot", "seed", "grader")
_INT_OPTIONS = ("boot", "seed")


def recorded_options(path: Path, run_dir: Path | None, counts: Path | None) -> dict[str, Any]:
    """The options of the fit that wrote fit.json at `path` if it fitted this run dir (it is the run's own
    RUN_DIR/_fit/fit.json, wherever the run was moved, or names the run) or this counts file, else {}."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    source = doc.get("source") if isinstance(doc, dict) else None
    options = doc.get("options") if isinstance(doc, dict) else None
    if not isinstance(source, dict) or not isinstance(options, dict):
        return {}
    fitted = source.get("run_dir") if run_dir is not None else source.get("counts")
    if not isinstance(fitted, str):
        return {}
    # the recorded path is as typed, relative to wherever that fit ran: the run's own fit.json is its by location
    own = run_dir is not None and path.resolve() == (run_dir / FIT_DIR / "fit.json").resolve()
    if not own and Path(fitted).resolve() != Path(run_dir if run_dir is not None else counts).resolve():
        return {}
    return {name: value for name, value in options.items() if name in FIT_OPTIONS and
            (isinstance(value, int) and not isinstance(value, bool) if name in _INT_OPTIONS
             else value is None or isinstance(value, str))}


def _outputs(run: FitRun, json_out: Path | None, plots_dir: Path | None, default_dir: Path | None,
             no_plots: bool, options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, list[Path]]]:
    """Write fit.json (with the `options` that made it) and plots where asked (run dirs: RUN_DIR/_fit/ by default)."""
    doc = {**run.to_json(), "options": options}
    json_out = json_out or (default_dir / "fit.json" if default_dir else None)
    counts = run.source.get("counts")
    if json_out is not None and counts is not None and json_out.resolve() == Path(counts).resolve():
        raise ValueError(f"--json {json_out} is the counts file being fitted: choose another path")
    if json_out is None and (plots_dir is None or no_plots):
        console.print("[dim]nothing written: add --json FILE and/or --plots DIR to keep the results[/]")
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(doc, indent=1, allow_nan=False))
        console.print(f"wrote {json_out}")
        if "run_dir" in run.source:  # the run's counts table, for `study fit --counts` and other tools
            counts_out = counts_path(json_out, Path(run.source["run_dir"]))
            run.counts_table().to_csv(counts_out, index=False)
            console.print(f"wrote {counts_out}")
    plots: dict[str, list[Path]] = {}
    if plots_dir is None and default_dir is not None:  # beside the JSON: another fit's plots never replace the run's own
        own = json_out is None or json_out.resolve() == (default_dir / "fit.json").resolve()
        plots_dir = default_dir / "plots" if own else json_out.with_name(f"{json_out.stem}_plots")
    if plots_dir is not None and not no_plots:
        from fit.plots import all_plots
        from verify.progress import rich_progress

        with rich_progress() as sink:
            plots = all_plots(run, plots_dir, sink)
        console.print(f"wrote {sum(len(p) for p in plots.values())} plot files to {plots_dir}")
    return doc, plots


RUN_DIR = typer.Argument(None, help="Run directory (default: the most recent run under runs/).", show_default=False)
COUNTS = typer.Option(None, "--counts", help="Counts file (.csv/.parquet) with problem, n, correct [+ group column, cost_per_sample].")
BY = typer.Option(None, "--by", help="Grouping column of --counts (default: 'config' if present, else one group).")
PREDICT = typer.Option(None, "--predict", help="k values to predict coverage at, e.g. 10000,100000 (default: 10× and 100× the largest n).")
COST = typer.Option(None, "--cost", help=f"Cost model: {', '.join(COST_MODELS)} (default: the experiment's \\[cost] model, else flops).",
                    show_default=False)
PRICES = typer.Option(None, "--prices", help="For --cost price: BASE_IN,BASE_OUT,ORACLE_IN,ORACLE_OUT per 1M tokens (default: the experiment's \\[cost] prices).")
COST_COLUMN = typer.Option(None, "--cost-column", help="Counts column holding the cost per sample (default: cost_per_sample if present).")
N_PARAMS = typer.Option(None, "--n-params", help="BASE,ORACLE parameter counts, to cost --counts token sums.")
BASE = typer.Option(None, "--base", help="Group of --counts that is pure base sampling (reference for multipliers).")
ORACLE = typer.Option(None, "--oracle", help="Group of --counts that is pure oracle sampling.")
TARGETS = typer.Option(",".join(map(str, DEFAULT_TARGETS)), "--targets", help="Target coverages for compute multipliers.")
BUDGETS = typer.Option(None, "--budgets", help="Compute budgets per problem for multipliers (default: 1, 10, … n base samples).")
ESTIMATOR = typer.Option(DEFAULT_ESTIMATOR, "--estimator", help=f"Extrapolation: {', '.join(ESTIMATORS)}.")
PL_METHOD = typer.Option(power_law.DEFAULT_METHOD, "--power-law-method", help=f"{', '.join(power_law.METHODS)}.")
FAMILY = typer.Option(beta_binomial.DEFAULT_FAMILY, "--family", help=f"Distribution of p: {', '.join(beta_binomial.FAMILIES)}.")
BOOT = typer.Option(200, "--boot", help="Bootstrap replicates over problems for the fits, extrapolations and "
                    "multipliers (pass@1, coverage@n and maj@n take 1000, as `study verify` prints them).")
SEED = typer.Option(0, "--seed", min=0, help="Seed of the bootstrap.")
RUNS = typer.Option(Path("runs"), "--runs", help="Where to look for the most recent run.")
GRADER = typer.Option(None, "--grader", help="Run dirs: whose grades to read, math-verify or strict (default: the one "
                      "`study verify` graded the run with; math-verify if none or both; one that has not graded a "
                      "graded run is refused: `study verify --grader` it first).", show_default=False)


def fit_command(
    run_dir: Optional[Path] = RUN_DIR, counts: Optional[Path] = COUNTS, by: Optional[str] = BY,
    predict: Optional[str] = PREDICT,
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write fit.json here (run dirs: RUN_DIR/_fit/fit.json)."),
    plots: Optional[Path] = typer.Option(None, "--plots", help="Write plots here (run dirs: RUN_DIR/_fit/plots, or "
                                         "NAME_plots beside a --json NAME.json of another name); "
                                         "plot files of an earlier call that no longer apply are removed."),
    no_plots: bool = typer.Option(False, "--no-plots", help="Skip the plots."),
    cost: Optional[str] = COST, prices: Optional[str] = PRICES, cost_column: Optional[str] = COST_COLUMN,
    n_params: Optional[str] = N_PARAMS, base: Optional[str] = BASE, oracle: Optional[str] = ORACLE,
    targets: str = TARGETS, budgets: Optional[str] = BUDGETS, estimator: str = ESTIMATOR,
    power_law_method: str = PL_METHOD, family: str = FAMILY, boot: int = BOOT, seed: int = SEED, runs: Path = RUNS,
    grader: Optional[str] = GRADER,
) -> None:
    """Fit coverage curves (power law, beta-binomial), extrapolate, compare configs at equal compute."""
    options = {name: value for name, value in locals().items() if name in FIT_OPTIONS}  # the parameters above
    try:
        run = _run(run_dir, counts, runs_root=runs, **options)
        default_dir = Path(run.source["run_dir"]) / FIT_DIR if "run_dir" in run.source else None
        doc, _ = _outputs(run, json_out, plots, default_dir, no_plots, options)
    except (ValueError, OSError) as exc:
        _fail(str(exc))
    print_table(run, doc)


def report_command(
    ctx: typer.Context, run_dir: Optional[Path] = RUN_DIR, counts: Optional[Path] = COUNTS, by: Optional[str] = BY,
    predict: Optional[str] = PREDICT,
    out: Optional[Path] = typer.Option(None, "--out", help="Report folder (run dirs: RUN_DIR/_fit; counts: STEM_report "
                                       "beside FILE)."),
    cost: Optional[str] = COST, prices: Optional[str] = PRICES, cost_column: Optional[str] = COST_COLUMN,
    n_params: Optional[str] = N_PARAMS, base: Optional[str] = BASE, oracle: Optional[str] = ORACLE,
    targets: str = TARGETS, budgets: Optional[str] = BUDGETS, estimator: str = ESTIMATOR,
    power_law_method: str = PL_METHOD, family: str = FAMILY, boot: int = BOOT, seed: int = SEED, runs: Path = RUNS,
    grader: Optional[str] = GRADER,
) -> None:
    """Write a Markdown report (tables + plots) for a run dir or a counts file; options not given are
    those of the fit already in the report folder (`study fit`'s), else the defaults."""
    from fit.report import write_report
    from fit.rundir import latest_run

    options = {name: value for name, value in locals().items() if name in FIT_OPTIONS}  # the parameters above
    try:
        if run_dir is None and counts is None:
            run_dir = latest_run(runs)
        if out is None:
            out = run_dir / FIT_DIR if counts is None else counts.with_name(f"{counts.stem}_report")
        if out.exists() and not out.is_dir():
            raise ValueError(f"--out {out} is a file: give a folder for the report")
        _use_recorded_options(ctx, options, out / "fit.json", run_dir, counts)
        run = _run(run_dir, counts, runs_root=runs, **options)
        doc, plots = _outputs(run, out / "fit.json", out / "plots", None, False, options)
        path = write_report(run, doc, plots, out / "report.md")
    except (ValueError, OSError) as exc:
        _fail(str(exc))
    print_table(run, doc)
    console.print(f"wrote {path}")


def _use_recorded_options(ctx: typer.Context, options: dict[str, Any], fit_json: Path, run_dir: Path | None,
                          counts: Path | None) -> None:
    """Take the options an earlier fit recorded in `fit_json` for those not given on the command line, and say which."""
    params = {p.name: p for p in ctx.command.params}
    taken = []
    for name, value in recorded_options(fit_json, run_dir, counts).items():
        if not option_given(ctx, name) and value != options[name]:
            options[name] = value
            taken.append(f"{params[name].opts[0]} {value}" if value is not None else f"default {params[name].opts[0]}")
    if taken:
        console.print(f"[dim]options of the fit in {fit_json} (give them to change them): {', '.join(taken)}[/]",
                      highlight=False)


def register(app: typer.Typer) -> None:
    """Add `fit` and `report` to the study CLI."""
    app.command("fit")(fit_command)
    app.command("report")(report_command)


if __name__ == "__main__":  # pragma: no cover
    _app = typer.Typer(pretty_exceptions_enable=False)
    register(_app)
    _app(sys.argv[1:])
