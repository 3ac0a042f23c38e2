"""The search space of an arm (`tune.space` and the keys `tune.arm_space` adds for it), what optuna suggests
on a trial, and the arm's own settings as its first trial."""

from __future__ import annotations

from typing import Any

import optuna

from expmatrix.config import SpecError
from expmatrix.config.tune import Space, TuneConfig

MISSING = object()


def names_arm(label: str, levels: dict[str, str]) -> bool:
    """Whether an `arm_space` label names the arm with `levels`: a level (`vqvae512`), `factor=level`, or
    several of them joined by commas (`tokenizer=vqvae512,met=with`)."""
    for part in label.split(","):
        factor, eq, level = part.strip().rpartition("=")
        if not (levels.get(factor) == level if eq else level in levels.values()):
            return False
    return True


def arm_space(tune: TuneConfig, levels: dict[str, str]) -> dict[str, tuple[Space, str]]:
    """The keys an arm tunes -> (their space, where the tune section sets them): every key of `tune.space`,
    then those of each `tune.arm_space` entry that names the arm."""
    out = {k: (s, f"tune.space.{k}") for k, s in tune.space.items()}
    for label, keys in tune.arm_space.items():
        if not names_arm(label, levels):
            continue
        for key, space in keys.items():
            if key in out:
                raise SpecError(f"tune.arm_space.{label}.{key}: {out[key][1]} sets it for the same arm already")
            out[key] = (space, f"tune.arm_space.{label}.{key}")
    return out


def value_at(config: Any, key: str) -> Any:
    """The value of a dotted key in a config (MISSING if it has none), read from the objects, so that a field
    at a default its section leaves out of the resolved form (`LATER_DEFAULTS`) is found too."""
    for part in key.split("."):
        config = config.get(part, MISSING) if isinstance(config, dict) else getattr(config, part, MISSING)
        if config is MISSING:
            break
    return config


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


def defaults(config: Any, space: dict[str, Space]) -> dict[str, Any]:
    """The arm's own values of the space's keys that lie in the space (the first trial of its study)."""
    values = {k: value_at(config, k) for k in space}
    return {k: v for k, v in values.items() if v is not MISSING and space[k].contains(v)}


def corners(space: dict[str, Space]) -> list[dict[str, Any]]:
    """Points that between them hold every bound and every choice: each is built as a job before tuning."""
    n = max(2, *(len(s.choices) for s in space.values() if s.choices is not None), 2)

    def value(s: Space, i: int) -> Any:
        if s.choices is not None:
            return s.choices[min(i, len(s.choices) - 1)]
        bound = s.low if i == 0 else s.high
        return int(bound) if s.type == "int" else bound

    return [{k: value(s, i) for k, s in space.items()} for i in range(n)]
