"""The `train` section: optimizer, schedule, loss, precision, which weights are evaluated."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from expmatrix.config.strict import Strict


class TrainConfig(Strict):
    LATER_DEFAULTS = {"fixed_shape": False}

    epochs: int = Field(50, ge=1)
    batch_size: int = Field(64, ge=1)  # events per forward pass; an optimizer step sees batch_size * grad_accum
    grad_accum: int = Field(1, ge=1)  # micro-batches whose gradients are summed before one optimizer step
    lr: float = Field(1e-4, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    warmup_steps: int = Field(1000, ge=0)  # linear warmup over optimizer steps, then the schedule
    schedule: Literal["constant", "cosine"] = "constant"
    min_lr_ratio: float = Field(0.0, ge=0, le=1)  # cosine only: the final lr as a fraction of lr
    grad_clip: float | None = Field(1.0, gt=0)
    loss: Literal["cross_entropy", "mse", "huber", "cosine", "vmf"] = "cross_entropy"
    huber_delta: float = Field(1.0, gt=0)  # huber only
    class_weights: Literal["balanced", "none"] = "balanced"  # cross_entropy only
    ema: bool = False  # evaluate an exponential moving average of the weights
    ema_decay: float = Field(0.999, gt=0, lt=1)  # ema only
    amp: Literal["bf16", "off"] = "bf16"  # bf16 autocast on CUDA; CPU always runs fp32
    # torch.compile the model's forward; reduce-overhead: also CUDA graphs (needs fixed_shape: one shape to replay)
    compile: bool | Literal["reduce-overhead"] = False
    # constant batch shapes, for CUDA graphs: every batch full (the last one padded with events whose outputs weigh
    # nothing in the loss, or dropped) and every token slot kept; false: real tokens packed on CPU, last batch short
    fixed_shape: Literal[False, "pad", "drop"] = False
    evaluate: Literal["last", "best"] = "last"  # which weights are tested: after the last epoch or at the best val loss
    early_stopping: Literal[False] = False  # the thesis trains a fixed number of epochs

    @model_validator(mode="after")
    def _graphs_need_one_shape(self) -> TrainConfig:
        if self.compile == "reduce-overhead" and not self.fixed_shape:
            raise ValueError(
                "compile: reduce-overhead (CUDA graphs) replays one shape: set train.fixed_shape pad or drop"
            )
        return self


REGRESSION_LOSSES = ("cosine", "vmf", "mse", "huber")
