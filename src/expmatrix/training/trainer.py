"""The training loop: AdamW, warmup then constant or cosine, clipping, accumulation, EMA, checkpoints.

Batches are index slices of tensors tokenized once per job (no per-event Python),
kept on the model's device: on CUDA the whole data set lives on the GPU (with `data.stream`, the blocks
being read; `tokenizers/blocks.py`). With `fixed_shape`
every forward pass has one shape (full batches, every token slot), as CUDA graphs need.
The epoch order is a pure function of (seed, epoch) and a checkpoint records the
position in it, so a run resumed after a kill at an epoch boundary or a preemption
mid-epoch (SIGTERM / SIGUSR1) continues bitwise-identically on CPU.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from expmatrix.checkpoint import (
    Position,
    epoch_order,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from expmatrix.config import TrainConfig
from expmatrix.metrics import binary_metrics
from expmatrix.stop import StopRequest, stop_requests
from expmatrix.tokenizers.base import Tokens, take
from expmatrix.tokenizers.blocks import BlockTokens, holds_ragged
from expmatrix.tokenizers.ragged import Ragged
from expmatrix.training.ema import EMA
from expmatrix.training.losses import Loss, angular_error, make_loss

CHECK_EVERY_CUDA = 25  # optimizer steps between NaN checks on CUDA (each check waits for the GPU); every step on CPU
EVAL_SLOTS = 1 << 19  # ragged events: token slots per evaluation batch (events x the batch's longest event)


class NonFiniteLoss(RuntimeError):
    """The loss or the gradient became NaN or infinite; the message says where."""


class Preempted(Exception):
    """A stop signal arrived during fit: a checkpoint holds the position; fit again to resume."""


def full_batch(idx: torch.Tensor, size: int) -> torch.Tensor:
    """`idx` padded to `size` entries by repeating its first event: a constant shape. The caller keeps only the
    first len(idx) outputs, so the padding weighs nothing in the loss and gets no gradient."""
    return torch.cat([idx, idx[:1].expand(size - len(idx))]) if len(idx) < size else idx


@torch.inference_mode()
def outputs(
    forward: Callable[[Tokens], torch.Tensor], tokens: Tokens | BlockTokens, batch_size: int = 4096,
    fixed: bool = False,
) -> torch.Tensor:
    """(N, n_outputs) float model outputs in eval mode, through the model's one forward path; `fixed`: every
    chunk has `batch_size` events (the last one padded), one shape. Ragged tokens go in batches of at most
    `EVAL_SLOTS` padded slots; tokens made block by block, block after block."""
    if isinstance(tokens, BlockTokens):
        return torch.cat([outputs(forward, tokens.block(b), batch_size, fixed) for b in range(tokens.n_blocks)])
    mask = tokens["mask"]
    n, device = len(mask), mask.device
    if isinstance(mask, Ragged):
        chunks = mask.batches(batch_size, EVAL_SLOTS)
    else:
        chunks = [slice(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]
    parts = []
    for rows in chunks:
        if fixed:  # copied: a CUDA graph's next replay overwrites its output
            idx = torch.arange(rows.start, rows.stop, device=device)
            parts.append(forward(take(tokens, full_batch(idx, batch_size)))[: len(idx)].float().clone())
        else:
            parts.append(forward(take(tokens, rows)).float())
    return torch.cat(parts)


def lr_factor(cfg: TrainConfig, total_steps: int) -> Callable[[int], float]:
    """Linear warmup over `warmup_steps` optimizer steps, then constant or cosine to `min_lr_ratio`."""
    warmup = cfg.warmup_steps
    floor = cfg.min_lr_ratio if cfg.schedule == "cosine" else None

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if floor is None:
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


class Trainer:
    """Trains one model; owns optimizer, schedule, loss, EMA, best weights and the checkpoint.

    This constructor is the one the every-key tracker calls (with a meta-device model and
    no data): it reads every `TrainConfig` key that shapes training, and only the keys that
    have an effect in this config (e.g. `min_lr_ratio` only for the cosine schedule,
    `ema_decay` only with `ema`, `class_weights` only for cross-entropy).
    `n_train` is the number of training events (it sets the steps per epoch). `lr_groups`: (parameters, factor
    on `train.lr`) pairs, one AdamW group each (a fine-tuned backbone at a lower rate); default one group at 1.
    """

    def __init__(
        self,
        model: nn.Module,
        cfg: TrainConfig,
        device: torch.device | str,
        n_train: int,
        seed: int = 0,
        lr_groups: list[tuple[list[nn.Parameter], float]] | None = None,
    ):
        if cfg.early_stopping:  # the schema allows only False; read so the key counts as consumed
            raise ValueError("train.early_stopping is not supported: training runs a fixed number of epochs")
        self.model, self.device, self.seed, self.n_train = model, torch.device(device), seed, n_train
        self.epochs, self.batch_size, self.accum = cfg.epochs, cfg.batch_size, cfg.grad_accum
        self.fixed = cfg.fixed_shape  # pad | drop: one batch shape; False: the last batch is short
        if self.fixed == "drop" and n_train < self.batch_size:
            raise ValueError(
                f"train.fixed_shape drop: {n_train} training events make no full batch of {self.batch_size}"
            )
        if self.fixed:
            model.packed = False  # every token slot, not the real ones packed: the same shape for every batch
        drop = self.fixed == "drop"
        self.batches = n_train // self.batch_size if drop else math.ceil(n_train / self.batch_size)  # per epoch
        self.loss: Loss = make_loss(cfg)
        self.params = [p for p in model.parameters() if p.requires_grad]
        groups = [{"params": ps, "lr": cfg.lr * f} for ps, f in lr_groups] if lr_groups else self.params
        self.opt = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
        total_steps = self.epochs * math.ceil(self.batches / self.accum)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lr_factor(cfg, total_steps))
        self.grad_clip = cfg.grad_clip
        self.ema = EMA(self.params, cfg.ema_decay) if cfg.ema else None
        self.bf16 = cfg.amp == "bf16" and self.device.type == "cuda"  # NOTE: CPU runs fp32 whatever `amp` says
        self.compiled = cfg.compile
        graphs = {"mode": "reduce-overhead"} if cfg.compile == "reduce-overhead" else {}  # CUDA graphs (on CUDA)
        self.forward = torch.compile(model, **graphs) if cfg.compile else model
        self.evaluate = cfg.evaluate
        self.history: list[dict[str, Any]] = []
        self.seconds = 0.0
        self.best: dict[str, Any] | None = None  # {"epoch", "val_loss", "state"} of the best evaluated weights
        self.position = Position()
        self._sums = torch.zeros(2, dtype=torch.float64, device=self.device)  # epoch's loss sum, weight sum
        self._pending: list[tuple[int, torch.Tensor, torch.Tensor | None]] = []  # (batch, loss, grad norm) unchecked

    # ------------------------------------------------------------ one step

    def autocast(self):
        return torch.autocast("cuda", dtype=torch.bfloat16) if self.bf16 else nullcontext()

    def train_step(self, x: Tokens, y: torch.Tensor, idx: torch.Tensor, first_batch: int = 0) -> None:
        """One optimizer step on the events `idx`, in micro-batches of `batch_size` whose gradients add up to
        the gradient of the mean loss over all of `idx` (what one big batch would give)."""
        total_weight = self.loss.weight(y[idx])
        for i, start in enumerate(range(0, len(idx), self.batch_size)):
            mb = idx[start : start + self.batch_size]
            with self.autocast():
                out = self.forward(take(x, full_batch(mb, self.batch_size) if self.fixed else mb))[: len(mb)]
            loss_sum, weight = self.loss(out, y[mb])
            (loss_sum / total_weight).backward()
            self._sums += torch.stack([loss_sum.detach(), weight]).to(torch.float64)
            self._pending.append((first_batch + i, loss_sum.detach(), None))
        if self.grad_clip:
            norm = nn.utils.clip_grad_norm_(self.params, self.grad_clip)
            self._pending[-1] = (*self._pending[-1][:2], norm.detach())
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.sched.step()
        if self.ema is not None:
            self.ema.update()

    def check_finite(self, epoch: int) -> None:
        """Raise `NonFiniteLoss` naming the first epoch and batch whose loss or gradient norm is not finite."""
        if not self._pending:
            return
        losses = torch.stack([p[1] for p in self._pending])
        norms = torch.stack([p[2] if p[2] is not None else p[1].new_zeros(()) for p in self._pending])
        bad = (~torch.isfinite(losses) | ~torch.isfinite(norms)).nonzero()
        if len(bad):
            b, loss, norm = self._pending[int(bad[0])]
            what = f"loss is {loss.item()}" if not torch.isfinite(loss) else f"gradient norm is {norm.item()}"
            raise NonFiniteLoss(f"{what} at epoch {epoch + 1}, batch {b + 1} of {self.batches}")
        self._pending.clear()

    # ------------------------------------------------------------ epochs

    def fit(
        self,
        train: tuple[Tokens, torch.Tensor],
        val: tuple[Tokens, torch.Tensor],
        checkpoint: Path,
        on_epoch: Callable[[list[dict[str, Any]]], None] | None = None,
        on_batch: Callable[[int, int], None] | None = None,
    ) -> list[dict[str, Any]]:
        """Train to `epochs`, resuming from `checkpoint` if it exists; returns the per-epoch history.

        A checkpoint is written after every epoch. On a stop signal (`expmatrix.stop`) the current optimizer
        step finishes, a checkpoint with the data position is written and `Preempted` is raised.
        `on_epoch(history)` runs after each epoch's checkpoint, `on_batch(epoch, batches_done)` after
        each optimizer step. Afterwards the model holds the evaluated weights (last or best, EMA or not).
        """
        (x, y), (xv, yv) = train, val
        if len(y) != self.n_train:
            raise ValueError(f"the trainer was built for {self.n_train} training events, got {len(y)}")
        if self.fixed and holds_ragged(x):
            raise ValueError("train.fixed_shape needs one batch shape; these events are held ragged (every pulse "
                             "of a ragged file): set data.pulses.max to pad them to one width, or drop fixed_shape")
        self.loss.prepare(y)
        self._resume(checkpoint)
        with stop_requests() as stop:
            for epoch in range(self.position.epoch, self.epochs):
                t0 = time.perf_counter()
                self._train_epoch(epoch, x, y, stop, checkpoint, on_batch, t0)
                self._end_epoch(epoch, xv, yv, checkpoint, t0)
                if on_epoch is not None:
                    on_epoch(self.history)
                if stop.signal is not None and epoch + 1 < self.epochs:
                    raise Preempted(f"{stop.name} after epoch {epoch + 1}; checkpoint {checkpoint}")
        self._use_evaluated_weights()
        return self.history

    def _train_epoch(self, epoch, x, y, stop: StopRequest, checkpoint: Path, on_batch, t0: float) -> None:
        if isinstance(x, BlockTokens):  # read from the file block by block: the order keeps to blocks
            order = x.epoch_order(self.seed, epoch, self.device)
        else:
            order = epoch_order(len(y), self.seed, epoch, self.device)
        start = self.position.batch if epoch == self.position.epoch else 0
        if start == 0:
            self._sums.zero_()
        self.model.train()
        check_every = CHECK_EVERY_CUDA if self.device.type == "cuda" else 1
        for n, b in enumerate(range(start, self.batches, self.accum)):
            idx = order[b * self.batch_size : min(b + self.accum, self.batches) * self.batch_size]  # (drop: no tail)
            self.train_step(x, y, idx, first_batch=b)
            if (n + 1) % check_every == 0:
                self.check_finite(epoch)
            done = min(b + self.accum, self.batches)
            self.position = Position(epoch, done)
            if on_batch is not None:
                on_batch(epoch, done)
            if stop.signal is not None and done < self.batches:
                self.check_finite(epoch)
                self.seconds += time.perf_counter() - t0
                self._save(checkpoint)
                raise Preempted(f"{stop.name} at epoch {epoch + 1}, batch {done} of {self.batches}")
        self.check_finite(epoch)

    def _end_epoch(self, epoch: int, xv: Tokens, yv: torch.Tensor, checkpoint: Path, t0: float) -> None:
        with self._evaluated():
            val = self.validate(xv, yv)
            if self.evaluate == "best" and (self.best is None or val["val_loss"] < self.best["val_loss"]):
                state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
                self.best = {"epoch": epoch + 1, "val_loss": val["val_loss"], "state": state}
        self.seconds += time.perf_counter() - t0
        loss_sum, weight_sum = self._sums.tolist()
        self.history.append(
            {
                "epoch": epoch + 1,
                "train_loss": loss_sum / weight_sum,
                **val,
                "lr": self.sched.get_last_lr()[0],
                "seconds": self.seconds,
            }
        )
        self.position = Position(epoch + 1, 0)
        self._save(checkpoint)

    # ------------------------------------------------------------ evaluation

    def _evaluated(self):
        """Inside: the model holds the weights that are evaluated (the EMA when on)."""
        return self.ema.applied() if self.ema is not None else nullcontext()

    def outputs(self, tokens: Tokens) -> torch.Tensor:
        self.model.eval()
        with self.autocast():
            return outputs(self.forward, tokens, fixed=bool(self.fixed))

    def predict(self, tokens: Tokens) -> np.ndarray:
        """What the loss makes of the outputs: class probabilities (N, K), a vector or a unit direction."""
        return self.loss.predict(self.outputs(tokens)).cpu().numpy()

    def validate(self, xv: Tokens, yv: torch.Tensor) -> dict[str, float]:
        """val_loss (the training loss, on the validation split) and the task's metrics."""
        out = self.outputs(xv)
        loss_sum, weight = self.loss(out, yv)
        metrics = {"val_loss": (loss_sum / weight).item()}
        pred = self.loss.predict(out)
        if self.loss.classification and pred.shape[1] == 2:
            scores = binary_metrics(pred[:, 1].cpu().numpy(), yv.cpu().numpy())
            metrics |= {f"val_{k}": v for k, v in scores.items()}
        elif self.loss.classification:
            metrics["val_accuracy"] = (pred.argmax(1) == yv).double().mean().item()
        else:  # directions: the angle (rad) between the predicted and the true vector
            angle = angular_error(pred, yv)
            metrics["val_angle"] = angle.mean().item()
            metrics["val_angle_median"] = float(np.median(angle.float().cpu().numpy()))  # torch.quantile caps at 2^24
        return metrics

    def load_evaluated(self, checkpoint: Path) -> None:
        """The weights a finished training evaluated (last or best, EMA or not), from its final checkpoint."""
        self._resume(checkpoint)
        if self.position.epoch < self.epochs:
            raise ValueError(f"{checkpoint}: training stopped after epoch {self.position.epoch} of {self.epochs}")
        self._use_evaluated_weights()

    def _use_evaluated_weights(self) -> None:
        if self.evaluate == "best" and self.best is not None:
            self.model.load_state_dict(self.best["state"])
        elif self.ema is not None:
            self.ema.copy_to_model()

    def summary(self) -> dict[str, Any]:
        """What produced the evaluated weights (for metrics.json)."""
        out: dict[str, Any] = {"evaluated_weights": self.evaluate, "ema": self.ema is not None}
        if self.best is not None:
            out["best_epoch"] = self.best["epoch"]
        return out | {"precision": "bf16" if self.bf16 else "fp32", "compiled": self.compiled}

    # ------------------------------------------------------------ checkpoint

    def _save(self, path: Path) -> None:
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "best": self.best,
            "rng": rng_state(self.device),
            "history": self.history,
            "seconds": self.seconds,
            "position": asdict(self.position),
            "sums": self._sums,
        }
        save_checkpoint(path, state)

    def _resume(self, path: Path) -> None:
        state = load_checkpoint(path)
        if state is None:
            return
        if "position" not in state:
            raise ValueError(f"{path}: a checkpoint from an older expmatrix (no data position); delete it to restart")
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
        self.best = state["best"]
        set_rng_state(state["rng"], self.device)
        self.history, self.seconds = state["history"], state["seconds"]
        self.position = Position(**state["position"])
        self._sums.copy_(state["sums"])
