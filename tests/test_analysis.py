"""First-wrong-token location (exact, toy world), ROC AUC, and the analysis on a real toy run."""
from __future__ import annotations

from itertools import product
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from experiments.analyze import AnalysisError, analyze_run
from fit.counts import CountsError
from experiments.toy.first_wrong import NotAToyProblem, canonical_completion, first_wrong_token, parse_expression
from experiments.toy.generator import held_out_problems
from fit.signals import auc_table, roc_auc, roc_curve
from sampling.config import parse_experiment
from sampling.runner import run_experiment

PROBLEM = "Compute $\\frac{3}{4}+2\\times5-7$."
CANONICAL = "=\\frac{3}{4}+10-7\n=\\frac{43}{4}-7\n=\\frac{15}{4}\n\\boxed{\\frac{15}{4}}"


def _chars(text: str) -> list[str]:
    return list(text)


def test_canonical_completion_matches_the_generator() -> None:
    assert canonical_completion(PROBLEM) == CANONICAL
    for p in held_out_problems(50):
        assert canonical_completion(p.prompt.strip()) == p.solution
    with pytest.raises(NotAToyProblem):
        canonical_completion("What is 2+2?")
    with pytest.raises(NotAToyProblem):
        parse_expression("3++4")


def test_first_wrong_token_on_hand_built_samples() -> None:
    assert first_wrong_token(PROBLEM, _chars(CANONICAL), stopped=True) is None  # correct
    wrong_digit = CANONICAL.replace("43", "45", 1)
    assert first_wrong_token(PROBLEM, _chars(wrong_digit), stopped=True) == CANONICAL.index("43") + 1
    wrong_op = "=\\frac{3}{4}+7"  # skipped the multiplication: wrong at the first differing char
    assert first_wrong_token(PROBLEM, _chars(wrong_op), stopped=True) == len("=\\frac{3}{4}+") 
    early_stop = CANONICAL[:20]
    assert first_wrong_token(PROBLEM, _chars(early_stop), stopped=True) == 20  # the EOS is wrong
    assert first_wrong_token(PROBLEM, _chars(early_stop), stopped=False) is None  # cut off: nothing wrong yet
    ran_on = CANONICAL + "\n="
    assert first_wrong_token(PROBLEM, _chars(ran_on), stopped=False) == len(CANONICAL)
    # multi-character tokens are compared as whole pieces
    assert first_wrong_token(PROBLEM, ["=\\frac", "{3}", "{5}"], stopped=True) == 2


def test_the_exact_locator_off_the_toy_world_names_the_flag_to_use() -> None:
    """`--locator exact` on a run of another dataset is refused, naming `--locator rollout`; auto picks rollouts there."""
    from experiments.analyze import AnalysisError, resolve_locator

    with pytest.raises(AnalysisError, match=r"'math500': --locator exact needs the toy world .*use --locator rollout"):
        resolve_locator({"dataset": "math500"}, "exact", Path("runs/r"))
    assert resolve_locator({"dataset": "math500"}, "auto", Path("runs/r")) == "rollout"
    assert resolve_locator({"dataset": "toy"}, "auto", Path("runs/r")) == "exact"


def test_roc_auc_matches_pairwise_definition() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        scores = rng.integers(0, 5, 30).astype(float)  # ties on purpose
        labels = rng.random(30) < 0.3
        if labels.all() or not labels.any():
            continue
        pairs = [(a > b) + 0.5 * (a == b) for a, b in product(scores[labels], scores[~labels])]
        assert roc_auc(scores, labels) == pytest.approx(np.mean(pairs))
    fpr, tpr = roc_curve(np.array([3.0, 2.0, 1.0]), np.array([True, False, True]))
    assert fpr.tolist() == [0, 0, 1, 1] and tpr.tolist() == [0, 0.5, 0.5, 1]
    assert np.isnan(roc_auc(np.ones(3), np.zeros(3, bool)))


