"""The tuning report: per arm the best validation value, trials by outcome, the space it searched, the
best-so-far curve against trials with a band over the order of trials, the parameter importances and the
slices of the two most important parameters.
Written like every report (report.md|tex|html, tables/, plots/) by `report.build`."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import optuna
import polars as pl
from matplotlib.figure import Figure
from optuna.trial import FrozenTrial, TrialState

from expmatrix.config.tune import Space
from expmatrix.report.build import write_report
from expmatrix.report.document import Report
from expmatrix.report.plots import save
from expmatrix.report.tables import Table, best_row, fmt
from expmatrix.tuning.budget import tally
from expmatrix.tuning.export import studies
from expmatrix.tuning.study import Tuning

ORDERS = 500  # random orders of an arm's trials behind the band of its best-so-far curve
BAND = (10, 90)  # percentiles of that band


def tuned_keys(tuning: Tuning) -> list[str]:
    """Every key some arm tunes: the shared space's first, then each arm's own, in the order they are set."""
    return list(dict.fromkeys(k for arm in tuning.arms for k in arm.space))


def describe_space(s: Space) -> str:
    """`[0.0001, 0.01] log`, `[0, 200] int` or `{fresh, codebook}`."""
    if s.choices is not None:
        return "{" + ", ".join(str(c) for c in s.choices) + "}"
    return f"[{s.low:g}, {s.high:g}]" + (" log" if s.log else "") + (" int" if s.type == "int" else "")


def best_so_far(values: np.ndarray, maximize: bool) -> np.ndarray:
    """Running best of `values` (NaN: a pruned or failed trial, which improves nothing)."""
    sign = 1.0 if maximize else -1.0
    filled = np.where(np.isnan(values), -np.inf, sign * values)
    out = sign * np.maximum.accumulate(filled)
    return np.where(np.isfinite(out), out, np.nan)


def order_band(values: np.ndarray, maximize: bool, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The BAND percentiles of the best-so-far curve over ORDERS random orders of the same trials: how much
    the curve owes to the order the trials happened to run in."""
    rng = np.random.default_rng(seed)
    curves = np.vstack([best_so_far(rng.permutation(values), maximize) for _ in range(ORDERS)])
    with warnings.catch_warnings():  # a step where no order has a finished trial yet
        warnings.simplefilter("ignore", RuntimeWarning)
        low, high = np.nanpercentile(curves, BAND, axis=0)
    return low, high


def finished(study: optuna.Study) -> list[FrozenTrial]:
    """Trials that used budget, in the order they finished (stale ones, given back, left out)."""
    done = [t for t in study.get_trials(deepcopy=False) if t.state.is_finished() and not t.user_attrs.get("stale")]
    return sorted(done, key=lambda t: t.datetime_complete or t.datetime_start)


def value_of(t: FrozenTrial) -> float:
    return t.value if t.state == TrialState.COMPLETE and t.value is not None else float("nan")


def curve_plot(found: dict[str, optuna.Study], tuning: Tuning, out: Path) -> Path:
    fig = Figure(figsize=(6, 4.5))
    ax = fig.add_subplot()
    maximize = tuning.direction == "maximize"
    for name, study in found.items():
        values = np.array([value_of(t) for t in finished(study)])
        if not len(values):
            continue
        x = np.arange(1, len(values) + 1)
        (line,) = ax.plot(x, best_so_far(values, maximize), marker="o", label=name)
        low, high = order_band(values, maximize)
        ax.fill_between(x, low, high, color=line.get_color(), alpha=0.2, lw=0)
    ax.set_xlabel("trials finished")
    ax.set_ylabel(f"best {tuning.metric} so far")
    ax.set_title(f"band: {BAND[0]}-{BAND[1]}% over {ORDERS} orders of the same trials")
    ax.legend()
    return save(fig, out, "best_so_far")


def importances(found: dict[str, optuna.Study]) -> dict[str, dict[str, float]]:
    """arm -> parameter -> importance (optuna's default evaluator); an arm with too few trials has none."""
    out = {}
    for name, study in found.items():
        try:
            out[name] = optuna.importance.get_param_importances(study)
        except (ValueError, RuntimeError):  # fewer than two complete trials, or one point of the space
            out[name] = {}
    return out


