"""`study fit` and `study report`: the counts-file JSON contract, real Pythia counts, run dirs, clear errors."""
from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import typer
from click.testing import Result
from typer.testing import CliRunner

from fit.cli import register
from verify.synthetic import ProblemSpec, write_run_dir

FIXTURES = Path(__file__).parent / "fixtures"
PYTHIA = FIXTURES / "pythia_gsm8k_counts.csv"
PREDICT_KEYS = {"coverage", "low", "high", "method", "extrapolated"}
METHODS = {"empirical", "ensemble", "beta_binomial", "power_law", "zero_successes_bound", "unavailable"}


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    """A Typer app with just the fit commands (the main app registers the same functions)."""
    app = typer.Typer(pretty_exceptions_enable=False)
    register(app)
    app.command("noop", hidden=True)(lambda: None)  # keep Typer in multi-command mode
    return app


def _invoke(app: typer.Typer, *args: object) -> Result:
    """Run the CLI in process; return the result."""
    return CliRunner().invoke(app, [str(a) for a in args])


def test_main_cli_lists_fit_and_report() -> None:
    """The project's `study` app exposes both commands."""
    from experiments.cli import app as main_app

    out = CliRunner().invoke(main_app, ["--help"]).output
    assert re.search(r"\bfit\b", out) and re.search(r"\breport\b", out)


def test_counts_json_contract(app: typer.Typer, tmp_path: Path) -> None:
    """--counts --by --predict --json writes groups → power_law {a, b}, beta_binomial, predict {k: {...}}."""
    slice_ = pd.read_csv(PYTHIA)
    slice_ = slice_[slice_["model"].isin(["Pythia_12B_300B", "Pythia_160M_6B", "Pythia_410M_64M"])]
    path = tmp_path / "slice.csv"
    slice_.to_csv(path, index=False)
    out = tmp_path / "out.json"
    res = _invoke(app, "fit", "--counts", path, "--by", "model", "--predict", "10000,100000", "--json", out, "--boot", 50)
    assert res.exit_code == 0, res.output
    doc = json.loads(out.read_text())
    assert set(doc["groups"]) == {"Pythia_12B_300B", "Pythia_160M_6B", "Pythia_410M_64M"}
    for name, g in doc["groups"].items():
        assert {"a", "b", "a_ci", "b_ci", "method", "status"} <= set(g["power_law"])
        assert {"family", "status"} <= set(g["beta_binomial"])
        assert set(g["predict"]) == {"10000", "100000"}
        for p in g["predict"].values():
            assert set(p) == PREDICT_KEYS and p["method"] in METHODS
    ok = doc["groups"]["Pythia_12B_300B"]
    assert ok["power_law"]["a"] < 0 and ok["power_law"]["b"] < 0
    assert {"alpha", "beta", "alpha_ci", "power_law_b"} <= set(ok["beta_binomial"])
    p = ok["predict"]["10000"]
    assert p["method"] == "ensemble" and p["extrapolated"] and p["low"] <= p["coverage"] <= p["high"]
    zero = doc["groups"]["Pythia_410M_64M"]["predict"]["10000"]  # a model that never solved a problem
    assert zero["method"] == "zero_successes_bound" and zero["coverage"] == 0.0
    # the table's flops_per_sample column is not taken as a cost unasked, but the note points to it
    assert any("'flops_per_sample' is the cost per sample: --cost-column" in n for n in doc["notes"])


def test_real_pythia_counts_fit_without_errors(app: typer.Typer, tmp_path: Path) -> None:
    """All 81 models of the real counts fit; strict JSON; every prediction has a value or says why not."""
    out = tmp_path / "pythia.json"
    res = _invoke(app, "fit", "--counts", PYTHIA, "--by", "model", "--cost-column", "flops_per_sample",
                  "--boot", 30, "--json", out, "--no-plots")
    assert res.exit_code == 0, res.output
    doc = json.loads(out.read_text())  # json.loads rejects nothing, so re-dump strictly:
    json.dumps(doc, allow_nan=False)
    assert len(doc["groups"]) == 81
    for g in doc["groups"].values():
        for p in g["predict"].values():
            assert p["method"] in METHODS
            assert p["coverage"] is not None or p["method"] == "unavailable"
    statuses = {g["beta_binomial"]["status"] for g in doc["groups"].values()}
    assert "ok" in statuses and statuses <= {"ok", "no_successes"}
    from fit.report import _fit_rows

    rows = {row["config"]: row["status"] for row in _fit_rows(doc)}  # the report says which fits ran to a bound
    assert "parameter bound" in rows["Pythia_160M_2M"] and "parameter bound" not in rows["Pythia_12B_300B"]


def test_counts_report_with_references(app: typer.Typer, tmp_path: Path) -> None:
    """A counts file with a cost column and --base/--oracle gives multipliers in the report."""
    rng = np.random.default_rng(0)
    frames = [pd.DataFrame({"config": name, "problem": np.arange(80), "n": 50,
                            "correct": rng.binomial(50, rng.beta(a, 3, 80)), "cost_per_sample": cost})
              for name, a, cost in (("b", 0.3, 1.0), ("o", 1.0, 8.0), ("g", 0.5, 2.0))]
    path = tmp_path / "c.parquet"
    pd.concat(frames).to_parquet(path)
    res = _invoke(app, "report", "--counts", path, "--base", "b", "--oracle", "o", "--boot", 40, "--out", tmp_path / "rep")
    assert res.exit_code == 0, res.output
    text = (tmp_path / "rep" / "report.md").read_text()
    assert "Compute multiplier vs pure base sampling (`b`)" in text and "pure oracle" in text
    # budget columns say how many reference samples they buy (b costs 1 per sample, o 8)
    assert "| @1 (1 `b` sample) | @10 (10 `b` samples) |" in text and "@10 (1.25 `o` samples)" in text
    for link in re.findall(r"\]\(([^)]+\.png)\)", text):
        assert (tmp_path / "rep" / link).exists()
    doc = json.loads((tmp_path / "rep" / "fit.json").read_text())
    assert doc["comparison"]["configs"]["b"]["vs_base"]["targets"]["0.5"]["multiplier"] == 1.0


