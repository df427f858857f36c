"""Plots of the first-wrong-token analysis: per-signal histograms and ROC curves (PNG + SVG)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from fit.plots import _save, plt
from fit.report import auc_cell
from fit.signals import SIGNALS, roc_curve


def plot_signals(tokens: pd.DataFrame, table: pd.DataFrame, out_dir: Path, config: str) -> list[Path]:
    """Histograms (first wrong token vs earlier base tokens) and ROC curves of every signal."""
    present = [(name, column, sign) for name, (column, sign) in SIGNALS.items() if column in tokens]
    labels = tokens["label"].to_numpy(bool)
    fig, axes = plt.subplots(1, len(present), figsize=(4.2 * len(present), 3.6))
    for ax, (name, column, _) in zip(np.atleast_1d(axes), present):
        values = tokens[column].to_numpy(float)
        bins = np.linspace(np.nanmin(values), np.nanmax(values) + 1e-9, 30)
        ax.hist(values[~labels], bins=bins, density=True, alpha=0.55, label="earlier base tokens")
        ax.hist(values[labels], bins=bins, density=True, alpha=0.55, label="first wrong token")
        ax.set_xlabel(name.replace(" (low)", ""))
        ax.set_ylabel("density")
    np.atleast_1d(axes)[0].legend(fontsize=8)
    fig.suptitle(f"Signals at the first wrong token vs before it ({config}, {int(labels.sum())} wrong samples)")
    fig.tight_layout()
    paths = _save(fig, out_dir, f"first_wrong_hist_{config}")

    fig, ax = plt.subplots(figsize=(5.2, 4.8))
    aucs = table.set_index("signal")
    for name, column, sign in present:
        fpr, tpr = roc_curve(sign * tokens[column].to_numpy(float), labels)
        row = aucs.loc[name]
        ax.plot(fpr, tpr, label=f"{name}: AUC {auc_cell(row.auc, row.low, row.high)}")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("false positive rate (earlier base tokens flagged)")
    ax.set_ylabel("true positive rate (first wrong tokens flagged)")
    ax.set_title(f"Which signal flags the first wrong token? ({config})")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return paths + _save(fig, out_dir, f"first_wrong_roc_{config}")
