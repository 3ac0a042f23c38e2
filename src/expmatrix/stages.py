"""Work shared by many jobs: run once, before them, and cached by its own config hash.

A tokenizer fitted on a data set is such work: every job whose tokenizer signature
(config, features, MET) and data selection match reuses one fitted state, kept in
`<runs>/_cache/tokenizers/<key>.json`, also across experiments.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from expmatrix.config import DataConfig, Job, JobConfig, SpecError, short_hash
from expmatrix.config.layout import CONT_NAMES
from expmatrix.data import Events, data_selection, ensure_file, file_identity, load_pulse_splits, load_splits
from expmatrix.data.icecube import PULSE_FEATURES
from expmatrix.store import RunStore, read_json, write_json
from expmatrix.tokenizers import Tokenizer, build_tokenizer


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
    return build_tokenizer(cfg.tokenizer, *features_of(cfg))


def job_splits(cfg: JobConfig, data_path: str, cache_dir: Path) -> dict[str, Events]:
    """train/val/test `Events` of the job's source with the features its tokenizer reads."""
    if cfg.data.source == "fourtops":
        return load_splits(cfg.data, data_path, cache_dir)
    return load_pulse_splits(cfg.data, data_path, cache_dir, pulse_features(cfg))


def fit_key(tokenizer: Tokenizer, cfg: JobConfig, data_path: str) -> str:
    return short_hash(
        {"tokenizer": tokenizer.signature(), "data": data_selection(cfg.data), "file": file_identity(data_path)}
    )


def _fit_file(store: RunStore, key: str) -> Path:
    return store.cache_dir / "tokenizers" / f"{key}.json"


def fitted_tokenizer(cfg: JobConfig, data_path: str, store: RunStore, train: Events | None = None) -> Tokenizer:
    """The job's tokenizer, fitted: from the cache, or fitted on the training split and cached."""
    tokenizer = tokenizer_for(cfg)
    path = _fit_file(store, fit_key(tokenizer, cfg, data_path))
    if path.exists():
        tokenizer.load_state_dict(read_json(path)["state"])
        return tokenizer
    if train is None:
        train = job_splits(cfg, data_path, store.cache_dir)["train"]
    tokenizer.fit(train)  # the training split only
    record = {"signature": tokenizer.signature(), "data": data_selection(cfg.data), "state": tokenizer.state_dict()}
    write_json(path, record)
    return tokenizer


@dataclass(frozen=True)
class Stage:
    """One piece of shared work and the jobs waiting for it."""

    key: str
    kind: str  # "tokenizer-fit"
    job: Job  # any job that needs it: its config says what to do
    n_cells: int


def pending_stages(jobs: list[Job], store: RunStore) -> list[Stage]:
    """The tokenizer fits the jobs need that are not cached yet, one per key."""
    found: dict[str, list[Job]] = {}
    for job in {j.cell: j for j in jobs}.values():  # the seeds of a cell share its tokenizer
        cfg = JobConfig.model_validate(job.config)
        key = fit_key(tokenizer_for(cfg), cfg, job.data_path)
        if not _fit_file(store, key).exists():
            found.setdefault(key, []).append(job)
    return [Stage(key, "tokenizer-fit", group[0], len(group)) for key, group in found.items()]


def run_stage(stage: Stage, store: RunStore) -> None:
    cfg = JobConfig.model_validate(stage.job.config)
    fitted_tokenizer(cfg, stage.job.data_path, store)


def prepare_data(jobs: list[Job], store: RunStore) -> None:
    """Generate shared inputs once, before workers start (no two workers write one file)."""
    seen = set()
    for job in jobs:
        cfg = DataConfig.model_validate(job.config["data"])
        key = (cfg.source, job.data_path, cfg.synthetic.model_dump_json())
        if key not in seen:
            seen.add(key)
            ensure_file(cfg, job.data_path, store.cache_dir)
