"""The summary table (shared by the CLI and the report) and the Markdown report of a fit run."""
from __future__ import annotations

import datetime as _dt
import json
import math
import os
import shlex
from pathlib import Path
from typing import Any

import pandas as pd

from fit.analysis import DEFAULT_PREDICT_FACTORS, MIN_PROBLEMS_FOR_CI, json_float
from fit.pipeline import FitRun

DASH = "—"
PLOT_CAPTIONS: dict[str, str] = {
    "coverage_vs_k": "Coverage vs samples per problem (log k). Solid: empirical with its 95% CI band (the tables' CIs: "
                     "bootstrap over problems, Wilson where coverage is a share of problems, as at k = n, so the band may "
                     "step there; never solved: the rule-of-three bound); "
                     "dotted: the fit (the run's estimator) over the samples drawn; dashed: the fit anchored to "
                     "the last empirical point and extrapolated to 100× n, with its band (what the predictions use).",
    "coverage_vs_compute": "Coverage vs compute per problem (k samples × the config's cost per sample). Solid: "
                           "empirical, dashed: extrapolated beyond the sampled range; the bands are the same 95% CIs "
                           "as in the coverage-vs-samples plot.",
    "neglog_coverage": "−log coverage vs k on log-log axes; a power law is a straight line. "
                       "Solid: power-law fit, dashed: beta-binomial.",
    "maj_vs_coverage": "Coverage@k next to maj@k: majority vote plateaus while coverage keeps climbing.",
    "ck_heatmap": "random(c, k) grid: pass@1 and compute multiplier vs pure base sampling († extrapolated).",
    "coverage_by_level": "pass@1 and coverage@n per difficulty level.",
    "cost_breakdown": "Share of each model × phase in the cost per sample (oracle prefill = re-reading what "
                      "the base wrote since the oracle's last call).",
}


def _link(path: Path, base_dir: Path) -> str:
    """A Markdown link target for `path` from a report in `base_dir` (relative, also across folders)."""
    return Path(os.path.relpath(Path(path).resolve(), Path(base_dir).resolve())).as_posix()


def pct(t: float | str) -> str:
    """A target coverage as a percentage with the precision it needs (50%, 99.5%, 99.9%)."""
    return f"{100 * float(t):.6g}%"


def auc_cell(auc: float, low: float, high: float) -> str:
    """'0.979 [0.967, 0.987]', or a dash and why where the AUC is undefined (no earlier tokens, or no first wrong ones)."""
    if not math.isfinite(auc):
        return f"{DASH} (needs both first wrong and earlier tokens)"
    return f"{auc:.3f} [{low:.3f}, {high:.3f}]" if math.isfinite(low) and math.isfinite(high) else f"{auc:.3f}"


def fmt(x: float | None, digits: int = 3) -> str:
    """A number with `digits` significant digits, or a dash."""
    return DASH if x is None else f"{x:.{digits}g}"


def prob(x: float) -> str:
    """A probability: three decimals, or scientific notation below 0.001 (pass@1 can be tiny)."""
    return f"{x:.1e}" if 0 < x < 1e-3 else f"{x:.3f}"


def fmt_ci(value: float | None, low: float | None, high: float | None, form=lambda x: f"{x:.3g}") -> str:
    """'v [lo, hi]' with each number formatted by `form`, or a dash."""
    if value is None:
        return DASH
    if low is None or high is None:
        return form(value)
    if form is prob and any(0 < x < 1e-3 for x in (value, low, high)):  # one notation for the three numbers
        form = lambda x: f"{x:.1e}"  # noqa: E731
    return f"{form(value)} [{form(low)}, {form(high)}]"


def fmt_mult(cell: dict[str, Any] | None) -> str:
    """'2.1× [1.6, 2.8]' with † when extrapolated, '∞×' where the reference never reaches the coverage, or a dash."""
    if not cell or (cell.get("multiplier") is None and not cell.get("infinite")):
        return DASH
    value = math.inf if cell.get("infinite") else cell["multiplier"]
    low, high = cell["low"], cell["high"]
    if cell.get("unreached"):  # a bound among replicates that never reach the coverage is unbounded
        low, high = (math.inf if x is None else x for x in (low, high))
    text = f"{fmt_ci(value, low, high, lambda x: '∞' if math.isinf(x) else f'{x:.3g}')}×"
    return text + ("†" if cell.get("extrapolated") else "")


def fmt_pred(p: dict[str, Any]) -> str:
    """Predicted coverage with CI and a † when extrapolated (no successes: 0 with its rule-of-three bound)."""
    if p.get("method") == "zero_successes_bound" and p["extrapolated"]:
        return f"0 (≤ {prob(p['high'])}, no successes)†"
    return fmt_ci(p["coverage"], p["low"], p["high"], prob) + ("†" if p["extrapolated"] else "")