def test_auc_table_orients_signals_and_bootstraps_over_samples() -> None:
    rows = []
    for s in range(40):
        for position in range(6):
            wrong = position == 5
            rows.append({"sample": f"s{s}", "label": wrong, "entropy": 2.0 if wrong else 0.1 * position,
                         "top1": 0.3 if wrong else 0.99, "margin": 0.1 if wrong else 0.9, "oracle_token_prob": 0.01 if wrong else 0.95})
    table = auc_table(pd.DataFrame(rows), n_boot=50).set_index("signal")
    assert (table.auc == 1.0).all() and (table.low == 1.0).all()


def test_auc_intervals_resample_problems() -> None:
    """Wrong samples of one problem fail alike, so the CI resamples problems (all their samples' tokens):
    with 8 identical samples per problem it is about sqrt(8) times wider than resampling samples."""
    rng = np.random.default_rng(3)
    rows = []
    for problem in range(12):
        entropies = rng.normal(0.5, 0.4, 6)  # one problem's token pattern, repeated by each of its samples
        for s in range(8):
            for position in range(6):
                rows.append({"sample": f"p{problem}/{s}", "problem_id": f"p{problem}", "label": position == 5,
                             "entropy": entropies[position], "top1": 0.5, "margin": 0.5, "oracle_token_prob": 0.5})
    tokens = pd.DataFrame(rows)
    by_problem = auc_table(tokens, n_boot=300).set_index("signal").loc["base entropy"]
    by_sample = auc_table(tokens.drop(columns="problem_id"), n_boot=300).set_index("signal").loc["base entropy"]
    assert by_problem.auc == by_sample.auc
    assert (by_problem.high - by_problem.low) > 2 * (by_sample.high - by_sample.low)
    one = auc_table(tokens[tokens.problem_id == "p0"], n_boot=50).set_index("signal").loc["base entropy"]
    assert np.isfinite(one.auc) and np.isnan(one.low) and np.isnan(one.high)  # one problem: no CI (not a zero width)


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("analysis") / "run"
    experiment = parse_experiment({
        "name": "a", "dataset": "toy", "problems": 10, "n": 6, "max_tokens": 96,
        "models": {"base": "toy:base", "oracle": "toy:oracle"},
        "configs": [{"policy": "base"}, {"policy": "random", "c": 2, "k": 3, "ref_length": 40}],
    }, "test")
    run_experiment(experiment, run_dir, block_size=64, report=lambda _: None)
    return run_dir


def test_analysis_runs_on_a_small_real_run(toy_run: Path) -> None:
    table, counts, out = analyze_run(toy_run, "base", max_samples=40, n_boot=50)
    assert counts["analysed"] > 0 and counts["analysed"] <= 40
    assert set(table.signal) == {"base entropy", "base top-1 probability (low)", "base top-1 − top-2 margin (low)",
                                 "oracle probability of the base token (low)"}
    assert table.auc.between(0, 1).all() and (table.low <= table.auc).all() and (table.auc <= table.high).all()
    tokens = pd.read_parquet(out / "first_wrong_tokens_base.parquet")
    assert (tokens.groupby("sample").label.sum() == 1).all()  # exactly one first wrong token per sample
    last = tokens.groupby("sample").position.max()
    first_wrong = tokens[tokens.label].set_index("sample").position
    assert (last.sort_index() == first_wrong.sort_index()).all()  # nothing after the first wrong token is used
    assert {p.name for p in out.glob("*.png")} == {"first_wrong_hist_base.png", "first_wrong_roc_base.png"}
    from fit import signal_plots
    from fit.report import auc_cell

    figures = []  # the ROC legend gives each AUC and CI as the table does (3 digits; 2 rounded 0.997 up to 1.00)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(signal_plots, "_save", lambda fig, *_: figures.append(fig) or [])
        signal_plots.plot_signals(tokens, table, out, "base")
    legend = [t.get_text() for t in figures[-1].axes[0].get_legend().get_texts()]
    assert legend == [f"{r.signal}: AUC {auc_cell(r.auc, r.low, r.high)}" for r in table.itertuples()], legend
    from typer.testing import CliRunner

    from experiments.cli import app

    result = CliRunner().invoke(app, ["report", str(toy_run), "--boot", "20"])
    assert result.exit_code == 0, result.output
    report = (toy_run / "_fit" / "report.md").read_text()
    assert "Where samples first go wrong" in report and "first_wrong_roc_base.png" in report
    guided, counts_guided, _ = analyze_run(toy_run, "random-c2-k3", max_samples=20, n_boot=20)
    assert counts_guided["analysed"] + counts_guided["first_wrong_by_oracle"] + counts_guided["no_wrong_token"] <= 20
    with pytest.raises(AnalysisError, match="no config"):
        analyze_run(toy_run, "nope")


