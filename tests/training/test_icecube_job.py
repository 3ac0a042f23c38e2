"""Direction regression jobs: exact angular metrics, a tiny icecube matrix that learns, and its report."""

from __future__ import annotations

import json
import math

import numpy as np
import polars as pl
import pytest
import torch
import yaml
from click.testing import CliRunner
from conftest import REPO

from expmatrix.assembly.parts import Assembly
from expmatrix.cli import main
from expmatrix.config import ReportConfig
from expmatrix.matrix import build_matrix
from expmatrix.metrics import higher_is_better
from expmatrix.report.settings import ReportSettings
from expmatrix.store import RunStore
from expmatrix.training.directions import direction_metrics, evaluate_directions, metrics_by_length
from expmatrix.training.trainer import Trainer

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]


def rotate(v: np.ndarray, axis: np.ndarray, angle: np.ndarray) -> np.ndarray:
    """Rodrigues: each row of v rotated by its angle about its (unit) axis."""
    a = angle[:, None]
    return v * np.cos(a) + np.cross(axis, v) * np.sin(a) + axis * (axis * v).sum(1, keepdims=True) * (1 - np.cos(a))


def test_angular_metrics_are_exact_on_rotated_directions():
    rng = np.random.default_rng(0)
    true = rng.normal(size=(5, 3))
    true /= np.linalg.norm(true, axis=1, keepdims=True)
    axis = np.cross(true, rng.normal(size=(5, 3)))
    axis /= np.linalg.norm(axis, axis=1, keepdims=True)  # perpendicular: the rotation angle is the error
    angles = np.array([1e-6, 0.1, 0.5, 1.0, 3.0])
    pred = rotate(true, axis, angles) * np.array([[1.0], [2.0], [0.5], [7.0], [1.0]])  # norms do not matter
    m = direction_metrics(pred, true)
    assert m["angular_error_mean"] == pytest.approx(angles.mean(), abs=1e-12)
    assert m["angular_error_median"] == pytest.approx(0.5, abs=1e-12)
    assert m["angular_error_68"] == pytest.approx(0.5 + 0.72 * 0.5, abs=1e-12)  # numpy's linear quantile
    assert direction_metrics(true, true)["angular_error_mean"] < 1e-15


def test_zenith_and_azimuth_errors_are_exact():
    # rotating in the meridian plane changes the zenith only; about z, the azimuth only (wrapped at 2 pi)
    zen, az = np.array([0.3, 1.2, 2.0]), np.array([0.1, 3.0, 6.2])
    v = lambda z, a: np.stack([np.sin(z) * np.cos(a), np.sin(z) * np.sin(a), np.cos(z)], 1)  # noqa: E731
    m = direction_metrics(v(zen + [0.2, -0.1, 0.4], az), v(zen, az))
    assert m["zenith_error_mean"] == pytest.approx(0.7 / 3, abs=1e-12) and m["azimuth_error_mean"] < 1e-12
    m = direction_metrics(v(zen, np.mod(az + [0.5, 0.5, 0.3], 2 * np.pi)), v(zen, az))
    assert m["azimuth_error_mean"] == pytest.approx(1.3 / 3, abs=1e-12) and m["zenith_error_mean"] < 1e-12
    assert m["azimuth_error_median"] == pytest.approx(0.5, abs=1e-12)
    kappa = direction_metrics(v(zen, az), v(zen, az), kappa=np.array([1.0, 4.0, 10.0]))
    assert kappa["kappa_median"] == 4.0 and kappa["kappa_mean"] == 5.0


def test_angular_metrics_are_lower_is_better_and_the_task_picks_report_defaults():
    for name in ("test.angular_error_median", "zenith_error_mean", "val.val_angle", "val_angle_median"):
        assert not higher_is_better(name)
    assert higher_is_better("test.auroc") and not higher_is_better("test.brier")
    assert ReportSettings.resolve(ReportConfig()).metric == "test.auroc"  # classification defaults unchanged
    s = ReportSettings.resolve(ReportConfig(), task="direction")
    assert s.metric == "test.angular_error_median" and "test.angular_error_68" in s.metrics
    s = ReportSettings.resolve(ReportConfig(metric="test.angular_error_mean"), task="direction")
    assert s.metrics[:2] == ["test.angular_error_mean", "test.angular_error_median"]  # what the user set wins


def tiny_experiment(folder) -> str:
    spec = yaml.safe_load((REPO / "experiments" / "icecube_direction.yaml").read_text())
    spec.update(
        presets=str(REPO / "tokenizers" / "icecube"),
        data={"source": "icecube", "path": "synthetic", "synthetic": {"events": 1000, "seed": 2}},
        factors={"model.pooling": ["cls", "max"]},
        seeds=[0],
        profiles={},
        report={},
    )
    spec["base"] = {
        "tokenizer": "direct_icecube",
        "model": {"target_params": 40000, "layers": 2, "heads": 4},
        "train": {"epochs": 3, "batch_size": 32, "lr": 2e-3, "warmup_steps": 20, "loss": "vmf"},
    }
    path = folder / "ice.yaml"
    path.write_text(yaml.safe_dump(spec))
    return str(path)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, one_thread):
    """The tiny matrix, run through the CLI: 2 cells of 800 training events (25 steps of 32), 3 epochs; one worker,
    in this process (a pool's workers would each import torch: the pool is the runner tests' business).
    Over the data seeds 2-4 both cells ended at a test median of 0.21-0.40 rad (1600 events of 64: 0.24-0.33)."""
    folder = tmp_path_factory.mktemp("icejob")
    exp, runs = tiny_experiment(folder), str(folder / "runs")
    args = ["run", exp, "--runs", runs, "--workers", "1", "--threads", "1"]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0 and "2 done" in result.output, result.output
    return exp, runs


