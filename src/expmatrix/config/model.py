"""The `model` section: one transformer for every tokenizer, sized to a parameter budget."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_serializer

from expmatrix.config.strict import Strict


class ModelConfig(Strict):
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

    @model_serializer(mode="wrap")
    def _without_default_init(self, handler) -> dict[str, Any]:
        """Added later: at `scratch` it stays out of the resolved config and job ids (existing runs keep theirs)."""
        out = handler(self)
        if out.get("init") == "scratch":
            del out["init"]
        return out
