"""Every preset of the suite is a level of the thesis matrix's tokenizer factor, and trains end to end."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import REPO

from expmatrix.matrix import build_matrix
from expmatrix.models.sizing import TOLERANCE
from expmatrix.store import RunStore
from expmatrix.training.job import run_job

pytestmark = pytest.mark.slow  # trains, or starts processes

SUITE = REPO / "experiments" / "tokenizer_suite.yaml"
TINY = {
    "data.synthetic.events": 2000,
    "model.target_params": 100000,  # the 5-vector joint table (4386 rows) needs room
    "model.layers": 1,
    "model.heads": 4,
    "train.epochs": 1,
    "train.batch_size": 256,
}


def test_the_suite_expands_and_every_tokenizer_trains_one_tiny_job(tmp_path):
    matrix = build_matrix(SUITE, "quick", TINY)
    tokenizers = ["direct", "binned_ambre5", "binned_ambre5_bkg", "binned_factorized5", "integer_fourtops",
                  "vqvae512", "kmeans512", "fsq512"]  # fmt: skip
    assert len(matrix.cells) == 3 * len(tokenizers) * 2 * 2 and len(matrix.jobs) == 2 * len(matrix.cells)
    flagship = build_matrix(REPO / "experiments" / "binning_vs_direct.yaml", "quick")
    assert sorted({j.levels["tokenizer"] for j in flagship.jobs}) == ["binned_ambre5", "direct", "vqvae512"]
    picked = {}
    for k, name in enumerate(tokenizers):  # one job per tokenizer, cycling through the other factors
        want = {"tokenizer": name, "model.pooling": ["cls", "mean", "max"][k % 3], "met": ["with", "without"][k % 2],
                "vect": "45"[k % 2]}  # fmt: skip
        picked[name] = next(j for j in matrix.jobs if j.seed == 0 and j.levels == want)
    store = RunStore(tmp_path / "runs", matrix.spec.name)
    threads = torch.get_num_threads()
    try:
        states = {name: run_job(job, store, threads=1) for name, job in picked.items()}
    finally:
        torch.set_num_threads(threads)
    errors = {n: store.status(j.id).get("error") for n, j in picked.items() if states[n] != "done"}
    assert errors == {}
    for name, job in picked.items():
        metrics = json.loads(store.job(job.id).metrics.read_text())
        assert 0.0 <= metrics["test"]["auroc"] <= 1.0 and metrics["epochs"] == 1
        assert abs(metrics["params"] - 100000) / 100000 < TOLERANCE, (name, metrics["params"])
        assert json.loads(store.job(job.id).tokenizer.read_text())  # fitted state saved beside the run
