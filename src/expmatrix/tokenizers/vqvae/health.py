"""Codebook health and reconstruction fidelity of a VQ-VAE, measured on held-out objects.

Utilisation (codes used / codebook size), the perplexity of code usage (exp of its entropy: the
number of equally used codes it is worth), dead codes (never used), the commitment loss, and per
feature the reconstruction error in physical units (after the inverse transform), with histograms
of the original and reconstructed values for the plots.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from tabulate import tabulate

HIST_BINS = 50
RELATIVE = ("E", "pT")  # energies: also the median relative error


def code_usage(codes: np.ndarray, size: int) -> dict[str, float]:
    counts = np.bincount(codes, minlength=size)
    p = counts[counts > 0] / max(1, counts.sum())
    used = int((counts > 0).sum())
    return {"utilisation": used / size, "perplexity": float(np.exp(-(p * np.log(p)).sum())), "dead_codes": size - used}


def feature_errors(original: np.ndarray, recon: np.ndarray, names: tuple[str, ...]) -> dict[str, dict[str, float]]:
    """Per feature: rmse, mean absolute error and (energies) median relative error, in physical units."""
    out = {}
    for k, f in enumerate(names):
        d = recon[:, k] - original[:, k]
        out[f] = {"rmse": float(np.sqrt((d**2).mean())), "mae": float(np.abs(d).mean())}
        if f in RELATIVE:
            out[f]["median_rel"] = float(np.median(np.abs(d) / np.maximum(np.abs(original[:, k]), 1e-12)))
    return out


def histograms(original: np.ndarray, recon: np.ndarray, names: tuple[str, ...]) -> dict[str, dict[str, list]]:
    """Per feature: shared edges over the original's 0.5-99.5 percentile range, and both histograms."""
    out = {}
    for k, f in enumerate(names):
        lo, hi = np.percentile(original[:, k], [0.5, 99.5])
        edges = np.linspace(lo, hi if hi > lo else lo + 1, HIST_BINS + 1)
        out[f] = {
            "edges": edges.tolist(),
            "original": np.histogram(original[:, k], edges)[0].tolist(),
            "reconstructed": np.histogram(recon[:, k], edges)[0].tolist(),
        }
    return out


def health_table(record: dict[str, Any]) -> str:
    """The per-epoch health table and the final per-feature resolution, as `tokenizer fit/inspect` print them."""
    rows = [
        [h["epoch"], f"{h['loss']:.4f}", f"{h['utilisation']:.1%}", f"{h['perplexity']:.1f}", h["dead_codes"],
         f"{h['commitment']:.4f}", f"{h['recon']:.4f}"]
        for h in record["history"]
    ]  # fmt: skip
    head = ["epoch", "train loss", "utilisation", "perplexity", "dead codes", "commitment", "recon (normalized)"]
    errors = record["history"][-1]["errors"]
    feats = [
        [f, f"{e['rmse']:.4g}", f"{e['mae']:.4g}", f"{e['median_rel']:.2%}" if "median_rel" in e else ""]
        for f, e in errors.items()
    ]
    size = record["codebook_size"]
    last = record["history"][-1]
    summary = (
        f"codebook {size} codes, held-out {record['holdout_objects']} objects of {record['holdout_events']} events: "
        f"utilisation {last['utilisation']:.1%} ({size - last['dead_codes']} codes), "
        f"perplexity {last['perplexity']:.1f}"
    )
    return "\n\n".join(
        [
            tabulate(rows, headers=head),
            tabulate(feats, headers=["feature", "rmse", "mean |error|", "median relative"]),
            summary,
        ]
    )


def plot_health(record: dict[str, Any], folder: str | Path) -> list[Path]:
    """reconstruction.png (original vs reconstructed per feature) and codebook.png (health per epoch)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    hists = record["histograms"]
    fig, axes = plt.subplots(1, len(hists), figsize=(3.6 * len(hists), 3.2), squeeze=False)
    for ax, (f, h) in zip(axes[0], hists.items(), strict=True):
        ax.stairs(h["original"], h["edges"], label="original", color="black")
        ax.stairs(h["reconstructed"], h["edges"], label="reconstructed", color="tab:orange")
        ax.set_xlabel(f + (" [GeV]" if f in RELATIVE else ""))
    axes[0][0].set_ylabel("held-out objects")
    axes[0][0].legend(frameon=False)
    fig.tight_layout()
    paths = [folder / "reconstruction.png"]
    fig.savefig(paths[0], dpi=110)
    plt.close(fig)
    epochs = [h["epoch"] for h in record["history"]]
    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    ax.plot(epochs, [h["utilisation"] for h in record["history"]], marker="o", label="utilisation")
    ax.axhline(record["min_utilisation"], color="grey", ls="--", label="floor")
    ax.set_xlabel("epoch")
    ax.set_ylim(0, 1.05)
    ax2 = ax.twinx()
    ax2.plot(epochs, [h["perplexity"] for h in record["history"]], color="tab:green", marker="s", label="perplexity")
    ax2.set_ylabel("perplexity")
    handles = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
    ax.legend(handles=handles, loc="lower right", frameon=False)
    fig.tight_layout()
    paths.append(folder / "codebook.png")
    fig.savefig(paths[1], dpi=110)
    plt.close(fig)
    return paths
