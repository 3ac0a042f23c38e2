"""The `run` section: how jobs are run and tracked (none of it is in a job id)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from expmatrix.config.strict import Strict

HEARTBEAT_SECONDS = 30.0  # how often a running job touches its claim
STALE_AFTER_SECONDS = 600.0  # a claim not touched for this long is abandoned: another worker may take it


class WandbConfig(Strict):
    project: str | None = None  # default: the experiment name
    entity: str | None = None
    mode: Literal["offline", "online"] = "offline"  # compute nodes have no internet: `wandb sync` later


class RunConfig(Strict):
    """How jobs are run and tracked; none of it changes what a job trains, so none of it is in the job id."""

    tracking: Literal["none", "wandb"] = "none"  # metrics.jsonl is always written
    wandb: WandbConfig = WandbConfig()
    max_attempts: int = Field(3, ge=1)  # a job that failed this often is not retried by --retry-failed
    heartbeat_seconds: float = Field(HEARTBEAT_SECONDS, gt=0)
    # a claim without a heartbeat for this long is taken over
    stale_after_seconds: float = Field(STALE_AFTER_SECONDS, gt=0)

    @model_validator(mode="after")
    def _heartbeat_fits(self) -> RunConfig:
        if self.stale_after_seconds <= 2 * self.heartbeat_seconds:
            raise ValueError("stale_after_seconds must exceed twice heartbeat_seconds, or live jobs look abandoned")
        return self
