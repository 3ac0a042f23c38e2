"""Fine-tuning a pretrained job: load the artifact's embedding + backbone into the job's model (its fresh head
stays), then optionally freeze the backbone for the first epochs and scale its learning rate.

The job's model is built exactly as in the scratch arm, so both arms have the same parameter count (the
pretraining's mask vector and target heads are not part of it). The learning-rate scale is a parameter group
of the trainer (`Trainer(lr_groups=...)`), and the freeze toggles `requires_grad` (a frozen parameter gets no
gradient, and AdamW leaves it alone).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from expmatrix.assembly.parts import Assembly
from expmatrix.assembly.recipe import pretrain_selection
from expmatrix.checkpoint import checkpoint_position, load_checkpoint
from expmatrix.claims import FileClaim, make_once
from expmatrix.pretraining import PretrainFailed
from expmatrix.pretraining.loop import run_pretraining
from expmatrix.pretraining.model import HEAD
from expmatrix.runfiles import read_file


def pretrained_artifact(parts: Assembly) -> dict[str, Any]:
    """The job's artifact {"record", "state"}: from the cache, or pretrained here (recorded failures are raised,
    as for tokenizer fits)."""
    key, run = parts.recipe.pretrain_key, parts.job.run
    files = parts.store.paths.cache.pretrained(key)

    def made() -> bool:
        if files.failure.exists() and not files.artifact.exists():
            why = read_file(files.failure)["error"]
            raise PretrainFailed(f"the shared pretraining {key} failed ({why}); run with --retry-failed to redo it")
        return files.artifact.exists()

    def pretrain() -> None:
        gpus = range(torch.cuda.device_count())  # CUDA's generators too: pretraining reseeds and draws from them
        with torch.random.fork_rng(devices=gpus):  # the job's own random state (its head's init) stays as seeded
            run_pretraining(parts)

    # one worker pretrains (tuning trials that need the same new pretraining at once); the others wait for it
    make_once(FileClaim(files.claim, run.stale_after_seconds), made, pretrain, run.heartbeat_seconds)
    return load_checkpoint(files.artifact)


def check_artifact(record: dict[str, Any], parts: Assembly) -> None:
    """An artifact trained for another tokenizer, width or data selection is refused, naming both."""
    mine = {
        "tokenizer": parts.tokenizer.signature(),
        "width": {"d_model": parts.size.d_model, "d_ff": parts.size.d_ff},
        "data": pretrain_selection(parts.cfg),
    }
    for what, need in mine.items():
        if record.get(what) != need:
            raise PretrainFailed(
                f"{parts.store.paths.cache.pretrained(parts.recipe.pretrain_key).artifact}: pretrained for {what} "
                f"{record.get(what)!r}, but this job needs {need!r}: it is not this job's artifact (delete it to "
                "pretrain again)"
            )


def backbone(model: nn.Module) -> list[nn.Parameter]:
    return [p for n, p in model.named_parameters() if not n.startswith(HEAD)]


class Finetune:
    """A pretrained job's model loaded from the artifact (`load`, before the trainer is built), its parameter
    groups for the trainer, and the freeze as an epoch hook."""

    def __init__(self, parts: Assembly):
        self.parts = parts
        artifact = pretrained_artifact(parts)
        check_artifact(artifact["record"], parts)
        self.state, self.record = artifact["state"], artifact["record"]
        self.freeze_epochs, self.backbone_lr = parts.cfg.pretrain.freeze_epochs, parts.cfg.pretrain.backbone_lr

    def load(self, model: nn.Module) -> None:
        """Every weight but the head's from the artifact (before the trainer copies any of them, e.g. its EMA);
        a missing or extra weight is an error naming it."""
        missing, unexpected = model.load_state_dict(self.state, strict=False)
        missing = [k for k in missing if not k.startswith(HEAD)]
        if missing or unexpected:
            where = self.parts.store.paths.cache.pretrained(self.parts.recipe.pretrain_key).artifact
            raise PretrainFailed(f"{where}: does not fit the job model: missing {missing[:5]}, unexpected "
                                 f"{unexpected[:5]}")  # fmt: skip

    def lr_groups(self, model: nn.Module) -> list[tuple[list[nn.Parameter], float]] | None:
        """The backbone at `backbone_lr` times the learning rate, the head at 1 (None when the factor is 1)."""
        if self.backbone_lr == 1.0:
            return None
        head = list(model.get_submodule(HEAD.rstrip(".")).parameters())
        return [(backbone(model), self.backbone_lr), (head, 1.0)]

    def prepare(self, model: nn.Module) -> None:
        """Freeze the backbone if training is still in the frozen epochs (reads the checkpoint's position)."""
        if self.freeze_epochs:
            files = self.parts.store.job(self.parts.job.id)
            position = checkpoint_position(files.checkpoint, self.parts.job.id)
            self.freeze(model, (position.epoch if position else 0) < self.freeze_epochs)

    def freeze(self, model: nn.Module, frozen: bool) -> None:
        for p in backbone(model):
            p.requires_grad_(not frozen)

    def on_epoch(self, model: nn.Module, history: list[dict]) -> None:
        """After epoch `freeze_epochs` the backbone trains too."""
        if len(history) == self.freeze_epochs:
            self.freeze(model, False)

    def summary(self) -> dict[str, Any]:
        """For metrics.json: which artifact, and how it was fine-tuned."""
        last = self.record["history"][-1]
        return {"artifact": self.record["key"], "pretrain_epochs": last["epoch"], "pretrain_loss": last["loss"],
                "freeze_epochs": self.freeze_epochs, "backbone_lr": self.backbone_lr}  # fmt: skip
