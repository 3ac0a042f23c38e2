"""The `pretrain` section: masked modelling of the job's tokenizer + backbone before fine-tuning.

Read only by jobs with `model.init: pretrained`; a scratch job leaves it out of its resolved config
(and id). What each source's events offer as targets is said here, so a bad target is an error before
anything trains.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from expmatrix.config.layout import CONT_NAMES
from expmatrix.config.strict import Strict
from expmatrix.config.tokenizers import TokenizerConfig

PULSE_COLUMNS = ("time", "charge", "x", "y", "z", "sensor_id", "auxiliary")  # = data.icecube.PULSE_FEATURES
OBJECT_TYPE = "type"  # the 4tops object-type id as a target
CODE = "code"  # the code a fitted code tokenizer (vqvae, kmeans, fsq: `tokenizer`) gives each object
CODE_KINDS = ("vqvae", "kmeans", "fsq")
# per source: targets that hold integer codes (a class target as they are), and every target it offers
INTEGER_TARGETS = {"fourtops": (OBJECT_TYPE,), "icecube": ("sensor_id", "auxiliary")}
TARGETS = {"fourtops": (OBJECT_TYPE, CODE, *CONT_NAMES), "icecube": PULSE_COLUMNS}


class TargetSpec(Strict):
    """What the model predicts for one feature at a masked position."""

    LATER_DEFAULTS = {"tokenizer": None}

    kind: Literal["class", "regression"]  # class: integer codes, or `bins` quantile bins of a continuous feature
    bins: int | None = Field(None, ge=2)  # class over quantile bins of the training values (continuous features)
    log: bool = False  # regression on ln(1 + value) (charges): standardized either way
    # the `code` target: a code tokenizer (a preset name in the experiment, e.g. vqvae512), fitted as a job's is
    tokenizer: TokenizerConfig | None = None

    @model_validator(mode="after")
    def _options_fit_the_kind(self) -> TargetSpec:
        if self.kind == "regression" and self.bins is not None:
            raise ValueError("bins applies to kind class only")
        if self.kind == "class" and self.log:
            raise ValueError("log applies to kind regression only")
        if self.tokenizer is not None and self.tokenizer.kind not in CODE_KINDS:
            raise ValueError(f"tokenizer: a {self.tokenizer.kind} preset gives no codes; code presets: {CODE_KINDS}")
        return self


def default_targets(source: str, features: tuple[str, ...]) -> dict[str, TargetSpec]:
    """IceCube pulses: the sensor id (class) and the charge (regression on ln(1 + q)); 4tops objects: the object
    type (class) and the job's continuous features (regression; MPM found continuous targets the better ones)."""
    if source == "icecube":
        return {"sensor_id": TargetSpec(kind="class"), "charge": TargetSpec(kind="regression", log=True)}
    return {OBJECT_TYPE: TargetSpec(kind="class"), **{f: TargetSpec(kind="regression") for f in features}}


class PretrainConfig(Strict):
    """Masked modelling on the training split (labels unused), and how a pretrained job fine-tunes."""

    mask_fraction: float = Field(0.15, gt=0, lt=1)  # share of real tokens masked (a learned vector replaces them)
    targets: dict[str, TargetSpec] | None = None  # feature -> target; None: the source's defaults (default_targets)
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(128, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    max_events: int | None = Field(None, ge=10)  # training-split events to pretrain on (None: the job's own)
    holdout: float = Field(0.1, gt=0, lt=0.5)  # seeded share of them held out for the per-epoch errors
    seed: int = 0
    # fine-tuning (not part of the artifact): backbone frozen for the first N epochs, its learning rate scaled
    freeze_epochs: int = Field(0, ge=0)
    backbone_lr: float = Field(1.0, gt=0)  # factor on train.lr for the embedding and backbone (the head keeps 1)

    def artifact_settings(self) -> dict:
        """The settings that shape the pretrained weights (the fine-tuning options excluded)."""
        return self.model_dump(mode="json", exclude={"freeze_epochs", "backbone_lr"})


def check_targets(targets: dict[str, TargetSpec], source: str, features: tuple[str, ...]) -> str | None:
    """Why the targets cannot be predicted from the source's events, or None."""
    offered = TARGETS[source] if source == "icecube" else (OBJECT_TYPE, CODE, *features)
    for name, spec in targets.items():
        if name not in offered:
            return f"target {name!r}: {source} events of this job have no such feature; targets: {', '.join(offered)}"
        if name == CODE and spec.tokenizer is None:
            return f"target {CODE!r}: give its code `tokenizer` (a preset name, e.g. vqvae512)"
        if name != CODE and spec.tokenizer is not None:
            return f"target {name!r}: `tokenizer` applies to the {CODE!r} target only"
        if name == CODE:
            if spec.kind != "class" or spec.bins is not None:
                return f"target {CODE!r}: the codes are classes: use kind class (bins does not apply)"
            continue
        integer = name in INTEGER_TARGETS[source]
        if spec.kind == "class" and not integer and spec.bins is None:
            return f"target {name!r} is continuous: kind class needs `bins` (quantile bins), or use kind regression"
        if integer and (spec.bins is not None or spec.log or spec.kind != "class"):
            return f"target {name!r} holds integer codes: use kind class (bins and log do not apply)"
    return None if targets else "targets: give at least one"
