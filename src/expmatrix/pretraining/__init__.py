"""Pretrain, then fine-tune: masked modelling of a job's tokenizer + backbone (`loop.py`), loaded by jobs with
`model.init: pretrained` (`finetune.py`). Both take the job's parts from its `Assembly`. This module is
torch-free: `plan` and `status` read the shared work without it."""

from __future__ import annotations

from expmatrix.config import JobConfig
from expmatrix.config.pretrain import PretrainConfig
from expmatrix.tokenizers.errors import TokenizerError


class PretrainFailed(TokenizerError):
    """A pretraining stage failed (now, or before: its record says why), or its artifact does not fit the job."""


def pretrain_settings(cfg: JobConfig) -> PretrainConfig | None:
    """The job's pretraining settings, each read where it acts (the every-key check); None for `init: scratch`."""
    if cfg.model.init == "scratch":
        return None
    p = cfg.pretrain
    for name in type(p).model_fields:
        getattr(p, name)
    return p


__all__ = ["PretrainFailed", "pretrain_settings"]