def _summary_cell(run: FitRun, name: str, metric: str, fallback: dict[str, Any] | None) -> str:
    """A metric with CI from our own fit (as in fit.json), else from verify's summary (maj@n, run dirs only)."""
    if fallback is None and run.summary is not None and name in run.summary.index and metric in run.summary.columns:
        row = run.summary.loc[name]
        value, low, high = (json_float(row[key]) for key in (metric, f"{metric}_lo", f"{metric}_hi"))
        return fmt_ci(value, low, high, prob)
    if fallback is None:
        return DASH
    return fmt_ci(fallback["value"], fallback["low"], fallback["high"], prob)


def table_rows(run: FitRun, doc: dict[str, Any]) -> list[dict[str, str]]:
    """One formatted row per group: the columns `study fit` prints and the report tabulates."""
    comp = (doc.get("comparison") or {}).get("configs", {})
    targets = (doc.get("comparison") or {}).get("targets", [])
    rows = []
    for name, g in doc["groups"].items():
        n = str(g["n_min"]) if g["n_min"] == g["n_max"] else f"{g['n_min']}–{g['n_max']}"
        pl = g["power_law"]
        row = {"config": name, "problems": str(g["problems"]), "n": n,
               "cost/sample": fmt(g.get("cost_per_sample")),
               "pass@1": _summary_cell(run, name, "pass@1", g["pass@1"]),
               "coverage@n": _summary_cell(run, name, "coverage@n", g["coverage@n"]),
               "maj@n": _summary_cell(run, name, "maj@n", None),
               "a": fmt(pl.get("a")), "b": fmt(pl.get("b"))}
        for i, (k, p) in enumerate(g["predict"].items()):  # default k differ per group: label them 10×n, 100×n
            row[f"cov@{k}" if run.predict_ks else f"cov@{DEFAULT_PREDICT_FACTORS[i]}×n"] = fmt_pred(p)
        if targets:
            for role in ("base", "oracle"):
                block = comp.get(name, {}).get(f"vs_{role}")
                if block is not None:
                    row[f"×{role} @{pct(targets[0])}"] = fmt_mult(block["targets"].get(str(targets[0])))
        rows.append(row)
    return rows


