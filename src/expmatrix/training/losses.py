"""Training losses and what they make of the model's outputs.

Every loss returns (sum of per-event losses, sum of event weights) for a batch, so that
gradient accumulation divides by the weight of the whole optimizer step and matches one
big batch. Classification: cross-entropy (binary or multi-class, optional class-balanced
weights). Regression on vector targets: MSE, Huber, cosine, and von Mises-Fisher for unit
vectors, where the output's direction is the mean direction and its norm the concentration.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from expmatrix.config import TrainConfig


class Loss:
    """Base: per-event weights 1, predictions are the raw outputs."""

    classification = False

    def prepare(self, targets: torch.Tensor) -> None:
        """Learn what the loss needs from the training targets (class weights)."""

    def weight(self, targets: torch.Tensor) -> torch.Tensor:
        """Sum of the per-event weights of `targets`."""
        return torch.tensor(float(len(targets)), device=targets.device)

    def per_event(self, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, out: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.per_event(out.float(), target).sum(), self.weight(target)

    def predict(self, out: torch.Tensor) -> torch.Tensor:
        return out.float()


class CrossEntropy(Loss):
    classification = True

    def __init__(self, balanced: bool):
        self.balanced = balanced
        self.class_weight: torch.Tensor | None = None

    def prepare(self, targets: torch.Tensor) -> None:
        """'balanced': N / (n_classes * count_c), so each class weighs the same in the loss."""
        if not self.balanced:
            return
        counts = torch.bincount(targets, minlength=int(targets.max()) + 1).double()
        if (counts == 0).any():
            raise ValueError(f"the training split lacks a class: counts per class {counts.tolist()}")
        self.class_weight = (counts.sum() / (len(counts) * counts)).float()

    def _w(self, targets: torch.Tensor) -> torch.Tensor:
        if self.class_weight is None:
            return torch.ones(len(targets), device=targets.device)
        return self.class_weight[targets]

    def weight(self, targets: torch.Tensor) -> torch.Tensor:
        return self._w(targets).sum()

    def per_event(self, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(out, target, reduction="none") * self._w(target)

    def predict(self, out: torch.Tensor) -> torch.Tensor:
        return torch.softmax(out.float(), -1)


class MSE(Loss):
    def per_event(self, out, target):
        return (out - target).pow(2).mean(-1)


class Huber(Loss):
    def __init__(self, delta: float):
        self.delta = delta

    def per_event(self, out, target):
        return F.huber_loss(out, target, reduction="none", delta=self.delta).mean(-1)


class Cosine(Loss):
    """1 - cos(angle between output and target); the prediction is the unit output."""

    def per_event(self, out, target):
        return 1 - F.cosine_similarity(out, target, dim=-1)

    def predict(self, out):
        return F.normalize(out.float(), dim=-1)


def log_vmf_normalizer(kappa: torch.Tensor, p: int) -> torch.Tensor:
    """log C_p(kappa) of the von Mises-Fisher density C_p(kappa) exp(kappa mu.x) on the unit sphere S^(p-1)."""
    if p == 3:  # C_3 = kappa / (4 pi sinh kappa); log sinh k = k + log(1 - e^-2k) - log 2
        return torch.log(kappa) - math.log(2 * math.pi) - kappa - torch.log1p(-torch.exp(-2 * kappa))
    if p == 2:  # C_2 = 1 / (2 pi I0(kappa)); I0(k) = i0e(k) e^k
        return -math.log(2 * math.pi) - torch.log(torch.special.i0e(kappa)) - kappa
    raise ValueError(f"the vMF loss is implemented for 2- and 3-dimensional directions, got {p}")


class VonMisesFisher(Cosine):
    """Negative log-likelihood of a unit target under vMF(mu = out/|out|, kappa = |out|).

    NOTE: the concentration is the output's norm (no extra unit), clamped below at 1e-4."""

    @staticmethod
    def kappa(out: torch.Tensor) -> torch.Tensor:
        """(N, p) outputs -> (N,) concentrations."""
        return out.float().norm(dim=-1).clamp_min(1e-4)

    def per_event(self, out, target):
        kappa = self.kappa(out)
        return -log_vmf_normalizer(kappa, out.shape[-1]) - (out * target).sum(-1)


def make_loss(cfg: TrainConfig) -> Loss:
    """The loss `cfg.loss` names; reads its own settings only (class weights, Huber delta)."""
    if cfg.loss == "cross_entropy":
        return CrossEntropy(balanced=cfg.class_weights == "balanced")
    if cfg.loss == "huber":
        return Huber(cfg.huber_delta)
    return {"mse": MSE, "cosine": Cosine, "vmf": VonMisesFisher}[cfg.loss]()


def angular_error(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(N, 3), (N, 3) -> (N,) angle in radians between predicted and true directions (any norms).

    atan2(|a x b|, a . b) keeps full precision at small angles, where arccos(cos) loses half the digits.
    A zero prediction has no direction: its angle is pi/2 (what a random guess gives on average)."""
    a, b = pred.double(), target.double()
    angle = torch.atan2(torch.linalg.cross(a, b).norm(dim=-1), (a * b).sum(-1))
    return torch.where((a.norm(dim=-1) > 0) & (b.norm(dim=-1) > 0), angle, math.pi / 2)
