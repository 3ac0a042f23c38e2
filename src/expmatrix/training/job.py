"""One job, start to finish: data -> tokenizer -> model -> trainer -> run directory."""

from __future__ import annotations

import random
import time
import traceback
from collections.abc import Callable

import numpy as np
import polars as pl
import torch

from expmatrix.assembly.parts import Assembly
from expmatrix.checkpoint import checkpoint_position
from expmatrix.claims import Heartbeat
from expmatrix.config import Job
from expmatrix.metrics import binary_metrics
from expmatrix.models.transformer import trainable_params
from expmatrix.pretraining import pretrain_settings
from expmatrix.pretraining.finetune import Finetune
from expmatrix.provenance import code_version
from expmatrix.runfiles import DamagedFile, set_aside, write_json, writing
from expmatrix.store import RunStore
from expmatrix.training.directions import evaluate_directions
from expmatrix.training.tracking import Tracker, open_tracker
from expmatrix.training.trainer import Preempted, Trainer


class ClaimLost(RuntimeError):
    """Another worker took this job over (our heartbeat stalled): stop without writing."""


class EndedEarly(Exception):
    """Raised by an `on_epoch` hook to end the job after a checkpointed epoch in `state`, not failed
    (a tuning trial its study prunes)."""

    def __init__(self, state: str, why: str):
        super().__init__(why)
        self.state = state


