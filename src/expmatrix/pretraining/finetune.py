"""Fine-tuning a pretrained job: load the artifact's embedding + backbone into the job's model (its fresh head
stays), then optionally freeze the backbone for the first epochs and scale its learning rate.

The job's model is built exactly as in the scratch arm, so both arms have the same parameter count (the
pretraining's mask vector and target heads are not part of it). The trainer is not changed: the learning-rate
scale replaces its optimizer and schedule by the same ones with two parameter groups before `fit`, and the
freeze toggles `requires_grad` (a frozen parameter gets no gradient, and AdamW leaves it alone).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from expmatrix.config import JobConfig
from expmatrix.models.sizing import Size
from expmatrix.pretraining import PretrainFailed, pretrain_selection
from expmatrix.pretraining.model import HEAD
from expmatrix.runfiles import read_file
from expmatrix.stages import pretrain_key
from expmatrix.store import RunStore
from expmatrix.tokenizers import Tokenizer
from expmatrix.training.checkpoint import checkpoint_position, load_checkpoint
from expmatrix.training.trainer import Trainer


def pretrained_artifact(cfg: JobConfig, data_path: str, store: RunStore) -> tuple[dict[str, Any], Path]:
    """The job's artifact ({"record", "state"}, path): from the cache, or pretrained here (recorded failures
    are raised, as for tokenizer fits)."""
    key = pretrain_key(cfg, data_path)
    path, failure = store.pretrain_file(key), store.pretrain_file(key, "failed.json")
    if not path.exists():
        if failure.exists():
            why = read_file(failure)["error"]
            raise PretrainFailed(f"the shared pretraining {key} failed ({why}); run with --retry-failed to redo it")
        from expmatrix.pretraining.stage import run_pretraining

        gpus = range(torch.cuda.device_count())  # CUDA's generators too: pretraining reseeds and draws from them
        with torch.random.fork_rng(devices=gpus):  # the job's own random state (its head's init) stays as seeded
            run_pretraining(cfg, data_path, store)
    return load_checkpoint(path), path


def check_artifact(record: dict[str, Any], tokenizer: Tokenizer, size: Size, cfg: JobConfig, path: Path) -> None:
    """An artifact trained for another tokenizer, width or data selection is refused, naming both."""
    mine = {
        "tokenizer": tokenizer.signature(),
        "width": {"d_model": size.d_model, "d_ff": size.d_ff},
        "data": pretrain_selection(cfg),
    }
    for what, need in mine.items():
        if record.get(what) != need:
            raise PretrainFailed(
                f"{path}: pretrained for {what} {record.get(what)!r}, but this job needs {need!r}: it is not this "
                "job's artifact (delete it to pretrain again)"
            )


def load_backbone(model: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    """Every weight but the head's from `state`; a missing or extra weight is an error naming it."""
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith(HEAD)]
    if missing or unexpected:
        raise PretrainFailed(f"{path}: does not fit the job model: missing {missing[:5]}, unexpected {unexpected[:5]}")


def backbone(model: nn.Module) -> list[nn.Parameter]:
    return [p for n, p in model.named_parameters() if not n.startswith(HEAD)]


def scale_backbone_lr(trainer: Trainer, model: nn.Module, factor: float) -> None:
    """The trainer's AdamW and schedule again, with the backbone's learning rate times `factor`."""
    head = list(model.get_submodule(HEAD.rstrip(".")).parameters())
    defaults = trainer.opt.defaults
    groups = [{"params": backbone(model), "lr": defaults["lr"] * factor}, {"params": head, "lr": defaults["lr"]}]
    trainer.opt = torch.optim.AdamW(groups, lr=defaults["lr"], weight_decay=defaults["weight_decay"])
    trainer.sched = torch.optim.lr_scheduler.LambdaLR(trainer.opt, trainer.sched.lr_lambdas[0])


class Finetune:
    """A pretrained job's model loaded from the artifact (`load` before the trainer is built, `prepare` after),
    and the freeze as an epoch hook."""

    def __init__(self, cfg: JobConfig, data_path: str, store: RunStore, tokenizer: Tokenizer, size: Size):
        artifact, self.path = pretrained_artifact(cfg, data_path, store)
        check_artifact(artifact["record"], tokenizer, size, cfg, self.path)
        self.state, self.record = artifact["state"], artifact["record"]
        self.freeze_epochs, self.backbone_lr = cfg.pretrain.freeze_epochs, cfg.pretrain.backbone_lr

    def load(self, model: nn.Module) -> None:
        """The artifact's weights into the job's model (before the trainer copies any of them, e.g. its EMA)."""
        load_backbone(model, self.state, self.path)

    def prepare(self, model: nn.Module, trainer: Trainer, checkpoint: Path, job_id: str) -> None:
        """Scale the backbone's learning rate; freeze it if training is still in the frozen epochs."""
        if self.backbone_lr != 1.0:
            scale_backbone_lr(trainer, model, self.backbone_lr)
        if self.freeze_epochs:  # resuming past the frozen epochs: not frozen (reads the checkpoint's position)
            position = checkpoint_position(checkpoint, job_id)
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
