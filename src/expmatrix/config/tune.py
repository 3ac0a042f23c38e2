"""The `tune` section: equal-budget tuning of every arm (one optuna study per arm, trials as jobs).

Checked here: the shape of the search space and the objective. Checked against each arm's job
config by `expmatrix.tuning.space` before any trial runs: a key the arm does not have or never
reads, an objective metric its task does not produce.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from expmatrix.config.strict import Strict, tagged

# what the trainer logs per epoch on the validation split, by task (Trainer.validate; a test compares)
BINARY_METRICS = (
    "auroc",
    "partial_auroc",
    "accuracy",
    "f1",
    "brier",
    "ece",
    *(f"sig_eff_at_bkg_rej_{r}" for r in (10, 50, 100, 1000)),
    *(f"bkg_rej_at_sig_eff_{e}" for e in (30, 50)),
)
VAL_METRICS = {
    "classification": ("val_loss", *(f"val_{m}" for m in BINARY_METRICS)),
    "direction": ("val_loss", "val_angle", "val_angle_median"),
}


class Objective(Strict):
    metric: str = "val_loss"  # a validation metric the task logs per epoch: the test split is never looked at
    direction: Literal["maximize", "minimize"] | None = None  # None: by the metric's name (loss, angle: minimize)

    @field_validator("metric")
    @classmethod
    def _validation_only(cls, v: str) -> str:
        if not v.startswith("val_"):
            raise ValueError(f"{v!r}: tuning reads validation metrics only (val_loss, val_auroc, ...), never test")
        return v


class Space(Strict):
    """One key's values: a range `{low, high}` (`type: int`, `log: true` for log-uniform), or `{choices: [...]}`."""

    low: float | None = None
    high: float | None = None
    log: bool = False
    type: Literal["float", "int"] = "float"
    choices: list[Any] | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def _a_range_or_choices(self) -> Space:
        if self.choices is not None:
            if not all(c is None or isinstance(c, bool | int | float | str) for c in self.choices):
                raise ValueError(f"choices must be numbers, strings, booleans or null, got {self.choices!r}")
            if self.low is not None or self.high is not None or self.log:
                raise ValueError("give choices, or low and high, not both")
            return self
        if self.low is None or self.high is None:
            raise ValueError("give low and high (a range) or choices")
        if self.low >= self.high:
            raise ValueError(f"low {self.low:g} must be below high {self.high:g}")
        if self.log and self.low <= 0:
            raise ValueError(f"log-uniform needs positive values, got low {self.low:g}")
        if self.type == "int" and not (self.low.is_integer() and self.high.is_integer()):
            raise ValueError(f"type int needs integer bounds, got {self.low:g}, {self.high:g}")
        return self

    def contains(self, value: Any) -> bool:
        """Whether `value` (an arm's default) is a point of this space."""
        if self.choices is not None:
            return value in self.choices
        numeric = isinstance(value, int | float) and not isinstance(value, bool)
        return numeric and self.low <= value <= self.high and (self.type == "float" or float(value).is_integer())


class MedianPruner(Strict):
    kind: Literal["median"] = "median"
    warmup_epochs: int = Field(1, ge=0)  # epochs a trial runs before it can be pruned
    startup_trials: int = Field(3, ge=0)  # finished trials of the arm before any is pruned


class HyperbandPruner(Strict):
    kind: Literal["hyperband"] = "hyperband"
    min_epochs: int = Field(1, ge=1)
    reduction_factor: int = Field(3, ge=2)


class NoPruner(Strict):
    kind: Literal["none"] = "none"


Pruner = Annotated[MedianPruner | HyperbandPruner | NoPruner, Field(discriminator="kind")]


class TuneConfig(Strict):
    """One study per arm, every study with the same budget, sampler seed and pruner; the same `space`, plus
    the keys `arm_space` adds for one arm (its tokenizer preset's own options, say)."""

    LATER_DEFAULTS = {"arm_space": {}}  # a journal written before arm spaces keeps its fingerprint

    arms: list[str] | None = None  # factors whose level combinations are the arms; None: every factor
    objective: Objective = Objective()
    trials: int = Field(20, ge=1)  # per arm: complete + pruned + failed trials
    epochs: int = Field(10, ge=1)  # train.epochs of every trial
    seed: int | None = None  # of the trials' jobs; None: the experiment's first seed
    sampler: Literal["tpe", "random"] = "tpe"
    sampler_seed: int = 0  # a trial's draw is seeded by (sampler_seed, arm, trial number): reproducible
    pruner: Pruner = MedianPruner()
    space: dict[str, Space] = {}  # dotted job key -> range or choices, for every arm
    # an arm (its level, e.g. `vqvae512`, or `factor=level,...`) -> keys only it tunes (`tokenizer.codebook_size`)
    arm_space: dict[str, dict[str, Space]] = {}

    @model_validator(mode="after")
    def _spaces(self) -> TuneConfig:
        if not self.space and not any(self.arm_space.values()):
            raise ValueError("give a space (every arm) or an arm_space (one arm): there is nothing to tune")
        for arm, keys in self.arm_space.items():
            for key in keys:
                if key in self.space:
                    raise ValueError(f"arm_space.{arm}.{key}: in `space` too: every arm tunes it already")
        for key in (*self.space, *(k for keys in self.arm_space.values() for k in keys)):
            if key == "train.epochs":
                raise ValueError("train.epochs is the budget (`tune.epochs`), the same for every arm: not tuned")
        return self

    @field_validator("pruner", mode="before")
    @classmethod
    def _bare_kind(cls, v: Any) -> Any:
        return tagged(v)

    def direction(self, higher_is_better: bool) -> str:
        """optuna's direction of the objective (`higher_is_better`: the metric's own, by name)."""
        return self.objective.direction or ("maximize" if higher_is_better else "minimize")
