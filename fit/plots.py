"""Plots of a fit run (matplotlib, Agg backend), each written as PNG and SVG.

Solid lines are empirical (k <= the smallest n of the group), dashed lines are fits/extrapolation;
shaded bands are the CIs fit.json gives (bootstrap over problems; Wilson's interval where the
coverage is a share of problems, as at k = n, where the band may step). More than eight groups are split over several
figures (suffix _2, _3, …) so every figure stays readable.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.colors import LogNorm, Normalize  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator  # noqa: E402

from fit.counts import TOKEN_COLUMNS  # noqa: E402
from fit.pipeline import FitRun  # noqa: E402
from fit.report import pct  # noqa: E402
from verify.metrics import level_label  # noqa: E402
from verify.progress import NullProgress, ProgressSink  # noqa: E402

PER_FIGURE = 8
EXTEND = 100.0  # fitted curves are drawn out to 100× the largest n
COLORS = plt.get_cmap("tab10").colors
COMPONENT_LABELS = {"base_decode": "base decode", "base_prefill": "base prefill",
                    "oracle_decode": "oracle decode", "oracle_prefill": "oracle prefill"}


def _save(fig: plt.Figure, out_dir: Path, stem: str) -> list[Path]:
    """Write stem.png and stem.svg; close the figure."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{stem}.png", out_dir / f"{stem}.svg"]
    fig.savefig(paths[0], dpi=150)
    fig.savefig(paths[1])
    plt.close(fig)
    return paths


def _short(v: float) -> str:
    """Compact count text without mathtext (slow to lay out): 1, 10, 1k, 10M."""
    if v <= 0:
        return "0"
    if v < 1e-2 or v >= 1e12:
        return _sci(v)
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if v >= scale:
            return f"{v / scale:g}{unit}"
    return f"{v:g}"


def _sci(v: float) -> str:
    """Compact scientific text: 1e8, 3e-05 -> 3e-5."""
    mant, exp = f"{v:.0e}".split("e")
    return f"{mant}e{int(exp)}"


def _log(ax: plt.Axes, *axes: str, fmt=_short) -> None:
    """Log scale on the named axes ('x', 'y') with plain major labels and few minor ticks (2, 5), which are
    labelled too when the axis spans less than two decades (n = 8 samples would show only "1")."""
    for name in axes:
        axis = ax.xaxis if name == "x" else ax.yaxis
        (ax.set_xscale if name == "x" else ax.set_yscale)("log")
        axis.set_major_formatter(FuncFormatter(lambda v, _pos: fmt(v)))
        axis.set_minor_locator(LogLocator(base=10, subs=(2.0, 5.0), numticks=12))  # few ticks: fast to draw
        axis.set_minor_formatter(FuncFormatter(lambda v, _pos, axis=axis: fmt(v) if _narrow(axis) else ""))


def _narrow(axis) -> bool:
    """Whether a log axis spans less than two decades (drawn now: its limits are final)."""
    low, high = sorted(axis.get_view_interval())
    return low > 0 and high / low < 100


def _pages(names: list[str], run: FitRun) -> list[tuple[str, list[str]]]:
    """Split group names into figures of at most PER_FIGURE: [(suffix, names)]; when there is more than one, each
    starts with the run's references (base, oracle), so every config is drawn beside them."""
    if len(names) <= PER_FIGURE:
        return [("", names)]
    refs = [r for r in dict.fromkeys(run.references.values()) if r in names]
    others = [n for n in names if n not in refs]
    size = max(1, PER_FIGURE - len(refs))
    chunks = [refs + others[i:i + size] for i in range(0, len(others), size)]
    return [("" if i == 0 else f"_{i + 1}", chunk) for i, chunk in enumerate(chunks)]


def _style_legend(ax: plt.Axes, fit_label: str, loc: str = "lower right", within_label: str | None = None) -> None:
    """A second legend explaining line styles (dotted: the fit over the samples drawn, when shown)."""
    handles = [Line2D([], [], color="0.3", lw=2, label="empirical"),
               *([Line2D([], [], color="0.3", lw=1.5, ls=":", label=within_label)] if within_label else []),
               Line2D([], [], color="0.3", lw=1.5, ls="--", label=fit_label)]
    ax.add_artist(ax.legend(handles=handles, loc=loc, fontsize=8, frameon=False))


def _outside_legend(ax: plt.Axes, title: str) -> None:
    """The group legend to the right of the axes, clear of the curves."""
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, title=title, title_fontsize=8, frameon=False)