def test_a_pure_oracle_config_is_refused_before_any_work(toy_run: Path, tmp_path: Path) -> None:
    """Pure oracle samples have no base token: refused up front, not after reading samples with a hint that a
    larger --max-samples might help."""
    import json
    import shutil

    from experiments.analyze import check_request

    run_dir = tmp_path / "run"
    shutil.copy(toy_run / "_manifest.json", tmp_path / "manifest.json")
    run_dir.mkdir()
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    manifest["configs"]["oracle"] = {**manifest["configs"]["base"], "policy": "oracle"}
    (run_dir / "_manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(AnalysisError, match="config 'oracle' of .* is pure oracle sampling: its samples have no base token"):
        check_request(run_dir, "oracle", "auto")
    assert check_request(run_dir, "base", "auto")[1] == "exact"


def test_report_says_when_a_regrade_left_an_analysis_out_of_date(toy_run: Path, tmp_path: Path) -> None:
    """The report quotes a stored analysis only with a warning once the samples it took as wrong are not the
    wrong ones any more: here a problem's reference is corrected and the run regraded, so its samples flip."""
    import json
    import shutil

    from typer.testing import CliRunner

    from experiments.cli import app
    from sampling.store import PROBLEMS
    from verify import grade_run

    run_dir = tmp_path / "regraded"
    shutil.copytree(toy_run, run_dir, ignore=shutil.ignore_patterns("_fit"))
    _, counts, out = analyze_run(run_dir, "base", max_samples=10, n_boot=10)

    def report() -> str:
        result = CliRunner().invoke(app, ["report", str(run_dir), "--boot", "10"])
        assert result.exit_code == 0, result.output
        return (run_dir / "_fit" / "report.md").read_text()

    assert "out of date" not in report() and "cannot be checked" not in report()
    grades = grade_run(run_dir, progress=False)
    solved = grades[(grades.config_id == "base") & grades.correct].problem_id.iloc[0]  # its right answers turn wrong
    table = pq.read_table(run_dir / PROBLEMS).to_pandas()
    table.loc[table.id == solved, "answer"] = "\\frac{9999}{7}"
    pq.write_table(pa.Table.from_pandas(table, preserve_index=False), run_dir / PROBLEMS)
    regraded = grade_run(run_dir, regrade=True, progress=False)
    wrong_now = int((regraded[regraded.config_id == "base"].correct == False).sum())  # noqa: E712
    assert wrong_now > counts["wrong"]
    text = report()
    assert (f"**out of date**: the math-verify grades changed since this analysis ({counts['wrong']:,} of "
            f"{counts['samples']:,} samples wrong then, {wrong_now:,} of {counts['samples']:,} now): "
            f"`study analyze {run_dir} --config base --grader math-verify --max-samples 10 --seed 0 --boot 10` again") in text
    _, counts, _ = analyze_run(run_dir, "base", max_samples=10, n_boot=10)  # redone: current again
    assert counts["wrong"] == wrong_now and "out of date" not in report()
    summary_file = out / "first_wrong_summary_base.json"  # an analysis from before the digest was recorded
    summary = json.loads(summary_file.read_text())
    del summary["wrong_digest"]
    summary_file.write_text(json.dumps(summary))
    assert "did not record which samples were wrong, so it cannot be checked" in report()


def test_analysis_refuses_prompts_that_encode_differently_from_the_run(toy_run: Path, tmp_path: Path) -> None:
    """Rescoring must read the prompts the samples were drawn after: a changed tokenizer or template is an error."""
    import json
    import shutil

    run_dir = tmp_path / "changed"
    shutil.copytree(toy_run, run_dir)
    manifest = json.loads((run_dir / "_manifest.json").read_text())
    (run_dir / "_manifest.json").write_text(json.dumps({**manifest, "prompts_sha256": "0" * 64}))
    with pytest.raises(AnalysisError, match="the prompts now encode differently"):
        analyze_run(run_dir, "base", max_samples=5, n_boot=5)


def test_analysis_refuses_models_other_than_the_runs(toy_run: Path, tmp_path: Path) -> None:
    """Rescoring with other weights (e.g. `study toy train` overwrote the shipped pair) would measure another model:
    refused, naming it; a model folder that is gone or holds other weights is read by its name (a moved run dir),
    else a missing one is a one-line error."""
    import json
    import shutil

    from typer.testing import CliRunner

    from experiments.cli import app
    from sampling.models import TOY_MODELS_DIR

    run_dir = tmp_path / "swapped"
    shutil.copytree(toy_run, run_dir, ignore=shutil.ignore_patterns("_fit"))
    shutil.copytree(TOY_MODELS_DIR / "oracle", tmp_path / "fakebase")
    manifest = json.loads((run_dir / "_manifest.json").read_text())
    manifest["models"]["base"].update(path=str(tmp_path / "fakebase"), name=str(tmp_path / "fakebase"))
    (run_dir / "_manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(AnalysisError, match=r"the base model at .*fakebase is not the one the run was sampled with"):
        analyze_run(run_dir, "base", max_samples=5, n_boot=5)
    held = dict(manifest["models"]["base"])
    manifest["models"]["base"].update(path=str(tmp_path / "gone"), name=str(tmp_path / "gone"))
    (run_dir / "_manifest.json").write_text(json.dumps(manifest))
    result = CliRunner().invoke(app, ["analyze", str(run_dir), "--max-samples", "5", "--boot", "5"])
    assert result.exit_code == 2 and "model folder not found" in result.output, result.output
    assert not (run_dir / "_fit").exists()
    for recorded in (held, manifest["models"]["base"]):  # the folder holds other weights now, or is gone (a run dir
        manifest["models"]["base"] = {**recorded, "name": "toy:base"}  # moved from another checkout): read by name
        (run_dir / "_manifest.json").write_text(json.dumps(manifest))
        assert analyze_run(run_dir, "base", max_samples=5, n_boot=5)[1]["analysed"] > 0


def test_learned_judge_head_trains_and_drives_the_judge_policy(tmp_path: Path) -> None:
    from experiments.analyze import collect_tokens
    from experiments.toy.judge_train import fit_logistic, train_judge_head
    from sampling.judge_head import load_head, mistake_probability, save_head
    from sampling.runner import run_experiment as run
    from sampling.store import read_samples

    rng = np.random.default_rng(0)  # logistic fit recovers a separable direction
    x = rng.normal(size=(400, 3))
    y = x[:, 0] > 0.5
    w, b = fit_logistic(x, y, l2=1e-4)
    assert roc_auc(x @ w + b, y) > 0.99 and w[0] > abs(w[1]) + abs(w[2])

    run_dir = tmp_path / "train"
    experiment = parse_experiment({
        "name": "j", "dataset": "toy-train", "problems": 20, "n": 6, "max_tokens": 96,
        "models": {"base": "toy:base", "oracle": "toy:oracle"}, "configs": [{"policy": "base"}],
    }, "test")
    run(experiment, run_dir, block_size=128, report=lambda _: None)
    tokens, counts = collect_tokens(run_dir, "base", max_samples=60, with_hidden=True)
    from experiments.toy.judge_train import _held_out

    held_only = tokens[tokens["problem_id"].map(_held_out)]  # no training tokens: refused, not an all-zero head saved
    with pytest.raises(ValueError, match="the training half of the problems has no first wrong tokens"):
        train_judge_head(held_only)
    fit = train_judge_head(tokens)
    assert 0.5 < fit.heldout_auc <= 1 and fit.weight.shape == (224,)
    from typer.testing import CliRunner

    from experiments.cli import app

    again = tmp_path / "again.safetensors"  # the CLI says when it replaces a head by another (runs match heads by sha256)
    outputs = [CliRunner().invoke(app, ["toy", "train-judge", str(run_dir), "--max-samples", str(m), "--out", str(again)])
               for m in (60, 60, 40)]
    assert all(r.exit_code == 0 for r in outputs), outputs[-1].output
    assert ["was replaced" in " ".join(r.output.split()) for r in outputs] == [False, False, True]  # the same head: no note
    head = tmp_path / "head.safetensors"
    save_head(head, fit.weight, fit.bias)
    assert load_head(str(head))[0].shape == (224,)
    probs = mistake_probability(torch_tensor(np.stack(tokens["oracle_hidden"].head(5).to_numpy())), str(head))
    assert ((probs > 0) & (probs < 1)).all()

    guided = parse_experiment({
        "name": "jh", "dataset": "toy", "problems": 4, "n": 4, "max_tokens": 96,
        "models": {"base": "toy:base", "oracle": "toy:oracle"},
        "configs": [{"policy": "judge", "k": 3, "alpha": 0.5, "every": 8, "max_c": 3, "head": str(head), "id": "judge-head"}],
    }, "test")
    run(guided, tmp_path / "guided", block_size=16, report=lambda _: None)
    samples = read_samples(tmp_path / "guided")
    assert (samples.base_decode == samples.provenance.map(lambda p: int((np.asarray(p) == 0).sum())) + samples.discarded).all()
    assert (samples.interventions <= 3).all()


def torch_tensor(array: np.ndarray):
    import torch

    return torch.as_tensor(array, dtype=torch.float32)


def test_rollout_locator_agrees_with_the_exact_one_on_the_toy_world(toy_run: Path) -> None:
    from experiments.analyze import collect_tokens

    exact, exact_counts = collect_tokens(toy_run, "base", max_samples=30, locator="exact")
    rolled, rolled_counts = collect_tokens(toy_run, "base", max_samples=30, locator="rollout")
    first = lambda tokens: tokens[tokens.label].set_index("sample").position  # noqa: E731
    both = first(exact).index.intersection(first(rolled).index)
    assert len(both) >= 5  # only problems the greedy oracle solves from scratch qualify
    agreement = (first(exact)[both] == first(rolled)[both]).mean()
    print(f"rollout vs exact agreement: {agreement:.2f} on {len(both)} samples")
    assert agreement >= 0.6, agreement  # the oracle mostly cannot recover once the canonical text breaks
    with pytest.raises(AnalysisError, match="locator must be"):
        collect_tokens(toy_run, "base", locator="psychic")


def test_rollout_analysis_keeps_its_own_files_and_a_config_without_wrong_samples_is_an_error(toy_run: Path, tmp_path: Path) -> None:
    """A rollout analysis of a toy run is written beside the exact one (base.rollout), labelled in the report;
    a config with no wrong sample is a clear error under either locator, not a crash."""
    import shutil

    from typer.testing import CliRunner

    from experiments.cli import app

    run_dir = tmp_path / "run"
    shutil.copytree(toy_run, run_dir)
    assert analyze_run(run_dir, "base", max_samples=10, n_boot=10)[1]["name"] == "base"  # the files' suffix, as
    assert analyze_run(run_dir, "base", max_samples=10, n_boot=10, locator="rollout")[1]["name"] == "base.rollout"  # said
    out = run_dir / "_fit" / "analysis"
    assert (out / "first_wrong_auc_base.csv").exists() and (out / "first_wrong_auc_base.rollout.csv").exists()
    result = CliRunner().invoke(app, ["report", str(run_dir), "--boot", "10"])
    assert result.exit_code == 0, result.output
    report = (run_dir / "_fit" / "report.md").read_text()
    assert "Config `base` (first wrong token located by exact; wrong by the math-verify grades; a random subset of 10 of its" in report
    assert "Config `base` (first wrong token located by rollout; wrong by the math-verify grades; a random subset of 10 of" in report
    elsewhere = tmp_path / "elsewhere" / "report"  # a report outside the run dir links its images relative to itself
    result = CliRunner().invoke(app, ["report", str(run_dir), "--boot", "10", "--out", str(elsewhere)])
    assert result.exit_code == 0, result.output
    links = re.findall(r"\]\(([^)]+\.png)\)", (elsewhere / "report.md").read_text())
    assert any("first_wrong_roc_base" in link for link in links) and all((elsewhere / link).exists() for link in links)
    for part in (run_dir / "_grades" / "grader=math-verify").glob("*.parquet"):  # as if every sample were right
        table = pq.read_table(part)  # (its metadata kept: the shards it graded, with their texts digests)
        right = pa.array([True] * table.num_rows)
        pq.write_table(table.set_column(table.schema.get_field_index("correct"), "correct", right), part)
    for locator in ("exact", "rollout"):  # nothing wrong is a note, not a failure (a pipeline goes on)
        result = CliRunner().invoke(app, ["analyze", str(run_dir), "--locator", locator, "--boot", "10"])
        assert result.exit_code == 0 and "'base' samples in" in result.output and "are correct" in result.output, result.output
        assert "removed its earlier analysis" in " ".join(result.output.split())  # of samples no longer wrong
    assert not [p for p in out.glob("first_wrong_*") if "_base." in p.name]  # both analyses' files: no stale one shown
    result = CliRunner().invoke(app, ["report", str(run_dir), "--boot", "10"])
    assert result.exit_code == 0 and "Config `base`" not in (run_dir / "_fit" / "report.md").read_text()
    few = tmp_path / "few"  # a copy: the shared run's analysis files stay as they are
    shutil.copytree(toy_run, few)
    result = CliRunner().invoke(app, ["analyze", str(few), "--max-samples", "3", "--boot", "10"])
    assert result.exit_code == 0 and "CIs (a bootstrap over problems) are unreliable" in " ".join(result.output.split())
    result = CliRunner().invoke(app, ["report", str(few), "--boot", "10"])  # the report says so too, and shows both plots
    report = (few / "_fit" / "report.md").read_text()
    assert result.exit_code == 0 and "problem(s) only: the CIs are unreliable" in report
    assert "first_wrong_hist_base.png" in report and "first_wrong_roc_base.png" in report
    result = CliRunner().invoke(app, ["analyze", str(few), "--max-samples", "1", "--boot", "10"])  # one problem: no CIs
    assert result.exit_code == 0 and "come from 1 problem: no CIs" in " ".join(result.output.split()), result.output
    assert "[" not in result.output.split("ROC AUC")[-1].split("warning")[0]  # no zero-width interval in the table
    result = CliRunner().invoke(app, ["report", str(few), "--boot", "10"])
    assert result.exit_code == 0 and "from 1 problem only: no CIs" in (few / "_fit" / "report.md").read_text()
    empty = tmp_path / "empty"  # a config without samples yet (an interrupted run) is an error, not "all correct"
    shutil.copytree(toy_run, empty)
    shutil.rmtree(empty / "samples" / "random-c2-k3")
    result = CliRunner().invoke(app, ["analyze", str(empty), "--config", "random-c2-k3"])
    assert result.exit_code == 2 and "has no 'random-c2-k3' samples yet" in result.output, result.output
    result = CliRunner().invoke(app, ["analyze", str(run_dir), "--config", "nope"])
    assert result.exit_code == 2 and "has no config 'nope'" in result.output and "rescoring" not in result.output


def test_analysis_reads_the_grades_of_the_grader_that_graded_the_run(toy_run: Path, tmp_path: Path) -> None:
    """A run graded only with --grader strict is analysed with those grades; no math-verify grades appear
    (which would then switch `study fit` to them)."""
    import shutil

    from verify import grade_run

    run_dir = tmp_path / "strict"
    shutil.copytree(toy_run, run_dir, ignore=shutil.ignore_patterns("_grades", "_fit"))
    grade_run(run_dir, "strict", progress=False)
    _, counts, _ = analyze_run(run_dir, "base", max_samples=5, n_boot=5)
    assert counts["grader"] == "strict" and counts["locator"] == "exact" and counts["replaced"] is None
    assert not (run_dir / "_grades" / "grader=math-verify").exists()
    with pytest.raises(AnalysisError, match=r"graded with strict, not math-verify: run `study verify .* --grader math-verify`"):
        analyze_run(run_dir, "base", max_samples=5, n_boot=5, grader="math-verify")  # would add a grader fit then reads
    assert not (run_dir / "_grades" / "grader=math-verify").exists()
    ungraded = tmp_path / "ungraded"
    shutil.copytree(toy_run, ungraded, ignore=shutil.ignore_patterns("_grades", "_fit"))
    with pytest.raises(AnalysisError, match=r"has no grades yet \(`study fit` would grade it with math-verify\), not strict"):
        analyze_run(ungraded, "base", max_samples=5, n_boot=5, grader="strict")
    with pytest.raises(CountsError, match=r"--grader: choose from math-verify, strict, got 'foo'"):
        analyze_run(run_dir, "base", max_samples=5, n_boot=5, grader="foo")
    _, counts, _ = analyze_run(run_dir, "base", max_samples=4, n_boot=5)  # other settings: said, not silent
    assert counts["replaced"].startswith("replaced the earlier analysis of this config (max-samples 5 -> 4)")


def test_rollout_locator_stops_on_every_stop_id() -> None:
    """A sample that ended on any of the engine's stop ids (Llama 3 has three) ended there: a premature stop
    is its first wrong token, whichever stop id it wrote."""
    from experiments.rollout_locator import locate_by_rollouts

    class Oracle:  # greedy continuation from any prefix: writes "42" and stops
        name = "torch"

        def run_block(self, requests):
            from sampling.records import SampleRecord

            records = []
            for request in requests:
                record = SampleRecord(request.config_id, request.problem_id, request.sample_index, request.seed)
                record.token_ids = [4, 2, 98]
                records.append(record)
            return records

    decode = lambda ids: "".join(str(i) for i in ids if i < 10)  # noqa: E731
    grade = lambda text, ref: text.endswith(ref)  # noqa: E731
    for stop in (98, 99):  # the sample writes "4" then stops early with one of two stop ids
        positions = locate_by_rollouts(Oracle(), decode, grade, [((1,), [4, stop], "42")], 8, {98, 99})
        assert positions == [1], (stop, positions)


def test_rollouts_are_graded_by_the_grader_that_graded_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a strict-graded run the rollout locator must judge recoverability by strict too: with math-verify,
    a sample wrong by strict (\\boxed{3.5} for \\frac{7}{2}) already counts as recovered, and the binary search
    ends at the EOS instead of the first wrong token."""
    import experiments.rollout_locator as rollout_locator
    from experiments import analyze
    from sampling.models import load_pair

    seen = {}

    def capture(engine, decode, grade, samples, max_tokens, stops):
        seen["verdict"] = grade("so \\boxed{3.5}", "\\frac{7}{2}")
        return [None] * len(samples)

    monkeypatch.setattr(rollout_locator, "locate_by_rollouts", capture)
    pair = load_pair("toy:base", "toy:oracle")
    wrong = pd.DataFrame({"problem_id": ["p"], "token_ids": [[5, 6]]})
    problems = {"p": type("P", (), {"answer": "\\frac{7}{2}"})()}
    analyze._rollout_positions(wrong, problems, pair, {"p": (1, 4)}, 8, "strict")
    assert seen["verdict"] is False
    analyze._rollout_positions(wrong, problems, pair, {"p": (1, 4)}, 8, "math-verify")
    assert seen["verdict"] is True
