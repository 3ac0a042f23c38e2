"""Direction regression: test metrics and predictions of a job, from the model's one forward path.

Units: radians everywhere (as the IceCube Kaggle metric, the mean angular error, and the
per-epoch `val_angle`). Zenith in [0, pi], azimuth in [0, 2 pi) of the direction the particle
comes from; the azimuth error is the wrapped difference, in [0, pi].
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import torch

from expmatrix.data.icecube import zenith_azimuth
from expmatrix.training.losses import VonMisesFisher, angular_error

QUANTILE = 0.68  # angular_error_68: the angle that 68% of the events stay within (the "1 sigma" resolution)
LENGTH_EDGES = (64, 256, 1024)  # pulses per event (in the file, before any selection): bins <=64, 65-256, ...


def length_bins(edges: tuple[int, ...] = LENGTH_EDGES) -> list[tuple[str, int, int | None]]:
    """(name, lowest, highest or None) of every event-length bin: `len_1_64`, ..., `len_1025_up`."""
    lows, highs = (1, *(e + 1 for e in edges)), (*edges, None)
    return [(f"len_{lo}_{hi if hi is not None else 'up'}", lo, hi) for lo, hi in zip(lows, highs, strict=True)]


def metrics_by_length(angle: np.ndarray, length: np.ndarray) -> dict[str, float]:
    """Angular error (mean, median, 68% quantile) and the event count of every length bin: keys
    `angular_error_mean_<bin>`, ..., `events_<bin>`; a bin without events has only its count (0)."""
    out: dict[str, float] = {}
    for name, lo, hi in length_bins():
        sel = angle[(length >= lo) & (length <= (hi if hi is not None else np.inf))]
        out[f"events_{name}"] = len(sel)
        if len(sel):
            out[f"angular_error_mean_{name}"] = float(sel.mean())
            out[f"angular_error_median_{name}"] = float(np.median(sel))
            out[f"angular_error_68_{name}"] = float(np.quantile(sel, QUANTILE))
    return out


def direction_metrics(pred: np.ndarray, true: np.ndarray, kappa: np.ndarray | None = None) -> dict[str, float]:
    """Every test metric of a direction job (radians).

    Shape: pred, true (N, 3); kappa (N,) vMF concentrations or None.
    Keys: angular_error_mean|median|68, zenith_error_mean|median, azimuth_error_mean|median,
    and with vMF kappa_median and kappa_mean.
    """
    angle = angular_error(torch.from_numpy(pred), torch.from_numpy(true)).numpy()
    (zen_p, az_p), (zen_t, az_t) = zenith_azimuth(pred.astype(np.float64)), zenith_azimuth(true.astype(np.float64))
    d_zen = np.abs(zen_p - zen_t)
    d_az = np.abs(az_p - az_t)
    d_az = np.minimum(d_az, 2 * np.pi - d_az)
    out = {
        "angular_error_mean": float(angle.mean()),
        "angular_error_median": float(np.median(angle)),
        "angular_error_68": float(np.quantile(angle, QUANTILE)),
        "zenith_error_mean": float(d_zen.mean()),
        "zenith_error_median": float(np.median(d_zen)),
        "azimuth_error_mean": float(d_az.mean()),
        "azimuth_error_median": float(np.median(d_az)),
    }
    if kappa is not None:
        out |= {"kappa_median": float(np.median(kappa)), "kappa_mean": float(kappa.mean())}
    return out


def evaluate_directions(
    trainer, tokens: dict[str, torch.Tensor], true: np.ndarray, predictions: Path, length: np.ndarray | None = None
) -> dict:
    """Metrics of the test split and `predictions.parquet` (pred_x..z, true_x..z, angular_error [, kappa]
    [, length]); with `length` (pulses per event in the file) also the metrics by event length."""
    out = trainer.outputs(tokens)  # the forward path of training and validation
    pred = trainer.loss.predict(out).cpu().numpy().astype(np.float64)
    kappa = trainer.loss.kappa(out).cpu().numpy() if isinstance(trainer.loss, VonMisesFisher) else None
    metrics = direction_metrics(pred, true, kappa)
    columns = {f"pred_{c}": pred[:, i] for i, c in enumerate("xyz")} | {
        f"true_{c}": true[:, i].astype(np.float64) for i, c in enumerate("xyz")
    }
    columns["angular_error"] = angular_error(torch.from_numpy(pred), torch.from_numpy(true)).numpy()
    if kappa is not None:
        columns["kappa"] = kappa
    if length is not None:
        columns["length"] = length
        metrics |= metrics_by_length(columns["angular_error"], length)
    pl.DataFrame(columns).write_parquet(predictions)
    return metrics
