"""Solve the width so that every tokenizer's model has the same parameter budget.

Counts are taken on the meta device: no memory is allocated, so `expmatrix list`
sizes every job at once. The budget counts trainable parameters, embedding tables included.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from expmatrix.config import ModelConfig
from expmatrix.config.layout import N_GLOBALS, N_OBJECTS
from expmatrix.models.hierarchical import HierarchicalTransformer
from expmatrix.models.transformer import Transformer, trainable_params
from expmatrix.tokenizers import Tokenizer

TOLERANCE = 0.02  # the budget a job must land within, as a fraction of the target
DEFAULT_SEQ_LEN = N_OBJECTS + N_GLOBALS  # tokens per event when the caller has no data (learned positions only)


class BudgetError(ValueError):
    """A parameter target that the tokenizer's input layer makes unreachable."""


@dataclass(frozen=True)
class Size:
    d_model: int
    d_ff: int
    params: int


def build_model(
    tokenizer: Tokenizer, cfg: ModelConfig, size: Size | tuple[int, int], n_outputs: int, seq_len: int | None = None
) -> Transformer:
    """The model of a job; reads exactly the `cfg` keys that shape it (the every-key tracker builds it on meta).

    `seq_len`: tokens per event from the tokenizer (`tokens["mask"].shape[1]`); it matters for
    learned positions only, and defaults to the fourtops layout's maximum.
    """
    d_model, d_ff = (size.d_model, size.d_ff) if isinstance(size, Size) else size
    return _assemble(tokenizer.embedding(d_model), cfg, d_model, d_ff, n_outputs, seq_len)


def _assemble(embedding: nn.Module, cfg: ModelConfig, d_model: int, d_ff: int, n_outputs: int, seq_len: int | None):
    if cfg.kind == "hierarchical":  # (no slot positions: seq_len does not shape it)
        return HierarchicalTransformer(embedding, cfg, d_model, d_ff, n_outputs)
    return Transformer(embedding, cfg, d_model, d_ff, n_outputs, seq_len or DEFAULT_SEQ_LEN)


def count_params(tokenizer: Tokenizer, cfg: ModelConfig, d_model: int, d_ff: int, n_outputs: int, seq_len=None) -> int:
    """The tokenizer's input layer plus the rest of the model, which no tokenizer shapes: the rest is counted
    once per shape, so solving the width of every preset builds each body once."""
    with torch.device("meta"):
        embedding = trainable_params(tokenizer.embedding(d_model))
    key = (cfg.model_dump_json(), d_model, d_ff, n_outputs, seq_len)
    if key not in _BODIES:
        with torch.device("meta"):
            _BODIES[key] = trainable_params(_assemble(nn.Identity(), cfg, d_model, d_ff, n_outputs, seq_len))
    return embedding + _BODIES[key]


_BODIES: dict[tuple, int] = {}


def solve_size(tokenizer: Tokenizer, cfg: ModelConfig, n_outputs: int, seq_len: int | None = None) -> Size:
    """Width and FFN width whose total is closest to the target; `BudgetError` when none is within `TOLERANCE`.

    The width is a multiple of the heads (for rope: of twice the heads, at least 4 per head)."""
    key = (tokenizer.signature(), cfg.model_dump_json(), cfg.target_params, cfg.ff_ratio, n_outputs, seq_len)
    if key not in _SOLVED:
        _SOLVED[key] = _solve(tokenizer, cfg, n_outputs, seq_len)
    return _SOLVED[key]


_SOLVED: dict[tuple, Size] = {}


def _solve(tokenizer: Tokenizer, cfg: ModelConfig, n_outputs: int, seq_len: int | None) -> Size:
    unit, target = cfg.heads * (2 if cfg.position == "rope" else 1), cfg.target_params

    def total(d: int, f: int | None = None) -> int:
        f = f if f is not None else max(1, round(cfg.ff_ratio * d))
        return count_params(tokenizer, cfg, d, f, n_outputs, seq_len)

    lo = hi = 2 if cfg.position == "rope" else 1  # widths in units; total() grows with the width
    while total(hi * unit) < target and hi < 4096:
        lo, hi = hi, hi * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if total(mid * unit) < target else (lo, mid)
    d = min((lo * unit, hi * unit), key=lambda w: abs(total(w) - target))
    f0 = max(1, round(cfg.ff_ratio * d))  # the total is linear in the FFN width: fine-tune it
    per_unit = total(d, f0 + 1) - total(d, f0)
    f = min(max(round(f0 + (target - total(d, f0)) / per_unit), max(1, d // 2)), 8 * f0)
    size = Size(d, f, total(d, f))
    if abs(size.params - target) > TOLERANCE * target:
        with torch.device("meta"):
            emb = trainable_params(tokenizer.embedding(d))
        raise BudgetError(
            f"cannot meet model.target_params={target} within {TOLERANCE:.0%}: closest is {size.params} "
            f"at width {d}, FFN {f}, of which the input layer takes {emb}"
        )
    return size
