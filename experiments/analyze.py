"""First-wrong-token analysis of a run: where do wrong base samples go wrong, and is there a signal?

For wrong samples of one config (default: pure base), locate the first wrong token (exactly on
the toy world, `experiments.toy.first_wrong`; by greedy oracle rollouts elsewhere,
`experiments.rollout_locator`), rescore each sample with the base and the oracle (teacher
forcing), and compare the signals at the first wrong token with those at the base tokens before
it: base entropy, base top-1 probability, base top-1 − top-2 margin, and the oracle's probability
of the base's token.
"""
from __future__ import annotations

import json

from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from experiments.toy.first_wrong import NotAToyProblem, first_wrong_token
from sampling.records import PROVENANCE_BASE
from sampling.store import ANALYSIS_DIR, FIT_DIR, read_manifest, read_problems, read_samples


class AnalysisError(ValueError):
    """A run that cannot be analysed as asked."""


TOY_DATASETS = ("toy", "toy-train")
LOCATORS = ("auto", "exact", "rollout")


def _exact_positions(wrong: pd.DataFrame, problems: dict, tokenizer) -> list[int | None]:
    """First wrong token of each toy sample, from the canonical solution."""
    positions = []
    for sample in wrong.itertuples(index=False):
        ids = [int(t) for t in sample.token_ids]
        stopped = sample.finish_reason == "eos"
        body = ids[:-1] if stopped else ids
        try:
            positions.append(first_wrong_token(problems[sample.problem_id].problem, [tokenizer.decode([t]) for t in body], stopped))
        except NotAToyProblem as exc:
            raise AnalysisError(f"problem {sample.problem_id}: {exc}") from None
    return positions


def _rollout_positions(wrong: pd.DataFrame, problems: dict, pair, prompts: dict, max_tokens: int,
                       grader: str) -> list[int | None]:
    """First wrong token of each sample by greedy oracle rollouts (experiments.rollout_locator), graded by `grader`."""
    import verify
    from experiments.rollout_locator import locate_by_rollouts
    from sampling.models import stop_ids
    from sampling.torch_engine import torch_engine_for

    if wrong.empty:
        return []
    tokenizer = pair.tokenizer
    longest = max(len(prompts[pid]) + len(ids) for pid, ids in zip(wrong.problem_id, wrong.token_ids))
    engine = torch_engine_for(pair, slots=256, max_len=longest + max_tokens)
    samples = [(prompts[pid], [int(t) for t in ids], problems[pid].answer) for pid, ids in zip(wrong.problem_id, wrong.token_ids)]
    return locate_by_rollouts(
        engine, lambda ids: tokenizer.decode(ids, skip_special_tokens=True), lambda text, ref: verify.grade(text, ref, grader),
        samples, max_tokens, stop_ids(pair.manifest["base"]["path"], tokenizer),  # the ids the sampler stopped on
    )


def resolve_locator(manifest: dict, locator: str, run_dir: Path) -> str:
    """The locator to use: `auto` is exact on the toy world, rollouts elsewhere."""
    if locator not in LOCATORS:
        raise AnalysisError(f"locator must be one of {', '.join(LOCATORS)}, got {locator!r}")
    if locator == "auto":
        return default_locator(manifest)
    if locator == "exact" and manifest.get("dataset") not in TOY_DATASETS:
        raise AnalysisError(f"{run_dir} samples dataset {manifest.get('dataset')!r}: --locator exact needs the toy world (its canonical solutions); use --locator rollout")
    return locator


def default_locator(manifest: dict) -> str:
    """exact on the toy world (a canonical solution), rollout elsewhere."""
    return "exact" if manifest.get("dataset") in TOY_DATASETS else "rollout"


