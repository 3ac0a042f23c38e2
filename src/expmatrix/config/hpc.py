"""The `hpc` section: cluster settings for `expmatrix submit`, layered from defaults to the command line.

Layers, later wins: the defaults below, a cluster profile (`hpc/profiles/<name>.yaml`, a lab's
site defaults), the experiment's `hpc:` section, then `--hpc KEY=VALUE` / `--max-concurrent`.
Every value ends up in a generated script; `render.py` quotes or validates each one there.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, ValidationError, field_validator, model_validator

from expmatrix.config.loading import describe_errors, flatten, load_yaml, set_dotted
from expmatrix.config.strict import SpecError, Strict


def keys_matching(pattern: str, what: str) -> AfterValidator:
    """A mapping whose keys go into a script unquoted (names): each must match `pattern`."""

    def check(v: dict[str, Any]) -> dict[str, Any]:
        bad = [k for k in v if not re.match(pattern, k)]
        if bad:
            raise ValueError(f"not {what}: {bad}")
        return v

    return AfterValidator(check)


IDENT = r"^[A-Za-z_][A-Za-z0-9_]*$"
# a value that goes into a `#SBATCH` line or a submit-file token as it is (no shell reads it: refused, not quoted)
DIRECTIVE = r"^[A-Za-z0-9_@%:,./+=-]+$"


def _directive(v: str) -> str:
    if not re.match(DIRECTIVE, v):
        raise ValueError("cannot go into a scheduler directive: use letters, digits and _@%:,./+=- only")
    return v


Directive = Annotated[str, AfterValidator(_directive)]


class Setup(Strict):
    """Environment set-up before the worker starts; every value is shell-quoted where it is used."""

    modules: list[str] = []  # `module load NAME` each, in order
    conda: str | None = None  # `conda activate NAME` (after the conda shell hook)
    venv: str | None = None  # `source VENV/bin/activate`
    source: list[str] = []  # other files to `source`, e.g. a site profile
    env: Annotated[dict[str, str], keys_matching(IDENT, "a shell variable name")] = {}  # {OMP_NUM_THREADS: "4"}
    cd: str | None = None  # working folder of the job [default: the scheduler's]


class CondorSettings(Strict):
    """HTCondor-only knobs (stoomboot needs getenv, +UseOS and +JobCategory)."""

    getenv: bool = False  # copy the submitting shell's environment into the job
    # custom ClassAd attributes: {UseOS: el9} -> +UseOS = "el9"
    attributes: Annotated[dict[str, str | int | bool], keys_matching(IDENT, "a ClassAd attribute name")] = {}
    requirements: str | None = None  # a ClassAd expression, written as given (it is an expression, not a value)


class ClusterSettings(Strict):
    """What a lab sets once per cluster and an experiment or the command line may override."""

    backend: Literal["slurm", "condor"] | None = None  # a profile may name its backend
    job_name: Directive | None = None  # [default: expmatrix-<experiment>]
    partition: Directive | None = None  # SLURM --partition
    account: Directive | None = None  # SLURM --account; HTCondor accounting_group
    qos: Directive | None = None  # SLURM --qos
    cpus: int = Field(1, ge=1)  # per task; also the worker's torch threads
    memory: str = Field("4G", pattern=r"^[0-9]+[KMGT]?$")  # per task, SLURM units (4G, 500M)
    gpus: int = Field(0, ge=0)  # per task: SLURM --gres=gpu:N (unless `gres`), HTCondor request_gpus
    gres: Directive | None = None  # SLURM --gres as given, e.g. gpu:a100:1 (overrides gpus on SLURM)
    # SLURM's [D-]HH:MM[:SS] or MM; a YAML number is seconds
    time: str = Field("04:00:00", pattern=r"^([0-9]+-)?[0-9]{1,2}(:[0-9]{2}){0,2}$")
    signal_seconds: int = Field(300, ge=10)  # USR1 this long before the time limit: checkpoint and requeue
    max_requeues: int = Field(3, ge=0)  # per task, after preemption or a time limit
    max_concurrent: int | None = Field(None, ge=1)  # array throttle (SLURM %K, HTCondor max_materialize)
    # training jobs one array task runs at once, sharing its cpus (split among them) and GPU: ceil(N / K) tasks
    jobs_per_task: int = Field(1, ge=1)
    report: bool = True  # a report job after the last stage (runs even if some jobs failed)
    command: list[str] = ["expmatrix"]  # how a node calls expmatrix, e.g. [/opt/venv/bin/python, -m, expmatrix]
    log_dir: str | None = None  # scheduler logs [default: logs/ in the submission folder]
    setup: Setup = Setup()
    # more SLURM options: {constraint: gpu, exclusive: null}
    extra: Annotated[dict[str, str | int | None], keys_matching(r"^[a-z][a-z0-9-]*$", "a long option name")] = {}
    condor: CondorSettings = CondorSettings()

    @field_validator("time", mode="before")
    @classmethod
    def _seconds(cls, v: Any) -> Any:
        """A number is seconds: unquoted YAML reads 04:00:00 as the integer 14400."""
        if isinstance(v, int) and not isinstance(v, bool):
            days, rest = divmod(v, 86400)
            text = f"{rest // 3600:02d}:{rest % 3600 // 60:02d}:{rest % 60:02d}"
            return f"{days}-{text}" if days else text
        return v

    @field_validator("command")
    @classmethod
    def _command(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("command needs at least the program, e.g. [expmatrix]")
        return v

    @model_validator(mode="after")
    def _signal_before_limit(self) -> ClusterSettings:
        if self.signal_seconds >= self.time_seconds():
            raise ValueError(
                f"signal_seconds ({self.signal_seconds}) must be shorter than the time limit "
                f"({self.time} = {self.time_seconds()} s): the warning would come at the start"
            )
        return self

    def time_seconds(self) -> int:
        """The time limit in seconds (SLURM's reading of [D-]HH[:MM[:SS]]; a lone number is minutes)."""
        days, _, rest = self.time.rpartition("-")
        parts = [int(p) for p in rest.split(":")]
        if len(parts) == 1 and not days:
            return parts[0] * 60
        h, m, s = (parts + [0, 0])[:3]
        return int(days or 0) * 86400 + h * 3600 + m * 60 + s


def profile_path(hpc_dir: Path, name: str) -> Path:
    """A profile by name (hpc/profiles/<name>.yaml) or by path."""
    p = Path(name)
    return p if p.suffix in (".yaml", ".yml") else hpc_dir / "profiles" / f"{name}.yaml"


def load_settings(layers: list[tuple[str, dict[str, Any]]]) -> ClusterSettings:
    """Merge (where, overrides) layers, later wins, and validate; an error names the layer and key."""
    merged: dict[str, Any] = {}
    for _, over in layers:
        for k, v in flatten(over).items():
            set_dotted(merged, k, v)
    try:
        return ClusterSettings.model_validate(merged)
    except ValidationError as e:
        key, msg = describe_errors(e, ClusterSettings)[0]
        where = next((w for w, over in reversed(layers) if any(k.startswith(key) for k in flatten(over))), "")
        raise SpecError(f"{where}{key}: {msg}") from None


def read_profile(hpc_dir: Path, name: str) -> dict[str, Any]:
    path = profile_path(hpc_dir, name)
    if not path.exists():
        found = sorted(p.stem for p in (hpc_dir / "profiles").glob("*.yaml"))
        raise SpecError(f"cluster profile {name!r}: {path} not found; available: {', '.join(found) or 'none'}")
    raw = load_yaml(path) or {}
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: expected a mapping of cluster settings")
    return raw