def test_a_counts_report_goes_beside_its_file_and_out_must_be_a_folder(app: typer.Typer, tmp_path: Path) -> None:
    """Without --out, a counts file's report is STEM_report beside it (two runs' counts.csv never share one folder);
    an --out that is a file is refused before any fitting, the file untouched."""
    (tmp_path / "a").mkdir()
    counts = tmp_path / "a" / "counts.csv"
    pd.DataFrame({"problem": np.arange(12), "n": 10, "correct": np.arange(12) % 5}).to_csv(counts, index=False)
    res = _invoke(app, "report", "--counts", counts, "--boot", 20)
    assert res.exit_code == 0, res.output
    assert (tmp_path / "a" / "counts_report" / "report.md").is_file() and not Path("counts_report").exists()
    before = counts.read_bytes()
    res = _invoke(app, "report", "--counts", counts, "--out", counts, "--boot", 20)
    assert res.exit_code == 2 and f"--out {counts} is a file: give a folder" in res.output, res.output
    assert counts.read_bytes() == before


def test_levels_written_as_text_are_plotted_in_natural_order(app: typer.Typer, tmp_path: Path) -> None:
    """A counts file whose levels are text ("Level 2") gets its by-level plot, levels in natural order."""
    import matplotlib.pyplot as plt

    from fit import plots

    rng = np.random.default_rng(0)
    levels = np.array(["Level 10", "Level 2", "Level 1"])[np.arange(30) % 3]
    frame = pd.DataFrame({"config": "b", "problem": np.arange(30), "n": 20, "correct": rng.binomial(20, 0.3, 30),
                          "cost_per_sample": 1.0, "level": levels})
    path = tmp_path / "c.csv"
    frame.to_csv(path, index=False)
    shown: list[list[str]] = []
    real_save = plots._save
    plots._save = lambda fig, *a: shown.append([t.get_text() for t in fig.axes[0].get_xticklabels()]) or real_save(fig, *a)
    try:
        res = _invoke(app, "report", "--counts", path, "--boot", 20, "--out", tmp_path / "rep")
    finally:
        plots._save = real_save
        plt.close("all")
    assert res.exit_code == 0, res.output
    assert (tmp_path / "rep" / "plots" / "coverage_by_level.png").exists()
    assert ["Level 1\n(10 problems)", "Level 2\n(10 problems)", "Level 10\n(10 problems)"] in shown


def test_a_cost_model_asked_for_replaces_the_cost_column(app: typer.Typer, tmp_path: Path) -> None:
    """--cost/--n-params cost the token sums even where the table has a cost_per_sample column; asked
    for without what it needs, or together with --cost-column, it is an error, not a silent fallback."""
    rng = np.random.default_rng(1)
    rows = [pd.DataFrame({"config": name, "problem": np.arange(30), "n": 20, "correct": rng.binomial(20, p, 30),
                          "base_decode": 20 * base, "base_prefill": 0, "oracle_decode": 20 * oracle,
                          "oracle_prefill": 0, "cost_per_sample": 123.0})
            for name, p, base, oracle in (("base", 0.2, 100, 0), ("guided", 0.4, 90, 10))]
    path = tmp_path / "tok.csv"
    pd.concat(rows).to_csv(path, index=False)
    out = tmp_path / "tok.json"
    res = _invoke(app, "fit", "--counts", path, "--cost", "decode", "--n-params", "1e9,8e9", "--base", "base",
                  "--json", out, "--no-plots", "--boot", 20)
    assert res.exit_code == 0, res.output
    doc = json.loads(out.read_text())
    assert doc["cost_model"] == "decode"
    assert doc["groups"]["base"]["cost_per_sample"] == pytest.approx(2e9 * 100)
    assert doc["groups"]["guided"]["cost_per_sample"] == pytest.approx(2e9 * 90 + 2 * 8e9 * 10)
    res = _invoke(app, "fit", "--counts", path, "--json", out, "--no-plots", "--boot", 20)  # nothing asked: the column
    assert res.exit_code == 0, res.output
    assert json.loads(out.read_text())["groups"]["guided"]["cost_per_sample"] == 123.0
    res = _invoke(app, "fit", "--counts", path, "--cost", "decode", "--no-plots")
    assert res.exit_code == 2 and "--n-params" in res.output
    res = _invoke(app, "fit", "--counts", path, "--cost-column", "cost_per_sample", "--n-params", "1e9,8e9", "--no-plots")
    assert res.exit_code == 2 and "cannot be combined" in res.output
    res = _invoke(app, "fit", "--counts", path, "--prices", "0.1,0.2,1,2", "--json", out, "--no-plots", "--boot", 20)
    assert res.exit_code == 0, res.output  # prices alone ask for the price model
    doc = json.loads(out.read_text())
    assert doc["cost_model"] == "price"
    assert doc["groups"]["guided"]["cost_per_sample"] == pytest.approx((90 * 0.2 + 10 * 2) / 1e6)
    assert any("group 'base' is taken as the pure-base reference" in note for note in doc["notes"])
    assert "vs_base" in doc["comparison"]["configs"]["guided"]
    res = _invoke(app, "fit", "--counts", path, "--prices", "0,0,1,1", "--no-plots")  # the base costs nothing
    assert res.exit_code == 2 and "a cost of 0 per sample (group(s) base)" in res.output, res.output


