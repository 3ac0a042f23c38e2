"""Binary classification metrics for the declared signal class (label 1), and which way each is better.

Working points follow the HEP convention: signal efficiency eps_S (true positive rate) at a
background rejection 1/eps_B (eps_B: false positive rate), and background rejection at a
signal efficiency. Both are read off the ROC curve by linear interpolation between its
points. A working point the test set cannot resolve (fewer than one background event would
pass the cut, i.e. eps_B < 1/n_background) is None, not an extrapolated number.
"""

from __future__ import annotations

import numpy as np

BKG_REJECTIONS = (10, 50, 100, 1000)  # 1/eps_B working points for sig_eff_at_bkg_rej_<R>
SIG_EFFICIENCIES = (30, 50)  # eps_S in percent for bkg_rej_at_sig_eff_<E>
PARTIAL_AUROC_MAX_FPR = 0.1  # partial AUROC over eps_B in [0, 0.1], McClish-standardized (0.5 random, 1 perfect)
ECE_BINS = 15  # equal-width score bins of the expected calibration error
LOWER_IS_BETTER = frozenset({"brier", "ece", "loss", "train_loss", "val_loss", "train_seconds"})
LOWER_IS_BETTER_PREFIXES = ("angular_error", "zenith_error", "azimuth_error", "val_angle")  # angles (rad)


def higher_is_better(metric: str) -> bool:
    """Direction of a metric by its name, with or without a `test.`/`val.` prefix."""
    name = metric.rsplit(".", 1)[-1]
    return name not in LOWER_IS_BETTER and not name.startswith(LOWER_IS_BETTER_PREFIXES)


def roc_envelope(x: np.ndarray, y: np.ndarray, best: str) -> tuple[np.ndarray, np.ndarray]:
    """Unique x (ascending) with the best y at each: a ROC curve has vertical and horizontal steps."""
    order = np.argsort(x, kind="stable")
    xs, start = np.unique(x[order], return_index=True)
    reduce = np.maximum if best == "max" else np.minimum
    return xs, reduce.reduceat(y[order], start)


def roc_curve_of(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(eps_B, eps_S) along the ROC curve of the declared signal (label 1), one point per distinct
    score from the highest down, starting at (0, 0) (numpy only: no scikit-learn import in workers)."""
    if len(np.unique(labels)) != 2:
        raise ValueError(f"need both classes to score, got labels {np.unique(labels).tolist()}")
    order = np.argsort(-scores, kind="mergesort")
    ordered = scores[order]
    last = np.r_[np.flatnonzero(np.diff(ordered)), len(ordered) - 1]  # last event of each distinct score
    tps = np.cumsum(labels[order], dtype=np.float64)[last]
    fps = (last + 1) - tps
    return np.r_[0.0, fps] / fps[-1], np.r_[0.0, tps] / tps[-1]


def auroc_of(fpr: np.ndarray, tpr: np.ndarray, max_fpr: float | None = None) -> float:
    """Area under the ROC curve; with `max_fpr` the partial area up to it, McClish-standardized
    (0.5 random, 1 perfect), as scikit-learn's `roc_auc_score(max_fpr=...)`."""
    if max_fpr is None:
        return float(np.trapezoid(tpr, fpr))
    stop = int(np.searchsorted(fpr, max_fpr, "right"))
    y = np.interp(max_fpr, fpr[stop - 1 : stop + 1], tpr[stop - 1 : stop + 1])
    partial = float(np.trapezoid(np.r_[tpr[:stop], y], np.r_[fpr[:stop], max_fpr]))
    min_area, max_area = 0.5 * max_fpr**2, max_fpr
    return 0.5 * (1 + (partial - min_area) / (max_area - min_area))


def sig_eff_at(fpr: np.ndarray, tpr: np.ndarray, eps_b: float, n_bkg: int) -> float | None:
    """Signal efficiency at background efficiency `eps_b`; None if the test set cannot resolve it."""
    if eps_b * n_bkg < 1:
        return None
    xs, ys = roc_envelope(fpr, tpr, "max")
    return float(np.interp(eps_b, xs, ys))


def bkg_rej_at(fpr: np.ndarray, tpr: np.ndarray, eps_s: float, n_bkg: int) -> float | None:
    """Background rejection 1/eps_B at signal efficiency `eps_s`; None if no background event would pass."""
    xs, ys = roc_envelope(tpr, fpr, "min")
    eps_b = float(np.interp(eps_s, xs, ys))
    return 1.0 / eps_b if eps_b * n_bkg >= 1 else None


def expected_calibration_error(scores: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float:
    """Sum over equal-width score bins of (share of events) x |signal fraction - mean score|."""
    idx = np.minimum((scores * bins).astype(int), bins - 1)
    n = np.bincount(idx, minlength=bins)
    gap = np.abs(np.bincount(idx, labels, bins) - np.bincount(idx, scores, bins))  # n * |frac - mean| per bin
    return float(gap.sum() / n.sum())


def binary_metrics(scores: np.ndarray, labels: np.ndarray) -> dict[str, float | None]:
    """Every test metric of a binary job.

    Shape: scores [N] signal probability in [0, 1]; labels [N] 1 = declared signal, 0 = background.
    Keys: auroc, partial_auroc, accuracy and f1 (cut at 0.5), brier, ece,
    sig_eff_at_bkg_rej_<R> for R in BKG_REJECTIONS, bkg_rej_at_sig_eff_<E> for E in SIG_EFFICIENCIES.
    """
    labels = np.asarray(labels).astype(int)
    scores = np.asarray(scores, dtype=np.float64)
    fpr, tpr = roc_curve_of(scores, labels)
    n_bkg = int((labels == 0).sum())
    passed = scores >= 0.5
    tp = int((passed & (labels == 1)).sum())
    f1_den = int(passed.sum()) + int(labels.sum())
    out: dict[str, float | None] = {
        "auroc": auroc_of(fpr, tpr),
        "partial_auroc": auroc_of(fpr, tpr, PARTIAL_AUROC_MAX_FPR),
        "accuracy": float((passed == labels.astype(bool)).mean()),
        "f1": 2 * tp / f1_den,
        "brier": float(np.mean((scores - labels) ** 2)),
        "ece": expected_calibration_error(scores, labels),
    }
    out.update({f"sig_eff_at_bkg_rej_{r}": sig_eff_at(fpr, tpr, 1 / r, n_bkg) for r in BKG_REJECTIONS})
    out.update({f"bkg_rej_at_sig_eff_{e}": bkg_rej_at(fpr, tpr, e / 100, n_bkg) for e in SIG_EFFICIENCIES})
    return out
