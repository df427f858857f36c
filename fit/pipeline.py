"""From a counts file or a run dir to fitted groups, the equal-compute comparison and fit.json."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from fit import compare as cmp
from fit import cost as costmod
from fit.analysis import FitOptions, GroupFit, fit_groups, json_float
from fit.counts import COST_COLUMN, TOKEN_COLUMNS, CountsError, load_counts, read_counts, validate_counts

JSON_VERSION = 1


@dataclass
class FitRun:
    """Everything `study fit` computed, ready for the table, fit.json, plots and the report."""

    source: dict[str, str]
    counts: pd.DataFrame
    groups: dict[str, GroupFit]
    options: FitOptions
    predict_ks: list[float] | None = None
    cost_model: str | None = None
    cost_unit: str | None = None
    references: dict[str, str] = field(default_factory=dict)
    curves: dict[str, cmp.ComputeCurve] = field(default_factory=dict)
    comparison: dict[str, Any] | None = None
    manifest: dict[str, Any] | None = None
    summary: pd.DataFrame | None = None
    maj: pd.DataFrame | None = None
    notes: list[str] = field(default_factory=list)

    def cost_shares(self, name: str) -> dict[str, float] | None:
        """Share of each token column in the group's cost per sample (needs per-column costs)."""
        frame = self.groups[name].frame
        cols = [f"cost_{c}" for c in TOKEN_COLUMNS]
        if not all(c in frame.columns for c in cols):
            return None
        parts = frame[cols].mean()
        total = float(parts.sum())
        return {c: float(parts[f"cost_{c}"] / total) if total > 0 else 0.0 for c in TOKEN_COLUMNS}

    def counts_table(self) -> pd.DataFrame:
        """The counts as read (the counts-table columns, token sums as integers) plus the fit's cost per sample
        (so `study fit --counts` on it compares as the run did; a cost model asked for there replaces it)."""
        frame = self.counts.drop(columns=[c for c in self.counts.columns
                                          if c == "group" or (c.startswith("cost_") and c != COST_COLUMN)])
        for col in [c for c in TOKEN_COLUMNS if c in frame.columns]:
            frame[col] = frame[col].round().astype(np.int64)
        return frame

    def to_json(self) -> dict[str, Any]:
        """The fit.json document (shape documented in README: groups → power_law, beta_binomial, predict)."""
        groups = {}
        for name, g in self.groups.items():
            entry = g.to_json(self.predict_ks)
            if name in self.curves:
                entry["cost_per_sample"] = json_float(self.curves[name].cost)
                shares = self.cost_shares(name)
                if shares is not None:
                    entry["cost_shares"] = shares
            if self.summary is not None and name in self.summary.index and "maj@n" in self.summary.columns:
                row = self.summary.loc[name]  # run dirs: verify's majority vote over answer classes
                entry["maj@n"] = {"value": json_float(row["maj@n"]), "low": json_float(row["maj@n_lo"]),
                                  "high": json_float(row["maj@n_hi"])}
            groups[name] = entry
        out: dict[str, Any] = {"version": JSON_VERSION, "source": self.source,
                               "estimator": self.options.estimator,
                               "power_law_method": self.options.power_law_method,
                               "family": self.options.family, "n_boot": self.options.n_boot,
                               "level": self.options.level, "cost_model": self.cost_model,
                               "cost_unit": self.cost_unit, "groups": groups}
        if self.comparison is not None:
            out["comparison"] = self.comparison
        if self.notes:
            out["notes"] = list(self.notes)
        return out