def test_report_headers_keep_close_targets_apart_and_undefined_aucs_say_why(app: typer.Typer, tmp_path: Path) -> None:
    """Targets 99.5% and 99.9% get their own columns (both printed as 100% before, one lost); an AUC
    without earlier tokens is a dash with the reason, not 'nan [nan, nan]'."""
    from fit.report import auc_cell

    rng = np.random.default_rng(0)
    frames = [pd.DataFrame({"config": name, "problem": np.arange(60), "n": 50,
                            "correct": rng.binomial(50, rng.beta(a, 2, 60)), "cost_per_sample": cost})
              for name, a, cost in (("b", 0.4, 1.0), ("g", 0.8, 2.0))]
    path = tmp_path / "c.csv"
    pd.concat(frames).to_csv(path, index=False)
    res = _invoke(app, "report", "--counts", path, "--base", "b", "--targets", "0.5,0.995,0.999", "--boot", 20,
                  "--out", tmp_path / "rep")
    assert res.exit_code == 0, res.output
    text = (tmp_path / "rep" / "report.md").read_text()
    assert "@99.5% coverage" in text and "@99.9% coverage" in text and "@100% coverage" not in text
    assert auc_cell(float("nan"), float("nan"), float("nan")).startswith("— (needs both")
    from fit.report import _multiplier_tables

    cell = {"multiplier": 1.0, "low": 1.0, "high": 1.0, "extrapolated": False}
    block = {"targets": {}, "budgets": {"1e+08": cell, "1.004e+08": cell}, "crossovers": []}
    doc = {"comparison": {"references": {"base": "b"}, "configs": {"b": {"vs_base": block}}}}
    table = "".join(_multiplier_tables(doc))
    assert "@1e+08 |" in table and "@1.004e+08 |" in table  # 3 digits would print both as 1e+08
    assert auc_cell(0.98, 0.97, 0.99) == "0.980 [0.970, 0.990]"
    from fit.report import fmt_pred

    bound = {"coverage": 0.0, "low": 0.0, "high": 0.0123, "method": "zero_successes_bound", "extrapolated": True}
    assert fmt_pred(bound) == "0 (≤ 0.012, no successes)†"  # a bound, not a bootstrap CI
    from fit.report import fmt_ci, prob

    assert fmt_ci(7.9e-4, 3.5e-4, 0.0012, prob) == "7.9e-04 [3.5e-04, 1.2e-03]"  # not '7.9e-04 [3.5e-04, 0.001]'
    assert fmt_ci(0.25, 0.2, 0.3, prob) == "0.250 [0.200, 0.300]"


def test_warnings_are_listed_once_and_names_with_bars_keep_the_tables_whole(app: typer.Typer, tmp_path: Path) -> None:
    """A warning shared by many groups is printed once with the groups; a '|' in a name is escaped in Markdown, and
    so is a '$' (two of them are GitHub math in Markdown, and matplotlib mathtext that failed every plot)."""
    rng = np.random.default_rng(0)
    frames = [pd.DataFrame({"config": f"c|{i}" if i else "$5_to_$10", "problem": np.arange(4), "n": 30,
                            "correct": rng.binomial(30, 0.3, 4), "cost_per_sample": 1.0}) for i in range(5)]
    path = tmp_path / "few.csv"
    pd.concat(frames).to_csv(path, index=False)
    res = _invoke(app, "report", "--counts", path, "--boot", 20, "--out", tmp_path / "rep")
    assert res.exit_code == 0, res.output
    assert res.output.count("only 4 problems") == 1 and "and 2 more groups" in res.output
    text = (tmp_path / "rep" / "report.md").read_text()
    assert text.count("only 4 problems") == 1
    assert "| c\\|1 |" in text and "| c|1 |" not in text
    assert "| \\$5_to_\\$10 |" in text and (tmp_path / "rep" / "plots" / "coverage_vs_k.png").is_file()


def test_plots_of_an_earlier_call_that_no_longer_apply_are_removed(app: typer.Typer, tmp_path: Path) -> None:
    """Re-plotting into a folder leaves no stale plot from the last call; other files are untouched."""
    rng = np.random.default_rng(0)
    frame = pd.concat([pd.DataFrame({"config": name, "problem": np.arange(20), "n": 30,
                                     "correct": rng.binomial(30, p, 20), "cost_per_sample": cost})
                       for name, p, cost in (("a", 0.2, 1.0), ("b", 0.4, 2.0))])
    with_cost, without = tmp_path / "with.csv", tmp_path / "without.csv"
    frame.to_csv(with_cost, index=False)
    frame.drop(columns="cost_per_sample").to_csv(without, index=False)
    plots = tmp_path / "plots"
    assert _invoke(app, "fit", "--counts", with_cost, "--plots", plots, "--boot", 20).exit_code == 0
    assert (plots / "coverage_vs_compute.png").exists()
    for mine in ("mine.png", "coverage_vs_k_final.png", "cost_breakdown_v1.svg"):  # not names this module writes
        (plots / mine).write_text("a user's file")
    (plots / "coverage_vs_k_7.png").write_text("a stale page")
    assert _invoke(app, "fit", "--counts", without, "--plots", plots, "--boot", 20).exit_code == 0
    assert not (plots / "coverage_vs_compute.png").exists() and (plots / "coverage_vs_k.png").exists()
    assert all((plots / mine).read_text() == "a user's file"
               for mine in ("mine.png", "coverage_vs_k_final.png", "cost_breakdown_v1.svg"))
    assert not (plots / "coverage_vs_k_7.png").exists()


def test_plot_pages_each_show_the_references() -> None:
    """More groups than fit one figure: every page starts with base and oracle, and every group is drawn once more."""
    from types import SimpleNamespace

    from fit.plots import PER_FIGURE, _pages

    names = [f"random-c{i}" for i in range(12)] + ["oracle"] + [f"entropy-{i}" for i in range(5)] + ["base"]
    run = SimpleNamespace(references={"base": "base", "oracle": "oracle"})
    pages = _pages(names, run)  # type: ignore[arg-type]
    assert len(pages) == 3 and [suffix for suffix, _ in pages] == ["", "_2", "_3"]
    assert all(page[:2] == ["base", "oracle"] and len(page) <= PER_FIGURE for _, page in pages)
    others = [name for _, page in pages for name in page[2:]]
    assert sorted(others) == sorted(n for n in names if n not in ("base", "oracle"))
    assert _pages(names[:PER_FIGURE], run) == [("", names[:PER_FIGURE])]  # one page: as given


