"""Train the learned judge: a logistic "important mistake" head on the oracle's hidden states.

Labels are exact in the toy world: in a wrong base sample, the first wrong token is a mistake and
the base tokens before it are not (tokens after it are not used). Features are the oracle's final
hidden state after reading each token. Train on a run over the toy *training* split
(`--dataset toy-train`) so the judge never sees test problems. Problems are split in two (by a
hash of the id): the head is fitted on one half and its ROC AUC reported on the other.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.optimize import minimize
from scipy.special import expit, log_expit

from fit.signals import roc_auc

L2 = 1e-2  # ridge penalty on the weights (features are final-norm hidden states, O(1) scale)


@dataclass
class JudgeHeadFit:
    """A fitted head and how well it separates first wrong tokens on held-out problems."""

    weight: np.ndarray
    bias: float
    train_auc: float
    heldout_auc: float
    train_rows: int
    heldout_rows: int


def _held_out(problem_id: str) -> bool:
    """Stable half split of problems."""
    return int(hashlib.sha256(problem_id.encode()).hexdigest(), 16) % 2 == 1


def fit_logistic(features: np.ndarray, labels: np.ndarray, l2: float = L2) -> tuple[np.ndarray, float]:
    """Class-balanced, L2-regularised logistic regression by L-BFGS."""
    y = labels.astype(float)
    weights = np.where(labels, 0.5 / max(y.sum(), 1), 0.5 / max((1 - y).sum(), 1))

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = theta[:-1], theta[-1]
        z = features @ w + b
        value = -(weights * (y * log_expit(z) + (1 - y) * log_expit(-z))).sum() + 0.5 * l2 * w @ w
        residual = weights * (expit(z) - y)
        return value, np.concatenate([features.T @ residual + l2 * w, [residual.sum()]])

    result = minimize(loss, np.zeros(features.shape[1] + 1), jac=True, method="L-BFGS-B")
    return result.x[:-1], float(result.x[-1])


def train_judge_head(tokens: pd.DataFrame) -> JudgeHeadFit:
    """Fit on half of the problems, report AUC on the other half (tokens from collect_tokens(with_hidden=True))."""
    if tokens.empty or tokens["label"].sum() < 4:
        raise ValueError("too few located first wrong tokens to train a judge head (sample more wrong base solutions)")
    held = tokens["problem_id"].map(_held_out).to_numpy()
    features = np.stack(tokens["oracle_hidden"].to_numpy()).astype(float)
    labels = tokens["label"].to_numpy(bool)
    for part, rows in (("training", ~held), ("held-out", held)):
        if labels[rows].sum() == 0 or (~labels[rows]).sum() == 0:  # an all-zero head, or an AUC of nothing
            raise ValueError(f"the {part} half of the problems has no {'first wrong' if labels[rows].sum() == 0 else 'earlier'} "
                             f"tokens ({int(rows.sum())} tokens in all): sample more problems of the training split")
    weight, bias = fit_logistic(features[~held], labels[~held])
    scores = features @ weight + bias
    return JudgeHeadFit(weight, bias, roc_auc(scores[~held], labels[~held]), roc_auc(scores[held], labels[held]),
                        int((~held).sum()), int(held.sum()))
