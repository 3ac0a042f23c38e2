"""Peak memory and training speed of a job that holds its splits in memory against the same job streaming them
from the file (`data.stream`), at growing numbers of events, side by side in one run.

The job is `experiments/icecube_long_pairs.yaml`'s (60k parameters, `direct_icecube`, long events written ragged)
with `data.max_events` events for training (and val/test in proportion) and one epoch. Each (events, mode) runs
in its own process, so that its peak resident memory (`ru_maxrss`) is its own; printed are that peak, the
memory the data took before training (resident after the tokens were made, less before), and events/s over the
epoch (validation included). Streamed, the tokenizer is fitted on the first `--fit` events and the splits are
read `--block` events at a time: memory should stay flat as the events grow, in memory it grows with them.

    python benchmarks/stream_memory.py [--events 2000,4000,8000] [--block 1024] [--reader hierarchical]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from tabulate import tabulate

from expmatrix.assembly.parts import Assembly
from expmatrix.matrix import build_matrix
from expmatrix.store import RunStore
from expmatrix.training.trainer import Trainer

REPO = Path(__file__).resolve().parents[1]
EXPERIMENT = REPO / "experiments" / "icecube_long_pairs.yaml"  # 10,000 events: 8,000 for training


def resident_mb() -> float:
    """The process's resident memory now (Linux: /proc/self/statm)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * resource.getpagesize() / 2**20


def one(events: int, block: int | None, fit: int, reader: str, runs: str, threads: int) -> dict:
    """One epoch of the job in this process: its memory and events/s."""
    torch.set_num_threads(threads)
    overrides = {"data.max_events": events, "train.epochs": 1}
    if block:
        overrides |= {"data.stream.block_events": block, "data.stream.fit_events": fit}
    matrix = build_matrix(EXPERIMENT, overrides=overrides)
    job = next(j for j in matrix.jobs if j.levels["reader"] == reader and j.seed == 0)
    before = resident_mb()
    parts = Assembly(job, RunStore(runs, matrix.spec.name))
    train, val = (parts.tokens["train"], parts.targets["train"]), (parts.tokens["val"], parts.targets["val"])
    data = resident_mb() - before
    torch.manual_seed(0)
    trainer = Trainer(parts.model(), job.config.train, "cpu", len(train[1]), job.config.seed)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        history = trainer.fit(train, val, Path(tmp) / "c.pt")
        seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"events": len(train[1]), "data_mb": data, "peak_mb": peak, "events_per_s": len(train[1]) / seconds,
            "val_angle": history[-1]["val_angle"]}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", default="2000,4000,8000", help="training events (data.max_events)")
    p.add_argument("--block", type=int, default=1024, help="data.stream.block_events")
    p.add_argument("--fit", type=int, default=1000, help="data.stream.fit_events")
    p.add_argument("--reader", default="hierarchical", choices=["hierarchical", "flat_L128_nonaux"])
    p.add_argument("--runs", default=str(REPO / "runs"), help="runs root whose _cache holds (or gets) the events")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--one", nargs=2, type=int, metavar=("EVENTS", "BLOCK"), help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.one:
        print(json.dumps(one(a.one[0], a.one[1] or None, a.fit, a.reader, a.runs, a.threads)))
        return
    rows = []
    for events in (int(x) for x in a.events.split(",")):
        for block in (0, a.block):
            cmd = [sys.executable, __file__, "--one", str(events), str(block), "--fit", str(a.fit), "--reader",
                   a.reader, "--runs", a.runs, "--threads", str(a.threads)]  # fmt: skip
            run = subprocess.run(cmd, capture_output=True, text=True, cwd=Path(__file__).parent)
            mode = f"stream, blocks of {block}" if block else "in memory"
            if run.returncode:
                rows.append([events, mode, "failed: " + run.stderr.strip().splitlines()[-1], "", "", ""])
                continue
            r = json.loads(run.stdout.strip().splitlines()[-1])
            rows.append([r["events"], mode, f"{r['data_mb']:.0f}", f"{r['peak_mb']:.0f}",
                         f"{r['events_per_s']:.0f}", f"{r['val_angle']:.3f}"])  # fmt: skip
            print(*rows[-1], sep="\t", flush=True)
    print(tabulate(rows, ["training events", "splits", "data MB", "peak MB", "events/s", "val angle"], "github"))


if __name__ == "__main__":
    main()
