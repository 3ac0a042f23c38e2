"""The `model` section: one transformer for every tokenizer, sized to a parameter budget."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from expmatrix.config.strict import Strict


class ModelConfig(Strict):
    LATER_DEFAULTS = {"init": "scratch"}

    target_params: int = Field(400_000, ge=1000)  # width is solved so the trainable total lands within 2% of this
    layers: int = Field(8, ge=1)
    heads: int = Field(8, ge=1)
    ff_ratio: float = Field(2.0, gt=0)  # FFN width / model width before the budget fine-tunes it
    block: Literal["normformer", "prenorm"] = "normformer"
    position: Literal["sinusoidal", "learned", "rope", "none"] = "sinusoidal"  # none: the objects are a set
    rope_theta: float = Field(10_000.0, gt=0)  # rotary base frequency; read only when position is rope
    pooling: Literal["cls", "mean", "max"] = "cls"
    dropout: float = Field(0.0, ge=0, lt=1)
    init: Literal["scratch", "pretrained"] = "scratch"  # pretrained: from the `pretrain` stage's artifact