def _with_costs(counts: pd.DataFrame, cost_column: str | None, cost_model: str,
                n_params: Mapping[str, float] | None, prices: costmod.Prices | None,
                source: str) -> tuple[pd.DataFrame, str | None, str | None]:
    """Counts with a cost_per_sample column if one can be had: (counts, model, unit)."""
    if cost_column is not None:
        if cost_column != COST_COLUMN:
            counts = counts.assign(**{COST_COLUMN: counts[cost_column]})
        return counts, "column", "cost units" if cost_column == COST_COLUMN else f"{cost_column} units"
    if cost_model == "seconds":
        return costmod.add_seconds_per_sample(counts, source), cost_model, costmod.UNITS[cost_model]
    if all(c in counts.columns for c in TOKEN_COLUMNS) and (n_params is not None or cost_model == "price"):
        try:
            costed = costmod.add_cost_per_sample(counts, cost_model, n_params, prices)
        except ValueError as exc:
            raise CountsError(str(exc)) from exc
        free = costed[COST_COLUMN].to_numpy(float) <= 0
        if free.any():
            names = list(dict.fromkeys(map(str, costed["group"][free])))
            raise CountsError(f"{source}: the {cost_model} cost model gives {int(free.sum())} row(s) a cost of 0 per sample "
                              f"(group(s) {', '.join(names[:10])}{', ...' if len(names) > 10 else ''}): their token sums "
                              "are 0 or priced at 0; equal-compute comparisons need a positive cost")
        return costed, cost_model, costmod.UNITS[cost_model]
    return counts, None, None


def _finish(run: FitRun, targets: tuple[float, ...], budgets: list[float] | None) -> FitRun:
    """Compute curves and the comparison when costs are known."""
    if COST_COLUMN not in run.counts.columns:
        hint = (" (the table has token sums: --n-params BASE,ORACLE or --prices costs them)"
                if "counts" in run.source and all(c in run.counts.columns for c in TOKEN_COLUMNS) else "")
        candidates = [c for c in run.counts.columns if any(w in c.lower() for w in ("cost", "flop", "price", "second", "time"))
                      and pd.to_numeric(run.counts[c], errors="coerce").notna().all()] if "counts" in run.source else []
        if candidates and not hint:
            hint = f" (if {' or '.join(repr(c) for c in candidates[:3])} is the cost per sample: --cost-column NAME)"
        run.notes.append("no cost per sample: the equal-compute comparison is skipped" + hint)
        return run
    run.curves = {name: cmp.compute_curve(g, g.frame[COST_COLUMN].to_numpy(float))
                  for name, g in run.groups.items()}
    if not run.references:
        run.notes.append("no reference config (pure base / oracle sampling): no compute multipliers"
                         + (" (name the groups with --base / --oracle)" if "counts" in run.source else ""))
    run.comparison = cmp.compare(run.curves, run.references, targets, budgets, run.options.level)
    run.comparison.update({"cost_model": run.cost_model, "cost_unit": run.cost_unit})
    return run


def _fitted(counts: pd.DataFrame, options: FitOptions, progress: bool) -> dict[str, GroupFit]:
    """fit_groups, with a progress bar over the groups if asked (each takes a fraction of a second to seconds)."""
    from verify.progress import rich_progress

    with rich_progress(progress) as sink:
        return fit_groups(counts, options, sink)


def fit_counts_file(path: str | Path, by: str | None = None, options: FitOptions | None = None,
                    predict_ks: list[float] | None = None, cost_column: str | None = None,
                    n_params: Mapping[str, float] | None = None, cost_model: str | None = None,
                    prices: costmod.Prices | None = None, references: Mapping[str, str] | None = None,
                    targets: tuple[float, ...] = cmp.DEFAULT_TARGETS, budgets: list[float] | None = None,
                    progress: bool = True) -> FitRun:
    """Fit a counts file (.csv/.parquet): `study fit --counts`; `progress` draws bars on stderr."""
    options = options or FitOptions()
    asked = cost_model is not None or n_params is not None or prices is not None  # a cost model to apply to the tokens
    if cost_column is None:
        raw = read_counts(path)
        cost_column = COST_COLUMN if COST_COLUMN in raw.columns and not asked else None
        counts = validate_counts(raw, str(path), by, cost_column)
        if cost_column is None and COST_COLUMN in counts.columns:  # replaced by the cost model asked for
            counts = counts.drop(columns=COST_COLUMN)
    elif asked:
        raise CountsError(f"--cost-column {cost_column} gives the cost per sample: it cannot be combined with "
                          "--cost, --n-params or --prices")
    else:
        counts = load_counts(path, by, cost_column)
    references = dict(references or {})
    missing = {role: ref for role, ref in references.items() if ref not in set(counts["group"])}
    if missing:
        raise CountsError(f"{path}: reference group(s) not found: {missing}; groups are "
                          f"{', '.join(sorted(set(counts['group'])))}")
    counts, model, unit = _with_costs(counts, cost_column, cost_model or "flops", n_params, prices, str(path))
    if asked and model is None:
        absent = [c for c in TOKEN_COLUMNS if c not in counts.columns]
        need = (f"the token columns {', '.join(TOKEN_COLUMNS)} (missing: {', '.join(absent)})" if absent else "")
        if cost_model not in ("price", "seconds") and n_params is None:
            need += (" and " if need else "") + "--n-params BASE,ORACLE"
        raise CountsError(f"{path}: the {cost_model or 'flops'} cost model needs {need}; "
                          "without a cost model the table's own cost_per_sample column (if any) is used")
    notes = []
    # a counts table from `study fit` (or one like it) names its references base and oracle; a role not given is
    # taken from there, unless that group is the other role's reference
    defaults = {role: role for role in ("base", "oracle")
                if role not in references and role in set(counts["group"]) and role not in references.values()}
    references.update(defaults)
    notes += [f"group {role!r} is taken as the pure-{role} reference (--{role} to choose another)" for role in defaults]
    run = FitRun({"counts": str(path), "by": by or ("config" if "config" in counts.columns else "")}, counts,
                 _fitted(counts, options, progress), options, predict_ks, model, unit, references)
    run.notes += notes
    return _finish(run, targets, budgets)


