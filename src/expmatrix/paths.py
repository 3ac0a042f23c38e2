"""Every file name under `runs/`: one place names them, and nothing here reads or writes (submitit's `JobPaths`).

runs/<experiment>/<job-id>/            RunPaths.job(id) -> JobPaths
    job.yaml             record       the job record: id, cell, factor levels, seed, resolved config, run settings
    status.json          status       state (running/done/failed/preempted), host, pid, times, error, failures,
                                      epoch; `redone`: what was damaged and where its redo started
    claim                claim        exists while a worker owns the job (exclusive create); mtime = heartbeat
    starts.jsonl         starts       one line per training start (host, pid, time, resumed)
    attempts.jsonl       attempts     one line per array-task attempt (task, scheduler ids, host, outcome)
    tokenizer.json       tokenizer    fitted tokenizer state
    metrics.jsonl        history      one line per epoch
    metrics.json         metrics      final metrics, parameter count, which weights were evaluated
    predictions.parquet  predictions  test scores and labels (or directions)
    checkpoint.pt        checkpoint   latest epoch: model, optimizer, scheduler, RNG state, data position (a zip)
    wandb/               wandb        the job's wandb run (run.tracking: wandb)
    <name>.damaged-<time>             a damaged file set aside before a redo (never deleted)
    .<name>.<pid>.tmp  .claim.<nonce> a write or a claim takeover in flight (a kill leaves them; never read)
runs/<experiment>/_submit/             RunPaths.submit -> SubmitPaths
    <backend>-<hash>/    submission() one folder per distinct submission (same inputs -> same folder)
        <stage>.jobs     jobs_list()  the job ids of a stage's array, line N = task N (N // K if K per task)
        logs/            logs         scheduler logs (unless hpc.log_dir)
        + the backend's rendered files (<stage>.sbatch | <stage>.sub + <stage>.sh, report.*, experiment.dag)
    submissions.jsonl    log          one line per real submission: folder, backend, scheduler ids, jobs_per_task
runs/<experiment>/report.*, results.parquet, tables/, plots/: what `expmatrix report` writes (report/build.py)
runs/_cache/                           RunPaths.cache -> CachePaths: shared by experiments, derived, safe to delete
    <source>_synthetic_e<events>_s<seed>.h5   generated data (named by its generator: `data.synthetic_path`)
    tokenizers/<key>.json  fit(key)         a fitted tokenizer per tokenizer config and data selection (+ .failed.json;
                                            .claim while a worker fits it: the others wait for its artifact)
    consumed/<shape>.json  consumed(shape)  the config keys a job shape reads (the every-key check)
    sizes/<key>.json       size(key)        width and parameter count of a tokenizer + model shape (`list`)
    pretrained/<key>/      pretrained(key)  model.pt (backbone + record), record.json, checkpoint.pt, failed.json, claim
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from expmatrix.config import SpecError

CACHE, SUBMIT = "_cache", "_submit"  # folders under the runs root / an experiment's folder that are not jobs


@dataclass(frozen=True)
class JobPaths:
    """The files of one job's run directory."""

    dir: Path

    @property
    def record(self) -> Path:
        return self.dir / "job.yaml"

    @property
    def status(self) -> Path:
        return self.dir / "status.json"

    @property
    def claim(self) -> Path:
        return self.dir / "claim"

    @property
    def starts(self) -> Path:
        return self.dir / "starts.jsonl"

    @property
    def attempts(self) -> Path:
        return self.dir / "attempts.jsonl"

    @property
    def tokenizer(self) -> Path:
        return self.dir / "tokenizer.json"

    @property
    def history(self) -> Path:
        return self.dir / "metrics.jsonl"

    @property
    def metrics(self) -> Path:
        return self.dir / "metrics.json"

    @property
    def predictions(self) -> Path:
        return self.dir / "predictions.parquet"

    @property
    def checkpoint(self) -> Path:
        return self.dir / "checkpoint.pt"

    @property
    def wandb(self) -> Path:
        return self.dir / "wandb"


@dataclass(frozen=True)
class FitPaths:
    """A shared tokenizer fit: its state, the record of its failure (the jobs that need it fail with it), and the
    claim of the worker fitting it (tuning trials with a new fit run at once: one fits, the others wait)."""

    artifact: Path
    failure: Path
    claim: Path


