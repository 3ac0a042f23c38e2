"""Pretraining of the per-object VQ-VAE on the training split, with its health measured every epoch.

A seeded share of the training events (`holdout`) is held out to measure codebook health; the
experiment's validation and test splits are never seen. The first forward runs on a large sample of
real objects, so that the codebook's k-means initialisation sees many more objects than codes.
A codebook whose held-out utilisation ends below the preset's floor fails the fit, naming it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from expmatrix.data.events import split_holdout
from expmatrix.tokenizers.base import TokenizerError
from expmatrix.tokenizers.vqvae.health import code_usage, feature_errors, histograms
from expmatrix.tokenizers.vqvae.model import ObjectVQVAE

INIT_EVENTS = 4096  # events of the first forward (about 37k objects): the codebook's k-means initialisation


@dataclass(frozen=True)
class Settings:
    """The preset's pretraining settings that have an effect (read once: the every-key check sees them)."""

    name: str
    codebook_size: int
    code_dim: int
    encoder: str
    hidden: int
    layers: int
    cosine: bool
    kmeans_init: bool
    kmeans_iters: int
    dead_code_threshold: float
    commitment_weight: float
    rotation_trick: bool
    decay: float
    type_weight: float
    epochs: int
    batch_size: int
    lr: float
    holdout: float
    min_utilisation: float

    @classmethod
    def from_config(cls, c: Any) -> Settings:
        iters = c.kmeans_iters if c.kmeans_init else 0  # read only where it acts
        return cls(c.name, c.codebook_size, c.code_dim, c.encoder, c.hidden, c.layers, c.cosine, c.kmeans_init,
                   iters or 1, c.dead_code_threshold, c.commitment_weight, c.rotation_trick, c.decay, c.type_weight,
                   c.epochs, c.batch_size, c.lr, c.holdout, c.min_utilisation)  # fmt: skip


@torch.no_grad()
def evaluate(model: ObjectVQVAE, x, types, real, to_physical: Callable, names) -> dict[str, Any]:
    """Health of the codebook on held-out objects (eval mode: no codebook update)."""
    model.eval()
    z = model.encode(x, types, real)
    q, codes = model.lookup(z)
    out = model.decoder(q)
    target = x[real]
    recon = F.mse_loss(out[:, : model.n_features], target).item()
    original, rebuilt = to_physical(target.cpu().numpy()), to_physical(out[:, : model.n_features].cpu().numpy())
    return {
        **code_usage(codes.cpu().numpy(), model.vq.codebook_size),
        "commitment": F.mse_loss(F.normalize(z, dim=-1) if model.cosine else z, q).item(),
        "recon": recon,
        "errors": feature_errors(original, rebuilt, names),
        "_hist": (original, rebuilt),
    }


def pretrain(
    x: np.ndarray, ids: np.ndarray, real: np.ndarray, cfg: Settings, seed: int, names, to_physical: Callable
) -> tuple[ObjectVQVAE, dict[str, Any]]:
    """Train the VQ-VAE on x (N, O, F) normalized features of the training split; returns it (eval mode) and
    its health record. `to_physical` maps (M, F) normalized features back to physical units."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    train, hold = split_holdout(len(x), cfg.holdout, rng)
    n_objects = int(real[train].sum())
    if cfg.codebook_size > n_objects:
        raise TokenizerError(
            f"tokenizer {cfg.name!r}: a codebook of {cfg.codebook_size} codes but only {n_objects} real training "
            "objects to learn it from: lower codebook_size or use more events"
        )
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")  # fp32 on either
    X, T, R = (torch.from_numpy(a).to(device) for a in (x, ids, real))
    model = ObjectVQVAE(x.shape[-1], cfg).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    with torch.no_grad():  # the first forward (k-means initialisation) on a large sample of real objects
        first = torch.from_numpy(train[rng.permutation(len(train))[:INIT_EVENTS]]).to(device)
        model.quantize(model.encode(X[first], T[first], R[first]))
    history = []
    bar = tqdm(range(cfg.epochs), desc=f"pretrain {cfg.name}", unit="epoch", disable=None, leave=False)
    for epoch in bar:
        model.train()
        order, losses = train[rng.permutation(len(train))], []
        for i in range(0, len(order), cfg.batch_size):
            b = torch.from_numpy(order[i : i + cfg.batch_size]).to(device)
            xb, tb, rb = X[b], T[b], R[b]
            if not rb.any():
                continue
            _, _, out, vq_loss = model(xb, tb, rb)
            loss = model.reconstruction_loss(out, xb[rb], tb[rb], cfg.type_weight) + vq_loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
        h = torch.from_numpy(hold).to(device)
        health = evaluate(model, X[h], T[h], R[h], to_physical, names)
        original, rebuilt = health.pop("_hist")
        history.append({"epoch": epoch + 1, "loss": float(np.mean(losses)), **health})
        bar.set_postfix_str(f"utilisation {health['utilisation']:.0%}, perplexity {health['perplexity']:.0f}")
    record = {
        "codebook_size": cfg.codebook_size,
        "min_utilisation": cfg.min_utilisation,
        "holdout_events": len(hold),
        "holdout_objects": int(real[hold].sum()),
        "history": history,
        "histograms": histograms(original, rebuilt, names),
    }
    check_health(record, cfg.name)
    return model.cpu().eval(), record  # tokens are made on the CPU, with the data


def check_health(record: dict[str, Any], name: str) -> None:
    """A collapsed codebook fails here, instead of feeding every job that names it one code for everything."""
    last, size, floor = record["history"][-1], record["codebook_size"], record["min_utilisation"]
    if last["utilisation"] < floor:
        raise TokenizerError(
            f"tokenizer {name!r}: the VQ-VAE codebook collapsed: held-out utilisation {last['utilisation']:.1%} "
            f"({size - last['dead_codes']} of {size} codes, perplexity {last['perplexity']:.1f}) is below the "
            f"preset's min_utilisation {floor:.0%}; try kmeans_init, a dead_code_threshold > 0, fewer codes, or more "
            "epochs"
        )
