"""The whole factorial at once: a linear model of the metric on every factor, with seed as a block.

metric ~ seed + each factor + the two-way interactions the report shows, sum-to-zero coded and
fitted by least squares (numpy) on every finished job. The ANOVA uses Type II sums of squares
(each term against the model of all terms that do not contain it), so a matrix with missing cells
or seeds is analysed as it is; on balanced data Types I, II and III agree. Estimated marginal
means (EMMs) are the model's prediction averaged over a balanced grid of the other factors and the
seeds, with Student-t intervals on the residual degrees of freedom; on balanced data an EMM
difference equals the paired table's mean difference.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import polars as pl
from scipy import stats

Term = tuple[str, ...]
TOL = 1e-10  # relative: a sum of squares below TOL x the total is zero


@dataclass
class LinearModel:
    terms: list[Term]
    levels: dict[str, list[str]]  # per factor (seed included when it is a block)
    x: np.ndarray  # design [n, p]; column 0 the intercept
    y: np.ndarray
    columns: dict[Term, slice]
    pinv: np.ndarray = field(init=False)  # of `x`: the least-squares fit and every contrast's variance
    beta: np.ndarray = field(init=False)
    rss: float = field(init=False)
    df_resid: int = field(init=False)

    def __post_init__(self):
        self.pinv = np.linalg.pinv(self.x)
        self.beta = self.pinv @ self.y  # minimum-norm least squares, as lstsq
        self.rss = float(np.sum((self.y - self.x @ self.beta) ** 2))
        self.df_resid = len(self.y) - _rank(self.x)

    @property
    def sigma2(self) -> float | None:
        return self.rss / self.df_resid if self.df_resid > 0 else None


def coding(values: np.ndarray, levels: list[str]) -> np.ndarray:
    """Sum-to-zero (deviation) coding: k - 1 columns; the last level is -1 in every column."""
    out = np.zeros((len(values), len(levels) - 1))
    for j, lv in enumerate(levels[:-1]):
        out[values == lv, j] = 1.0
    out[values == levels[-1]] = -1.0
    return out


def _term_columns(codes: dict[str, np.ndarray], term: Term) -> np.ndarray:
    cols = codes[term[0]]
    for f in term[1:]:
        cols = (cols[:, :, None] * codes[f][:, None, :]).reshape(len(cols), -1)
    return cols


def fit(frame: pl.DataFrame, metric: str, terms: list[Term], levels: dict[str, list[str]]) -> LinearModel:
    """Least-squares fit of `metric` on `terms` (tuples of factor names) over the rows of `frame`."""
    codes = {f: coding(frame[f].cast(pl.String).to_numpy(), lv) for f, lv in levels.items()}
    blocks, columns, start = [np.ones((frame.height, 1))], {}, 1
    for t in terms:
        cols = _term_columns(codes, t)
        blocks.append(cols)
        columns[t] = slice(start, start + cols.shape[1])
        start += cols.shape[1]
    return LinearModel(terms, levels, np.hstack(blocks), frame[metric].to_numpy().astype(np.float64), columns)


def _rank(x: np.ndarray) -> int:
    return int(np.linalg.matrix_rank(x)) if x.size else 0


def anova_table(model: LinearModel) -> pl.DataFrame:
    """Per term: df, Type II sum of squares, mean square, F, p, partial eta squared; then the residual.
    F and p are None when the residual has no degrees of freedom or no spread."""
    total = float(np.sum((model.y - model.y.mean()) ** 2))
    zero = max(total, np.finfo(float).tiny) * TOL
    sigma2 = model.sigma2 if model.rss > zero else None
    rows = []
    for t in model.terms:
        reduced = [u for u in model.terms if not set(t) <= set(u)]
        cols = np.r_[0, *(np.arange(model.columns[u].start, model.columns[u].stop) for u in reduced)].astype(int)
        with_t = np.r_[cols, np.arange(model.columns[t].start, model.columns[t].stop)]
        ss = max(0.0, _rss(model.x[:, cols], model.y) - _rss(model.x[:, with_t], model.y))
        df = _rank(model.x[:, with_t]) - _rank(model.x[:, cols])
        f = (ss / df) / sigma2 if sigma2 and df else None
        rows.append(
            {
                "term": " × ".join(t),
                "df": df,
                "sum_sq": ss,
                "mean_sq": ss / df if df else None,
                "F": f,
                "p": float(stats.f.sf(f, df, model.df_resid)) if f is not None else None,
                "partial_eta2": ss / (ss + model.rss) if ss + model.rss > zero else None,
            }
        )
    rows.append(
        {"term": "residual", "df": model.df_resid, "sum_sq": model.rss, "mean_sq": model.sigma2}
        | dict.fromkeys(("F", "p", "partial_eta2"))
    )
    floats = ("sum_sq", "mean_sq", "F", "p", "partial_eta2")
    return pl.DataFrame(rows, schema_overrides=dict.fromkeys(floats, pl.Float64))


def _rss(x: np.ndarray, y: np.ndarray) -> float:
    beta = np.linalg.lstsq(x, y, rcond=None)[0]
    return float(np.sum((y - x @ beta) ** 2))


def _level_vector(model: LinearModel, factor: str, level: str) -> np.ndarray:
    """Contrast of the EMM of `factor=level`: the intercept and the level's code (the other terms
    average to zero over a balanced grid under sum-to-zero coding)."""
    c = np.zeros(model.x.shape[1])
    c[0] = 1.0
    c[model.columns[(factor,)]] = coding(np.array([level]), model.levels[factor])[0]
    return c


def _estimate(model: LinearModel, c: np.ndarray, confidence: float) -> tuple[float | None, ...]:
    """c'beta with its t interval and two-sided p (of c'beta = 0); None where not estimable."""
    pinv = model.pinv
    if np.abs(c - c @ pinv @ model.x).max() > 1e-8:  # not in the row space: missing cells
        return None, None, None, None
    value = float(c @ model.beta)
    if model.sigma2 is None:
        return value, None, None, None
    se = float(np.sqrt(model.sigma2 * (c @ pinv) @ (c @ pinv)))
    if se == 0:
        return value, value, value, None
    half = stats.t.ppf(0.5 + confidence / 2, model.df_resid) * se
    p = float(2 * stats.t.sf(abs(value) / se, model.df_resid))
    return value, value - half, value + half, p


def marginal_means(model: LinearModel, factor: str, baseline: str, confidence: float) -> pl.DataFrame:
    """Per level of `factor`: EMM with interval, and the EMM difference to `baseline` with interval and p."""
    rows = []
    base = _level_vector(model, factor, baseline) if baseline in model.levels[factor] else None
    for lv in model.levels[factor]:
        c = _level_vector(model, factor, lv)
        emm, low, high = _estimate(model, c, confidence)[:3]
        delta = (None,) * 4 if lv == baseline or base is None else _estimate(model, c - base, confidence)
        rows.append(
            {"factor": factor, "level": lv, "baseline": baseline, "emm": emm, "emm_low": low, "emm_high": high}
            | dict(zip(("delta", "delta_low", "delta_high", "p"), delta, strict=True))
        )
    floats = ("emm", "emm_low", "emm_high", "delta", "delta_low", "delta_high", "p")
    return pl.DataFrame(rows, schema_overrides=dict.fromkeys(floats, pl.Float64))


def factorial(
    done: pl.DataFrame,
    metric: str,
    factors: list[str],
    pairs: list[tuple[str, str]],
    baselines: dict[str, str],
    confidence: float,
) -> tuple[pl.DataFrame | None, pl.DataFrame | None, list[str]]:
    """(ANOVA frame, EMM frame, what could not be computed and why) of the finished jobs in `done`."""
    rows = done.filter(pl.col(metric).is_not_null())
    levels = {f: rows[f].cast(pl.String).unique(maintain_order=True).to_list() for f in factors}
    levels = {f: lv for f, lv in levels.items() if len(lv) > 1}
    seeds = rows["seed"].cast(pl.String).unique(maintain_order=True).to_list()
    if not levels:
        return None, None, ["no factor with two levels in the finished jobs: no factorial analysis"]
    if rows[metric].n_unique() == 1:
        return None, None, [f"{metric} is the same in every finished job: nothing to analyse"]
    rows = rows.with_columns(pl.col(f).cast(pl.String) for f in [*levels, "seed"])
    block = [("seed",)] if len(seeds) > 1 else []
    main: list[Term] = [(f,) for f in levels]
    inter: list[Term] = []
    for p in pairs:  # A × B once, however often the report shows it (A by B, and B by A)
        if set(p) <= set(levels) and set(p) not in [set(t) for t in inter]:
            inter.append(tuple(p))
    all_levels = {**levels, **({"seed": seeds} if block else {})}
    notes = [] if block else ["one seed: no seed block in the model"]
    model = fit(rows, metric, block + main + inter, all_levels)
    if model.df_resid <= 0 and inter:
        notes.append("the interactions leave no residual degrees of freedom: main effects only")
        model = fit(rows, metric, block + main, all_levels)
    if model.df_resid <= 0:
        return None, None, [*notes, "no residual degrees of freedom (one job per cell and one seed?): no ANOVA"]
    emm = pl.concat([marginal_means(model, f, str(baselines.get(f, levels[f][0])), confidence) for f in levels])
    if emm["emm"].null_count():
        notes.append("some marginal means are not estimable: cells are missing under an interaction in the model")
    return anova_table(model), emm, notes