def test_single_problem_comparison_has_no_confidence_intervals(app: typer.Typer, tmp_path: Path) -> None:
    """Resampling one problem changes nothing: the comparison reports no CIs (as pass@1 does), not [x, x]."""
    path = tmp_path / "one.csv"
    pd.DataFrame({"config": ["base", "guided"], "problem": [1, 1], "n": [50, 50], "correct": [5, 20],
                  "cost_per_sample": [1.0, 3.0]}).to_csv(path, index=False)
    out = tmp_path / "one.json"
    res = _invoke(app, "fit", "--counts", path, "--base", "base", "--json", out, "--no-plots", "--boot", 20)
    assert res.exit_code == 0, res.output
    doc = json.loads(out.read_text())
    assert doc["groups"]["guided"]["pass@1"]["low"] is None
    entry = doc["comparison"]["configs"]["guided"]
    assert entry["cost_per_sample"]["low"] is None and entry["cost_per_sample"]["high"] is None
    target = entry["vs_base"]["targets"]["0.5"]
    assert target["multiplier"] is not None and target["low"] is None and target["high"] is None


@pytest.mark.parametrize("args,needle", [
    (["--counts", "missing.csv"], "no such file"),
    (["--counts", "{bad}"], "column 'correct', row 2 (line 3): correct must be <= n"),
    (["--counts", "{good}", "--by", "model"], "grouping column 'model' not found"),
    (["--counts", "{good}", "--predict", "ten"], "--predict: expected comma-separated numbers"),
    (["--counts", "{good}", "--estimator", "magic"], "unknown estimator 'magic'"),
    (["--counts", "{good}", "--base", "nope"], "reference group(s) not found"),
    (["{good}", "--counts", "{good}"], "either RUN_DIR or --counts"),
    (["{dir}"], "is not a run directory (no _manifest.json)"),
    (["--counts", "{good}", "--json", "{good}"], "is the counts file being fitted"),
    (["--counts", "{good}", "--predict", "1.5"], "--predict: numbers of samples must be whole"),
    (["--counts", "{good}", "--predict", ""], "--predict: expected comma-separated numbers of samples, got ''"),
    (["--counts", "{good}", "--boot", "0"], "--boot: expected at least 2"),
    (["--counts", "{good}", "--base", "all", "--oracle", "all"], "--base and --oracle name the same group"),
    (["--counts", "{good}", "--cost", "flops", "--prices", "1,1,1,1"], "--prices applies to --cost price"),
    (["--counts", "{good}", "--cost", "seconds", "--n-params", "1,2"], "--n-params applies to the flops and decode"),
    (["--counts", "{good}", "--cost", "decode"], "(missing: base_decode, base_prefill, oracle_decode, oracle_prefill)"),
    (["--counts", "{good}", "--n-params", "1,2", "--prices", "1,1,1,1"], "--prices and --n-params ask for different cost models"),
])
def test_bad_input_is_a_clear_error(app: typer.Typer, tmp_path: Path, args: list[str], needle: str) -> None:
    """Exit code 2, the reason on stderr, no traceback."""
    good = tmp_path / "good.csv"
    pd.DataFrame({"problem": [1, 2], "n": [4, 4], "correct": [1, 0], "cost_per_sample": [1.0, 1.0]}).to_csv(good, index=False)
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"problem": [1, 2], "n": [4, 4], "correct": [1, 9]}).to_csv(bad, index=False)
    args = [a.format(good=good, bad=bad, dir=tmp_path) for a in args]
    res = _invoke(app, "fit", *args)
    assert res.exit_code == 2
    assert needle in res.output and "Traceback" not in res.output


# ---- run directories (built with the verifier's synthetic run-dir writer) ----

CONFIGS = {"base": ("base", None, None, 0.15), "oracle": ("oracle", None, None, 0.5),
           "random_c1_k2": ("random", 1, 2, 0.2), "random_c1_k4": ("random", 1, 4, 0.25),
           "random_c2_k2": ("random", 2, 2, 0.25), "random_c2_k4": ("random", 2, 4, 0.3)}