def _legend_title(run: FitRun) -> str:
    """What the curves are: a run's configs, or a counts file's groups."""
    return "config" if "run_dir" in run.source else "group"


def coverage_vs_k(run: FitRun, out_dir: Path) -> list[Path]:
    """Coverage vs samples per problem (log x): empirical curve with CI, default fit extended to 100× n."""
    paths = []
    for suffix, names in _pages(list(run.groups), run):
        fig, ax = plt.subplots(figsize=(9, 4.8), layout="constrained")
        for i, name in enumerate(names):
            g, col = run.groups[name], COLORS[i % 10]
            lo, hi = g.interval(g.ks, g.cov_boot)  # the CIs fit.json gives (Wilson where coverage is a share)
            ax.plot(g.ks, g.cov, color=col, lw=2, label=name)
            ax.fill_between(g.ks, lo, hi, color=col, alpha=0.15, lw=0)
            kk = np.geomspace(1, EXTEND * g.n.max(), 200)
            method, pt, _ = g.model_coverage(kk)
            if np.all(np.isfinite(pt)):
                within = kk <= g.n_min  # the fit itself over the samples drawn ...
                ax.plot(kk[within], pt[within], color=col, lw=1.3, ls=":")
                beyond = np.concatenate([[float(g.n_min)], kk[~within]])  # ... then the anchored extrapolation,
                ext, ext_boot, _, _ = g.curve(beyond)  # from the empirical endpoint on (as the predictions use it)
                ax.plot(beyond, ext, color=col, lw=1.3, ls="--")
                blo, bhi = g.interval(beyond, ext_boot)  # also where the fit gave no replicates (saturated)
                ax.fill_between(beyond, blo, bhi, color=col, alpha=0.07, lw=0)
        _log(ax, "x")
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("samples per problem k (log scale)")
        ax.set_ylabel("coverage (fraction of problems solved)")
        ax.set_title(f"Coverage vs samples; {run.options.estimator} fit, anchored and extrapolated to {EXTEND:g}× n")
        ax.grid(True, which="both", alpha=0.25)
        _style_legend(ax, f"fit, anchored ({run.options.estimator})", within_label="fit over the samples")
        _outside_legend(ax, _legend_title(run))
        paths += _save(fig, out_dir, f"coverage_vs_k{suffix}")
    return paths


def coverage_vs_compute(run: FitRun, out_dir: Path) -> list[Path]:
    """Coverage vs compute per problem for every config: solid empirical, dashed extrapolated."""
    if not run.curves:
        return []
    paths = []
    for suffix, names in _pages(list(run.curves), run):
        fig, ax = plt.subplots(figsize=(9, 4.8), layout="constrained")
        x_max = max(run.curves[n].cost * EXTEND * run.groups[n].n.max() for n in names)
        for i, name in enumerate(names):
            cc, col = run.curves[name], COLORS[i % 10]
            x = cc.budgets
            keep = (x > 0) & (x <= x_max)
            emp = keep & (cc.ks <= cc.k_empirical)
            ext = keep & (cc.ks >= cc.k_empirical)
            lo, hi = run.groups[name].interval(cc.ks, cc.boot)
            ax.plot(x[emp], cc.point[emp], color=col, lw=2, label=name)
            ax.plot(x[ext], cc.point[ext], color=col, lw=1.3, ls="--")
            ax.fill_between(x[emp], lo[emp], hi[emp], color=col, alpha=0.12, lw=0)
            ax.fill_between(x[ext], lo[ext], hi[ext], color=col, alpha=0.05, lw=0)
        _log(ax, "x", fmt=_sci)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel(f"compute per problem ({run.cost_unit}, log scale)")
        ax.set_ylabel("coverage (fraction of problems solved)")
        ax.set_title("Coverage vs compute per problem (dashed: extrapolated)")
        ax.grid(True, which="both", alpha=0.25)
        _style_legend(ax, "extrapolated")
        _outside_legend(ax, _legend_title(run))
        paths += _save(fig, out_dir, f"coverage_vs_compute{suffix}")
    return paths


