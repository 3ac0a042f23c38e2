"""The pretraining loop: masked modelling of a job's tokenizer + backbone on the training split, labels unused.

The shape of the VQ-VAE pretraining (tokenizers/vqvae/pretrain.py): a seeded share of the pretraining events
is held out for the per-epoch errors, the experiment's validation and test splits are never read. The epoch
order and the masks are pure functions of (seed, epoch) and a checkpoint is written after every epoch, so a
stage killed at any point resumes to the same weights (bitwise on CPU). The artifact (`model.pt`: the
backbone's weights and the record of what it was trained on) is shared by every job with the same key.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from expmatrix.assembly.parts import Assembly
from expmatrix.assembly.recipe import pretrain_data, pretrain_selection
from expmatrix.checkpoint import epoch_order, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from expmatrix.config.pretrain import CODE, default_targets
from expmatrix.data import Events, load_pulse_splits, load_splits
from expmatrix.data.events import split_holdout
from expmatrix.pretraining import PretrainFailed
from expmatrix.pretraining.codes import code_target
from expmatrix.pretraining.model import MaskedModel, mask_objects
from expmatrix.pretraining.targets import Target, fit_target, target_table
from expmatrix.runfiles import write_json
from expmatrix.tokenizers.base import take, to_device


def pretrain_events(parts: Assembly, targets: list[str]) -> Events:
    """The training split (up to `pretrain.max_events` events) with the tokenizer's features and the targets'."""
    data, path, cache = pretrain_data(parts.cfg), parts.job.data_path, parts.store.paths.cache.dir
    if parts.cfg.data.source == "fourtops":
        return load_splits(data, path, cache)["train"]
    features = parts.recipe.features
    extra = tuple(t for t in targets if t not in features)
    return load_pulse_splits(data, path, cache, features + extra, ragged=False)["train"]  # padded: per-object masks


def tokenizer_view(events: Events, features: tuple[str, ...]) -> Events:
    """The events with the tokenizer's features only (the targets may have read more columns)."""
    cols = [events.feature_names.index(f) for f in features]
    return dataclasses.replace(events, cont=events.cont[:, :, cols], feature_names=features)


def batch_loss(model: MaskedModel, targets: list[Target], tokens, table, masked) -> tuple[torch.Tensor, list]:
    """Summed mean losses of the targets at the masked objects, and the outputs."""
    outs = model(tokens, masked)
    y = table[masked]  # (M, K)
    return sum(t.loss(o, y[:, k]) for k, (t, o) in enumerate(zip(targets, outs, strict=True))), outs


@torch.no_grad()
def evaluate(model: MaskedModel, targets: list[Target], tokens, table, masked, batch: int) -> dict[str, float]:
    """Loss and per-target errors on the held-out events (a fixed mask), `batch` events per forward pass."""
    model.eval()
    n = len(masked)
    chunks = [model(take(tokens, slice(i, i + batch)), masked[i : i + batch]) for i in range(0, n, batch)]
    outs = [torch.cat(parts) for parts in zip(*chunks, strict=True)]
    y = table[masked]
    out = {"holdout_loss": sum(t.loss(o, y[:, k]) for k, (t, o) in enumerate(zip(targets, outs, strict=True))).item()}
    for k, (t, o) in enumerate(zip(targets, outs, strict=True)):
        out |= t.errors(o, y[:, k])
    return out