def make_run_dir(root: Path, n: int = 16, seed: int = 0, configs: dict[str, tuple] = CONFIGS) -> Path:
    """A graded-on-demand run dir: 12 integer problems, six configs, token counts like a guided sampler."""
    rng = np.random.default_rng(seed)
    problems = [ProblemSpec(f"p{i}", str(i + 2), "", 1 + i % 3, "Arithmetic") for i in range(12)]
    rows = []
    for cid, (policy, c, k, p) in configs.items():
        for i, prob in enumerate(problems):
            p_i = min(0.95, p * (1 + i % 4) / 2)
            for j in range(n):
                u = rng.random()
                text = (f"so \\boxed{{{prob.answer}}}" if u < p_i else
                        f"\\boxed{{{int(prob.answer) + 1 + j % 2}}}" if u < 0.95 else "no answer here")
                guided = policy == "random"
                rows.append({"config_id": cid, "problem_id": prob.id, "sample_index": j, "text": text,
                             "base_decode": 0 if policy == "oracle" else 100,
                             "base_prefill": 0 if policy == "oracle" else 30,
                             "oracle_decode": 100 if policy == "oracle" else (c * k if guided else 0),
                             "oracle_prefill": 30 if policy == "oracle" else (c * 90 if guided else 0)})
    write_run_dir(root, problems, pd.DataFrame(rows))
    manifest = {"models": {"base": {"path": "b", "sha256": "0", "n_params": 310_000},
                           "oracle": {"path": "o", "sha256": "1", "n_params": 2_450_000}},
                "configs": {cid: {"policy": pol, "k": k, "c": c} for cid, (pol, c, k, _) in configs.items()},
                "n": n, "seed": seed}
    (root / "_manifest.json").write_text(json.dumps(manifest))
    return root


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One synthetic run dir shared by the run-dir tests."""
    return make_run_dir(tmp_path_factory.mktemp("runs") / "toy")


@pytest.mark.parametrize("never", ["random_c1_k2", "base"])
def test_configs_that_never_reach_the_target_are_drawn_in_the_heatmap(app: typer.Typer, tmp_path: Path, never: str) -> None:
    """A random config that never solves anything (multiplier 0 at every target) or a base that never does (∞ for
    every config): fit and report finish and draw the c×k heatmap, the cells at the ends of the scale."""
    import matplotlib.pyplot as plt

    from fit import plots

    configs = {**CONFIGS, never: (*CONFIGS[never][:3], 0.0)}
    run = make_run_dir(tmp_path / "run", configs=configs)
    drawn: list[str] = []
    real_save = plots._save

    def keep_cell_texts(fig, out_dir, name):
        if name == "ck_heatmap":
            drawn.extend(t.get_text() for t in fig.axes[1].texts)  # the multiplier panel (colour bars come after the panels)
        return real_save(fig, out_dir, name)

    plots._save = keep_cell_texts
    try:
        res = _invoke(app, "report", run, "--boot", 20)
    finally:
        plots._save = real_save
        plt.close("all")
    assert res.exit_code == 0, res.output
    assert any(t.startswith("0" if never == "random_c1_k2" else "∞") for t in drawn), drawn
    assert (run / "_fit" / "plots" / "ck_heatmap.png").exists() and (run / "_fit" / "report.md").exists()
    doc = json.loads((run / "_fit" / "fit.json").read_text())
    cell = doc["comparison"]["configs"]["random_c1_k2"]["vs_base"]["targets"]["0.5"]
    assert (cell["multiplier"] == 0.0) if never == "random_c1_k2" else cell["infinite"] is True


def test_fit_run_dir_writes_json_and_every_plot(app: typer.Typer, run_dir: Path) -> None:
    """Grades, fits, compares against base and oracle, and writes fit.json plus all seven plots."""
    res = _invoke(app, "fit", run_dir, "--boot", 60)
    assert res.exit_code == 0, res.output
    doc = json.loads((run_dir / "_fit" / "fit.json").read_text())
    assert set(doc["groups"]) == set(CONFIGS)
    assert doc["comparison"]["references"] == {"base": "base", "oracle": "oracle"}
    assert doc["comparison"]["configs"]["oracle"]["vs_oracle"]["targets"]["0.5"]["multiplier"] == 1.0
    shares = doc["groups"]["random_c2_k4"]["cost_shares"]
    assert shares["oracle_prefill"] > 0.8  # re-reading the base's tokens dominates the FLOPs
    plots = {p.stem for p in (run_dir / "_fit" / "plots").glob("*.png")}
    assert plots == {"coverage_vs_k", "coverage_vs_compute", "neglog_coverage", "maj_vs_coverage",
                     "ck_heatmap", "coverage_by_level", "cost_breakdown"}
    assert {p.stem for p in (run_dir / "_fit" / "plots").glob("*.svg")} == plots
    assert "maj@n" in res.output and "×base @50%" in res.output
    maj = doc["groups"]["oracle"]["maj@n"]  # the table's maj@n is in fit.json too
    assert maj["low"] <= maj["value"] <= maj["high"]
    from verify import read_grades
    from verify.tables import summarize_grades

    for boot, seed in ((60, 0), (7, 3)):  # its CI is drawn as `study verify` draws it (1000 replicates), with the fit's --seed
        res = _invoke(app, "fit", run_dir, "--boot", boot, "--seed", seed, "--no-plots", "--json", run_dir / "s.json")
        assert res.exit_code == 0, res.output
        maj = json.loads((run_dir / "s.json").read_text())["groups"]["random_c2_k4"]["maj@n"]
        expected = summarize_grades(read_grades(run_dir), seed=seed).set_index("config").loc["random_c2_k4"]
        assert [maj["low"], maj["high"]] == pytest.approx([expected["maj@n_lo"], expected["maj@n_hi"]])


def test_fit_reads_the_grades_of_the_grader_that_graded_the_run(app: typer.Typer, tmp_path: Path) -> None:
    """A run graded only with --grader strict is fitted from those grades (not regraded by math-verify);
    the report and the table name it; --grader naming another grader is refused (fitting would grade the run with
    it, which changes the default of every later command) until `study verify --grader` has graded it."""
    from verify import grade_run

    run = make_run_dir(tmp_path / "strict")
    grade_run(run, "strict", progress=False)
    res = _invoke(app, "report", run, "--boot", 20)
    assert res.exit_code == 0, res.output
    doc = json.loads((run / "_fit" / "fit.json").read_text())
    assert doc["source"]["grader"] == "strict"
    assert not (run / "_grades" / "grader=math-verify").exists()
    assert "graded by `strict`" in (run / "_fit" / "report.md").read_text() and "graded by strict" in res.output
    res = _invoke(app, "fit", run, "--grader", "math-verify", "--json", tmp_path / "mv.json", "--no-plots", "--boot", 20)
    assert res.exit_code == 2 and "was graded with strict, not math-verify: run `study verify" in res.output, res.output
    assert not (run / "_grades" / "grader=math-verify").exists() and not (tmp_path / "mv.json").exists()
    grade_run(run, "math-verify", progress=False)
    res = _invoke(app, "fit", run, "--grader", "math-verify", "--json", tmp_path / "mv.json", "--no-plots", "--boot", 20)
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "mv.json").read_text())["source"]["grader"] == "math-verify"
    res = _invoke(app, "fit", run, "--grader", "sympy", "--no-plots")
    assert res.exit_code == 2 and "--grader: choose from math-verify, strict" in res.output


def test_decode_cost_model_ignores_prefill(app: typer.Typer, run_dir: Path, tmp_path: Path) -> None:
    """--cost decode charges no prefill, so the oracle's re-reading costs nothing."""
    out = tmp_path / "decode.json"
    res = _invoke(app, "fit", run_dir, "--cost", "decode", "--json", out, "--no-plots", "--boot", 30)
    assert res.exit_code == 0, res.output
    shares = json.loads(out.read_text())["groups"]["random_c2_k4"]["cost_shares"]
    assert shares["oracle_prefill"] == 0.0 and shares["base_prefill"] == 0.0


