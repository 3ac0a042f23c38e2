"""Report plots (matplotlib, no pyplot state): each is written as PNG and PDF, the PNG path returned.

Direction jobs get the cumulative distribution of the angular error instead of ROC curves.
ROC curves use the HEP form: background rejection 1/eps_B (log) against signal efficiency eps_S,
mean over seeds with a min-max band; points the test set cannot resolve (fewer than one
background event passing) are left out, as in the metrics.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import polars as pl
from matplotlib.figure import Figure

from expmatrix.metrics import roc_curve_of, roc_envelope

EFF_GRID = np.linspace(0.02, 1.0, 99)  # signal efficiencies the seeds' curves are averaged at
ANGLE_GRID = np.linspace(0.0, np.pi, 181)  # angular errors (rad) the seeds' distributions are averaged at
COS_ZENITH = np.linspace(-1.0, 1.0, 11)  # bins of the resolution-per-direction panel


def save(fig: Figure, out: Path, stem: str) -> Path:
    """PNG (150 dpi) and PDF without timestamps, so the same report gives the same files."""
    out.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out / f"{stem}.png", dpi=150, metadata={"Software": None})
    fig.savefig(out / f"{stem}.pdf", metadata={"CreationDate": None, "Producer": None, "Creator": None})
    return out / f"{stem}.png"


def rejection_curve(predictions: pl.DataFrame) -> np.ndarray:
    """1/eps_B at each signal efficiency of EFF_GRID; NaN where no background event would pass."""
    labels = predictions["label"].to_numpy().astype(int)
    fpr, tpr = roc_curve_of(predictions["score"].to_numpy(), labels)
    xs, ys = roc_envelope(tpr, fpr, "min")
    eps_b = np.interp(EFF_GRID, xs, ys)
    n_bkg = int((labels == 0).sum())
    with np.errstate(divide="ignore"):
        return np.where(eps_b * n_bkg >= 1, 1.0 / eps_b, np.nan)


def _band(ax, x: np.ndarray, runs: list[np.ndarray], label: str) -> None:
    """Mean line and min-max band over seeds (NaN-aware)."""
    y = np.vstack(runs)
    with warnings.catch_warnings():  # an all-NaN column (unresolved on every seed) is drawn as a gap
        warnings.simplefilter("ignore", RuntimeWarning)
        (line,) = ax.plot(x, np.nanmean(y, axis=0), label=label)
        if len(runs) > 1:
            ax.fill_between(x, np.nanmin(y, axis=0), np.nanmax(y, axis=0), color=line.get_color(), alpha=0.2, lw=0)


def roc_plot(curves: dict[str, list[pl.DataFrame]], title: str, out: Path, stem: str) -> Path:
    """One curve per label, from the test predictions of each of its seeds."""
    fig = Figure(figsize=(6, 4.5))
    ax = fig.add_subplot()
    for label, preds in curves.items():
        _band(ax, EFF_GRID, [rejection_curve(p) for p in preds], label)
    ax.set(yscale="log", xlabel=r"signal efficiency $\varepsilon_S$", ylabel=r"background rejection $1/\varepsilon_B$")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    return save(fig, out, stem)


def effects_plot(effects: pl.DataFrame, metric: str, out: Path) -> Path:
    """One panel per factor: each level's paired difference to the baseline with its CI."""
    groups = effects.partition_by("factor", maintain_order=True)
    fig = Figure(figsize=(3.2 * len(groups), 3.4))
    for k, g in enumerate(groups):
        ax = fig.add_subplot(1, len(groups), k + 1)
        x = np.arange(g.height)
        delta = g["delta"].fill_null(np.nan).to_numpy()
        low = delta - g["ci_low"].fill_null(np.nan).to_numpy()
        high = g["ci_high"].fill_null(np.nan).to_numpy() - delta
        ax.errorbar(x, delta, yerr=np.nan_to_num(np.vstack([low, high])), fmt="o", capsize=4)
        ax.axhline(0, color="k", lw=0.8)
        ax.set_xticks(
            x, [f"{lv}\n{m:.3f}" if m is not None else lv for lv, m in zip(g["level"], g["marginal"], strict=True)]
        )
        ax.set_title(f"{g['factor'][0]} (vs {g['baseline'][0]})", fontsize=9)
        ax.grid(alpha=0.3, axis="y")
    fig.axes[0].set_ylabel(f"Δ {metric} (CI)")
    return save(fig, out, "effects")