def test_a_tiny_regression_matrix_learns_the_direction(trained):
    exp, runs = trained
    matrix = build_matrix(exp)
    store = RunStore(runs, matrix.spec.name)
    for job in matrix.jobs:
        metrics = json.loads(store.job(job.id).metrics.read_text())
        test = metrics["test"]
        # a random direction is off by pi/2 (90 deg) at the median; trained, well under 0.6 rad (34 deg)
        assert test["angular_error_median"] < 0.6, test
        assert test["angular_error_median"] <= test["angular_error_68"] and test["kappa_median"] > 1
        preds = pl.read_parquet(store.job(job.id).predictions)
        assert preds.height == metrics["events"]["test"] == 100
        # the reported metrics are those of the saved predictions (one forward path)
        pred, true = preds.select("pred_x", "pred_y", "pred_z").to_numpy(), preds.select("true_x", "true_y", "true_z")
        by_length = metrics_by_length(preds["angular_error"].to_numpy(), preds["length"].to_numpy())
        assert by_length["events_len_1_64"] + by_length["events_len_65_256"] == 100  # at most 128 pulses each
        again = direction_metrics(pred, true.to_numpy(), preds["kappa"].to_numpy()) | by_length
        assert again == pytest.approx(test, abs=1e-12)
        np.testing.assert_allclose(np.linalg.norm(pred, axis=1), 1.0, atol=1e-6)
        history = [json.loads(line) for line in store.job(job.id).history.read_text().splitlines()]
        assert len(history) == 3 and history[-1]["val_angle_median"] < history[0]["val_angle_median"]
        assert metrics["val"]["val_angle_median"] == history[-1]["val_angle_median"]


def test_the_same_model_untrained_is_no_better_than_a_random_guess(trained, tmp_path):
    """The guard against an untrained embedding: the threshold above is out of reach without training."""
    exp, runs = trained
    job = build_matrix(exp).jobs[0]
    parts = Assembly(job, RunStore(runs, "icecube_direction"))
    torch.manual_seed(job.config.seed)
    trainer = Trainer(parts.model(), job.config.train, "cpu", len(parts.splits["train"]), job.config.seed)
    untrained = evaluate_directions(trainer, parts.tokens["test"], parts.splits["test"].target, tmp_path / "p.parquet")
    assert untrained["angular_error_median"] > 1.0 > 0.6  # about pi/2


def test_report_of_a_regression_matrix(trained):
    exp, runs = trained
    result = CliRunner().invoke(main, ["report", exp, "--runs", runs], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "test.angular_error_median (mean ± std)" in result.output and "auroc" not in result.output
    assert "Factor effects on test.angular_error_median" in result.output
    out = RunStore(runs, "icecube_direction").dir
    summary = pl.read_csv(out / "summary.csv")
    best = summary.sort("test.angular_error_median mean")["model.pooling"][0]
    assert summary["model.pooling"][0] == best  # ranked lower-is-better
    plots = {p.name for p in (out / "plots").iterdir()}
    for stem in ("angular_error_cells", "angular_error_model.pooling", "learning_curves", "effects",
                 "angular_error_by_length"):  # fmt: skip
        assert {f"{stem}.png", f"{stem}.pdf"} <= plots
    assert not any(p.startswith("roc") for p in plots)
    html = (out / "report.html").read_text()  # the interactive page: angular-error curves, not ROC
    assert "fraction of test events below" in html and "background rejection" not in html
    assert "Angular error by event length" in result.output and "1-64 pulses" in result.output
    effects = pl.read_csv(out / "tables" / "effects.csv")
    values = dict(zip(summary["model.pooling"], summary["test.angular_error_median mean"], strict=True))
    delta = effects.filter(pl.col("level") == "max")["delta"][0]
    assert delta == pytest.approx(values["max"] - values["cls"], abs=1e-12)
    assert not math.isnan(delta)


def test_resolution_per_zenith_is_the_median_error_in_each_cos_zenith_bin():
    from expmatrix.report.plots import median_by_bin

    cos_zenith, error = np.array([-1.0, -0.95, 0.5, 1.0]), np.array([1.0, 3.0, 2.0, 5.0])
    assert median_by_bin(cos_zenith, error, np.array([-1.0, 0.0, 1.0])).tolist() == [2.0, 3.5]  # the last bin closed
    out = median_by_bin(cos_zenith, error, np.array([-1.0, 0.0, 0.4, 1.0]))
    assert out[0] == 2.0 and np.isnan(out[1]) and out[2] == 3.5  # an empty bin is a gap, not a zero