def test_report_run_dir_links_existing_plots(app: typer.Typer, run_dir: Path) -> None:
    """study report writes RUN_DIR/fit/report.md whose image links all exist."""
    res = _invoke(app, "report", run_dir, "--boot", 40)
    assert res.exit_code == 0, res.output
    text = (run_dir / "_fit" / "report.md").read_text()
    links = re.findall(r"\]\(([^)]+\.png)\)", text)
    assert len(links) == 7 and all((run_dir / "_fit" / link).exists() for link in links)
    assert "## Equal compute" in text and "Where the compute goes" in text and "NaN" not in text
    from fit.report import fmt_ci, prob  # pass@1 and coverage@n with the CIs fit.json has (one interval per value)

    doc = json.loads((run_dir / "_fit" / "fit.json").read_text())
    for metric in ("pass@1", "coverage@n"):
        cell = doc["groups"]["base"][metric]
        assert f"| {fmt_ci(cell['value'], cell['low'], cell['high'], prob)} |" in text


def test_report_fits_with_the_options_of_the_fit_it_reports(app: typer.Typer, tmp_path: Path) -> None:
    """`study report` after `study fit --cost decode --boot 30 --targets 0.4` reports (and rewrites fit.json with)
    that fit, not a default one; an option given to report wins; a fit.json of another source lends nothing."""
    run = make_run_dir(tmp_path / "run", n=6)
    fit_json = run / "_fit" / "fit.json"
    res = _invoke(app, "fit", run, "--cost", "decode", "--boot", 30, "--targets", "0.4", "--no-plots")
    assert res.exit_code == 0, res.output
    fitted = json.loads(fit_json.read_text())
    assert fitted["options"]["cost"] == "decode" and fitted["options"]["boot"] == 30
    res = _invoke(app, "report", run)
    assert res.exit_code == 0, res.output
    assert "options of the fit in" in res.output and "--cost decode" in res.output and "--boot 30" in res.output
    assert json.loads(fit_json.read_text()) == fitted  # the same fit: same options, same seed, same numbers
    assert "decode" in (run / "_fit" / "report.md").read_text()
    res = _invoke(app, "report", run, "--boot", 20)  # given: wins; the rest still the fit's
    reported = json.loads(fit_json.read_text())
    assert res.exit_code == 0 and reported["n_boot"] == 20 and reported["cost_model"] == "decode", res.output
    assert reported["options"]["targets"] == "0.4"
    moved = tmp_path / "moved"  # the run's own fit.json names the run relative to where fit ran: still its own
    run.rename(moved)
    res = _invoke(app, "report", moved)
    assert res.exit_code == 0 and json.loads((moved / "_fit" / "fit.json").read_text())["n_boot"] == 20, res.output
    moved.rename(run)

    counts = tmp_path / "counts.csv"  # another source's fit.json in the report folder is not its fit
    pd.read_csv(run / "_fit" / "counts.csv").to_csv(counts, index=False)
    out = tmp_path / "report"
    res = _invoke(app, "fit", run, "--boot", 25, "--no-plots", "--json", out / "fit.json")
    assert res.exit_code == 0, res.output
    res = _invoke(app, "report", "--counts", counts, "--out", out, "--boot", 20)
    assert res.exit_code == 0 and "options of the fit" not in res.output, res.output
    assert json.loads((out / "fit.json").read_text())["options"]["grader"] is None


def test_recorded_options_ignore_what_is_not_an_option_of_this_source(tmp_path: Path) -> None:
    """Unreadable fit.json, no options, another source, unknown names or wrong types: nothing is taken."""
    from fit.cli import recorded_options

    run = tmp_path / "run"
    path = tmp_path / "fit.json"
    assert recorded_options(path, run, None) == {}  # no file
    path.write_text("{not json")
    assert recorded_options(path, run, None) == {}
    path.write_text(json.dumps({"source": {"run_dir": str(run)}}))
    assert recorded_options(path, run, None) == {}
    options = {"boot": 30, "seed": True, "cost": "decode", "predict": 5, "grader": None, "rm": "-rf"}
    path.write_text(json.dumps({"source": {"run_dir": str(run)}, "options": options}))
    assert recorded_options(path, run, None) == {"boot": 30, "cost": "decode", "grader": None}
    assert recorded_options(path, tmp_path / "other", None) == {}
    assert recorded_options(path, None, tmp_path / "counts.csv") == {}


def test_default_is_most_recent_run(app: typer.Typer, run_dir: Path, tmp_path: Path) -> None:
    """Without RUN_DIR, the run under --runs whose manifest was written last is fitted."""
    root = tmp_path / "runs"
    old, new = make_run_dir(root / "old", n=4, seed=1), make_run_dir(root / "new", n=6, seed=2)
    past = time.time() - 3600
    os.utime(old / "_manifest.json", (past, past))
    res = _invoke(app, "fit", "--runs", root, "--no-plots", "--boot", 20)
    assert res.exit_code == 0, res.output
    assert (new / "_fit" / "fit.json").exists() and not (old / "_fit").exists()
    res = _invoke(app, "fit", "--runs", tmp_path / "empty")
    assert res.exit_code == 2 and "no run directory" in res.output


def test_run_counts_csv_round_trips_through_counts_mode(app: typer.Typer, run_dir: Path, tmp_path: Path) -> None:
    """`study fit RUN_DIR` writes the counts table beside fit.json (named after it outside the run's _fit/, so a
    counts.csv of the user's there is untouched); fitting that file gives the same fit and comparison."""
    (tmp_path / "counts.csv").write_text("mine\n")
    res = _invoke(app, "fit", run_dir, "--json", tmp_path / "fit.json", "--no-plots", "--boot", 30)
    assert res.exit_code == 0, res.output
    assert (tmp_path / "counts.csv").read_text() == "mine\n"
    (tmp_path / "fit.counts.csv").rename(tmp_path / "counts.csv")
    counts = pd.read_csv(tmp_path / "counts.csv")
    assert list(counts.columns)[:7] == ["config", "problem", "n", "correct", "no_answer", "level", "subject"]
    assert len(counts) == len(CONFIGS) * 12 and counts["base_decode"].dtype == np.int64
    again = _invoke(app, "fit", "--counts", tmp_path / "counts.csv", "--by", "config", "--base", "base", "--oracle", "oracle",
                    "--n-params", "310000,2450000", "--json", tmp_path / "again.json", "--no-plots", "--boot", 30)
    assert again.exit_code == 0, again.output
    first, second = (json.loads((tmp_path / f).read_text()) for f in ("fit.json", "again.json"))
    assert second["groups"]["random_c2_k4"]["power_law"] == first["groups"]["random_c2_k4"]["power_law"]
    assert second["comparison"]["configs"] == first["comparison"]["configs"]
    plain = _invoke(app, "fit", "--counts", tmp_path / "counts.csv", "--json", tmp_path / "plain.json", "--no-plots",
                    "--boot", 30)  # no options: the run's cost per sample and its base/oracle references
    assert plain.exit_code == 0, plain.output
    assert json.loads((tmp_path / "plain.json").read_text())["comparison"]["configs"] == first["comparison"]["configs"]