def fit_run_dir(run_dir: str | Path, options: FitOptions | None = None, predict_ks: list[float] | None = None,
                cost_model: str | None = None, prices: costmod.Prices | None = None,
                targets: tuple[float, ...] = cmp.DEFAULT_TARGETS, budgets: list[float] | None = None,
                grader: str | None = None, progress: bool = True) -> FitRun:
    """Fit a graded (or gradable) run dir: `study fit RUN_DIR`; the cost model defaults to the
    experiment's [cost] section (recorded in the manifest), else flops; the grader to the one that
    graded the run (`rundir.choose_grader`); `progress` draws bars on stderr (grading, fits, maj@k)."""
    from fit import rundir

    options = options or FitOptions()
    run_dir = Path(run_dir)
    manifest = rundir.load_manifest(run_dir)
    cost = manifest.get("cost") or {}
    cost_model = cost_model or cost.get("model") or "flops"
    if prices is None and cost_model == "price" and "prices" in cost:
        prices = costmod.Prices.from_mapping(cost["prices"])
    if cost_model == "price" and prices is None:  # before grading, which may take a while
        raise CountsError(f"{run_dir}: cost model 'price' needs prices (--prices, or prices in the experiment's [cost])")
    grader = rundir.choose_grader(run_dir, grader)
    rundir.check_graded_with(run_dir, grader)
    grades, raw = rundir.run_grades_and_counts(run_dir, grader, progress)
    counts = validate_counts(raw, f"{run_dir} counts table", "config")
    n_params = costmod.n_params_from_manifest(manifest) if cost_model in ("flops", "decode") else None
    counts, model, unit = _with_costs(counts, None, cost_model, n_params, prices, str(run_dir))
    references = rundir.references(manifest)
    run = FitRun({"run_dir": str(run_dir), "grader": grader}, counts, _fitted(counts, options, progress), options, predict_ks, model, unit,
                 {role: ref for role, ref in references.items() if ref in set(counts["group"])}, manifest=manifest)
    run.notes += [f"reference config {ref!r} ({role}) has no graded samples: no multipliers against it"
                  for role, ref in references.items() if role not in run.references]
    if model == "seconds":
        run.notes.append(rundir.timing_note(run_dir))
    incomplete = rundir.incomplete_note(run_dir)
    if incomplete:
        run.notes.append(incomplete)
    run.summary = rundir.run_summary(grades, seed=options.seed, level=options.level)  # as `study verify` prints it
    run.maj = rundir.maj_curves(grades, {name: g.n_min for name, g in run.groups.items()}, seed=options.seed,
                                progress=progress)
    return _finish(run, targets, budgets)


def parse_floats(text: str | None, what: str) -> list[float] | None:
    """'10000,1e5' -> [10000.0, 100000.0]; a ValueError naming the option otherwise."""
    if text is None or text.strip() == "":
        return None
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError as exc:
        raise ValueError(f"{what}: expected comma-separated numbers, got {text!r}") from exc
    if not values or not all(np.isfinite(v) and v > 0 for v in values):
        raise ValueError(f"{what}: expected positive numbers, got {text!r}")
    return values
