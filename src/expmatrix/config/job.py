"""One job: its config (the resolved `JobConfig`, hashed into the job id) and its record (`Job`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from expmatrix.config.data import SOURCE_TASKS, DataConfig
from expmatrix.config.layout import CONT_NAMES
from expmatrix.config.loading import describe_errors
from expmatrix.config.model import ModelConfig
from expmatrix.config.pretrain import PretrainConfig, check_targets
from expmatrix.config.run import RunConfig
from expmatrix.config.strict import SpecError, Strict
from expmatrix.config.tokenizers import TokenizerConfig
from expmatrix.config.train import REGRESSION_LOSSES, TrainConfig


class JobConfig(Strict):
    """Everything one job needs; its canonical form is hashed into the job id."""

    data: DataConfig
    tokenizer: TokenizerConfig
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    seed: int = 0
    pretrain: PretrainConfig | None = None  # read with model.init pretrained only (see config/pretrain.py)

    @model_validator(mode="after")
    def _pretraining_is_configured(self) -> JobConfig:
        """`init: pretrained` needs a `pretrain` section whose targets the source's events have."""
        init, pretrain = vars(self.model)["init"], vars(self)["pretrain"]  # vars: not a read of the inert check
        if init == "pretrained" and pretrain is None:
            raise self._error(("model", "init"), init, "pretrained needs a `pretrain` section (mask_fraction, ...)")
        if init == "pretrained" and pretrain.targets is not None:
            data = vars(self.data)
            features = tuple(CONT_NAMES[i] for i in data["cont_features"])
            why = check_targets(pretrain.targets, data["source"], features)
            if why:
                raise self._error(("pretrain", "targets"), pretrain.targets, why)
        return self

    def _trim(self, out: dict[str, Any]) -> dict[str, Any]:
        """A scratch job never reads `pretrain`: it stays out of its resolved config and id."""
        if out.get("pretrain") is None or out["model"].get("init", "scratch") == "scratch":
            out.pop("pretrain", None)
        return out

    @model_validator(mode="after")
    def _loss_fits_the_task(self) -> JobConfig:
        """The source decides the task: cross_entropy for classification, a regression loss for directions."""
        task, loss = SOURCE_TASKS[self.data.source], self.train.loss
        if (task == "classification") == (loss == "cross_entropy"):
            return self
        source = self.data.source
        if task == "classification":
            msg = f"{loss} needs regression targets; data.source {source} is classification: use cross_entropy"
        else:
            msg = f"{loss} needs class labels; data.source {source} is direction regression: use one of " + ", ".join(
                REGRESSION_LOSSES
            )
        raise self._error(("train", "loss"), loss, msg)

    @model_validator(mode="after")
    def _tokenizer_fits_the_source(self) -> JobConfig:
        """Pulses have one object type and no background class: settings about those would do nothing."""
        if SOURCE_TASKS[self.data.source] == "classification":
            return self
        tok, source = vars(self.tokenizer), self.data.source  # vars: not a read of the inert check
        inert = {
            "fit_on": (tok.get("fit_on") == "background", "every event is fitted on: there is no background class"),
            "per_object_type": (tok.get("per_object_type") is True, "every pulse has the same object type"),
            "object_type": (tok.get("object_type") is True, "every pulse has the same object type: set it false"),
        }
        for key, (bad, why) in inert.items():
            if bad:
                raise self._error(("tokenizer", key), tok[key], f"has no effect on data.source {source}: {why}")
        return self

    @model_validator(mode="after")
    def _hierarchy_needs_pulses(self) -> JobConfig:
        """The hierarchical model groups pulses by their sensor: a source of objects has none."""
        kind, source = vars(self.model)["kind"], vars(self.data)["source"]
        if kind == "hierarchical" and SOURCE_TASKS[source] == "classification":
            raise self._error(("model", "kind"), kind, f"groups pulses by sensor; data.source {source} has objects, "
                              "not pulses: use model.kind flat")  # fmt: skip
        return self

    @model_validator(mode="after")
    def _stream_fits_the_training(self) -> JobConfig:
        """A pretraining reads its events into memory: a streamed job starts from scratch; and a batch spans at
        most two blocks (held at once)."""
        init, stream, batch = vars(self.model)["init"], vars(self.data)["stream"], vars(self.train)["batch_size"]
        if stream is not None and init == "pretrained":
            raise self._error(("data", "stream"), stream.model_dump(), "streams the splits block by block; "
                              "model.init pretrained reads its pretraining events into memory: remove one")  # fmt: skip
        if stream is not None and vars(stream)["block_events"] < batch:
            raise self._error(("data", "stream", "block_events"), vars(stream)["block_events"],
                              f"is below train.batch_size {batch}: a batch would read several blocks")  # fmt: skip
        return self

    @model_validator(mode="after")
    def _hierarchy_has_no_fixed_shape(self) -> JobConfig:
        """The hierarchical model's shapes follow each batch's sensors: one fixed batch shape cannot hold."""
        if vars(self.model)["kind"] == "hierarchical" and vars(self.train)["fixed_shape"]:
            raise self._error(("train", "fixed_shape"), vars(self.train)["fixed_shape"], "has no effect in "
                              "model.kind hierarchical: its shapes follow each batch's sensors; remove it")  # fmt: skip
        return self

    def _error(self, loc: tuple[str, ...], value: Any, msg: str) -> ValidationError:
        """A validation error at `loc` (so that it is reported at the key where the value was set)."""
        error = InitErrorDetails(type=PydanticCustomError("value_error", msg), loc=loc, input=value)
        return ValidationError.from_exception_data(type(self).__name__, [error])


@dataclass(frozen=True)
class Job:
    """A job of a matrix as written to its `job.yaml`: who it is, and the config it runs (validated once, when
    the matrix is built or the record is read)."""

    id: str  # hash of the resolved config, seed included
    cell: str  # the same without the seed: groups seeds of one cell
    levels: dict[str, str]  # factor -> level name
    seed: int
    config: JobConfig
    data_path: str  # the data file resolved for this machine ("synthetic" stays symbolic)
    run: RunConfig = field(default_factory=RunConfig)  # tracking, attempts (not part of the id)

    def record(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "cell": self.cell,
            "levels": self.levels,
            "seed": self.seed,
            "data_path": self.data_path,
            "config": self.config.model_dump(mode="json"),
            "run": self.run.model_dump(mode="json"),
        }

    @classmethod
    def from_record(cls, rec: dict[str, Any], where: Any = "job record") -> Job:
        """The job a record (`job.yaml`) holds; a config that no longer validates is a `SpecError` naming `where`
        and the key."""
        try:
            config, run = JobConfig.model_validate(rec["config"]), RunConfig.model_validate(rec.get("run", {}))
        except ValidationError as e:
            key, msg = describe_errors(e, JobConfig)[0]
            raise SpecError(f"{where}: config.{key}: {msg}") from None
        return cls(rec["id"], rec["cell"], rec["levels"], rec["seed"], config, rec["data_path"], run)

    def describe(self) -> str:
        """`factor=level ... seed=N`: how messages and tables name the job."""
        return " ".join(f"{k}={v}" for k, v in self.levels.items()) + f" seed={self.seed}"