def test_random_grid_keeps_variants_apart() -> None:
    """Random configs that differ in more than c and k (the shipped real configs' sampled and greedy oracles)
    are labelled by what differs, so the c×k heatmaps draw one grid per variant instead of averaging them."""
    from fit.rundir import random_grid

    configs = {f"random-c{c}-k{k}{suffix}": {"policy": "random", "c": c, "k": k, "ref_length": 512, "oracle_temperature": t}
               for c in (10, 20) for k in (2, 5) for suffix, t in (("", 0.6), ("-ot0", 0.0))}
    configs["base"] = {"policy": "base"}
    grid = random_grid({"configs": configs})
    assert len(grid) == 8 and set(grid["variant"]) == {"oracle_temperature=0.6", "oracle_temperature=0.0"}
    assert set(grid[grid["variant"] == "oracle_temperature=0.0"]["config"]) == {c for c in configs if c.endswith("-ot0")}
    same = random_grid({"configs": {k: v for k, v in configs.items() if not k.endswith("-ot0")}})
    assert set(same["variant"]) == {""}


def test_the_fit_benchmark_runs_its_in_process_stages(tmp_path: Path) -> None:
    """scripts/bench_fit.py's in-process path keeps up with the pipeline's internals (small sizes)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_fit", Path(__file__).parent.parent / "scripts" / "bench_fit.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    path = tmp_path / "counts.csv"
    bench.synthetic_counts(40, 3, 20).to_csv(path, index=False)
    stages = bench.in_process(path, tmp_path)
    assert list(stages) == ["load", "fit", "compare", "json", "plots"] and all(s >= 0 for s in stages.values())


def test_a_reference_given_for_one_role_keeps_the_default_of_the_other(tmp_path: Path) -> None:
    """`--base X` alone still compares against the group named oracle (with the usual note), and the other way round;
    a group already taken for one role is not also the other's default."""
    from fit.analysis import FitOptions
    from fit.pipeline import fit_counts_file

    rng = np.random.default_rng(3)
    rows = [pd.DataFrame({"config": name, "problem": np.arange(30), "n": 20, "correct": rng.binomial(20, p, 30),
                          "cost_per_sample": cost})
            for name, p, cost in (("base", 0.2, 1.0), ("oracle", 0.6, 8.0), ("base-hot", 0.25, 1.0), ("guided", 0.4, 2.0))]
    path = tmp_path / "four.csv"
    pd.concat(rows).to_csv(path, index=False)
    options = FitOptions(n_boot=10)
    run = fit_counts_file(path, options=options, references={"base": "base-hot"})
    assert run.references == {"base": "base-hot", "oracle": "oracle"}
    assert any("group 'oracle' is taken as the pure-oracle reference" in note for note in run.notes)
    assert not any("pure-base reference" in note for note in run.notes)
    assert fit_counts_file(path, options=options, references={"oracle": "guided"}).references == {
        "oracle": "guided", "base": "base"}
    assert fit_counts_file(path, options=options, references={"base": "oracle"}).references == {"base": "oracle"}


def test_fit_and_verify_report_the_same_summary_intervals(app: typer.Typer, tmp_path: Path) -> None:
    """pass@1, coverage@n and maj@n with their CIs: `study fit` (fit.json, whatever --boot) and `study verify` give the
    same numbers for the same run (one method, replicates and seed; pass@1 from c/n, where the unbiased pass@k
    estimator at k = 1 can differ in the last bit, 2/8), so a user comparing the two sees no drift."""
    run_dir = make_run_dir(tmp_path / "run", n=8)
    from fit.analysis import FitOptions
    from fit.pipeline import fit_run_dir
    from verify import summarize_run

    verified = summarize_run(run_dir, progress=False).set_index("config")
    out = tmp_path / "fit.json"
    res = _invoke(app, "fit", run_dir, "--boot", 20, "--no-plots", "--json", out)
    assert res.exit_code == 0, res.output
    doc = json.loads(out.read_text())
    for name, group in doc["groups"].items():
        for metric in ("pass@1", "coverage@n"):
            assert [group[metric]["value"], group[metric]["low"], group[metric]["high"]] == [  # to the last bit: the
                verified.loc[name, metric], verified.loc[name, f"{metric}_lo"], verified.loc[name, f"{metric}_hi"]], (
                name, metric)  # printouts round alike
    assert any(0 < verified.loc[name, "pass@1"] < 1 for name in doc["groups"])  # a bootstrap interval, not only Wilson ones
    summary = fit_run_dir(run_dir, FitOptions(n_boot=20)).summary  # maj@n of the report's summary table
    columns = ["maj@n", "maj@n_lo", "maj@n_hi"]
    pd.testing.assert_frame_equal(summary[columns], verified.loc[summary.index, columns])


