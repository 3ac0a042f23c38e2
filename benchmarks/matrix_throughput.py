"""Aggregate training throughput of K thesis-shaped jobs trained at once on this machine's device.

Each job is a process of its own (spawned, as the workers of `expmatrix run` and the jobs of a packed
array task are), training the thesis model (direct tokenizer on the flagship data: 18 objects with the
5-vector + MET, 400k parameters, 8 layers, 8 heads, batch 64, experiments/binning_vs_direct.yaml) with
the job's `Trainer` on its own copy of the data. The machine's threads (or --threads) are split among
the K jobs. All jobs start their timed steps together; the aggregate is every job's events over the
span from the first start to the last end. Rounds alternate over the K values and the median of each is
reported, so that other load on the machine slows every K alike. Printed for each K: events/s, the ratio to one job, the
ratio to the research code's 2,300 events/s, and the projected wall time of the 36-run and the 108-run
(3-seed) matrix at 241,658 training events x 50 epochs. On CUDA also bf16 and bf16 + CUDA graphs
(`train.fixed_shape: pad`, `train.compile: reduce-overhead`) rows, and the GPU memory of one job.

    python benchmarks/matrix_throughput.py [--ks 1,2,4,8,16] [--steps 60] [--rounds 3] [--threads N] [--events 20000]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from train_throughput import events_per_second  # benchmarks/train_throughput.py, beside this script

from expmatrix.config import DataConfig, DirectTokenizerConfig, ModelConfig, TrainConfig
from expmatrix.data import load_splits
from expmatrix.models.sizing import build_model, solve_size
from expmatrix.tokenizers import build_tokenizer
from expmatrix.tokenizers.base import to_device
from expmatrix.training.trainer import Trainer

RESEARCH_EVENTS_PER_SECOND = 2_300  # the research code: 36 models one after another in 51.4 h on one GPU
TRAIN_EVENTS, EPOCHS, BATCH = 241_658, 50, 64  # the real file's training split, the thesis epochs and batch
MATRICES = {"36 runs": 36, "108 runs": 108}  # the user's matrix, and with 3 seeds
DATA = {"cont_features": [0, 1, 2, 3], "use_met": True}  # the 5-vector + MET: the widest cell of the flagship


def job(data: dict, cache: str, train: dict, threads: int, steps: int, warmup: int, start: Any, out: Any) -> None:
    """One job, in its own process: build, warm up, wait for the others, train `steps` timed steps."""
    torch.set_num_threads(threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    split = load_splits(DataConfig(**data), "synthetic", Path(cache))["train"]
    tok = build_tokenizer(DirectTokenizerConfig(kind="direct", name="direct"), split.feature_names, True)
    tok.fit(split)
    x, y = to_device(tok.transform(split), device), torch.from_numpy(split.label).to(device)
    cfg = ModelConfig(target_params=400_000, layers=8, heads=8, pooling="mean")
    seq = x["mask"].shape[1]
    model = build_model(tok, cfg, solve_size(tok, cfg, 2, seq), 2, seq).to(device)
    trainer = Trainer(model, TrainConfig(batch_size=BATCH, warmup_steps=0, **train), device, len(y))
    events_per_second(trainer, x, y, BATCH, warmup, 0)  # warm-up (and compilation, CUDA graph capture)
    start.wait()
    t0 = time.monotonic()
    events_per_second(trainer, x, y, BATCH, steps, warmup)
    t1 = time.monotonic()
    memory = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None
    out.put((t0, t1, steps * BATCH, memory))


def run_k(k: int, args: argparse.Namespace, train: dict, cache: str) -> dict[str, float | None]:
    """K jobs at once: aggregate events/s (first start to last end) and the largest GPU memory of one job."""
    ctx = mp.get_context("spawn")
    start, out = ctx.Barrier(k), ctx.Queue()
    data = {**DATA, "synthetic": {"events": args.events, "seed": 0}}
    threads = max(1, args.threads // k)
    procs = [
        ctx.Process(target=job, args=(data, cache, train, threads, args.steps, args.warmup, start, out))
        for _ in range(k)
    ]
    for p in procs:
        p.start()
    results = [out.get(timeout=3600) for _ in procs]
    for p in procs:
        p.join()
    span = max(r[1] for r in results) - min(r[0] for r in results)
    memory = [r[3] for r in results if r[3] is not None]
    return {"events_per_s": sum(r[2] for r in results) / span, "threads": threads, "memory": max(memory, default=None)}


def median(rows) -> dict[str, Any]:
    """The round with the median events/s (its memory and threads with it)."""
    rows = sorted(rows, key=lambda r: r["events_per_s"])
    return {**rows[len(rows) // 2], "events_per_s": statistics.median(r["events_per_s"] for r in rows)}


def hours(events_per_s: float, runs: int) -> str:
    seconds = runs * TRAIN_EVENTS * EPOCHS / events_per_s
    return f"{seconds / 3600:.1f} h"


def print_mode(name: str, rows: dict[int, dict]) -> None:
    one = rows[min(rows)]["events_per_s"]
    print(f"\n{name}")
    head = f"{'K':>3} {'threads/job':>11} {'events/s':>10} {'x one job':>9} {'x research':>10}"
    head += "".join(f" {m:>9}" for m in MATRICES) + (" GPU MiB/job" if rows[min(rows)]["memory"] else "")
    print(head)
    for k, r in rows.items():
        rate = r["events_per_s"]
        line = f"{k:>3} {r['threads']:>11} {rate:>10,.0f} {rate / one:>9.2f} {rate / RESEARCH_EVENTS_PER_SECOND:>10.2f}"
        line += "".join(f" {hours(rate, n):>9}" for n in MATRICES.values())
        print(line + (f" {r['memory']:>11,.0f}" if r["memory"] else ""))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--ks", default="1,2,4,8,16", help="numbers of concurrent jobs")
    p.add_argument("--steps", type=int, default=60, help="timed optimizer steps per job")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps per job first (compilation)")
    p.add_argument("--rounds", type=int, default=3, help="rounds over the K values; the median is printed")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="CPU threads shared by the K jobs")
    p.add_argument("--events", type=int, default=20_000, help="synthetic events (each job trains on 80%%)")
    p.add_argument("--no-graphs", action="store_true", help="CUDA: skip the bf16 + CUDA graph rows")
    args = p.parse_args()
    ks = sorted({int(k) for k in args.ks.split(",")})
    modes = {"fp32 (CPU: packed real tokens)": {"amp": "off"}}
    if torch.cuda.is_available():
        modes = {"fp32": {"amp": "off"}, "bf16": {"amp": "bf16"}}
        if not args.no_graphs:
            modes["bf16 + CUDA graphs"] = {"amp": "bf16", "fixed_shape": "pad", "compile": "reduce-overhead"}
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU, {args.threads} threads"
    print(f"device {device}; thesis jobs (400k parameters, 8 layers, batch {BATCH}); {args.steps} timed steps per job")
    print(f"projections: {TRAIN_EVENTS:,} training events x {EPOCHS} epochs per run; research code "
          f"{RESEARCH_EVENTS_PER_SECOND:,} events/s")  # fmt: skip
    with tempfile.TemporaryDirectory() as cache:
        load_splits(DataConfig(**DATA, synthetic={"events": args.events, "seed": 0}), "synthetic", Path(cache))
        for name, train in modes.items():
            rounds = [{k: run_k(k, args, train, cache) for k in ks} for _ in range(args.rounds)]
            print_mode(name, {k: median(r[k] for r in rounds) for k in ks})


if __name__ == "__main__":
    main()
