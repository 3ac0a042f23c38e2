"""One job, start to finish: data -> tokenizer -> model -> trainer -> run directory."""

from __future__ import annotations

import json
import random
import time
import traceback

import numpy as np
import polars as pl
import torch

from expmatrix.data import load_splits
from expmatrix.matrix import Job
from expmatrix.models.sizing import build_model, solve_size
from expmatrix.models.transformer import trainable_params
from expmatrix.spec import JobConfig
from expmatrix.store import RunStore, atomic_write, write_json
from expmatrix.tokenizers import build_tokenizer
from expmatrix.training.metrics import binary_metrics
from expmatrix.training.trainer import Preempted, Trainer, to_device

N_CLASSES = 2  # binary: background 0, the declared signal 1


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def train_job(job: Job, store: RunStore) -> dict:
    """Train and evaluate one job in its run directory; returns the final metrics."""
    cfg = JobConfig.model_validate(job.config)
    seed_everything(cfg.seed)
    splits = load_splits(cfg.data, job.data_path, store.cache_dir)
    tokenizer = build_tokenizer(cfg.tokenizer, splits["train"].feature_names, cfg.data.use_met)
    tokenizer.fit(splits["train"])  # training split only
    write_json(store.path(job.id, "tokenizer.json"), tokenizer.state_dict())
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    tokens = {s: to_device(tokenizer.transform(ev), device) for s, ev in splits.items()}
    labels = {s: torch.from_numpy(ev.label).to(device) for s, ev in splits.items()}

    if cfg.train.loss != "cross_entropy":
        raise ValueError(f"train.loss={cfg.train.loss} needs regression targets; fourtops data is classification")
    seq_len = tokens["train"]["mask"].shape[1]
    size = solve_size(tokenizer, cfg.model, N_CLASSES, seq_len)
    model = build_model(tokenizer, cfg.model, size, N_CLASSES, seq_len).to(device)
    trainer = Trainer(model, cfg.train, device, len(labels["train"]), cfg.seed)

    def log_epochs(history: list[dict]) -> None:
        atomic_write(store.path(job.id, "metrics.jsonl"), "".join(json.dumps(h) + "\n" for h in history))
        store.set_status(job.id, "running", epoch=history[-1]["epoch"], epochs=cfg.train.epochs)

    history = trainer.fit(
        (tokens["train"], labels["train"]),
        (tokens["val"], labels["val"]),
        store.path(job.id, "checkpoint.pt"),
        log_epochs,
    )
    evaluated = history[trainer.best["epoch"] - 1 if trainer.best else -1]
    scores = trainer.predict(tokens["test"])[:, 1]
    pl.DataFrame({"score": scores, "label": splits["test"].label, "process": splits["test"].process}).write_parquet(
        store.path(job.id, "predictions.parquet")
    )
    metrics = {
        "test": binary_metrics(scores, splits["test"].label),
        "val": {k: v for k, v in evaluated.items() if k.startswith("val_")},
        **trainer.summary(),  # evaluated_weights last|best (best_epoch), ema, precision, compiled
        "epochs": len(history),
        "params": trainable_params(model),
        "d_model": size.d_model,
        "d_ff": size.d_ff,
        "train_seconds": trainer.seconds,
        "events": {s: len(ev) for s, ev in splits.items()},
        "device": str(device),
    }
    write_json(store.path(job.id, "metrics.json"), metrics)
    return metrics


def run_job(job: Job, store: RunStore, threads: int = 1) -> str:
    """Claim, train, record. Never raises for a job's own failure: returns its final state."""
    if store.state(job.id) == "done":
        return "done"
    if not store.claim(job.id):
        return "claimed"
    if store.state(job.id) == "done":  # finished by another worker between the check and the claim
        store.release(job.id)
        return "done"
    torch.set_num_threads(threads)
    started = time.time()
    try:
        store.write_job(job.record())
        store.set_status(job.id, "running", started=started)
        train_job(job, store)
        store.set_status(job.id, "done", finished=time.time(), wall_seconds=time.time() - started)
        return "done"
    except Preempted as e:  # SIGTERM/SIGUSR1: checkpointed, resumable, not failed
        store.set_status(job.id, "preempted", reason=str(e), preempted=time.time())
        return "preempted"
    except Exception as e:  # noqa: BLE001 - a job's failure is recorded, the matrix goes on
        tail = "".join(traceback.format_exception(e)[-3:])
        store.set_status(job.id, "failed", error=f"{type(e).__name__}: {e}", traceback=tail, finished=time.time())
        return "failed"
    finally:
        store.release(job.id)
