"""What a job is made of, named before anything is built: its features and the keys of its shared work.

Torch-free: `plan` and `status` read the shared work of a matrix from these keys without building a model.
A tokenizer fit is cached under `fit_key` (preset, features, MET, data selection, file) and shared by every
job with the same key, also across experiments; a pretrained backbone under `pretrain_key` (its settings, the
fit, the model shape and the pretraining events), shared by the seeds of a cell.
"""

from __future__ import annotations

from dataclasses import dataclass

from expmatrix.config import DataConfig, Job, JobConfig, SpecError, fit_signature, n_outputs, short_hash
from expmatrix.config.layout import CONT_NAMES
from expmatrix.data import data_selection, file_identity
from expmatrix.data.icecube import PULSE_FEATURES


def pulse_features(cfg: JobConfig) -> tuple[str, ...]:
    """The pulse columns the tokenizer preset declares (its transforms or rules), in the file layout's order."""
    tok = cfg.tokenizer
    declared = tok.declared_features()
    unknown = [f for f in declared if f not in PULSE_FEATURES]
    if unknown:
        raise SpecError(
            f"tokenizer {tok.name!r} declares features {unknown} that {cfg.data.source} pulses do not have; "
            f"pulse features: {', '.join(PULSE_FEATURES)}"
        )
    return tuple(f for f in PULSE_FEATURES if f in declared)


def features_of(cfg: JobConfig) -> tuple[tuple[str, ...], bool]:
    """(the per-object features a job reads, whether MET tokens are added): the source decides."""
    if cfg.data.source == "fourtops":
        return tuple(CONT_NAMES[i] for i in cfg.data.cont_features), cfg.data.use_met
    return pulse_features(cfg), False


def pretrain_data(cfg: JobConfig) -> DataConfig:
    """The job's data section with `pretrain.max_events` training events (of whose training split only)."""
    return cfg.data.model_copy(update={"max_events": cfg.pretrain.max_events or cfg.data.max_events})


def pretrain_selection(cfg: JobConfig) -> dict:
    """The events a pretraining reads: the job's training split, up to `pretrain.max_events` (never val/test)."""
    return {**data_selection(pretrain_data(cfg)), "split": "train"}


@dataclass(frozen=True)
class Recipe:
    """A job, its features, and the cache keys of the shared work it needs (computed once, then handed on)."""

    job: Job
    features: tuple[str, ...]  # the per-object features its tokenizer reads
    use_met: bool  # MET and MET-phi tokens
    fit_key: str  # its tokenizer fit
    pretrain_key: str | None  # its pretrained backbone (model.init: pretrained), else None

    @property
    def cfg(self) -> JobConfig:
        return self.job.config

    @classmethod
    def of(cls, job: Job) -> Recipe:
        cfg = job.config
        features, use_met = features_of(cfg)
        fit = short_hash({"tokenizer": fit_signature(cfg.tokenizer, features, use_met),
                          "data": data_selection(cfg.data), "file": file_identity(job.data_path)})  # fmt: skip
        pretrain = None
        if cfg.model.init == "pretrained":  # the width follows from the model shape: every seed of a cell shares it
            model = {k: v for k, v in cfg.model.model_dump(mode="json").items() if k != "init"}
            pretrain = short_hash({"pretrain": cfg.pretrain.artifact_settings(), "fit": fit, "model": model,
                                   "outputs": n_outputs(cfg.data), "data": pretrain_selection(cfg)})  # fmt: skip
        return cls(job, features, use_met, fit, pretrain)