def _md_table(rows: list[dict[str, str]]) -> str:
    """Markdown table from rows of equal keys (missing cells as dashes)."""
    if not rows:
        return "_(none)_"
    cols = list(dict.fromkeys(k for r in rows for k in r))
    out = ["| " + " | ".join(map(_cell, cols)) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    out += ["| " + " | ".join(_cell(r.get(c, DASH)) for c in cols) + " |" for r in rows]
    return "\n".join(out)


def _cell(text: str) -> str:
    """A Markdown table cell: a '|' in a name must not end the cell, nor a '$' start math (GitHub renders $…$)."""
    return str(text).replace("|", "\\|").replace("$", "\\$")


def extrapolation_methods(doc: dict[str, Any]) -> str:
    """The fit the † values come from: the run's estimator, and the groups whose predictions fell back to another."""
    other: dict[str, list[str]] = {}
    for name, g in doc["groups"].items():
        methods = {p.get("method") for p in g.get("predict", {}).values() if p.get("extrapolated")}
        for method in sorted(m for m in methods if m and m != doc["estimator"]):
            other.setdefault(method, []).append(name)
    shown = "; ".join(f"{method} for {group_list([f'`{n}`' for n in names])}" for method, names in other.items())
    return f"{doc['estimator']} fit" + (f"; {shown}" if shown else "")


def grouped_warnings(doc: dict[str, Any]) -> list[tuple[str, list[str]]]:
    """Each distinct group warning once, with the groups that have it (first-seen order)."""
    seen: dict[str, list[str]] = {}
    for name, g in doc["groups"].items():
        for w in g["warnings"]:
            seen.setdefault(w, []).append(name)
    return list(seen.items())


def group_list(names: list[str], shown: int = 3) -> str:
    """'a', 'a, b', or 'a, b, c and 75 more groups'."""
    head = ", ".join(names[:shown])
    return head if len(names) <= shown else f"{head} and {len(names) - shown} more groups"


def _multiplier_tables(doc: dict[str, Any]) -> list[str]:
    """Markdown sections: multipliers vs each reference at targets and budgets, and crossovers."""
    comp = doc.get("comparison")
    if not comp or not comp.get("references"):
        return []
    unit = comp.get("cost_unit") or "cost"
    out = []
    for role, ref in comp["references"].items():
        out.append(f"### Compute multiplier vs pure {role} sampling (`{ref}`)\n")
        out.append(f"M = compute `{ref}` needs / compute the config needs for the same coverage "
                   f"(> 1: the config is cheaper). Budgets are {unit} per problem. † = extrapolated.\n")
        rows = []
        for name, entry in comp["configs"].items():
            block = entry[f"vs_{role}"]
            row = {"config": name}
            row.update({f"@{pct(t)} coverage": fmt_mult(c) for t, c in block["targets"].items()})
            short = [f"{float(b):.3g}" for b in block["budgets"]]
            labels = short if len(set(short)) == len(short) else list(block["budgets"])  # fit.json's keys are distinct
            ref_cost = (comp["configs"].get(ref) or {}).get("cost_per_sample", {}).get("value")
            if ref_cost:  # a budget also as the number of reference samples it buys
                labels = [f"{label} ({_samples_label(float(b) / ref_cost, ref)})" for label, b in zip(labels, block["budgets"])]
            row.update({f"@{label}": fmt_mult(c) for label, c in zip(labels, block["budgets"].values())})
            rows.append(row)
        out.append(_md_table(rows) + "\n")
        out += _reach_notes(comp, role)
        cross = [f"- `{name}`: " + "; ".join(
            f"at {c['budget']:.3g} {unit} (coverage {fmt(c['coverage'])}), then `{c['ahead_after']}` ahead"
            + (" †" if c["extrapolated"] else "") for c in entry[f"vs_{role}"]["crossovers"])
            for name, entry in comp["configs"].items() if entry[f"vs_{role}"]["crossovers"]]
        out.append("Crossovers with `" + ref + "` (where the point estimates of the two curves cross; read them "
                   "with the CIs above, as with few problems a crossing can be noise):\n\n"
                   + ("\n".join(cross) if cross else "none in the fitted range") + "\n")
    return out


def _reach_notes(comp: dict[str, Any], role: str) -> list[str]:
    """Why cells have no finite multiplier (a curve never reaches the coverage, or is unknown there), each reason once."""
    configs: dict[str, list[str]] = {}
    for name, entry in comp["configs"].items():
        block = entry[f"vs_{role}"]
        for cell in [*block["targets"].values(), *block["budgets"].values()]:
            if cell.get("note") and name not in configs.setdefault(cell["note"], []):
                configs[cell["note"]].append(name)
    if not configs:
        return []
    return ["Cells without a finite multiplier (0×: the config never reaches the coverage; ∞×: the reference "
            "never does; —: neither does, or unknown):\n\n" + "\n".join(f"- {note} (row{'s' if len(names) > 1 else ''} "
                                                       f"{group_list([f'`{n}`' for n in names], shown=10)})"
                                                       for note, names in configs.items()) + "\n"]


def _samples_label(k: float, ref: str) -> str:
    """'10 base samples' (k rounded to 3 digits)."""
    shown = f"{k:.3g}"
    return f"{shown} `{ref}` sample{'' if shown == '1' else 's'}"


def _fit_rows(doc: dict[str, Any]) -> list[dict[str, str]]:
    """Per group: both power-law fits and the beta-binomial with CIs and fit errors."""
    rows = []
    for name, g in doc["groups"].items():
        pl, alt, bb = g["power_law"], g["power_law"]["alternative"], g["beta_binomial"]
        row = {"config": name,
               f"power law ({pl['method']}) a": fmt_ci(pl.get("a"), *pl.get("a_ci", [None, None])),
               "b": fmt_ci(pl.get("b"), *pl.get("b_ci", [None, None])),
               "rmse": fmt(pl.get("rmse"), 2),
               f"{alt['method']} b": fmt_ci(alt.get("b"), *alt.get("b_ci", [None, None])),
               f"beta-binomial ({bb['family']}) α": fmt_ci(bb.get("alpha"), *bb.get("alpha_ci", [None, None])),
               "β": fmt_ci(bb.get("beta"), *bb.get("beta_ci", [None, None])),
               "rmse ": fmt(bb.get("rmse"), 2),
               "status": ", ".join(sorted({pl["status"], bb["status"]}))
               + (" (beta-binomial at its parameter bound: no overdispersion, exponent not identified)" if bb.get("at_bound") else "")}
        rows.append(row)
    return rows


def markdown(run: FitRun, doc: dict[str, Any], plots: dict[str, list[Path]], base_dir: Path) -> str:
    """The full Markdown report; plot links are relative to `base_dir` (where the report is written)."""
    src = doc["source"]
    what = f"run dir `{src['run_dir']}`" if "run_dir" in src else f"counts file `{src['counts']}`"
    if "grader" in src:
        what += f", graded by `{src['grader']}`"
    unit = doc.get("cost_unit")
    parts = ["# Coverage and equal-compute report\n",
             f"Source: {what}. Generated {_dt.datetime.now().strftime('%Y-%m-%d %H:%M')}. "
             f"Extrapolation: `{doc['estimator']}` estimator (power law: `{doc['power_law_method']}`, "
             f"distribution: `{doc['family']}`). CIs: {doc['level']:.0%} bootstrap over problems ({doc['n_boot']} replicates for fits, "
             f"extrapolations and multipliers; pass@1 and maj@n as `study verify` gives them, 1,000; Wilson for "
             f"coverage@n). "
             + (f"Cost model: `{doc['cost_model']}` ({unit})." if unit else "No cost information."),
             "\n## Summary\n",
             "Values with [low, high] are 95% CIs; † marks values extrapolated beyond the sampled number of "
             f"samples (from the {extrapolation_methods(doc)}); a and b are the power law coverage(k) = exp(a·k^b).\n",
             _md_table(table_rows(run, doc))]
    mult = _multiplier_tables(doc)
    if mult:
        parts += ["\n## Equal compute\n", *mult]
    shares = {n: g["cost_shares"] for n, g in doc["groups"].items() if "cost_shares" in g}
    if shares:
        parts += ["\n### Where the compute goes\n",
                  _md_table([{"config": n, **{k.replace("_", " "): f"{v:.1%}" for k, v in s.items()},
                              "cost/sample": fmt(doc["groups"][n].get("cost_per_sample"))} for n, s in shares.items()])]
    parts += ["\n## Fits\n", _md_table(_fit_rows(doc))]
    if "run_dir" in src:
        parts += _first_wrong_section(Path(src["run_dir"]), base_dir)
    if plots:
        parts.append("\n## Plots\n")
        for name, paths in plots.items():
            for p in (q for q in paths if q.suffix == ".png"):
                parts.append(f"![{name}]({_link(p, base_dir)})\n\n*{PLOT_CAPTIONS.get(name, name)}*\n")
    warn = [f"- {group_list([f'`{n}`' for n in names], shown=10)}: {w}" for w, names in grouped_warnings(doc)]
    cost_note = COST_NOTES.get(doc.get("cost_model") or "", "")
    notes = "".join(f"- {x}\n" for x in doc.get("notes", []))
    parts += ["\n## Notes\n", METHOD_NOTE + (f"- {cost_note}\n" if cost_note else "") + notes,
              *(["\nWarnings:\n", "\n".join(warn)] if warn else [])]
    return "\n".join(parts) + "\n"


def stale_analysis_note(summary: dict[str, Any], grades: pd.DataFrame, config: str, rerun: str) -> str | None:
    """A warning when the samples an analysis took as wrong are no longer the wrong ones (a regrade, new samples); else None.

    `grades` are the current grades of the analysis's grader (`verify.read_grades`); `rerun` the command that redoes it.
    """
    from verify.tables import wrong_samples_digest

    if "wrong_digest" not in summary:
        return (f"made by an earlier version of study, which did not record which samples were wrong, so it cannot be "
                f"checked against the current grades: `{rerun}` again to be sure")
    if wrong_samples_digest(grades, config) == summary["wrong_digest"]:
        return None
    mine = grades[grades["config_id"] == config]
    now = f"{int((mine['correct'] == False).sum()):,} of {len(mine):,} now"  # noqa: E712
    whose = f"the {summary['grader']} grades" if summary.get("grader") else "the grades"
    return (f"**out of date**: {whose} changed since this analysis "
            f"({summary.get('wrong', 0):,} of {summary.get('samples', 0):,} samples wrong then, {now}): `{rerun}` again")


def _first_wrong_section(run_dir: Path, base_dir: Path) -> list[str]:
    """The `study analyze` results of the run, if it has been analysed (each checked against the current grades)."""
    from sampling.store import ANALYSIS_DIR, FIT_DIR
    from verify.run_grades import read_grades

    folder = run_dir / FIT_DIR / ANALYSIS_DIR
    tables = sorted(folder.glob("first_wrong_auc_*.csv"))
    if not tables:
        return []
    grades: dict[str, pd.DataFrame] = {}  # by grader, read once
    out = ["\n## Where samples first go wrong (`study analyze`)\n",
           "ROC AUC of each signal for \"this base token is the sample's first wrong token\" among the base tokens "
           "of wrong samples up to that token (95% bootstrap CI over problems).\n"]
    for table in tables:
        config = table.stem.removeprefix("first_wrong_auc_")  # CONFIG, or CONFIG.LOCATOR for a non-default locator
        name, _, locator = config.rpartition(".")
        if locator not in ("exact", "rollout"):  # config ids have dots too (entropy-t0.5-k5-m4)
            name, locator = config, ""
        frame = pd.read_csv(table)
        summary_file = folder / f"first_wrong_summary_{config}.json"
        summary = json.loads(summary_file.read_text()) if summary_file.exists() else {}
        locator = locator or summary.get("locator", "")
        notes = [f"first wrong token located by {locator}"] if locator else []
        if summary.get("grader"):
            notes.append(f"wrong by the {summary['grader']} grades")
        if summary and summary.get("selected", 0) < summary.get("wrong", 0):
            notes.append(f"a random subset of {summary['selected']:,} of its {summary['wrong']:,} wrong samples, "
                         f"--max-samples {summary['max_samples']}")
        if summary.get("analysed") is not None and summary.get("selected", 0) > summary["analysed"]:
            notes.append(f"{summary['analysed']:,} analysed: {summary.get('no_wrong_token', 0):,} without a located "
                         f"wrong token, {summary.get('first_wrong_by_oracle', 0):,} first wrong in an oracle segment")
        if summary.get("problems") is not None and summary["problems"] < MIN_PROBLEMS_FOR_CI:
            notes.append("from 1 problem only: no CIs" if summary["problems"] == 1
                         else f"from {summary['problems']} problem(s) only: the CIs are unreliable")
        if summary:
            grader = summary.get("grader", "math-verify")
            if grader not in grades:
                grades[grader] = read_grades(run_dir, grader)
            settings = [f"--{flag} {summary[key]}" for key, flag in (("max_samples", "max-samples"), ("seed", "seed"),
                                                                       ("n_boot", "boot")) if key in summary]
            rerun = " ".join([f"study analyze {shlex.quote(str(run_dir))} --config {shlex.quote(name)} --grader {grader}",
                              *([f"--locator {locator}"] if config != name else []), *settings])
            stale = stale_analysis_note(summary, grades[grader], name, rerun)
            notes += [stale] if stale else []
        located = f" ({'; '.join(notes)})" if notes else ""
        out += [f"\nConfig `{name}`{located}:\n", _md_table([
            {"signal": r.signal, "ROC AUC": auc_cell(r.auc, r.low, r.high),
             "first wrong tokens": f"{r.positives:,}", "earlier tokens": f"{r.negatives:,}"} for r in frame.itertuples()])]
        for kind, what in (("roc", "ROC"), ("hist", "histograms")):
            plot = folder / f"first_wrong_{kind}_{config}.png"
            if plot.exists():
                out.append(f"\n![first wrong token {what}, {config}]({_link(plot, base_dir)})\n")
    return out


METHOD_NOTE = """\
- Coverage@k is the mean over problems of the unbiased pass@k; with differing n it is empirical up
  to the smallest n and fitted beyond.
- Power law: coverage(k) = exp(a·k^b) fitted to the empirical curve at log-spaced k.
  Beta-binomial: per-problem success rates p ~ Beta(α, β) fitted to the (correct, n) counts by
  maximum likelihood; coverage(k) = 1 − B(α, β+k)/B(α, β); its power-law exponent is −α.
- The default extrapolation (`ensemble`) averages the two; it had the smallest error predicting
  held-out 10× and 100× coverage on the real Pythia GSM8K counts (BENCHMARKS.md). Beyond the
  sampled n it is anchored to the empirical curve at the smallest n (its −log coverage scaled to match there).
- Compute multiplier = compute the reference needs / compute the config needs for the same
  coverage (paired bootstrap over problems for the CI).
- CIs are 95% bootstrap intervals over problems, except for shares of problems (coverage@n and coverage
  at k = n, and pass@1 or any sampled k when every problem is always or never solved): Wilson.
"""

COST_NOTES = {
    "flops": "FLOPs count 2·params per prefilled or decoded token of each model, including the oracle's "
             "prefill of the base's tokens.",
    "decode": "Decode FLOPs count 2·params per decoded token of each model; prefill is free.",
    "price": "Price: each model's input (prefill) and output (decode) tokens at its price per 1M tokens.",
    "seconds": "Seconds: each sample's share of the engine's measured wall-clock time for its block.",
    "column": "Cost per sample: the counts table's own cost column.",
}


def write_report(run: FitRun, doc: dict[str, Any], plots: dict[str, list[Path]], path: str | Path) -> Path:
    """Write the Markdown report to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(markdown(run, doc, plots, path.parent))
    return path
