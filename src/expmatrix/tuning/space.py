"""The search space on a trial: what optuna suggests, and the arm's own settings as the first trial."""

from __future__ import annotations

from typing import Any

import optuna

from expmatrix.config import flatten
from expmatrix.config.tune import Space


def suggest(trial: optuna.Trial, space: dict[str, Space]) -> dict[str, Any]:
    """One value per key of `space` (an enqueued trial gets its fixed values back)."""
    out: dict[str, Any] = {}
    for key, s in space.items():
        if s.choices is not None:
            out[key] = trial.suggest_categorical(key, s.choices)
        elif s.type == "int":
            out[key] = trial.suggest_int(key, int(s.low), int(s.high), log=s.log)
        else:
            out[key] = trial.suggest_float(key, s.low, s.high, log=s.log)
    return out


def defaults(config: dict[str, Any], space: dict[str, Space]) -> dict[str, Any]:
    """The arm's own values of the space's keys that lie in the space (the first trial of its study)."""
    flat = flatten(config)
    return {k: flat[k] for k, s in space.items() if k in flat and s.contains(flat[k])}


def corners(space: dict[str, Space]) -> list[dict[str, Any]]:
    """Points that between them hold every bound and every choice: each is built as a job before tuning."""
    n = max(2, *(len(s.choices) for s in space.values() if s.choices is not None), 2)

    def value(s: Space, i: int) -> Any:
        if s.choices is not None:
            return s.choices[min(i, len(s.choices) - 1)]
        bound = s.low if i == 0 else s.high
        return int(bound) if s.type == "int" else bound

    return [{k: value(s, i) for k, s in space.items()} for i in range(n)]