def neglog_coverage(run: FitRun, out_dir: Path) -> list[Path]:
    """−log coverage vs k on log-log axes: empirical points, power-law line (solid) and beta-binomial (dashed)."""
    paths = []
    for suffix, names in _pages(list(run.groups), run):
        fig, ax = plt.subplots(figsize=(9, 4.8), layout="constrained")
        drawn, lows = False, []
        for i, name in enumerate(names):
            g, col = run.groups[name], COLORS[i % 10]
            sel = np.searchsorted(g.ks, g.fit_ks)
            y = g.cov[sel]
            ok = (y > 0) & (y < 1)
            if not ok.any():
                continue
            drawn = True
            ax.plot(g.fit_ks[ok], -np.log(y[ok]), "o", ms=3.5, color=col, label=name)
            lows.append(float(np.min(-np.log(y[ok]))))
            kk = np.geomspace(1, EXTEND * g.n.max(), 200)
            pl = g.power_law()
            if pl.law.status == "ok":
                line = -np.log(pl.coverage(kk))
                ax.plot(kk, line, color=col, lw=1.2)
                lows += [float(np.min(line[line > 0]))] if np.any(line > 0) else []
            bb = g.beta.coverage(kk)
            if np.all((bb > 0) & (bb < 1)):
                ax.plot(kk, -np.log(bb), color=col, lw=1.2, ls="--")
        _log(ax, "x", "y")
        if lows:  # a beta-binomial at its bound (no overdispersion) plunges toward 0: do not let it set the scale
            ax.set_ylim(bottom=min(lows) / 3)
        ax.set_xlabel("samples per problem k (log scale)")
        ax.set_ylabel("−log coverage (log scale)")
        ax.set_title("−log coverage vs k: a power law is a straight line")
        ax.grid(True, which="both", alpha=0.25)
        handles = [Line2D([], [], color="0.3", marker="o", ls="", ms=4, label="empirical"),
                   Line2D([], [], color="0.3", lw=1.2, label=f"power law ({run.options.power_law_method})"),
                   Line2D([], [], color="0.3", lw=1.2, ls="--", label="beta-binomial")]
        ax.add_artist(ax.legend(handles=handles, loc="lower left", fontsize=8, frameon=False))
        if drawn:
            _outside_legend(ax, _legend_title(run))
        paths += _save(fig, out_dir, f"neglog_coverage{suffix}")
    return paths


def maj_vs_coverage(run: FitRun, out_dir: Path) -> list[Path]:
    """maj@k next to coverage@k (empirical): majority vote plateaus while coverage keeps climbing."""
    if run.maj is None or run.maj.empty:
        return []
    paths = []
    for suffix, names in _pages(list(run.groups), run):
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.5), sharey=True, layout="constrained")
        for i, name in enumerate(names):
            g, col = run.groups[name], COLORS[i % 10]
            a1.plot(g.ks, g.cov, color=col, lw=2, label=name)
            m = run.maj[run.maj["config"] == name]
            a2.plot(m["k"], m["maj"], color=col, lw=2, label=name)
            if {"lo", "hi"} <= set(m.columns):
                a2.fill_between(m["k"], m["lo"], m["hi"], color=col, alpha=0.12, lw=0)
        for ax, title in ((a1, "coverage@k (any sample correct)"), (a2, "maj@k (majority vote correct)")):
            _log(ax, "x")
            ax.set_ylim(0, 1.02)
            ax.set_xlabel("samples per problem k (log scale)")
            ax.set_title(title)
            ax.grid(True, which="both", alpha=0.25)
        a1.set_ylabel("fraction of problems")
        fig.legend(*a1.get_legend_handles_labels(), loc="outside right center", fontsize=8, title=_legend_title(run),
                   title_fontsize=8, frameon=False)
        paths += _save(fig, out_dir, f"maj_vs_coverage{suffix}")
    return paths


def _heat(ax: plt.Axes, table: pd.DataFrame, fmt: str, title: str, cmap: str, label: str, norm=None,
          marks: pd.DataFrame | None = None, ticks: list[float] | None = None,
          limits: tuple[float, float] = (-np.inf, np.inf)) -> None:
    """One annotated heatmap of a (c × k) table (`limits`: the values the quantity can take, e.g. [0, 1])."""
    if table.empty:  # e.g. no multiplier exists (no coverage reaches the target)
        ax.set_axis_off()
        ax.set_title(title, fontsize=10)
        ax.text(0.5, 0.5, "n/a", ha="center", va="center", transform=ax.transAxes)
        return
    vals = table.to_numpy(dtype=float)
    finite = vals[np.isfinite(vals)]
    if norm is None and (finite.size == 0 or finite.min() == finite.max()):  # one value (or none): a scale around it
        centre = float(finite[0]) if finite.size else max(0.0, limits[0])
        norm = Normalize(vmin=max(centre - 0.5, limits[0]), vmax=min(centre + 0.5, limits[1]))
    shown = vals
    if isinstance(norm, LogNorm):  # 0 and ∞ (a curve that never reaches the coverage) at the ends of the scale
        shown = np.where(vals == 0, norm.vmin, np.where(np.isposinf(vals), norm.vmax, vals))
    im = ax.imshow(np.ma.masked_invalid(shown), cmap=cmap, norm=norm, aspect="auto", origin="lower")
    ax.set_xticks(range(table.shape[1]), [f"{v:g}" for v in table.columns])
    ax.set_yticks(range(table.shape[0]), [f"{v:g}" for v in table.index])
    ax.set_xlabel("k (oracle tokens per intervention)")
    ax.set_ylabel("c (interventions)")
    ax.set_title(title, fontsize=10)
    for (r, c), v in np.ndenumerate(vals):
        mark = "†" if marks is not None and bool(marks.iat[r, c]) else ""
        text = "∞" if np.isposinf(v) else "n/a" if not np.isfinite(v) else "0" if v == 0 and isinstance(norm, LogNorm) else format(v, fmt)
        ax.text(c, r, text if text == "n/a" else text + mark, ha="center", va="center",
                fontsize=8, color="black", bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="none", alpha=0.6))
    bar = plt.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label=label)
    if ticks is not None:
        bar.set_ticks(ticks, labels=[f"{t:g}" for t in ticks])
        bar.minorticks_off()


