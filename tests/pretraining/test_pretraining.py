"""Masked-modelling pretraining and fine-tuning: masks on real tokens only, targets at masked objects only,
one shared artifact, exact resume after a kill, fine-tuning from the artifact's weights, and bad input."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
import torch
import yaml
from conftest import PRESETS, REPO, write_experiment

from expmatrix.assembly.parts import Assembly
from expmatrix.assembly.recipe import Recipe
from expmatrix.checkpoint import load_checkpoint
from expmatrix.config import JobConfig, SpecError
from expmatrix.inert import check_consumed
from expmatrix.matrix import build_matrix
from expmatrix.pretraining import PretrainFailed
from expmatrix.pretraining.loop import Pretraining, batch_loss
from expmatrix.pretraining.model import mask_objects
from expmatrix.shared_stages import pending_stages, run_stage, shared_stages
from expmatrix.store import RunStore
from expmatrix.tokenizers.base import take
from expmatrix.training.job import train_job

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

# integer targets (auxiliary) keep the tests fast; the sensor-id default (5160 classes) is the experiment's
TARGETS = {"auxiliary": {"kind": "class"}, "charge": {"kind": "regression", "log": True}}


def experiment(folder, name="pt", init=("pretrained",), seeds=(0,), **pretrain):
    """A tiny icecube matrix of direct_icecube jobs: 1200 training events, 8000 parameters, 1 epoch."""
    path = write_experiment(
        folder,
        name=name,
        presets=str(PRESETS / "icecube"),
        data={"source": "icecube", "path": "synthetic", "synthetic": {"events": 1500, "seed": 1}},
        base={
            "model": {"target_params": 8000, "layers": 1, "heads": 2},
            "train": {"epochs": 1, "batch_size": 64, "warmup_steps": 5, "lr": 2e-3, "loss": "vmf"},
            "pretrain": {"epochs": 2, "batch_size": 64, "lr": 2e-3, "targets": TARGETS, **pretrain},
        },
        factors={"tokenizer": ["direct_icecube"], "model.init": list(init)},
        seeds=list(seeds),
    )
    return path.rename(folder / f"{name}.yaml")


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """One runs root: the generated data is shared; each test's own pretrain.seed keeps its artifact apart."""
    return tmp_path_factory.mktemp("runs")


def matrix_and_store(folder, root, **kw):
    matrix = build_matrix(experiment(folder, **kw))
    return matrix, RunStore(root, matrix.spec.name)


def test_masks_cover_real_objects_only_at_the_fraction():
    real = torch.arange(40)[None, :] < torch.randint(1, 41, (500, 1))  # padded events, real objects first
    masked = mask_objects(real, 0.3, torch.Generator().manual_seed(0))
    assert not (masked & ~real).any()
    assert masked.sum() / real.sum() == pytest.approx(0.3, abs=0.02)


def test_only_masked_objects_are_predicted_and_their_inputs_are_hidden(tmp_path, root):
    matrix, store = matrix_and_store(tmp_path, root, seed=11)
    run = Pretraining(Assembly(matrix.jobs[0], store))
    idx = torch.arange(32)
    tokens, table, real = take(run.tokens, idx), run.table[idx], run.real[idx]
    masked = mask_objects(real, 0.2, torch.Generator().manual_seed(1))
    run.model.eval()
    outs = run.model(tokens, masked)
    assert all(len(o) == int(masked.sum()) for o in outs)  # one prediction per masked object, none elsewhere
    changed = {**tokens, "x": torch.where(masked[..., None], tokens["x"] + 3.0, tokens["x"])}
    for a, b in zip(outs, run.model(changed, masked), strict=True):
        torch.testing.assert_close(a, b)  # a masked object's own features never reach the model
    loss = batch_loss(run.model, run.targets, tokens, table, masked)[0].item()
    for where, same in ((~masked, True), (masked, False)):  # charge targets moved at unmasked / masked objects
        moved = table.clone()
        moved[..., 1] += 5.0 * where
        assert (batch_loss(run.model, run.targets, tokens, moved, masked)[0].item() == pytest.approx(loss)) == same


def test_one_artifact_is_shared_and_fine_tuning_starts_from_its_weights(tmp_path, root, monkeypatch):
    """Two seeds, one pretraining; with the backbone frozen for every epoch (a linear probe) the trained job
    holds the artifact's weights exactly, its head moved, and its parameter count is the scratch arm's."""
    matrix, store = matrix_and_store(tmp_path, root, seed=12, seeds=(0, 1), freeze_epochs=1)
    (stage,) = [s for s in pending_stages(matrix.jobs, store) if s.kind == "pretrain"]
    assert stage.n_jobs == 2
    runs = []
    monkeypatch.setattr(Pretraining, "run", lambda self, run=Pretraining.run: runs.append(1) or run(self))
    first, second = (train_job(job, store) for job in matrix.jobs)
    assert len(runs) == 1 and not pending_stages(matrix.jobs, store)  # the second job reused the artifact
    artifact = load_checkpoint(store.paths.cache.pretrained(stage.key).artifact)
    state = load_checkpoint(store.job(matrix.jobs[0].id).checkpoint)["model"]
    for k, v in artifact["state"].items():
        torch.testing.assert_close(state[k], v, rtol=0, atol=0)
    assert first["pretrained"]["artifact"] == stage.key == second["pretrained"]["artifact"]
    scratch = build_matrix(experiment(tmp_path, name="scratch", init=("scratch",))).jobs[0]
    assert first["params"] == train_job(scratch, RunStore(root, "scratch"))["params"]