def check_request(run_dir: Path, config: str, locator: str) -> tuple[dict, str]:
    """(manifest, locator) for an analysis of `config`, or an AnalysisError/RunDirError before any work starts."""
    manifest = read_manifest(run_dir)
    locator = resolve_locator(manifest, locator, run_dir)
    if config not in manifest["configs"]:
        raise AnalysisError(f"{run_dir} has no config {config!r}; it has {', '.join(manifest['configs'])}")
    if manifest["configs"][config].get("policy") == "oracle":
        raise AnalysisError(f"config {config!r} of {run_dir} is pure oracle sampling: its samples have no base token, so "
                            "no first wrong base token to analyse; choose the base or a guided config")
    if "oracle" not in manifest["models"]:
        raise AnalysisError(f"{run_dir} has no oracle model; the oracle signal needs one")
    return manifest, locator


class NothingWrong(AnalysisError):
    """Every sample of the config is correct: nothing to analyse (not a failure)."""


def _model_location(recorded: dict[str, Any]) -> str:
    """Where to load a run's model from: the folder it was sampled from, or its name (toy:base) when that folder is
    gone or holds other weights now (a run dir moved to another checkout; the old checkout's models retrained)."""
    from sampling.models import ModelError, fingerprint, resolve_model

    path, name = recorded.get("path"), recorded.get("name")
    candidates = [c for c in (path, name) if c]
    for candidate in candidates:  # the first local folder with the recorded weights
        try:
            folder = resolve_model(candidate)
        except ModelError:
            continue
        if Path(folder).is_dir() and fingerprint(folder) == recorded.get("sha256"):
            return candidate
    return path if path and Path(path).exists() else name or path  # load_pair names what is missing; the check, what differs


