"""Solve the width so that every tokenizer's model has the same parameter budget.

Counts are taken on the meta device: no memory is allocated, so `expmatrix list`
sizes every job at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from expmatrix.models.transformer import TransformerClassifier
from expmatrix.spec import ModelConfig
from expmatrix.tokenizers import Tokenizer

TOLERANCE = 0.05  # the budget a job must land within, as a fraction of the target


class BudgetError(ValueError):
    """A parameter target that the tokenizer's input layer makes unreachable."""


@dataclass(frozen=True)
class Size:
    d_model: int
    d_ff: int
    params: int


def build_model(tokenizer: Tokenizer, cfg: ModelConfig, size: Size | tuple[int, int], n_classes: int):
    d_model, d_ff = (size.d_model, size.d_ff) if isinstance(size, Size) else size
    return TransformerClassifier(
        tokenizer.embedding(d_model),
        d_model,
        d_ff,
        cfg.layers,
        cfg.heads,
        cfg.pooling,
        cfg.position,
        n_classes,
        cfg.dropout,
    )


def count_params(tokenizer: Tokenizer, cfg: ModelConfig, d_model: int, d_ff: int, n_classes: int) -> int:
    with torch.device("meta"):
        model = build_model(tokenizer, cfg, (d_model, d_ff), n_classes)
    return sum(p.numel() for p in model.parameters())


def solve_size(tokenizer: Tokenizer, cfg: ModelConfig, n_classes: int) -> Size:
    """Width (a multiple of the heads) and FFN width whose total is closest to the target."""
    key = (tokenizer.signature(), cfg.model_dump_json(), n_classes)
    if key not in _SOLVED:
        _SOLVED[key] = _solve(tokenizer, cfg, n_classes)
    return _SOLVED[key]


_SOLVED: dict[tuple, Size] = {}


def _solve(tokenizer: Tokenizer, cfg: ModelConfig, n_classes: int) -> Size:
    h, target = cfg.heads, cfg.target_params

    def total(d: int, f: int | None = None) -> int:
        return count_params(tokenizer, cfg, d, f if f is not None else max(1, round(cfg.ff_ratio * d)), n_classes)

    lo, hi = 1, 1  # widths in units of heads; total() grows with the width
    while total(hi * h) < target and hi < 4096:
        lo, hi = hi, hi * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if total(mid * h) < target else (lo, mid)
    d = min((lo * h, hi * h), key=lambda w: abs(total(w) - target))
    f0 = max(1, round(cfg.ff_ratio * d))  # the total is linear in the FFN width: fine-tune it
    per_unit = total(d, f0 + 1) - total(d, f0)
    f = min(max(round(f0 + (target - total(d, f0)) / per_unit), max(1, d // 2)), 8 * f0)
    size = Size(d, f, total(d, f))
    if abs(size.params - target) > TOLERANCE * target:
        with torch.device("meta"):
            emb = sum(p.numel() for p in tokenizer.embedding(d).parameters())
        raise BudgetError(
            f"cannot meet model.target_params={target} within {TOLERANCE:.0%}: closest is {size.params} "
            f"at width {d}, FFN {f}, of which the input layer takes {emb}"
        )
    return size
