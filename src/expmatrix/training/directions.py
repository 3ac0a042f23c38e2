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


def evaluate_directions(trainer, tokens: dict[str, torch.Tensor], true: np.ndarray, predictions: Path) -> dict:
    """Metrics of the test split and `predictions.parquet` (pred_x..z, true_x..z, angular_error [, kappa])."""
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
    pl.DataFrame(columns).write_parquet(predictions)
    return metrics
