"""The code target of masked modelling: a job reads continuous inputs (direct) and predicts, at each masked object,
the code that a fitted VQ-VAE gives it, as a class. The codes are known: they are the tokens of the VQ job of the
same data, whose fit (one artifact in the cache) the target shares."""

from __future__ import annotations

import shutil

import pytest
import torch
import yaml
from conftest import PRESETS, write_experiment

from expmatrix.assembly.parts import Assembly
from expmatrix.assembly.recipe import Recipe
from expmatrix.config import SpecError
from expmatrix.matrix import build_matrix
from expmatrix.pretraining.loop import Pretraining
from expmatrix.store import RunStore

CODE = {"kind": "class", "tokenizer": "vq16"}


def experiment(tmp_path, targets):
    """Direct (pretrained, code + pT targets) beside the vq16 job of the same data; vq16: a 16-code VQ-VAE."""
    presets = tmp_path / "presets"
    presets.mkdir()
    shutil.copy(PRESETS / "direct.yaml", presets)
    vq = yaml.safe_load((PRESETS / "vqvae512.yaml").read_text()) | {"codebook_size": 16, "epochs": 2}
    (presets / "vq16.yaml").write_text(yaml.safe_dump(vq))
    levels = {"direct": {"tokenizer": "direct", "model.init": "pretrained"}, "vq16": {"tokenizer": "vq16"}}
    return write_experiment(
        tmp_path,
        presets=str(presets),
        data={"path": "synthetic", "synthetic": {"events": 800, "seed": 1}},
        base={
            "model": {"target_params": 8000, "layers": 1, "heads": 2},
            "train": {"epochs": 1, "batch_size": 64, "warmup_steps": 5, "lr": 2e-3},
            "pretrain": {"epochs": 1, "batch_size": 64, "targets": targets},
        },  # fmt: skip
        factors={"tokenizer": levels},
    )


@pytest.mark.slow  # a VQ-VAE fit and a pretraining epoch
def test_the_code_target_is_the_vq_jobs_own_code_of_each_object(tmp_path, one_thread):
    matrix = build_matrix(experiment(tmp_path, {"code": CODE, "pT": {"kind": "regression"}}))
    direct, vq = (next(j for j in matrix.jobs if j.levels["tokenizer"] == t) for t in ("direct", "vq16"))
    assert direct.config.pretrain.targets["code"].tokenizer == vq.config.tokenizer  # the preset, resolved by name
    store = RunStore(tmp_path / "runs", matrix.spec.name)
    pretraining = Pretraining(Assembly(direct, store))
    code = pretraining.targets[0]
    assert (code.name, code.kind, code.classes) == ("code", "class", 16)
    assert len(list(store.paths.cache.dir.glob("tokenizers/*.json"))) == 2  # direct's fit, and the VQ-VAE's
    assert store.paths.cache.fit(Recipe.of(vq).fit_key).artifact.exists()  # the VQ job's own fit

    tokens = Assembly(vq, store).tokens["train"]  # the VQ job's tokens: code + 1 per object, 0 at empty slots
    real = tokens["codes"][..., 0] > 0
    assert torch.equal(pretraining.table[..., 0][real], tokens["codes"][..., 0][real].float() - 1)
    assert len(torch.unique(pretraining.table[..., 0][real])) > 8  # many codes in use: a real class target

    row = pretraining.epoch(0)
    assert torch.isfinite(torch.tensor(row["loss"])) and 0 <= row["code_accuracy"] <= 1 and "code_guess_accuracy" in row


@pytest.mark.parametrize(
    ("targets", "message"),
    [
        ({"code": {"kind": "class"}}, "target 'code': give its code `tokenizer` (a preset name, e.g. vqvae512)"),
        ({"code": {"kind": "regression", "tokenizer": "vq16"}}, "target 'code': the codes are classes"),
        ({"type": {"kind": "class", "tokenizer": "vq16"}}, "target 'type': `tokenizer` applies to the 'code' target"),
        ({"code": {"kind": "class", "tokenizer": "direct"}}, "a direct preset gives no codes"),
        ({"code": {"kind": "class", "tokenizer": "vq17"}}, "pretrain.targets.code.tokenizer: unknown tokenizer preset"),
    ],
)
def test_a_bad_code_target_is_an_error_naming_it(tmp_path, targets, message):
    with pytest.raises(SpecError, match=message.replace("(", r"\(").replace(")", r"\)")):
        build_matrix(experiment(tmp_path, targets))