def test_a_killed_pretraining_resumes_to_the_same_weights(tmp_path, root):
    matrix, store = matrix_and_store(tmp_path, root, seed=13)
    (stage,) = [s for s in shared_stages(matrix.jobs, store) if s.kind == "pretrain"]
    code = (
        "import sys, torch; torch.set_num_threads(1)\n"
        "from expmatrix.matrix import build_matrix\nfrom expmatrix.shared_stages import shared_stages, run_stage\n"
        "from expmatrix.store import RunStore\nm = build_matrix(sys.argv[1]); s = RunStore(sys.argv[2], 'pt')\n"
        "run_stage([t for t in shared_stages(m.jobs, s) if t.kind == 'pretrain'][0], s)\n"
    )
    env = {**os.environ, "EXPMATRIX_CRASH_WRITE": "checkpoint.pt:2"}  # killed writing epoch 2's checkpoint
    killed = subprocess.run([sys.executable, "-c", code, str(matrix.path), str(root)], env=env, check=False)
    files = store.paths.cache.pretrained(stage.key)
    assert killed.returncode == -9 and not files.artifact.exists()
    assert load_checkpoint(files.checkpoint)["history"][-1]["epoch"] == 1
    run_stage(stage, store)  # resumes after epoch 1
    fresh = RunStore(tmp_path / "fresh", "pt")
    shutil.copytree(root / "_cache", fresh.paths.cache.dir, ignore=shutil.ignore_patterns("pretrained"))
    run_stage(stage, fresh)  # uninterrupted
    resumed, whole = (load_checkpoint(s.paths.cache.pretrained(stage.key).artifact) for s in (store, fresh))
    for k, v in whole["state"].items():
        torch.testing.assert_close(resumed["state"][k], v, rtol=0, atol=0)
    drop = ("seconds",)
    assert [{k: v for k, v in h.items() if k not in drop} for h in resumed["record"]["history"]] == [
        {k: v for k, v in h.items() if k not in drop} for h in whole["record"]["history"]
    ]
    assert not files.checkpoint.exists()


def test_an_artifact_of_another_width_is_refused_naming_both(tmp_path, root):
    small, store = matrix_and_store(tmp_path, root, seed=14)
    train_job(small.jobs[0], store)
    path = experiment(tmp_path, name="wide", seed=14)
    spec = yaml.safe_load(path.read_text())
    spec["base"]["model"]["target_params"] = 12000
    path.write_text(yaml.safe_dump(spec))
    wide = build_matrix(path).jobs[0]
    target = store.paths.cache.pretrained(Recipe.of(wide).pretrain_key).artifact
    target.parent.mkdir(parents=True)
    shutil.copy(store.paths.cache.pretrained(Recipe.of(small.jobs[0]).pretrain_key).artifact, target)
    with pytest.raises(PretrainFailed, match=r"pretrained for width \{'d_model': \d+.*but this job needs \{'d_model'"):
        train_job(wide, RunStore(root, "wide"))


BASE = {"data": {"source": "icecube"}, "tokenizer": yaml.safe_load((REPO / "tokenizers/icecube/direct_icecube.yaml")
        .read_text()) | {"name": "direct_icecube"}, "train": {"loss": "vmf"}}  # fmt: skip
PRE = {"init": "pretrained"}


@pytest.mark.parametrize(
    ("change", "where", "message"),
    [
        ({"model": PRE}, "model.init", "needs a `pretrain` section"),
        ({"model": PRE, "pretrain": {"mask_fraction": 1.0}}, "pretrain.mask_fraction", "less than 1"),
        ({"model": PRE, "pretrain": {"mask_fraction": 0}}, "pretrain.mask_fraction", "greater"),
        ({"model": PRE, "pretrain": {"targets": {"pT": {"kind": "regression"}}}}, "pretrain.targets", "no such"),
        ({"model": PRE, "pretrain": {"targets": {"charge": {"kind": "class"}}}}, "pretrain.targets", "needs `bins`"),
    ],
)
def test_bad_pretraining_settings_are_errors_at_their_key(change, where, message):
    with pytest.raises(ValueError, match=message) as e:
        JobConfig.model_validate(BASE | change)
    assert where in str(e.value)


def test_scratch_jobs_keep_their_ids_and_pretrain_settings_need_a_pretrained_job(tmp_path, root):
    plain = JobConfig.model_validate(BASE).model_dump(mode="json")
    scratch = JobConfig.model_validate(BASE | {"model": {"init": "scratch"}, "pretrain": {}}).model_dump(mode="json")
    assert plain == scratch and "init" not in plain["model"] and "pretrain" not in plain
    matrix, store = matrix_and_store(tmp_path, root, name="both", init=("scratch", "pretrained"))
    check_consumed(matrix, store)  # base.pretrain acts in the pretrained cell: fine
    matrix, store = matrix_and_store(tmp_path, root, name="only", init=("scratch",))
    with pytest.raises(SpecError, match=r"base.pretrain.*no job has model.init: pretrained"):
        check_consumed(matrix, store)
