"""What masked modelling predicts per object: class targets (cross-entropy) and regression targets (MSE).

Targets come from the raw events (not the tokens): the sensor id of a pulse, its charge, the type of a
4tops object, its pT; or the code a fitted code tokenizer gives an object (`codes.py`). Their constants
(standardization, quantile bin edges, the number of classes) are fitted on the real objects of the
pretraining events and stored in the artifact.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from expmatrix.config.pretrain import INTEGER_TARGETS, OBJECT_TYPE, TargetSpec
from expmatrix.data import Events


@dataclass(frozen=True)
class Target:
    """One fitted target: its name, kind and constants.

    `classes` is the number of classes (class targets); `center`, `scale` standardize a regression target;
    `edges` bin a continuous feature into classes."""

    name: str
    kind: str
    classes: int = 0
    center: float = 0.0
    scale: float = 1.0
    log: bool = False
    edges: tuple[float, ...] = ()

    @property
    def outputs(self) -> int:
        return self.classes if self.kind == "class" else 1

    def values(self, events: Events) -> np.ndarray:
        """(N, O) the target's value per object slot: an integer class, or the standardized regression value."""
        raw = events.ids if self.name == OBJECT_TYPE else events.cont[:, :, events.feature_names.index(self.name)]
        if self.edges:
            return np.searchsorted(np.asarray(self.edges), raw, side="right")
        if self.kind == "class":
            return raw.astype(np.int64) - (1 if self.name == OBJECT_TYPE else 0)  # types 1..7 -> classes 0..6
        return ((np.log1p(np.maximum(raw, 0)) if self.log else raw) - self.center) / self.scale

    def loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean loss over the masked objects: out (M, outputs), y (M,)."""
        if self.kind == "class":
            return F.cross_entropy(out, y.long())
        return F.mse_loss(out.squeeze(-1), y.float())

    def errors(self, out: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        """Per-target errors at masked objects, and what guessing would give (the learned-anything check)."""
        if self.kind == "class":
            frequent = torch.bincount(y.long(), minlength=self.classes).max() / len(y)
            return {f"{self.name}_accuracy": (out.argmax(-1) == y).double().mean().item(),
                    f"{self.name}_guess_accuracy": frequent.item()}  # fmt: skip
        mae, guess = (out.squeeze(-1) - y).abs().mean(), (y - y.mean()).abs().mean()  # standardized units
        return {f"{self.name}_mae": mae.item(), f"{self.name}_guess_mae": guess.item()}


def fit_target(name: str, spec: TargetSpec, events: Events, source: str) -> Target:
    """The target's constants from the real objects of `events`."""
    real = events.real
    if name in INTEGER_TARGETS[source]:
        raw = events.ids if name == OBJECT_TYPE else events.cont[:, :, events.feature_names.index(name)]
        offset = 1 if name == OBJECT_TYPE else 0
        return Target(name, spec.kind, classes=int(raw[real].max()) + 1 - offset)
    raw = events.cont[:, :, events.feature_names.index(name)][real]
    if spec.kind == "class":  # quantile bins of a continuous feature: a token target
        edges = np.unique(np.quantile(raw, np.linspace(0, 1, spec.bins + 1)[1:-1]))
        return Target(name, "class", classes=len(edges) + 1, edges=tuple(edges.tolist()))
    value = np.log1p(np.maximum(raw, 0)) if spec.log else raw
    return Target(name, "regression", center=float(value.mean()), scale=float(value.std()) or 1.0, log=spec.log)


def target_table(targets: list[Target], events: Events, given: dict[str, np.ndarray] | None = None) -> torch.Tensor:
    """(N, O, K) float: every target's value per object slot (classes as whole numbers); `given`: the values of
    targets that do not come from the raw events (the code target)."""
    given = given or {}
    values = [given[t.name] if t.name in given else t.values(events) for t in targets]
    return torch.from_numpy(np.stack(values, axis=-1).astype(np.float32))
