"""`expmatrix export JOB_DIR --onnx FILE`: onnxruntime gives torch's outputs on padded events, for a
continuous and a code tokenizer with MET tokens; the tokenizer's state lies beside; an unfinished job is refused."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import REPO, write_experiment

from expmatrix.cli import main
from expmatrix.matrix import build_matrix
from expmatrix.onnx_export import evaluated_model
from expmatrix.store import RunStore
from expmatrix.training.job import train_job

pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A direct and a binned 4tops job (MET tokens, about half the 18 object slots empty), trained 1 epoch."""
    folder = tmp_path_factory.mktemp("onnx")
    matrix = build_matrix(write_experiment(folder, base={"model": {"target_params": 8000, "layers": 1, "heads": 2},
                                                         "train": {"epochs": 1, "batch_size": 128, "lr": 1e-3}}))  # fmt: skip # noqa: E501
    store = RunStore(folder / "runs", matrix.spec.name)
    for job in matrix.jobs:
        store.write_job(job)
        train_job(job, store)
        store.set_status(job.id, "done")
    return matrix, store, folder


@pytest.mark.parametrize("tokenizer", ["direct", "binned_ambre5"])
def test_onnx_outputs_equal_torchs_on_padded_events(trained, tokenizer):
    import onnxruntime

    matrix, store, folder = trained
    job = next(j for j in matrix.jobs if j.levels["tokenizer"] == tokenizer)
    out = folder / f"{tokenizer}.onnx"
    result = CliRunner().invoke(main, ["export", str(store.job(job.id).dir), "--onnx", str(out)])
    assert result.exit_code == 0, result.output
    assert "max abs difference" in result.output
    model, parts = evaluated_model(job, store)
    test = parts.tokens["test"]
    assert (~test["mask"]).any(1).float().mean() > 0.5  # most events are padded
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    for rows in (slice(0, 1), slice(5, 300)):  # dynamic batch
        feed = {i.name: test[i.name][rows].numpy() for i in session.get_inputs()}
        want = model({k: v[rows] for k, v in test.items()}).detach().numpy()
        np.testing.assert_allclose(session.run(["output"], feed)[0], want, atol=1e-4, rtol=0)
    side = json.loads(out.with_suffix(".tokenizer.json").read_text())
    assert side["job"] == job.id and side["tokenizer"]["name"] == tokenizer and side["state"]
    assert set(side["inputs"]) == {i.name for i in session.get_inputs()} <= set(test)


def test_an_unfinished_job_is_not_exported(trained):
    matrix, store, folder = trained
    job = matrix.jobs[0]
    store.set_status(job.id, "running")
    try:
        result = CliRunner().invoke(main, ["export", str(store.job(job.id).dir), "--onnx", str(folder / "x.onnx")])
    finally:
        store.set_status(job.id, "done")
    assert result.exit_code == 1 and f"job {job.id} is not finished (state interrupted)" in result.output
    assert not (folder / "x.onnx").exists()


def test_a_hierarchical_job_is_refused_with_the_reason(tmp_path):
    matrix = build_matrix(REPO / "experiments" / "icecube_long_events.yaml", "quick")
    job = next(j for j in matrix.jobs if j.config.model.kind == "hierarchical")
    store = RunStore(tmp_path, matrix.spec.name)
    store.write_job(job)
    result = CliRunner().invoke(main, ["export", str(store.job(job.id).dir), "--onnx", str(tmp_path / "h.onnx")])
    assert result.exit_code != 0 and f"job {job.id}: model.kind hierarchical has no ONNX export" in result.output
    assert not (tmp_path / "h.onnx").exists()
