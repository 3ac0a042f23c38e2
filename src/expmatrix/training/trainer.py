"""The training loop: AdamW, warmup schedule, fixed epochs, a checkpoint after every epoch.

Batches are index slices of tensors tokenized once per job (no per-event Python),
kept on the model's device: on CUDA the whole data set lives on the GPU.
The epoch order comes from a generator seeded by (seed, epoch), so a run resumed
from its checkpoint sees the same batches as an uninterrupted one.
"""

from __future__ import annotations

import io
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from expmatrix.spec import TrainConfig
from expmatrix.store import atomic_write
from expmatrix.tokenizers import Tokens
from expmatrix.training.metrics import binary_metrics


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or infinite; the message says where."""


def take(tokens: Tokens, idx: torch.Tensor | slice) -> Tokens:
    return {k: v[idx] for k, v in tokens.items()}


def to_device(tokens: Tokens, device: torch.device) -> Tokens:
    return {k: v.to(device) for k, v in tokens.items()}


@torch.inference_mode()
def predict(model: nn.Module, tokens: Tokens, batch_size: int = 4096) -> np.ndarray:
    """Signal probability per event, through the model's one forward path."""
    model.eval()
    n = len(tokens["mask"])
    out = [
        torch.softmax(model(take(tokens, slice(i, i + batch_size))).float(), -1)[:, 1] for i in range(0, n, batch_size)
    ]
    return torch.cat(out).cpu().numpy()


def evaluate(model: nn.Module, tokens: Tokens, labels: torch.Tensor, weight: torch.Tensor) -> dict[str, float]:
    scores = predict(model, tokens)
    p = torch.from_numpy(scores).double().clamp(1e-7, 1 - 1e-7)
    logp = torch.stack([torch.log1p(-p), torch.log(p)], dim=1)
    labels = labels.cpu()
    loss = F.nll_loss(logp.float(), labels, weight=weight.cpu()).item()
    return {"loss": loss, **binary_metrics(scores, labels.numpy())}


def class_weights(labels: torch.Tensor, how: str, n_classes: int = 2) -> torch.Tensor:
    """'balanced': N / (n_classes * count_c), so each class weighs the same in the loss."""
    if how == "none":
        return torch.ones(n_classes)
    counts = torch.bincount(labels, minlength=n_classes).float()
    if (counts == 0).any():
        raise ValueError(f"the training split lacks a class: counts per class {counts.tolist()}")
    return counts.sum() / (n_classes * counts)


def lr_lambda(cfg: TrainConfig, total_steps: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        if cfg.schedule == "cosine":
            progress = (step - cfg.warmup_steps) / max(1, total_steps - cfg.warmup_steps)
            return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        return 1.0

    return factor


def _save(path: Path, state: dict[str, Any]) -> None:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write(path, buffer.getvalue())


def fit(
    model: nn.Module,
    train: tuple[Tokens, torch.Tensor],
    val: tuple[Tokens, torch.Tensor],
    cfg: TrainConfig,
    seed: int,
    checkpoint: Path,
    on_epoch: Callable[[list[dict[str, Any]]], None],
) -> tuple[list[dict[str, Any]], float]:
    """Train for `cfg.epochs`, resuming from `checkpoint` if it exists.

    Returns the per-epoch history and the training seconds (over all resumptions).
    `on_epoch` gets the history after every epoch (the caller logs it).
    """
    (x, y), (xv, yv) = train, val
    weight = class_weights(y, cfg.class_weights)
    steps_per_epoch = math.ceil(len(y) / cfg.batch_size)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg, cfg.epochs * steps_per_epoch))
    history: list[dict[str, Any]] = []
    seconds, start_epoch = 0.0, 0
    if checkpoint.exists():
        state = torch.load(checkpoint, map_location=y.device, weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"].cpu())
        if y.is_cuda and state.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(state["cuda_rng"].cpu())
        history, seconds, start_epoch = state["history"], state["seconds"], state["epoch"] + 1

    for epoch in range(start_epoch, cfg.epochs):
        t0 = time.perf_counter()
        model.train()
        order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch)).to(y.device)
        total = 0.0
        for b in range(steps_per_epoch):
            idx = order[b * cfg.batch_size : (b + 1) * cfg.batch_size]
            loss = F.cross_entropy(model(take(x, idx)), y[idx], weight=weight)
            if not torch.isfinite(loss):
                raise NonFiniteLoss(f"loss is {loss.item()} at epoch {epoch + 1}, batch {b + 1} of {steps_per_epoch}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        val_metrics = evaluate(model, xv, yv, weight)
        seconds += time.perf_counter() - t0
        history.append(
            {
                "epoch": epoch + 1,
                "train_loss": total / len(y),
                "val_loss": val_metrics["loss"],
                "val_auroc": val_metrics["auroc"],
                "lr": sched.get_last_lr()[0],
                "seconds": seconds,
            }
        )
        _save(
            checkpoint,
            {
                "model": model.state_dict(),
                "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(),
                "rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state() if y.is_cuda else None,
                "history": history,
                "seconds": seconds,
                "epoch": epoch,
            },
        )
        on_epoch(history)
    return history, seconds