def ck_heatmaps(run: FitRun, out_dir: Path) -> list[Path]:
    """pass@1 and compute multiplier vs base over the random(c, k) grid: one row per variant of the grid
    (e.g. sampled and greedy oracle), never averaging variants into one cell."""
    from fit.rundir import random_grid

    if run.manifest is None:
        return []
    grid = random_grid(run.manifest)
    grid = grid[grid["config"].isin(list(run.groups))]
    if grid.empty:
        return []
    grid = grid.assign(pass1=[float((run.groups[c].c / run.groups[c].n).mean()) for c in grid["config"]])
    comp = (run.comparison or {}).get("configs", {})
    target = str(run.comparison["targets"][0]) if "base" in run.references and comp else None
    if target is not None:
        cells = [comp[cid]["vs_base"]["targets"][target] for cid in grid["config"]]
        grid = grid.assign(mult=[np.inf if cell.get("infinite") else np.nan if cell["multiplier"] is None
                                 else cell["multiplier"] for cell in cells],
                           extra=[cell["extrapolated"] for cell in cells])
    variants = list(dict.fromkeys(grid["variant"]))
    ncols = 2 if target is not None else 1
    fig, axes = plt.subplots(len(variants), ncols, figsize=(5.8 * ncols, 4.4 * len(variants)), layout="constrained",
                             squeeze=False)
    for row, variant in zip(axes, variants):
        part = grid[grid["variant"] == variant]
        label = f" ({variant})" if variant else ""
        p1 = part.pivot_table(index="c", columns="k", values="pass1", aggfunc="mean")
        _heat(row[0], p1, ".3f", f"pass@1 of random(c, k){label}", "viridis", "pass@1", limits=(0.0, 1.0))
        if target is not None:
            m = part.pivot_table(index="c", columns="k", values="mult", aggfunc="mean", dropna=False)  # n/a cells stay
            ex = part.pivot_table(index="c", columns="k", values="extra", aggfunc="max").reindex_like(m).fillna(False)
            values = m.to_numpy(dtype=float)
            finite = values[np.isfinite(values) & (values > 0)]  # 0 and ∞ are drawn at the ends of the scale
            span = int(np.ceil(max(1.0, float(np.max(np.abs(np.log2(finite)))) if finite.size else 1.0)))
            norm = LogNorm(vmin=2.0 ** -span, vmax=2.0 ** span)  # symmetric around 1 (white)
            _heat(row[1], m, ".2f", f"compute multiplier vs base at coverage {pct(target)}{label}\n"
                  f"(>1: guided needs less compute; † extrapolated)", "RdBu", "multiplier (×, log scale)", norm, ex,
                  ticks=[2.0 ** j for j in range(-span, span + 1)])
    return _save(fig, out_dir, "ck_heatmap")


