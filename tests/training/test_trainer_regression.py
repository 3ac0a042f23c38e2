"""Regression heads and losses learn a toy direction task; the vMF normalizer is exact."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.special import ive
from torch import nn

from expmatrix.config import ModelConfig, TrainConfig
from expmatrix.models.transformer import Transformer
from expmatrix.training.losses import VonMisesFisher, angular_error, log_vmf_normalizer
from expmatrix.training.trainer import Trainer

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]


class VectorEmbedding(nn.Module):
    """tokens {"x": (B, T, 3), "mask": (B, T)} -> ((B, T, C), mask)."""

    def __init__(self, d_model: int):
        super().__init__()
        self.proj = nn.Linear(3, d_model)

    def forward(self, tokens):
        return self.proj(tokens["x"]), tokens["mask"]


def direction_task(n: int, seed: int, slots: int = 6):
    """Events of 2..6 random 3-vectors (padded to 6 slots); the target is the unit vector of their sum."""
    g = torch.Generator().manual_seed(seed)
    real = torch.arange(slots) < torch.randint(2, slots + 1, (n, 1), generator=g)
    x = torch.randn(n, slots, 3, generator=g) * real[..., None]
    return {"x": x, "mask": real}, nn.functional.normalize(x.sum(1), dim=-1)


@pytest.mark.parametrize("loss", ["cosine", "vmf", "mse", "huber"])
def test_regression_head_learns_a_direction_to_a_small_angular_error(loss, tmp_path):
    train, val = direction_task(2000, 0), direction_task(500, 1)
    torch.manual_seed(0)
    cfg = ModelConfig(layers=2, heads=4, pooling="mean", position="none")
    model = Transformer(VectorEmbedding(32), cfg, 32, 64, n_outputs=3, seq_len=6)
    tcfg = TrainConfig(epochs=5, batch_size=64, lr=3e-3, warmup_steps=20, loss=loss, huber_delta=0.5)
    trainer = Trainer(model, tcfg, "cpu", len(train[1]))
    history = trainer.fit(train, val, tmp_path / "r.pt")
    before = angular_error(torch.randn(500, 3, generator=torch.Generator().manual_seed(2)), val[1]).mean().item()
    after = angular_error(torch.from_numpy(trainer.predict(val[0])), val[1]).mean().item()
    assert before > 1.4 and after < 0.15, (before, after)  # radians: random ~ pi/2, learned < 9 degrees
    if loss in ("cosine", "vmf"):
        assert history[-1]["val_angle"] == pytest.approx(after)
        assert np.allclose(np.linalg.norm(trainer.predict(val[0]), axis=1), 1.0)  # predictions are unit vectors


@pytest.mark.parametrize("p", [2, 3])
@pytest.mark.parametrize("kappa", [1e-3, 0.5, 3.0, 40.0, 700.0])
def test_vmf_normalizer_matches_the_bessel_function_form(p, kappa):
    """log C_p(k) = (p/2 - 1) log k - (p/2) log(2 pi) - log I_{p/2-1}(k), with I = ive * e^k."""
    nu = p / 2 - 1
    expected = nu * math.log(kappa) - p / 2 * math.log(2 * math.pi) - (math.log(ive(nu, kappa)) + kappa)
    got = log_vmf_normalizer(torch.tensor(kappa, dtype=torch.float64), p).item()
    assert got == pytest.approx(expected, rel=1e-9, abs=1e-9)


def test_vmf_loss_is_lowest_at_the_true_direction_and_sharpens_with_kappa():
    target = torch.tensor([[0.0, 0.0, 1.0]])
    loss = VonMisesFisher()
    at = [loss(torch.tensor([[0.0, 0.0, k]]), target)[0].item() for k in (1.0, 5.0, 20.0)]
    off = [loss(torch.tensor([[k, 0.0, 0.0]]), target)[0].item() for k in (1.0, 5.0, 20.0)]
    assert at[0] > at[1] > at[2] and off[0] < off[1] < off[2]  # confident and right wins, confident and wrong loses
    assert at[2] == pytest.approx(-math.log(20 / (2 * math.pi * (1 - math.exp(-40)))), rel=1e-6)
