"""Pretrain, then fine-tune: masked modelling of a job's tokenizer + backbone (`stage.py`), loaded by jobs with
`model.init: pretrained` (`finetune.py`). This module is torch-free: `plan` and `status` read the stages."""

from __future__ import annotations

from expmatrix.config import DataConfig, JobConfig
from expmatrix.config.pretrain import PretrainConfig
from expmatrix.data import data_selection
from expmatrix.tokenizers.errors import TokenizerError


class PretrainFailed(TokenizerError):
    """A pretraining stage failed (now, or before: its record says why), or its artifact does not fit the job."""


def pretrain_data(cfg: JobConfig) -> DataConfig:
    """The job's data section with `pretrain.max_events` training events (of whose training split only)."""
    return cfg.data.model_copy(update={"max_events": cfg.pretrain.max_events or cfg.data.max_events})


def pretrain_selection(cfg: JobConfig) -> dict:
    """The events a pretraining reads: the job's training split, up to `pretrain.max_events` (never val/test)."""
    return {**data_selection(pretrain_data(cfg)), "split": "train"}


def pretrain_settings(cfg: JobConfig) -> PretrainConfig | None:
    """The job's pretraining settings, each read where it acts (the every-key check); None for `init: scratch`."""
    if cfg.model.init == "scratch":
        return None
    p = cfg.pretrain
    for name in type(p).model_fields:
        getattr(p, name)
    return p


__all__ = ["PretrainFailed", "pretrain_data", "pretrain_selection", "pretrain_settings"]