def coverage_by_level(run: FitRun, out_dir: Path) -> list[Path]:
    """pass@1 and coverage@n per difficulty level for each group."""
    if "level" not in run.counts.columns or run.counts["level"].nunique(dropna=True) < 2:
        return []
    problems = run.counts.dropna(subset=["level"]).groupby("level")["problem"].nunique()
    position = _level_positions(list(problems.index))
    problems = problems.iloc[np.argsort([position[level] for level in problems.index], kind="stable")]
    paths = []
    for suffix, names in _pages(list(run.groups), run):
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.3), sharey=True, layout="constrained")
        for i, name in enumerate(names):
            f = run.groups[name].frame.dropna(subset=["level"])
            by = f.assign(p1=f["correct"] / f["n"], solved=(f["correct"] > 0).astype(float)).groupby("level")
            agg = by[["p1", "solved"]].mean()
            agg = agg.iloc[np.argsort([position[level] for level in agg.index], kind="stable")]
            x = [position[level] for level in agg.index]
            a1.plot(x, agg["p1"], "o-", color=COLORS[i % 10], label=name)
            a2.plot(x, agg["solved"], "o-", color=COLORS[i % 10], label=name)
        for ax, title in ((a1, "pass@1 by level"), (a2, "coverage@n by level")):
            ax.set_xticks([position[level] for level in problems.index],
                          [f"{level_label(level)}\n({count} problem{'s' * (count != 1)})" for level, count in problems.items()],
                          fontsize=8)
            ax.set_xlabel("difficulty level")
            ax.set_ylim(0, 1.02)
            ax.set_title(title)
            ax.grid(True, alpha=0.25)
        a1.set_ylabel("mean over the level's problems")
        _outside_legend(a2, _legend_title(run))
        paths += _save(fig, out_dir, f"coverage_by_level{suffix}")
    return paths


def _level_positions(levels: list[Any]) -> dict[Any, float]:
    """x position of each level: its value when levels are numbers, else its rank in natural order ("Level 2" before "Level 10")."""
    if all(isinstance(level, (int, float, np.number)) for level in levels):
        return {level: float(level) for level in levels}
    natural = sorted(levels, key=lambda level: [(0, int(part), "") if part.isdigit() else (1, 0, part)
                                                for part in re.split(r"(\d+)", str(level))])
    return {level: float(i) for i, level in enumerate(natural)}


def cost_breakdown(run: FitRun, out_dir: Path) -> list[Path]:
    """Stacked bars: the share of each model × phase in the cost per sample of every config."""
    shares = {name: run.cost_shares(name) for name in run.groups}
    shares = {k: v for k, v in shares.items() if v is not None}
    if not shares:
        return []
    names = list(shares)
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(names) + 1.8), layout="constrained")
    left = np.zeros(len(names))
    cmap = plt.get_cmap("Paired")
    for j, col in enumerate(TOKEN_COLUMNS):
        vals = np.array([shares[n][col] for n in names])
        ax.barh(names, vals, left=left, color=cmap(j * 2 + 1), label=COMPONENT_LABELS[col])
        left += vals
    for i, n in enumerate(names):
        ax.text(1.01, i, f"{run.curves[n].cost:.3g}", va="center", fontsize=8)
    ax.set_xlim(0, 1.18)
    ax.set_xticks(np.linspace(0, 1, 6), [f"{x:.0%}" for x in np.linspace(0, 1, 6)])
    ax.set_xlabel(f"share of cost per sample ({run.cost_model}); right: {run.cost_unit} per sample")
    ax.set_title("Where the compute goes: model × phase")
    ax.invert_yaxis()
    fig.legend(loc="outside lower center", ncol=4, fontsize=8, frameon=False)
    return _save(fig, out_dir, "cost_breakdown")


def all_plots(run: FitRun, out_dir: str | Path, progress: ProgressSink | None = None) -> dict[str, list[Path]]:
    """Every plot the run supports: {name: [png, svg, ...]}. Plot files of an earlier call in the same
    folder that this one does not write (fewer groups, pages or plots now) are removed: only files
    named like this module's plots are touched. `progress` counts the kinds of plot drawn."""
    out_dir = Path(out_dir)
    sink = progress or NullProgress()
    makers = {"coverage_vs_k": coverage_vs_k, "coverage_vs_compute": coverage_vs_compute,
              "neglog_coverage": neglog_coverage, "maj_vs_coverage": maj_vs_coverage,
              "ck_heatmap": ck_heatmaps, "coverage_by_level": coverage_by_level,
              "cost_breakdown": cost_breakdown}
    out = {}
    sink.phase("plots", len(makers))
    with plt.rc_context({"text.parse_math": False}):  # group names are text: "$5_to_$10" is not mathtext
        for name, make in makers.items():
            paths = make(run, out_dir)
            if paths:
                out[name] = paths
            sink.advance("plots")
    written = {p.resolve() for paths in out.values() for p in paths}
    ours = re.compile(rf"^({'|'.join(makers)})(_\d+)?\.(png|svg)$")  # the names `_save` writes (pages: _2, _3, ...)
    for stale in (p for p in out_dir.glob("*") if ours.match(p.name) and p.resolve() not in written):
        stale.unlink()
    return out
