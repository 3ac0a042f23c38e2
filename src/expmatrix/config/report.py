"""The `report` section: how `expmatrix report` reads the results (reports/*.yaml and flags override it)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from expmatrix.config.strict import Strict


class ReportConfig(Strict):
    """How `expmatrix report` reads the results; `reports/*.yaml` and command-line flags override it."""

    metric: str = "test.auroc"  # ranks the cells; effects, interactions and heatmaps compare it
    metrics: list[str] = [  # columns of the cell table (the primary metric is always among them)
        "test.auroc",
        "test.accuracy",
        "test.sig_eff_at_bkg_rej_10",
        "test.bkg_rej_at_sig_eff_50",
        "test.brier",
    ]
    higher_is_better: bool | dict[str, bool] | None = None  # None: by name (brier, ece, loss: lower); bool: primary
    baseline: dict[str, str] = {}  # factor -> level the others are compared to (default: the factor's first level)
    interactions: list[tuple[str, str]] | None = None  # factor pairs; None: each baseline factor x each other one
    top_k: int = Field(5, ge=1)  # cells in the ranking, the ROC and the learning-curve plots
    confidence: float = Field(0.95, gt=0, lt=1)  # of every interval
    interval: Literal["t", "percentile", "bca"] = "t"  # of paired differences; bootstrap ones need many pairs
    min_pairs: int | None = Field(None, ge=2)  # fewer pairs: no interval; None: the interval's own (t 2, else 20)
    bootstrap: int = Field(10_000, ge=100)  # resamples of the matched pairs (percentile, bca)
    seed: int = 0  # of the bootstrap: the same results give the same intervals
    correction: Literal["none", "holm", "bh"] = "holm"  # of the p-values of one report's comparisons
    difference: float = Field(0.002, gt=0)  # the smallest effect worth resolving: seeds needed for it
    power: float = Field(0.8, gt=0, lt=1)  # to resolve `difference` at 1 - confidence
    plateau_epochs: int = Field(3, ge=2)  # still improving: the validation trend over the last epochs

    @field_validator("baseline", mode="before")
    @classmethod
    def _level_names(cls, v: Any) -> Any:
        """Level names are strings (a factor `vect: [4, 5]` has levels "4" and "5")."""
        return {k: str(x) for k, x in v.items()} if isinstance(v, dict) else v
