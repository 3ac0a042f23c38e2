"""The `model` section: one transformer for every tokenizer, sized to a parameter budget."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from expmatrix.config.strict import Strict


class ModelConfig(Strict):
    LATER_DEFAULTS = {"init": "scratch", "kind": "flat", "dom_layers": None}

    # flat: one encoder over the event's tokens; hierarchical (pulse sources): T1 over each sensor's pulses,
    # pooled to one embedding per sensor (DOM), then T2 over the event's DOMs with their x, y, z
    kind: Literal["flat", "hierarchical"] = "flat"
    dom_layers: int | None = Field(None, ge=1)  # hierarchical: T1's blocks (default layers // 2); T2 gets the rest

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

    @model_validator(mode="after")
    def _hierarchical(self) -> ModelConfig:
        if self.kind == "flat":
            if self.dom_layers is not None:
                raise ValueError("model.dom_layers has no effect in the flat model: set model.kind hierarchical")
            return self
        if self.dom_layers is not None and self.dom_layers >= self.layers:
            raise ValueError(f"model.dom_layers {self.dom_layers} leaves no layer of model.layers {self.layers} to T2")
        if self.layers < 2:
            raise ValueError("model.kind hierarchical needs model.layers >= 2 (one for T1, one for T2)")
        if self.position == "learned":
            raise ValueError("model.kind hierarchical: position learned would need a table row per possible DOM "
                             "slot (5160); use sinusoidal, rope (ranks in time, in a DOM and among DOMs) or none")
        if self.init == "pretrained":
            raise ValueError("model.kind hierarchical has no masked-modelling pretraining: use model.init scratch")
        return self

    @property
    def t1_layers(self) -> int:
        """Blocks of the per-DOM encoder (hierarchical)."""
        return self.dom_layers if self.dom_layers is not None else max(1, self.layers // 2)