def test_a_second_fit_of_a_run_keeps_the_runs_own_counts_and_plots(app: typer.Typer, tmp_path: Path) -> None:
    """`study fit RUN --cost decode --json RUN/_fit/fit_decode.json` (as `make toy-study` does) writes its counts and
    plots beside its JSON, named after it: the run's counts.csv and plots/ stay those of its fit.json and report."""
    run = make_run_dir(tmp_path / "run", n=4)
    res = _invoke(app, "fit", run, "--boot", 20)
    assert res.exit_code == 0, res.output
    own = {path: path.read_bytes() for path in [run / "_fit" / "counts.csv", *sorted((run / "_fit" / "plots").iterdir())]}
    assert len(own) > 1
    res = _invoke(app, "fit", run, "--cost", "decode", "--json", run / "_fit" / "fit_decode.json", "--boot", 20)
    assert res.exit_code == 0, res.output
    assert {path: path.read_bytes() for path in own} == own
    decode = pd.read_csv(run / "_fit" / "fit_decode.counts.csv").set_index(["config", "problem"])["cost_per_sample"]
    flops = pd.read_csv(run / "_fit" / "counts.csv").set_index(["config", "problem"])["cost_per_sample"]
    assert (decode < flops).all()  # decode FLOPs leave out the prefills
    assert sorted(p.name for p in (run / "_fit" / "fit_decode_plots").iterdir()) == sorted(
        p.name for p in (run / "_fit" / "plots").iterdir())


def test_a_single_problem_has_no_interval_in_fit_or_verify(tmp_path: Path) -> None:
    """One problem: no CI for pass@1, coverage@n or maj@n, shares of problems included, in `study fit` as in
    `study verify` (which had given a share of one problem Wilson's interval)."""
    from fit.analysis import FitOptions
    from fit.pipeline import fit_counts_file
    from verify.tables import summarize_grades

    path = tmp_path / "one.csv"
    pd.DataFrame({"config": ["solved", "half"], "problem": [0, 0], "n": [2, 2], "correct": [2, 1]}).to_csv(path, index=False)
    groups = fit_counts_file(path, options=FitOptions(n_boot=10), progress=False).to_json()["groups"]
    for name in ("solved", "half"):
        for metric in ("pass@1", "coverage@n"):
            assert (groups[name][metric]["low"], groups[name][metric]["high"]) == (None, None), (name, metric)
    grades = pd.DataFrame({"config_id": "c", "problem_id": "p", "sample_index": [0, 1], "extracted": ["5", "5"],
                           "correct": True, "answer_class": 0})
    summary = summarize_grades(grades).iloc[0]
    assert summary[["pass@1_lo", "coverage@n_lo", "maj@n_lo", "maj@n_hi"]].isna().all()


def test_a_one_cell_pass1_heatmap_keeps_its_colour_scale_within_0_and_1() -> None:
    """A c×k grid of one random config: the pass@1 panel's scale is drawn around its value but never past [0, 1]
    (it had run from -0.34 to 0.66 for a pass@1 of 0.156)."""
    import matplotlib.pyplot as plt

    from fit.plots import _heat

    fig, ax = plt.subplots()
    try:
        _heat(ax, pd.DataFrame([[0.156]], index=[2], columns=[3]), ".3f", "pass@1", "viridis", "pass@1", limits=(0.0, 1.0))
        norm = ax.images[0].norm
        assert (norm.vmin, norm.vmax) == (0.0, pytest.approx(0.656))
    finally:
        plt.close(fig)



def _drawn_bands(counts: pd.DataFrame, tmp_path: Path, monkeypatch, *plotters: str) -> tuple[object, list]:
    """Fit a counts table and draw the named plots of fit.plots; the run, and per figure its shaded bands' vertices."""
    import matplotlib.pyplot as plt
    from matplotlib.collections import PolyCollection

    from fit import plots
    from fit.pipeline import fit_counts_file

    path = tmp_path / "counts.csv"
    counts.to_csv(path, index=False)
    run = fit_counts_file(path, progress=False)
    figures: list = []
    monkeypatch.setattr(plots, "_save", lambda fig, *a: figures.append(fig) or [])
    try:
        for plotter in plotters:
            getattr(plots, plotter)(run, tmp_path)
        return run, [[c.get_paths()[0].vertices for c in fig.axes[0].collections if isinstance(c, PolyCollection)]
                     for fig in figures]
    finally:
        plt.close("all")


def test_plotted_coverage_bands_are_the_cis_of_fit_json(tmp_path: Path, monkeypatch) -> None:
    """A config that solved 3 problems of 30, each once or twice: the plotted band at k = n is coverage@n's Wilson
    interval (as fit.json gives it), not the bootstrap percentiles (whose low edge is 0: 4% of resamples miss all
    three), and the extrapolated bands never drop below it."""
    from verify.metrics import proportion_ci

    frame = pd.DataFrame({"config": "rare", "problem": np.arange(30), "n": 20, "correct": [1, 2, 1] + [0] * 27,
                          "cost_per_sample": 1.0})
    run, bands = _drawn_bands(frame, tmp_path, monkeypatch, "coverage_vs_k", "coverage_vs_compute")
    wilson = proportion_ci(3, 30, run.options.level)
    assert [len(b) for b in bands] == [2, 2]  # empirical and extrapolated, vs k and vs compute (cost 1: x = k)
    for empirical, _ in bands:
        at_n = empirical[np.isclose(empirical[:, 0], 20)][:, 1]
        assert np.isclose(at_n.min(), wilson[0]) and np.isclose(at_n.max(), wilson[1]), (at_n, wilson)
    for band in bands[0] + bands[1]:
        past = band[band[:, 0] >= 20 - 1e-9][:, 1]
        assert past.min() >= wilson[0] - 1e-12, (past.min(), wilson)


def test_the_plotted_band_of_a_config_that_never_solved_a_problem_is_fit_jsons_bound(tmp_path: Path, monkeypatch) -> None:
    """No problem ever solved: the band is [0, the rule-of-three bound] at each k, as fit.json predicts it."""
    frame = pd.DataFrame({"config": "never", "problem": np.arange(30), "n": 20, "correct": 0})
    run, bands = _drawn_bands(frame, tmp_path, monkeypatch, "coverage_vs_k")
    band = bands[0][0]
    predicted = run.groups["never"].predict([1.0, 5.0, 20.0])
    for k, ci in zip((1, 5, 20), predicted.values()):
        at_k = band[np.isclose(band[:, 0], k)][:, 1]
        assert ci["method"] == "zero_successes_bound" and 0 < ci["high"] < 0.2
        assert np.isclose(at_k.min(), 0.0) and np.isclose(at_k.max(), ci["high"]), (k, at_k, ci)