class Pretraining:
    """One pretraining run: data, targets and model, trained to `pretrain.epochs` with a checkpoint per epoch."""

    def __init__(self, parts: Assembly):
        cfg, features = parts.cfg, parts.recipe.features
        p, self.cfg, self.key, self.device = cfg.pretrain, cfg, parts.recipe.pretrain_key, parts.device
        self.files = parts.store.paths.cache.pretrained(self.key)
        specs = p.targets or default_targets(cfg.data.source, features)
        self.tokenizer = parts.tokenizer
        events = pretrain_events(parts, [n for n in specs if n != CODE])
        view = tokenizer_view(events, features)
        codes = {CODE: code_target(parts, specs[CODE], view)} if CODE in specs else {}
        source = cfg.data.source
        self.targets = [codes[n][0] if n in codes else fit_target(n, s, events, source) for n, s in specs.items()]
        tokens = self.tokenizer.transform(view)
        seq_len = tokens["mask"].shape[1]
        self.size = parts.size_for(seq_len)  # the width the job itself solves: the same budget in both arms
        self.tokens, self.real = to_device(tokens, self.device), torch.from_numpy(events.real).to(self.device)
        self.table = target_table(self.targets, events, {n: values for n, (_, values) in codes.items()}).to(self.device)
        self.train, hold = split_holdout(len(events), p.holdout, np.random.default_rng(p.seed))
        self.hold = torch.from_numpy(hold).to(self.device)
        self.hold_mask = mask_objects(self.real[self.hold], p.mask_fraction, torch.Generator().manual_seed(p.seed))
        self.hold_tokens, self.hold_table = take(self.tokens, self.hold), self.table[self.hold]  # sliced once
        torch.manual_seed(p.seed)
        self.model = MaskedModel(parts.model(self.size, seq_len), self.targets, self.size.d_model).to(self.device)
        self.opt = torch.optim.AdamW(self.model.trained_parameters(), lr=p.lr, weight_decay=p.weight_decay)
        self.history: list[dict[str, Any]] = []

    def epoch(self, epoch: int) -> dict[str, Any]:
        p, t0 = self.cfg.pretrain, time.perf_counter()
        order = torch.from_numpy(self.train).to(self.device)[epoch_order(len(self.train), p.seed, epoch, self.device)]
        generator = torch.Generator().manual_seed(p.seed * 1_000_003 + epoch + 1)  # the epoch's masks
        masked_all = mask_objects(self.real[order], p.mask_fraction, generator)
        self.model.train()
        losses = []
        for i in range(0, len(order), p.batch_size):
            idx, masked = order[i : i + p.batch_size], masked_all[i : i + p.batch_size]
            if not masked.any():
                continue
            loss, _ = batch_loss(self.model, self.targets, take(self.tokens, idx), self.table[idx], masked)
            if not torch.isfinite(loss):
                raise PretrainFailed(f"pretraining {self.key}: loss is {loss.item()} at epoch {epoch + 1}, batch {i}")
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            losses.append(loss.item())
        health = evaluate(self.model, self.targets, self.hold_tokens, self.hold_table, self.hold_mask, p.batch_size)
        return {"epoch": epoch + 1, "loss": float(np.mean(losses)), **health, "seconds": time.perf_counter() - t0}

    def run(self) -> dict[str, Any]:
        """Train (resuming from the checkpoint), write the artifact, drop the checkpoint; returns the record."""
        checkpoint, epochs = self.files.checkpoint, self.cfg.pretrain.epochs
        self.resume(checkpoint)
        bar = tqdm(range(len(self.history), epochs), desc=f"pretrain {self.key}", unit="epoch", disable=None)
        for epoch in bar:
            self.history.append(self.epoch(epoch))
            state = {"model": self.model.state_dict(), "opt": self.opt.state_dict(), "history": self.history}
            save_checkpoint(checkpoint, state | {"rng": rng_state(self.device)})
            bar.set_postfix_str(f"loss {self.history[-1]['loss']:.3f}")
        record = self.record()
        save_checkpoint(self.files.artifact, {"record": record, "state": self.model.backbone_state()})
        write_json(self.files.record, record)  # for a reader without torch
        checkpoint.unlink(missing_ok=True)
        return record

    def resume(self, checkpoint: Path) -> None:
        state = load_checkpoint(checkpoint)
        if state is not None:
            self.model.load_state_dict(state["model"])
            self.opt.load_state_dict(state["opt"])
            self.history = state["history"]
            set_rng_state(state["rng"], self.device)

    def record(self) -> dict[str, Any]:
        """What the artifact was trained on: a job of another tokenizer, width or data selection is refused."""
        return {
            "key": self.key,
            "tokenizer": self.tokenizer.signature(),
            "width": {"d_model": self.size.d_model, "d_ff": self.size.d_ff},
            "data": pretrain_selection(self.cfg),
            "settings": self.cfg.pretrain.artifact_settings(),
            "targets": [dataclasses.asdict(t) for t in self.targets],
            "events": {"pretrain": len(self.train), "holdout": len(self.hold)},
            "history": self.history,
        }


def run_pretraining(parts: Assembly) -> dict[str, Any]:
    """The pretraining the job of `parts` needs; a failure is recorded for the other jobs that need it."""
    try:
        return Pretraining(parts).run()
    except Exception as e:
        failure = parts.store.paths.cache.pretrained(parts.recipe.pretrain_key).failure
        write_json(failure, {"error": f"{type(e).__name__}: {e}", "time": time.time()})
        raise
