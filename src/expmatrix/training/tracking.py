"""Experiment tracking: the local metrics.jsonl always, and optionally a wandb run per job.

A wandb run's id is the job id (a resumed job continues its run), its group the cell id,
its config the job's resolved config, and its tags the factor levels from the job record.
wandb is imported only when asked for, so `tracking: none` works without it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from expmatrix.runfiles import write_jsonl


class Tracker:
    """Writes the epoch history to metrics.jsonl; subclasses also send it elsewhere."""

    def __init__(self, metrics_file: Path):
        self.metrics_file = metrics_file

    def log_history(self, history: list[dict[str, Any]]) -> None:
        self.write_history(history)
        self.log(history[-1])

    def write_history(self, history: list[dict[str, Any]]) -> None:
        """The whole history each time, not an append: after a resume the file matches the checkpoint's."""
        write_jsonl(self.metrics_file, history)

    def log(self, row: dict[str, Any]) -> None:
        pass

    def finish(self, summary: dict[str, Any], failed: bool = False) -> None:
        pass


class WandbTracker(Tracker):
    def __init__(self, metrics_file: Path, record: dict[str, Any], experiment: str, settings: dict[str, Any]):
        super().__init__(metrics_file)
        import wandb

        levels = record.get("levels", {})
        self.run = wandb.init(
            project=settings.get("project") or experiment,
            entity=settings.get("entity"),
            mode=settings.get("mode", "offline"),
            id=record["id"],
            resume="allow",
            group=record["cell"],
            name=f"{record['id']} " + " ".join(f"{k}={v}" for k, v in levels.items()),
            config={**record["config"], "levels": levels, "cell": record["cell"]},
            tags=[f"{k}={v}" for k, v in levels.items()],
            dir=str(metrics_file.parent),
            reinit="finish_previous",
            settings=wandb.Settings(silent=True, console="off"),
        )

    def log(self, row: dict[str, Any]) -> None:
        self.run.log({k: v for k, v in row.items() if isinstance(v, int | float)}, step=row.get("epoch"))

    def finish(self, summary: dict[str, Any], failed: bool = False) -> None:
        for key, value in summary.items():
            self.run.summary[key] = value
        self.run.finish(exit_code=1 if failed else 0)


def open_tracker(kind: str, metrics_file: Path, record: dict[str, Any], experiment: str, settings: dict) -> Tracker:
    if kind == "wandb":
        return WandbTracker(metrics_file, record, experiment, settings)
    return Tracker(metrics_file)