EpochHook = Callable[[list[dict]], None]  # the epoch history so far, after each epoch's checkpoint


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def train_job(
    job: Job,
    store: RunStore,
    tracker: Tracker | None = None,
    heartbeat: Heartbeat | None = None,
    on_epoch: EpochHook | None = None,
) -> dict:
    """Train and evaluate one job in its run directory; returns the final metrics. `on_epoch(history)` runs
    after each epoch is recorded and may raise `EndedEarly`."""
    cfg, files = job.config, store.job(job.id)
    tracker = tracker or Tracker(files.history)
    seed_everything(cfg.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    parts = Assembly(job, store, device)
    splits, tokens, labels = parts.splits, parts.tokens, parts.targets
    write_json(files.tokenizer, parts.tokenizer.state_dict())
    model = parts.model()
    finetune = Finetune(parts) if pretrain_settings(cfg) else None
    if finetune is not None:
        finetune.load(model)  # the same model as the scratch arm's, its embedding and backbone pretrained
    model = model.to(device)
    groups = finetune.lr_groups(model) if finetune is not None else None
    trainer = Trainer(model, cfg.train, device, len(labels["train"]), cfg.seed, groups)
    if finetune is not None:
        finetune.prepare(model)

    def log_epochs(history: list[dict]) -> None:
        if heartbeat is not None and heartbeat.lost.is_set():
            raise ClaimLost(f"job {job.id}: claim taken over by another worker")
        tracker.log_history(history)
        store.set_status(job.id, "running", epoch=history[-1]["epoch"], epochs=cfg.train.epochs)
        if finetune is not None:
            finetune.on_epoch(model, history)
        if on_epoch is not None:
            on_epoch(history)

    history = trainer.fit(
        (tokens["train"], labels["train"]),
        (tokens["val"], labels["val"]),
        files.checkpoint,
        log_epochs,
    )
    tracker.write_history(history)  # also after a redo that ran no epoch: the log matches the checkpoint
    if finetune is not None:
        finetune.freeze(model, False)  # (a freeze over every epoch: a linear probe) the count is the whole model's
    evaluated = history[trainer.best["epoch"] - 1 if trainer.best else -1]
    test = splits["test"]
    with writing(files.predictions) as predictions:  # atomic: a kill never leaves half a file
        if test.target is not None:
            test_metrics = evaluate_directions(trainer, tokens["test"], test.target, predictions, test.length)
        else:
            scores = trainer.predict(tokens["test"])[:, 1]
            pl.DataFrame({"score": scores, "label": test.label, "process": test.process}).write_parquet(predictions)
            test_metrics = binary_metrics(scores, test.label)
    metrics = {
        "test": test_metrics,
        "val": {k: v for k, v in evaluated.items() if k.startswith("val_")},
        **trainer.summary(),  # evaluated_weights last|best (best_epoch), ema, precision, compiled
        "epochs": len(history),
        "params": trainable_params(model),
        "d_model": parts.size.d_model,
        "d_ff": parts.size.d_ff,
        "train_seconds": trainer.seconds,
        "events": {s: len(ev) for s, ev in splits.items()},
        "device": str(device),
        **({"pretrained": finetune.summary()} if finetune is not None else {}),
        **({"codebook": codebook} if (codebook := parts.tokenizer.summary()) else {}),
    }
    write_json(files.metrics, metrics)
    return metrics


def set_aside_damaged(store: RunStore, job: Job) -> str | None:
    """Rename every damaged file of the job to `<name>.damaged-<time>` (never deleted) and say so, and where
    training starts again: from the checkpoint if torch loads it, else from scratch. None if nothing was damaged."""
    damaged, notes = store.damaged_files(job.id), []
    checkpoint = store.job(job.id).checkpoint
    try:
        position = None if checkpoint in {d.path for d in damaged} else checkpoint_position(checkpoint, job.id)
    except DamagedFile as e:  # its CRCs are fine, but torch cannot read it
        damaged, position = [*damaged, e], None
    for d in damaged:
        aside = set_aside(d.path)
        notes.append(f"{d.path.name} was damaged ({d.problem})" + (f", set aside as {aside.name}" if aside else ""))
    if not notes:
        return None
    if position is None:
        return "; ".join([*notes, "trained from scratch"])
    epochs, (epoch, batch) = job.config.train.epochs, (position.epoch, position.batch)
    where = f"in epoch {epoch + 1} of {epochs} at batch {batch}" if batch else f"after epoch {epoch} of {epochs}"
    return "; ".join([*notes, f"resumed from {checkpoint.name} {where}"])


def run_job(job: Job, store: RunStore, threads: int = 1, on_epoch: EpochHook | None = None) -> str:
    """Claim, train, record. Never raises for a job's own failure: returns its final state
    (done, failed, preempted: checkpointed on a signal, claimed: someone else has it,
    lost: taken over while we ran, or the state of an `EndedEarly` raised by `on_epoch`)."""
    if store.state(job.id) == "done":
        return "done"
    if not store.claims.take(job.id):
        return "claimed"
    if store.state(job.id) == "done":  # finished by another worker between the check and the claim
        store.claims.release(job.id)
        return "done"
    run, files = job.run, store.job(job.id)
    torch.set_num_threads(threads)
    started = time.time()
    tracker: Tracker | None = None
    with Heartbeat(store.claims, job.id, run.heartbeat_seconds) as heartbeat:
        try:
            redone = set_aside_damaged(store, job)  # before anything reads or rewrites them
            store.write_job(job)
            store.log_start(job.id, resumed=files.checkpoint.exists())
            epochs = job.config.train.epochs
            store.set_status(job.id, "running", started=started, epoch=0, epochs=epochs, redone=redone)
            tracker = open_tracker(run.tracking, files.history, job.record(), store.dir.name, run.wandb.model_dump())
            metrics = train_job(job, store, tracker, heartbeat, on_epoch)
            tracker.finish({"test": metrics["test"], "params": metrics["params"]})
            store.set_status(
                job.id, "done", finished=time.time(), wall_seconds=time.time() - started, code_version=code_version()
            )
            return "done"
        except ClaimLost:
            return "lost"  # the new owner writes the status
        except EndedEarly as e:
            store.set_status(job.id, e.state, **{e.state: str(e)}, finished=time.time())
            if tracker is not None:
                tracker.finish({})
            return e.state
        except Preempted as e:  # SIGTERM/SIGUSR1: checkpointed, resumable, not failed
            store.set_status(job.id, "preempted", reason=str(e), preempted=time.time())
            if tracker is not None:
                tracker.finish({}, failed=True)
            return "preempted"
        except Exception as e:  # noqa: BLE001 - a job's failure is recorded, the matrix goes on
            tail = "".join(traceback.format_exception(e)[-3:])
            store.mark_failed(job.id, f"{type(e).__name__}: {e}", traceback=tail)
            if tracker is not None:
                tracker.finish({}, failed=True)
            return "failed"
        finally:
            store.claims.release(job.id)
