"""A job preempted by a real SIGTERM in another process resumes to the same results as an uninterrupted one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import polars as pl
import torch
from conftest import write_experiment

from expmatrix.matrix import build_matrix
from expmatrix.store import RunStore
from expmatrix.training.job import run_job


def _train_cli(job_yaml) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "expmatrix", "train", str(job_yaml), "--threads", "1"]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=os.environ.copy())


def _wait_for_epoch(store: RunStore, job_id: str, epoch: int, proc: subprocess.Popen, timeout: float = 600) -> None:
    end = time.time() + timeout
    while store.status(job_id).get("epoch", 0) < epoch:
        assert proc.poll() is None, proc.communicate()[0]
        assert time.time() < end, "training did not reach the epoch in time"
        time.sleep(0.05)


def test_sigterm_preempts_the_job_and_a_rerun_finishes_it_identically(tmp_path):
    train = {"epochs": 3, "batch_size": 64, "warmup_steps": 5, "lr": 1e-3, "grad_accum": 2}
    model = {"target_params": 20000, "layers": 2, "heads": 4, "dropout": 0.1}
    data = {"path": "synthetic", "synthetic": {"events": 1500, "seed": 1}}  # 150 val and 150 test events
    base, factors = {"model": model, "train": train}, {"tokenizer": ["direct"]}
    exp = write_experiment(tmp_path, base=base, factors=factors, data=data)
    job = build_matrix(exp).jobs[0]
    root = tmp_path / "runs"
    whole, cut = RunStore(root, "whole"), RunStore(root, "cut")

    cut.write_job(job)
    proc = _train_cli(cut.job(job.id).record)
    _wait_for_epoch(cut, job.id, 1, proc)
    proc.send_signal(signal.SIGSTOP)  # frozen: still mid-training when SIGTERM comes, however fast the machine
    assert cut.status(job.id)["epoch"] < 3, cut.status(job.id)
    proc.send_signal(signal.SIGTERM)  # as SLURM does before the time limit (or HTCondor on eviction)
    proc.send_signal(signal.SIGCONT)
    out = proc.communicate(timeout=900)[0]
    assert proc.returncode == 75 and f"job {job.id}: preempted" in out, out  # 75: run again to resume
    status = cut.status(job.id)
    assert status["state"] == "preempted" and "SIGTERM at epoch" in status["reason"]
    assert not cut.job(job.id).metrics.exists() and not cut.job(job.id).claim.exists()

    threads = torch.get_num_threads()
    try:  # the rerun (here, in this process) and an uninterrupted run, with the preempted process's one thread
        assert run_job(job, cut, threads=1) == "done"
        assert run_job(job, whole, threads=1) == "done"
    finally:
        torch.set_num_threads(threads)
    a, b = (json.loads(s.job(job.id).metrics.read_text()) for s in (whole, cut))
    assert a["test"] == b["test"] and a["val"] == b["val"] and a["params"] == b["params"]
    history = [[{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in lines] for lines in (
        s.job(job.id).history.read_text().splitlines() for s in (whole, cut)
    )]
    assert history[0] == history[1] and len(history[0]) == 3
    preds = [pl.read_parquet(s.job(job.id).predictions) for s in (whole, cut)]
    assert preds[0].equals(preds[1])
