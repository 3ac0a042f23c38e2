"""Work shared by many jobs: run once, before them, and cached by its own config hash.

A tokenizer fit (quantile edges, normalization constants, k-means centres, a VQ-VAE pretraining)
is such work: every job whose tokenizer signature (preset, features, MET) and data selection match
reuses one fitted state, kept in `<runs>/_cache/tokenizers/<key>.json`, also across experiments.
A fit that fails is recorded beside it: the jobs that need it fail at once with its error instead
of each repeating it, until `--retry-failed` clears the record. A masked-modelling pretraining (the jobs
with `model.init: pretrained`) is the second kind of stage, kept in `<runs>/_cache/pretrained/<key>/`
(expmatrix.pretraining); it fits the tokenizer it needs itself when it runs first.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from expmatrix.config import Job, JobConfig, SpecError, fit_signature, n_outputs, short_hash
from expmatrix.config.layout import CONT_NAMES
from expmatrix.data import Events, data_selection, file_identity, load_pulse_splits, load_splits
from expmatrix.data.icecube import PULSE_FEATURES
from expmatrix.pretraining import pretrain_selection
from expmatrix.runfiles import DamagedFile, read_file, set_aside, write_json
from expmatrix.store import RunStore
from expmatrix.tokenizers.errors import TokenizerError

if TYPE_CHECKING:  # the tokenizers import torch: `plan` and `status` read the stages without it
    from expmatrix.tokenizers import Tokenizer


class FitFailed(TokenizerError):
    """A shared fit failed before: its record says why."""


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


def tokenizer_for(cfg: JobConfig) -> Tokenizer:
    """The job's tokenizer, unfitted."""
    from expmatrix.tokenizers import build_tokenizer

    return build_tokenizer(cfg.tokenizer, *features_of(cfg))


def job_splits(cfg: JobConfig, data_path: str, cache_dir: Path) -> dict[str, Events]:
    """train/val/test `Events` of the job's source with the features its tokenizer reads."""
    if cfg.data.source == "fourtops":
        return load_splits(cfg.data, data_path, cache_dir)
    return load_pulse_splits(cfg.data, data_path, cache_dir, pulse_features(cfg))


def fit_key(cfg: JobConfig, data_path: str) -> str:
    """The cache key of the job's tokenizer fit: preset, features, MET, data selection and file."""
    signature = fit_signature(cfg.tokenizer, *features_of(cfg))
    return short_hash({"tokenizer": signature, "data": data_selection(cfg.data), "file": file_identity(data_path)})


def pretrain_key(cfg: JobConfig, data_path: str) -> str:
    """The cache key of the job's pretrained backbone: its settings, the tokenizer fit, the model shape (the
    width follows from it) and the pretraining events. Every seed of a cell shares it."""
    model = {k: v for k, v in cfg.model.model_dump(mode="json").items() if k != "init"}
    return short_hash({"pretrain": cfg.pretrain.artifact_settings(), "fit": fit_key(cfg, data_path), "model": model,
                       "outputs": n_outputs(cfg.data), "data": pretrain_selection(cfg)})  # fmt: skip


def _check_record(record: dict, tokenizer: Tokenizer, cfg: JobConfig, path: Path) -> None:
    """An artifact fitted on another preset, feature set or data selection is refused, naming both."""
    for what, mine in (("signature", tokenizer.signature()), ("data", data_selection(cfg.data))):
        if record.get(what) != mine:
            raise TokenizerError(
                f"{path}: fitted for {what} {record.get(what)!r}, but this job needs {mine!r}: it is not this "
                "job's artifact (delete it to fit again)"
            )


