"""The experiment file: its top level, validated before the matrix expands it into jobs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field

from expmatrix.config.loading import load_mapping, validate
from expmatrix.config.report import ReportConfig
from expmatrix.config.run import RunConfig
from expmatrix.config.strict import Strict
from expmatrix.config.tune import TuneConfig


class ExperimentSpec(Strict):
    """The experiment YAML: fixed settings, factors and how to read the results."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    data: dict[str, Any] = {}
    base: dict[str, Any] = {}  # fixed for every job: model, train, ...
    factors: dict[str, list[Any] | dict[str, Any]] = {}  # see matrix._parse_factor for the forms
    seeds: list[int] = [0]
    exclude: list[dict[str, Any]] = []  # partial assignments {factor: level} that are skipped
    profiles: dict[str, dict[str, Any]] = {}
    report: ReportConfig = ReportConfig()
    run: RunConfig = RunConfig()
    presets: str = "../tokenizers"  # folder of tokenizer presets, relative to the experiment file
    hpc: dict[str, Any] = {}  # `expmatrix submit` settings: templates, cluster, ... (validated by executors.cluster)
    tune: TuneConfig | None = None  # `expmatrix tune`: equal-budget tuning of every arm (not part of any job id)


def load_experiment(path: str | Path) -> ExperimentSpec:
    """Read and validate the experiment file's top level (jobs are validated by the matrix)."""
    path = Path(path)
    return validate(ExperimentSpec, load_mapping(path), str(path))