def slice_plot(found: dict[str, optuna.Study], params: list[str], tuning: Tuning, out: Path) -> Path:
    fig = Figure(figsize=(5 * len(params), 4))
    for i, param in enumerate(params):
        ax = fig.add_subplot(1, len(params), i + 1)
        for name, study in found.items():
            done = [t for t in finished(study) if t.state == TrialState.COMPLETE and param in t.params]
            ax.scatter([t.params[param] for t in done], [t.value for t in done], label=name, alpha=0.7)
        space = next(a.space[param] for a in tuning.arms if param in a.space)
        if space.log:
            ax.set_xscale("log")
        ax.set_xlabel(param)
        ax.set_ylabel(tuning.metric)
    fig.axes[0].legend()
    return save(fig, out, "slices")


def tables(tuning: Tuning, found: dict[str, optuna.Study], imp: dict[str, dict[str, float]]) -> list[Table]:
    maximize = tuning.direction == "maximize"
    rows, values, best_rows = [], [], []
    for name, study in found.items():
        counts, _ = tally(study, tuning.files.trials)
        complete = [t for t in finished(study) if t.state == TrialState.COMPLETE]
        best = (max if maximize else min)(complete, key=value_of) if complete else None
        rows.append(
            [name, fmt(best.value) if best else "-", str(best.number) if best else "-"]
            + [str(counts[k]) for k in ("complete", "pruned", "failed", "stale", "running")]
        )
        values.append(best.value if best else None)
        best_rows.append([name] + [str(best.params.get(k, "-")) if best else "-" for k in tuned_keys(tuning)])
    pick = best_row(values, maximize)
    bold = {(pick, 1)} if pick is not None else set()
    note = f"budget per arm: {tuning.tune.trials} trials x {tuning.tune.epochs} epochs; stale: given back, not counted"
    params = tuned_keys(tuning)
    spaces = [[a.name, *(describe_space(a.space[k]) if k in a.space else "-" for k in params)] for a in tuning.arms]
    return [
        Table(
            "arms",
            f"Best {tuning.metric} per arm",
            ["arm", "best", "trial", "complete", "pruned", "failed", "stale", "running"],
            rows,
            bold,
            [note],
        ),
        Table(
            "spaces",
            "What each arm was allowed to change",
            ["arm", *params],
            spaces,
            notes=["-: not tuned in this arm (its own setting); every arm had the same budget of trials and epochs"],
        ),
        Table("best_settings", "Best settings per arm", ["arm", *params], best_rows),
        Table(
            "importance",
            "Parameter importance (optuna's evaluator)",
            ["arm", *params],
            [[a, *(fmt(v.get(p), 3) if p in v else "-" for p in params)] for a, v in imp.items()],
        ),
    ]


def trials_frame(found: dict[str, optuna.Study]) -> pl.DataFrame:
    rows = [
        {
            "arm": name,
            "trial": t.number,
            "state": t.state.name,
            "value": value_of(t),
            "job": t.user_attrs.get("job"),
            "stale": bool(t.user_attrs.get("stale")),
            **{f"param.{k}": str(v) for k, v in t.params.items()},
        }
        for name, study in found.items()
        for t in study.get_trials(deepcopy=False)
    ]
    return pl.DataFrame(rows)


def tuning_report(tuning: Tuning, plots: bool = True) -> tuple[Report, list[Path]]:
    """Build and write the report into the tuning directory; (report, files written)."""
    found = studies(tuning)
    imp = importances(found)
    report = Report(f"{tuning.matrix.spec.name}: tuning", [], tables(tuning, found, imp))
    ranked = sorted(tuned_keys(tuning), key=lambda p: -np.mean([v.get(p, 0.0) for v in imp.values()] or [0.0]))
    if plots:
        out = tuning.files.dir / "plots"
        report.plots = [curve_plot(found, tuning, out), slice_plot(found, ranked[:2], tuning, out)]
    frame = trials_frame(found)
    report.frames = {"trials": frame}
    return report, write_report(report, frame, tuning.files.dir)
