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
from expmatrix.spec import JobConfig
from expmatrix.store import RunStore, atomic_write, write_json
from expmatrix.tokenizers import build_tokenizer
from expmatrix.training.metrics import binary_metrics
from expmatrix.training.trainer import fit, predict, to_device

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

    size = solve_size(tokenizer, cfg.model, N_CLASSES)
    model = build_model(tokenizer, cfg.model, size, N_CLASSES).to(device)

    def log_epochs(history: list[dict]) -> None:
        atomic_write(store.path(job.id, "metrics.jsonl"), "".join(json.dumps(h) + "\n" for h in history))
        store.set_status(job.id, "running", epoch=history[-1]["epoch"], epochs=cfg.train.epochs)

    history, seconds = fit(
        model,
        (tokens["train"], labels["train"]),
        (tokens["val"], labels["val"]),
        cfg.train,
        cfg.seed,
        store.path(job.id, "checkpoint.pt"),
        log_epochs,
    )
    scores = predict(model, tokens["test"])
    pl.DataFrame({"score": scores, "label": splits["test"].label, "process": splits["test"].process}).write_parquet(
        store.path(job.id, "predictions.parquet")
    )
    metrics = {
        "test": binary_metrics(scores, splits["test"].label),
        "val": {k: v for k, v in history[-1].items() if k.startswith("val_")},
        "evaluated_weights": "last",  # no early stopping: the weights after the final epoch
        "epochs": len(history),
        "params": sum(p.numel() for p in model.parameters()),
        "d_model": size.d_model,
        "d_ff": size.d_ff,
        "train_seconds": seconds,
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
    except Exception as e:  # noqa: BLE001 - a job's failure is recorded, the matrix goes on
        tail = "".join(traceback.format_exception(e)[-3:])
        store.set_status(job.id, "failed", error=f"{type(e).__name__}: {e}", traceback=tail, finished=time.time())
        return "failed"
    finally:
        store.release(job.id)