def collect_tokens(
    run_dir: Path, config: str = "base", max_samples: int = 1000, seed: int = 0,
    progress: Callable[[int, int], None] | None = None, with_hidden: bool = False, locator: str = "auto",
    grader: str | None = None,
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Per-token signal rows (sample, position, label, entropy, top1, margin, oracle_token_prob) and counts.

    The first wrong token is located exactly on the toy world (`locator="exact"`, the default
    there) or by greedy oracle rollouts (`"rollout"`, the default elsewhere; samples whose problem
    the oracle cannot solve are skipped). With with_hidden, also `oracle_hidden`: the oracle's final
    hidden state after each token (the features of the learned judge). Grades are the `grader`'s
    (default: the one that graded the run, as `study fit` reads, `fit.rundir.choose_grader`).
    """
    import verify
    from fit.rundir import choose_grader
    from sampling.models import load_pair
    from sampling.config import PromptFormat
    from sampling.rescore import token_statistics
    from sampling.runner import encode_prompt, prompts_digest
    from verify.tables import wrong_samples_digest

    manifest, locator = check_request(run_dir, config, locator)
    problems = {p.id: p for p in read_problems(run_dir)}
    samples = read_samples(run_dir, columns=["config_id", "problem_id", "sample_index", "token_ids", "provenance", "finish_reason"])
    samples = samples[samples.config_id == config]
    check_grader_graded(run_dir, grader)
    grader = choose_grader(run_dir, grader)
    grades = verify.grade_run(run_dir, grader, progress=False)[["config_id", "problem_id", "sample_index", "correct"]]
    samples = samples.merge(grades, on=["config_id", "problem_id", "sample_index"], how="left")
    wrong = samples[samples.correct == False]  # noqa: E712  (NaN = ungraded is excluded)
    if len(wrong) > max_samples:
        wrong = wrong.sample(max_samples, random_state=seed)
    locations = {role: _model_location(manifest["models"][role]) for role in ("base", "oracle")}
    pair = load_pair(locations["base"], locations["oracle"])
    for role, location in locations.items():  # e.g. `study toy train` has overwritten the shipped pair since
        recorded = manifest["models"][role].get("sha256")
        if recorded is not None and pair.manifest[role]["sha256"] != recorded:
            raise AnalysisError(f"{run_dir}: the {role} model at {location} is not the one the run was sampled "
                                "with (its weights or config changed): rescoring would measure another model")
    tokenizer, prompt_format = pair.tokenizer, PromptFormat(**manifest["prompt"])
    prompts = {pid: encode_prompt(tokenizer, problem, prompt_format) for pid, problem in problems.items()}
    if "prompts_sha256" in manifest and prompts_digest(prompts) != manifest["prompts_sha256"]:
        raise AnalysisError(f"{run_dir}: the prompts now encode differently from when the run was sampled (the "
                            "tokenizer or its chat template changed): rescoring would read other prompts")
    if locator == "exact":
        positions = _exact_positions(wrong, problems, tokenizer)
    else:
        positions = _rollout_positions(wrong, problems, pair, prompts, int(manifest["configs"][config]["max_tokens"]), grader)
    counts = {"samples": len(samples), "wrong": int((samples.correct == False).sum()), "analysed": 0,  # noqa: E712
              "no_wrong_token": 0, "first_wrong_by_oracle": 0, "selected": len(wrong), "grader": grader, "locator": locator,
              "wrong_digest": wrong_samples_digest(grades, config)}  # the report checks it against later grades
    rows = []
    for number, (sample, position) in enumerate(zip(wrong.itertuples(index=False), positions)):
        if progress is not None:
            progress(number, len(wrong))
        ids = [int(t) for t in sample.token_ids]
        if position is None:
            counts["no_wrong_token"] += 1
            continue
        provenance = np.asarray(sample.provenance)
        if provenance[position] != PROVENANCE_BASE:
            counts["first_wrong_by_oracle"] += 1
            continue
        prompt = list(prompts[sample.problem_id])
        base = token_statistics(pair.base, prompt, ids[: position + 1])
        oracle = token_statistics(pair.oracle, prompt, ids[: position + 1])
        keep = np.flatnonzero(provenance[: position + 1] == PROVENANCE_BASE)
        frame = pd.DataFrame({
            "sample": f"{sample.problem_id}/{sample.sample_index}", "problem_id": sample.problem_id, "position": keep,
            "label": keep == position, "entropy": base.entropy[keep], "top1": base.top1[keep],
            "margin": base.margin[keep], "oracle_token_prob": oracle.token_prob[keep],
        })
        if with_hidden:
            frame["oracle_hidden"] = list(oracle.hidden[keep])
        rows.append(frame)
        counts["analysed"] += 1
    columns = ["sample", "problem_id", "position", "label", "entropy", "top1", "margin", "oracle_token_prob"]
    return (pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=columns)), counts


def check_grader_graded(run_dir: Path, grader: str | None) -> None:
    """Refuse a grader other than the ones that graded the run (or, with no grades yet, than the one `study fit`
    would grade it with): grading the run here would change the grades `study fit` reads (`fit.rundir.choose_grader`)."""
    from fit.rundir import choose_grader, graders_of

    if grader is None:
        return
    choose_grader(run_dir, grader)  # an unknown name is named as such
    graded = graders_of(run_dir)
    default = choose_grader(run_dir, None)
    if grader not in graded and grader != default:
        what = f"was graded with {', '.join(graded)}" if graded else f"has no grades yet (`study fit` would grade it with {default})"
        raise AnalysisError(f"{run_dir} {what}, not {grader}: run `study verify {run_dir} --grader {grader}` first if "
                            "you want its grades (analyze reads a run's grades; grading it here with another grader "
                            "would change the grades `study fit` reads)")


def previous_analysis(out: Path, name: str, summary: dict[str, Any]) -> str | None:
    """A note when this analysis replaces one made with other settings (grader, locator, samples, seed)."""
    path = out / f"first_wrong_summary_{name}.json"
    if not path.is_file():
        return None
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    keys = {"grader": "grader", "locator": "locator", "max_samples": "max-samples", "seed": "seed", "n_boot": "boot"}
    every_wrong = all(d.get("selected") == d.get("wrong") for d in (old, summary))  # a larger --max-samples changes nothing
    changed = [f"{flag} {old.get(key)} -> {summary.get(key)}" for key, flag in keys.items()
               if key in old and old.get(key) != summary.get(key) and not (key == "max_samples" and every_wrong)]
    if not changed:
        return None
    return (f"replaced the earlier analysis of this config ({'; '.join(changed)}); "
            f"`study analyze` with the earlier settings writes it again")


def _remove_analysis(out: Path, name: str) -> bool:
    """Remove the analysis files of one config and locator (`first_wrong_{tokens,auc,summary,hist,roc}_NAME.*`)."""
    kinds = ("tokens", "auc", "summary", "hist", "roc")
    files = [p for kind in kinds for p in out.glob(f"first_wrong_{kind}_*")
             if p.name[:-len(p.suffix)] == f"first_wrong_{kind}_{name}"]  # not NAME.rollout's files
    for path in files:
        path.unlink(missing_ok=True)
    return bool(files)


def analyze_run(run_dir: Path, config: str = "base", max_samples: int = 1000, n_boot: int = 500, seed: int = 0,
                progress: Callable[[int, int], None] | None = None, locator: str = "auto",
                grader: str | None = None) -> tuple[pd.DataFrame, dict[str, int], Path]:
    """Collect tokens, compute AUCs, write first_wrong_tokens_NAME.parquet, first_wrong_auc_NAME.csv and plots under RUN_DIR/_fit/analysis/.

    Files are named by the config (`first_wrong_auc_base.csv`), with the locator added where it is not
    the dataset's default (`first_wrong_auc_base.rollout.csv` on the toy world), so neither overwrites the other.
    """
    from fit.signal_plots import plot_signals
    from fit.signals import auc_table

    tokens, counts = collect_tokens(run_dir, config, max_samples, seed, progress, locator=locator, grader=grader)
    locator = counts["locator"]  # resolved (auto: the dataset's default)
    if counts["samples"] == 0:
        raise AnalysisError(f"{run_dir} has no {config!r} samples yet (see `study status {run_dir}`)")
    out = Path(run_dir) / FIT_DIR / ANALYSIS_DIR
    name = config if locator == default_locator(read_manifest(run_dir)) else f"{config}.{locator}"
    if counts["wrong"] == 0:  # an earlier analysis (before a regrade) is of samples no longer wrong
        removed = " (removed its earlier analysis, of samples graded wrong before)" if _remove_analysis(out, name) else ""
        raise NothingWrong(f"all {counts['samples']:,} {config!r} samples in {run_dir} are correct "
                           f"({counts['grader']} grades): no first wrong token to analyse{removed}")
    if counts["analysed"] == 0:
        subset = (f"; of the {counts['selected']:,} that --max-samples {max_samples} chose (a larger one may find some)"
                  if counts["selected"] < counts["wrong"] else "; of them")
        raise AnalysisError(f"no wrong {config!r} sample with a located first wrong base token in {run_dir} "
                            f"({counts['wrong']:,} wrong{subset}, {counts['no_wrong_token']:,} without a located wrong "
                            f"token, {counts['first_wrong_by_oracle']:,} first wrong in an oracle segment)")
    counts["problems"] = int(tokens["problem_id"].nunique())
    table = auc_table(tokens, n_boot=n_boot, seed=seed)
    out.mkdir(parents=True, exist_ok=True)
    summary = {**counts, "max_samples": max_samples, "seed": seed, "n_boot": n_boot}
    counts["replaced"] = previous_analysis(out, name, summary)
    tokens.to_parquet(out / f"first_wrong_tokens_{name}.parquet")
    table.to_csv(out / f"first_wrong_auc_{name}.csv", index=False)
    (out / f"first_wrong_summary_{name}.json").write_text(json.dumps(summary, indent=1))
    plot_signals(tokens, table, out, name)
    counts["name"] = name  # the files' suffix: first_wrong_auc_NAME.csv, ...
    return table, counts, out
