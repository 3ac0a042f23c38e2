"""Binary classification metrics for the declared signal class (label 1)."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve


def _interp(x: np.ndarray, xp: np.ndarray, fp: np.ndarray) -> float:
    return float(np.interp(x, xp, fp))


def binary_metrics(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """AUROC, accuracy at 0.5, signal efficiency at background rejection 10 and 100,
    background rejection (1/eps_B) at signal efficiency 0.5."""
    if len(np.unique(labels)) != 2:
        raise ValueError(f"need both classes to score, got labels {np.unique(labels).tolist()}")
    fpr, tpr, _ = roc_curve(labels, scores)
    eps_b_at_half = _interp(0.5, tpr, fpr)
    return {
        "auroc": float(roc_auc_score(labels, scores)),
        "accuracy": float(((scores >= 0.5) == labels.astype(bool)).mean()),
        "sig_eff_at_bkg_rej_10": _interp(0.1, fpr, tpr),
        "sig_eff_at_bkg_rej_100": _interp(0.01, fpr, tpr),
        "bkg_rej_at_sig_eff_50": 1.0 / eps_b_at_half if eps_b_at_half > 0 else float("inf"),
    }
