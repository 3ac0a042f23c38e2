"""The report settings in force: the experiment's `report:` section, a report spec file, then flags.

Each layer overrides the keys it sets; the result is validated once, and errors name the layer.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from expmatrix.config import SOURCE_TASKS, ReportConfig, SpecError, describe_errors, load_yaml
from expmatrix.matrix import Matrix

# What a report compares when no layer names its metrics: the ReportConfig defaults (classification), or:
TASK_DEFAULTS: dict[str, dict[str, Any]] = {
    "direction": {
        "metric": "test.angular_error_median",
        "metrics": [
            "test.angular_error_median",
            "test.angular_error_mean",
            "test.angular_error_68",
            "test.zenith_error_median",
            "test.azimuth_error_median",
        ],
        "difference": 0.005,  # rad (0.3 degrees): the seeds table's smallest difference worth resolving
    },
}


def task_of(matrix: Matrix) -> str:
    """The task of the matrix's jobs (the data source decides it); one report compares one task."""
    tasks = {SOURCE_TASKS[job.config.data.source] for job in matrix.jobs}
    if len(tasks) > 1:
        raise SpecError(f"{matrix.path}: the jobs mix tasks {sorted(tasks)}: one report compares one task")
    return tasks.pop() if tasks else "classification"


class ReportSettings(ReportConfig):
    """A resolved `ReportConfig` with the questions the report asks of it."""

    task: str = "classification"  # from the experiment's data source, not a setting: picks defaults and plots

    @classmethod
    def resolve(
        cls,
        base: ReportConfig,
        spec_file: str | Path | None = None,
        flags: dict[str, Any] | None = None,
        task: str = "classification",
    ):
        """`base` (the experiment's section) <- `spec_file` (reports/*.yaml) <- `flags` (None: not given);
        the metrics no layer sets come from the task's defaults."""
        layers = [("report", base.model_dump(exclude_unset=True))]
        if spec_file is not None:
            raw = load_yaml(Path(spec_file))
            if not isinstance(raw, dict):
                raise SpecError(f"{spec_file}: expected a mapping of report settings, got {type(raw).__name__}")
            layers.append((str(spec_file), raw))
        layers.append(("command line", {k: v for k, v in (flags or {}).items() if v is not None}))
        merged: dict[str, Any] = dict(TASK_DEFAULTS.get(task, {}), task=task)
        for where, values in layers:
            try:
                ReportConfig.model_validate(values)
            except ValidationError as e:
                key, msg = describe_errors(e, ReportConfig)[0]
                raise SpecError(f"{where}: {key}: {msg}") from None
            merged.update(values)
        s = cls.model_validate(merged)
        s.metrics = [s.metric] + [m for m in s.metrics if m != s.metric]  # the primary metric comes first
        return s

    def directions(self) -> dict[str, bool]:
        """Explicit higher-is-better choices; metrics not named follow `metrics.higher_is_better`."""
        if isinstance(self.higher_is_better, bool):
            return {self.metric: self.higher_is_better}
        return dict(self.higher_is_better or {})

    def check_levels(self, levels: dict[str, list[str]]) -> None:
        """Every baseline and interaction names a factor (and level) of the matrix."""
        for factor, level in self.baseline.items():
            if factor not in levels:
                raise SpecError(f"report.baseline.{factor}: no such factor; factors: {', '.join(levels)}")
            if level not in levels[factor]:
                raise SpecError(f"report.baseline.{factor}: no level {level!r}; levels: {', '.join(levels[factor])}")
        for pair in self.interactions or []:
            for f in pair:
                if f not in levels:
                    raise SpecError(
                        f"report.interactions: no factor {f!r} in {list(pair)}; factors: {', '.join(levels)}"
                    )

    def interaction_pairs(self, factors: list[str]) -> list[tuple[str, str]]:
        """The given pairs; else each baseline factor by every other factor; else every pair."""
        if self.interactions is not None:
            return [tuple(p) for p in self.interactions if set(p) <= set(factors)]
        firsts = [f for f in self.baseline if f in factors]
        if firsts:
            return [(a, b) for a in firsts for b in factors if b != a]
        return list(itertools.combinations(factors, 2))


def parse_flags(
    metric: str | None, metrics: str | None, baseline: tuple[str, ...], interaction: tuple[str, ...], top_k: int | None
) -> dict[str, Any]:
    """Command-line report flags -> settings keys (None: flag not given)."""
    if bad := [b for b in baseline if "=" not in b] + [i for i in interaction if ":" not in i]:
        raise SpecError(f"{bad[0]!r}: --baseline takes FACTOR=LEVEL, --interaction takes A:B")
    return {
        "metric": metric,
        "metrics": metrics.split(",") if metrics else None,
        "baseline": dict(b.split("=", 1) for b in baseline) or None,
        "interactions": [tuple(i.split(":", 1)) for i in interaction] or None,
        "top_k": top_k,
    }