@dataclass(frozen=True)
class PretrainPaths:
    """A shared masked-modelling pretraining."""

    dir: Path

    @property
    def artifact(self) -> Path:
        """model.pt: the backbone's weights and the record of what it was trained on."""
        return self.dir / "model.pt"

    @property
    def record(self) -> Path:
        """The record alone, for a reader without torch."""
        return self.dir / "record.json"

    @property
    def checkpoint(self) -> Path:
        return self.dir / "checkpoint.pt"

    @property
    def failure(self) -> Path:
        return self.dir / "failed.json"

    @property
    def claim(self) -> Path:
        """Exists while a worker pretrains it (the others wait for its artifact)."""
        return self.dir / "claim"


@dataclass(frozen=True)
class CachePaths:
    """`runs/_cache/`: shared by experiments."""

    dir: Path

    @classmethod
    def under(cls, root: str | Path) -> CachePaths:
        """The cache of the runs root `root`."""
        return cls(Path(root) / CACHE)

    def fit(self, key: str) -> FitPaths:
        folder = self.dir / "tokenizers"
        return FitPaths(folder / f"{key}.json", folder / f"{key}.failed.json", folder / f"{key}.claim")

    def pretrained(self, key: str) -> PretrainPaths:
        return PretrainPaths(self.dir / "pretrained" / key)

    def consumed(self, shape: str) -> Path:
        return self.dir / "consumed" / f"{shape}.json"

    def size(self, key: str) -> Path:
        return self.dir / "sizes" / f"{key}.json"


@dataclass(frozen=True)
class SubmissionPaths:
    """One submission's folder: job lists, the backend's rendered files, logs."""

    dir: Path

    def jobs_list(self, stage: str) -> Path:
        """The job ids of a stage's array, line N = task N (N // K with K jobs per task)."""
        return self.dir / f"{stage}.jobs"

    @property
    def logs(self) -> Path:
        return self.dir / "logs"


@dataclass(frozen=True)
class SubmitPaths:
    """`runs/<experiment>/_submit/`."""

    dir: Path

    def submission(self, backend: str, digest: str) -> SubmissionPaths:
        return self.folder(f"{backend}-{digest}")

    def folder(self, name: str) -> SubmissionPaths:
        """A submission by its folder's name (as the log records it)."""
        return SubmissionPaths(self.dir / name)

    @property
    def log(self) -> Path:
        """One line per real submission."""
        return self.dir / "submissions.jsonl"


def _inside(root: Path, experiment: str) -> Path:
    """`root/experiment`, refused unless it is a folder of its own right below `root` (not `..`, `.`, `_cache`)."""
    folder = root / experiment
    if experiment in ("", ".", "..", CACHE) or Path(experiment).name != experiment or "/" in experiment:
        raise SpecError(f"experiment name {experiment!r}: must name a folder of its own inside {root}")
    return folder


@dataclass(frozen=True)
class RunPaths:
    """The files of one experiment under `root/<experiment>/`, and the shared `root/_cache/`."""

    root: Path
    experiment: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))
        _inside(self.root, self.experiment)

    @property
    def dir(self) -> Path:
        return self.root / self.experiment

    def job_dir(self, job_id: str) -> Path:
        return self.dir / job_id

    def job(self, job_id: str) -> JobPaths:
        return JobPaths(self.job_dir(job_id))

    @property
    def cache(self) -> CachePaths:
        return CachePaths.under(self.root)

    @property
    def submit(self) -> SubmitPaths:
        return SubmitPaths(self.dir / SUBMIT)

    @classmethod
    def of_record(cls, record_file: Path) -> tuple[RunPaths, str]:
        """(paths, job id) of `runs/<experiment>/<job-id>/job.yaml`; a `SpecError` for any other file."""
        path, name = Path(record_file).resolve(), JobPaths(Path()).record.name
        if len(path.parents) < 3 or path.name != name:
            raise SpecError(f"{record_file}: not a job record runs/<experiment>/<job-id>/{name}")
        return cls(path.parents[2], path.parent.parent.name), path.parent.name