def fitted_tokenizer(
    cfg: JobConfig, data_path: str, store: RunStore, train: Events | None = None, with_path: bool = False
):
    """The job's tokenizer, fitted: from the cache, or fitted on the training split and cached (a failure
    is recorded for the other jobs that need the fit). With `with_path`: (tokenizer, artifact path)."""
    tokenizer, key = tokenizer_for(cfg), fit_key(cfg, data_path)
    path, failure = store.fit_file(key), store.fit_failure_file(key)
    try:
        record = read_file(path)
        _check_record(record, tokenizer, cfg, path)
        tokenizer.load_state_dict(record["state"])
        return (tokenizer, path) if with_path else tokenizer
    except FileNotFoundError:
        pass
    except DamagedFile:
        set_aside(path)  # a cache: fit again (the damaged file stays for a look)
    if failure.exists():
        why = read_file(failure)
        raise FitFailed(f"the shared tokenizer fit {key} failed ({why['error']}); run with --retry-failed to fit again")
    try:
        if train is None:
            train = job_splits(cfg, data_path, store.cache_dir)["train"]
        tokenizer.fit(train)  # the training split only
    except Exception as e:
        write_json(failure, {"error": f"{type(e).__name__}: {e}", "time": time.time(), "preset": cfg.tokenizer.name})
        raise
    record = {"signature": tokenizer.signature(), "data": data_selection(cfg.data), "state": tokenizer.state_dict()}
    write_json(path, record)
    return (tokenizer, path) if with_path else tokenizer


@dataclass(frozen=True)
class Stage:
    """One piece of shared work and the jobs waiting for it."""

    key: str
    kind: str  # "tokenizer-fit" | "pretrain"
    job: Job  # any job that needs it: its config says what to do
    n_cells: int
    n_jobs: int = 0  # the jobs (all seeds) waiting for it
    state: str = "pending"  # pending | failed | done

    def describe(self) -> str:
        cfg = self.job.config
        features, use_met = features_of(JobConfig.model_validate(cfg))
        features, met = "-".join(features), " + MET" if use_met else ""  # (pulses have no MET)
        model = f", model {cfg['model']['target_params']} params" if self.kind == "pretrain" else ""
        return f"{self.kind} {self.key}: {cfg['tokenizer']['name']} on {features}{met}{model}"

    def files(self, store: RunStore) -> tuple[Path, Path]:
        """(its artifact, its failure record)."""
        if self.kind == "pretrain":
            return store.pretrain_file(self.key), store.pretrain_file(self.key, "failed.json")
        return store.fit_file(self.key), store.fit_failure_file(self.key)


def fit_stages(jobs: list[Job], store: RunStore) -> list[Stage]:
    """Every tokenizer fit and pretraining the jobs need, one per key (the fits first), with its state and the
    jobs waiting for it (torch-free)."""
    found: dict[tuple[str, str], list[Job]] = {}
    for job in jobs:
        cfg = JobConfig.model_validate(job.config)
        found.setdefault(("tokenizer-fit", fit_key(cfg, job.data_path)), []).append(job)
        if cfg.model.init == "pretrained":
            found.setdefault(("pretrain", pretrain_key(cfg, job.data_path)), []).append(job)
    out = []
    for (kind, key), group in sorted(found.items(), key=lambda item: item[0][0] == "pretrain"):
        stage = Stage(key, kind, group[0], len({j.cell for j in group}), len(group))
        artifact, failure = stage.files(store)
        state = "done" if artifact.exists() else "failed" if failure.exists() else "pending"
        out.append(dataclasses.replace(stage, state=state))
    return out


def pending_stages(jobs: list[Job], store: RunStore) -> list[Stage]:
    """The tokenizer fits the jobs need that are neither cached nor failed, one per key."""
    return [s for s in fit_stages(jobs, store) if s.state == "pending"]


def clear_failed_stages(jobs: list[Job], store: RunStore) -> None:
    """`--retry-failed`: forget recorded stage failures, so that the stages run again."""
    for stage in fit_stages(jobs, store):
        stage.files(store)[1].unlink(missing_ok=True)


def run_stage(stage: Stage, store: RunStore) -> None:
    cfg = JobConfig.model_validate(stage.job.config)
    if stage.kind == "pretrain":
        from expmatrix.pretraining.stage import run_pretraining  # torch

        run_pretraining(cfg, stage.job.data_path, store)
    else:
        fitted_tokenizer(cfg, stage.job.data_path, store)
