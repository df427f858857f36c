"""Does a per-token signal flag the first wrong token? ROC AUC with bootstrap CIs over problems.

Each row is one base-written token of a wrong sample; `label` is 1 for the sample's first wrong
token, 0 for its other tokens before it. AUC is the probability that the first wrong token scores
higher than another token (Mann–Whitney U / (n_pos · n_neg), ties count one half). CIs resample
whole problems with all their samples' tokens (a sample's tokens are not independent, and the wrong
samples of one problem often fail alike), as every other CI of the toolkit does; tables without a
`problem_id` column resample samples.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import rankdata

# signal name -> (column, sign): score = sign * column, so that higher means "more suspicious"
SIGNALS: dict[str, tuple[str, float]] = {
    "base entropy": ("entropy", 1.0),
    "base top-1 probability (low)": ("top1", -1.0),
    "base top-1 − top-2 margin (low)": ("margin", -1.0),
    "oracle probability of the base token (low)": ("oracle_token_prob", -1.0),
}


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (NaN unless both classes occur)."""
    scores, labels = np.asarray(scores, float), np.asarray(labels, bool)
    n_pos, n_neg = labels.sum(), (~labels).sum()
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def roc_curve(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False- and true-positive rates over all thresholds (from (0, 0) to (1, 1))."""
    order = np.argsort(-np.asarray(scores, float), kind="stable")
    sorted_labels = np.asarray(labels, bool)[order]
    tps = np.concatenate([[0], np.cumsum(sorted_labels)])
    fps = np.concatenate([[0], np.cumsum(~sorted_labels)])
    return fps / max(fps[-1], 1), tps / max(tps[-1], 1)


def auc_table(tokens: pd.DataFrame, n_boot: int = 500, seed: int = 0) -> pd.DataFrame:
    """AUC and 95% CI per signal (bootstrap over problems; none from a single problem); `tokens` has columns sample
    (and problem_id), label and the signal columns."""
    rng = np.random.default_rng(seed)
    groups = tokens.groupby("problem_id" if "problem_id" in tokens else "sample").indices
    samples = list(groups)
    rows = []
    for name, (column, sign) in SIGNALS.items():
        if column not in tokens:
            continue
        scores = sign * tokens[column].to_numpy(float)
        labels = tokens["label"].to_numpy(bool)
        boot = []
        for _ in range(n_boot if len(samples) > 1 else 0):  # resampling one problem says nothing of the spread
            pick = rng.integers(0, len(samples), len(samples))
            index = np.concatenate([groups[samples[i]] for i in pick])
            boot.append(roc_auc(scores[index], labels[index]))
        low, high = np.nanquantile(boot, [0.025, 0.975]) if np.isfinite(boot).any() else (np.nan, np.nan)
        rows.append({"signal": name, "auc": roc_auc(scores, labels), "low": float(low), "high": float(high),
                     "positives": int(labels.sum()), "negatives": int((~labels).sum())})
    return pd.DataFrame(rows)