def heatmap(inter: pl.DataFrame, metric: str, out: Path) -> Path:
    """The metric's marginal over two factors, annotated."""
    factor, by = inter["factor"][0], inter["by"][0]
    cols = inter["level"].unique(maintain_order=True).to_list()
    rows = inter["by_level"].unique(maintain_order=True).to_list()
    grid = inter.pivot(on="level", index="by_level", values="marginal").select(cols).fill_null(np.nan).to_numpy()
    fig = Figure(figsize=(1.6 + 1.4 * len(cols), 1.2 + 0.6 * len(rows)))
    ax = fig.add_subplot()
    im = ax.imshow(grid, cmap="viridis", aspect="auto")
    for (i, j), v in np.ndenumerate(grid):
        dark = np.isnan(v) or im.norm(v) < 0.5  # light text on the dark end of viridis
        ax.text(j, i, "n/a" if np.isnan(v) else f"{v:.4f}", ha="center", va="center", color="w" if dark else "k")
    ax.set_xticks(range(len(cols)), cols)
    ax.set_yticks(range(len(rows)), rows)
    ax.set(xlabel=factor, ylabel=by)
    fig.colorbar(im, ax=ax, label=metric)
    return save(fig, out, f"heatmap_{factor}__{by}")


def median_by_bin(x: np.ndarray, y: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Median of `y` in each bin of `x` ([edges[i], edges[i+1]), the last bin closed); NaN where empty."""
    k = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, len(edges) - 2)
    return np.array([np.median(y[k == i]) if (k == i).any() else np.nan for i in range(len(edges) - 1)])


def angular_error_plot(curves: dict[str, list[pl.DataFrame]], title: str, out: Path, stem: str) -> Path:
    """Left: the cumulative distribution of the test angular error, one curve per label (mean and
    min-max band over its seeds), the median in the legend; radians below, degrees on top. Right:
    the median angular error against the cosine of the true zenith (the resolution per direction)."""
    fig = Figure(figsize=(11, 4.5))
    ax, zen_ax = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    centers = (COS_ZENITH[:-1] + COS_ZENITH[1:]) / 2
    for label, preds in curves.items():
        errors = [np.sort(p["angular_error"].to_numpy()) for p in preds]
        cdfs = [np.searchsorted(e, ANGLE_GRID, side="right") / len(e) for e in errors]
        median = np.mean([np.median(e) for e in errors])
        _band(ax, ANGLE_GRID, cdfs, f"{label} (median {median:.3f})")
        by_zenith = [median_by_bin(p["true_z"].to_numpy(), p["angular_error"].to_numpy(), COS_ZENITH) for p in preds]
        _band(zen_ax, centers, by_zenith, label)
    ax.axvline(np.pi / 2, color="0.6", lw=0.8, ls=":")  # the median error of a random (isotropic) guess
    ax.set(xlim=(0, np.pi), ylim=(0, 1), xlabel="angular error [rad]", ylabel="fraction of test events below")
    ax.secondary_xaxis("top", functions=(np.degrees, np.radians)).set_xlabel("angular error [deg]")
    zen_ax.set(xlim=(-1, 1), ylim=(0, None), xlabel="cos(true zenith)   (+1: from above)",
               ylabel="median angular error [rad]")  # fmt: skip
    zen_ax.secondary_yaxis("right", functions=(np.degrees, np.radians)).set_ylabel("[deg]")
    fig.suptitle(title, fontsize=9)
    for a in (ax, zen_ax):
        a.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    return save(fig, out, stem)


def learning_curves(
    histories: dict[str, list[pl.DataFrame]], out: Path, metric: str = "val_auroc", label: str = "val AUROC"
) -> Path:
    """Loss (train dashed, val solid) and a validation metric per epoch; mean and min-max band over seeds."""
    fig = Figure(figsize=(10, 4))
    loss_ax, auc_ax = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for name, runs in histories.items():
        epochs = min(h.height for h in runs)
        x = np.arange(1, epochs + 1)
        _band(loss_ax, x, [h["val_loss"].to_numpy()[:epochs] for h in runs], name)
        color = loss_ax.lines[-1].get_color()
        loss_ax.plot(x, np.mean([h["train_loss"].to_numpy()[:epochs] for h in runs], axis=0), "--", color=color)
        _band(auc_ax, x, [h[metric].to_numpy()[:epochs] for h in runs], name)
    loss_ax.set(xlabel="epoch", ylabel="loss (val solid, train dashed)")
    auc_ax.set(xlabel="epoch", ylabel=label)
    for ax in (loss_ax, auc_ax):
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    auc_ax.legend(fontsize=7)
    return save(fig, out, "learning_curves")
