"""First-wrong-token analysis of a run: where do wrong base samples go wrong, and is there a signal?

For wrong samples of one config (default: pure base), locate the first wrong token exactly (toy
world: `experiments.toy.first_wrong`), rescore each sample with the base and the oracle (teacher
forcing), and compare the signals at the first wrong token with those at the base tokens before
it: base entropy, base top-1 probability, base top-1 − top-2 margin, and the oracle's probability
of the base's token.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from experiments.toy.first_wrong import NotAToyProblem, first_wrong_token
from sampling.records import PROVENANCE_BASE
from sampling.store import ANALYSIS_DIR, FIT_DIR, read_manifest, read_problems, read_samples


class AnalysisError(ValueError):
    """A run that cannot be analysed as asked."""


def collect_tokens(
    run_dir: Path, config: str = "base", max_samples: int = 1000, seed: int = 0,
    progress: Callable[[int], None] | None = None, with_hidden: bool = False,
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Per-token signal rows (sample, position, label, entropy, top1, margin, oracle_token_prob) and counts.

    With with_hidden, also `oracle_hidden`: the oracle's final hidden state after each token
    (the features of the learned judge).
    """
    import verify
    from sampling.models import load_pair
    from sampling.config import PromptFormat
    from sampling.rescore import token_statistics
    from sampling.runner import encode_prompt

    manifest = read_manifest(run_dir)
    if manifest.get("dataset") not in ("toy", "toy-train"):
        raise AnalysisError(
            f"{run_dir} samples dataset {manifest.get('dataset')!r}: the exact first-wrong-token locator needs the toy "
            "world; locating it on real datasets with oracle rollouts is not supported yet"
        )
    if config not in manifest["configs"]:
        raise AnalysisError(f"{run_dir} has no config {config!r}; it has {', '.join(manifest['configs'])}")
    if "oracle" not in manifest["models"]:
        raise AnalysisError(f"{run_dir} has no oracle model; the oracle signal needs one")
    problems = {p.id: p for p in read_problems(run_dir)}
    samples = read_samples(run_dir, columns=["config_id", "problem_id", "sample_index", "token_ids", "provenance", "finish_reason"])
    samples = samples[samples.config_id == config]
    grades = verify.grade_run(run_dir, progress=False)[["config_id", "problem_id", "sample_index", "correct"]]
    samples = samples.merge(grades, on=["config_id", "problem_id", "sample_index"], how="left")
    wrong = samples[samples.correct == False]  # noqa: E712  (NaN = ungraded is excluded)
    if len(wrong) > max_samples:
        wrong = wrong.sample(max_samples, random_state=seed)
    pair = load_pair(manifest["models"]["base"]["path"], manifest["models"]["oracle"]["path"])
    tokenizer, prompt_format = pair.tokenizer, PromptFormat(**manifest["prompt"])
    counts = {"samples": len(samples), "wrong": int((samples.correct == False).sum()), "analysed": 0,  # noqa: E712
              "no_wrong_token": 0, "first_wrong_by_oracle": 0}
    rows = []
    for number, sample in enumerate(wrong.itertuples(index=False)):
        if progress is not None:
            progress(number)
        problem = problems[sample.problem_id]
        ids = [int(t) for t in sample.token_ids]
        stopped = sample.finish_reason == "eos"
        body = ids[:-1] if stopped else ids
        try:
            position = first_wrong_token(problem.problem, [tokenizer.decode([t]) for t in body], stopped)
        except NotAToyProblem as exc:
            raise AnalysisError(f"problem {problem.id}: {exc}") from None
        if position is None:
            counts["no_wrong_token"] += 1
            continue
        provenance = np.asarray(sample.provenance)
        if provenance[position] != PROVENANCE_BASE:
            counts["first_wrong_by_oracle"] += 1
            continue
        prompt = list(encode_prompt(tokenizer, problem, prompt_format))
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


def analyze_run(run_dir: Path, config: str = "base", max_samples: int = 1000, n_boot: int = 500, seed: int = 0,
                progress: Callable[[int], None] | None = None) -> tuple[pd.DataFrame, dict[str, int], Path]:
    """Collect tokens, compute AUCs, write tokens.parquet, auc.csv and plots under RUN_DIR/_fit/analysis/."""
    from fit.signal_plots import plot_signals
    from fit.signals import auc_table

    tokens, counts = collect_tokens(run_dir, config, max_samples, seed, progress)
    if counts["analysed"] == 0:
        raise AnalysisError(f"no wrong {config!r} sample with a located first wrong base token in {run_dir}")
    table = auc_table(tokens, n_boot=n_boot, seed=seed)
    out = Path(run_dir) / FIT_DIR / ANALYSIS_DIR
    out.mkdir(parents=True, exist_ok=True)
    tokens.to_parquet(out / f"first_wrong_tokens_{config}.parquet")
    table.to_csv(out / f"first_wrong_auc_{config}.csv", index=False)
    plot_signals(tokens, table, out, config)
    return table, counts, out
