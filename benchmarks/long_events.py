"""Peak memory and training speed against event length: the flat model on every pulse, the flat model on the
first 192 pulses, and the hierarchical model on every pulse, side by side in one run.

Each event of a batch has exactly `length` pulses on `length / 3` sensors (at most 5160), drawn Zipf-like so
that most sensors hold one or two pulses and a few hold many, as in long IceCube events. The models are the
direct IceCube tokenizer's at the same parameter budget (200k, 4 layers, 4 heads: experiments/
icecube_long_events.yaml). One training step is forward, backward and an AdamW step on a batch. Each (model,
length) runs in its own process, so that its peak resident memory (`ru_maxrss`) is its own: printed are that
peak and its growth during the training steps, and events/s (the best of `--steps` steps).

    python benchmarks/long_events.py [--lengths 128,512,2048,8192] [--batch 8] [--steps 2] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from tabulate import tabulate
from timing import best

from expmatrix.assembly.fits import tokenizer_for
from expmatrix.config import JobConfig, ModelConfig, Presets, TrainConfig
from expmatrix.data.events import Events
from expmatrix.data.icecube_synthetic import sensor_positions
from expmatrix.models.sizing import build_model, solve_size
from expmatrix.training.trainer import Trainer

MODELS = {  # name -> (model kind, pulses the model sees: None = all)
    "flat-all": ("flat", None),
    "flat-L192": ("flat", 192),
    "hierarchical": ("hierarchical", None),
}
FEATURES = ("time", "charge", "x", "y", "z")  # what direct_icecube reads
PRESETS = Path(__file__).resolve().parents[1] / "tokenizers" / "icecube"


def batch_events(batch: int, length: int, seed: int = 0) -> Events:
    """`batch` events of `length` time-ordered pulses each, with their sensors (sensor_id, x, y, z)."""
    rng, pos = np.random.default_rng(seed), sensor_positions()
    n_sensors = min(len(pos), max(1, length // 3))
    weight = 1.0 / np.arange(1, n_sensors + 1)
    sensor = np.stack([rng.permutation(len(pos))[rng.choice(n_sensors, length, p=weight / weight.sum())]
                       for _ in range(batch)])  # fmt: skip
    time = np.sort(1e4 + rng.exponential(800, (batch, length)), axis=1)
    cont = np.stack([time, rng.lognormal(0, 0.5, (batch, length)), *pos[sensor].transpose(2, 0, 1)], -1)
    sensors = np.concatenate([sensor[..., None], pos[sensor]], -1).astype(np.float32)
    zeros = np.zeros(batch, np.int64)
    target = rng.normal(size=(batch, 3))
    return Events(np.ones((batch, length), np.int64), cont.astype(np.float32), None, zeros, zeros, FEATURES,
                  (target / np.linalg.norm(target, axis=1, keepdims=True)).astype(np.float32), sensors)  # fmt: skip


def one(model_name: str, length: int, batch: int, steps: int, threads: int) -> dict:
    """Train `steps` steps of one model at one length in this process: events/s and memory."""
    torch.set_num_threads(threads)
    kind, keep = MODELS[model_name]
    events = batch_events(batch, length)
    if keep is not None:
        events = Events(events.ids[:, :keep], events.cont[:, :keep], None, events.label, events.process, FEATURES,
                        events.target, events.sensors[:, :keep])  # fmt: skip
    preset = Presets(PRESETS).get("direct_icecube", "benchmark")
    tok = tokenizer_for(JobConfig.model_validate({"data": {"source": "icecube"}, "tokenizer": preset,
                                                  "train": {"loss": "vmf"}}))  # fmt: skip
    tok.fit(events)
    tokens = tok.transform(events)
    if kind == "hierarchical":
        tokens |= {"sensor": torch.from_numpy(events.sensors[..., 0]).int(),
                   "sensor_xyz": torch.from_numpy(events.sensors[..., 1:]).contiguous()}  # fmt: skip
    cfg = ModelConfig(target_params=200_000, layers=4, heads=4, kind=kind)
    size = solve_size(tok, cfg, 3, tokens["mask"].shape[1])
    torch.manual_seed(0)
    model = build_model(tok, cfg, size, 3, tokens["mask"].shape[1])
    trainer = Trainer(model, TrainConfig(loss="vmf", batch_size=batch, epochs=1), "cpu", batch)
    target, idx = torch.from_numpy(events.target), torch.arange(batch)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    seconds = best(lambda: trainer.train_step(tokens, target, idx), steps)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"model": model_name, "length": length, "params": size.params, "events_per_s": batch / seconds,
            "peak_mb": peak / 1024, "growth_mb": (peak - before) / 1024}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lengths", default="128,512,2048,8192")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--one", nargs=2, metavar=("MODEL", "LENGTH"), help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.one:
        print(json.dumps(one(a.one[0], int(a.one[1]), a.batch, a.steps, a.threads)))
        return
    rows = []
    for length in (int(x) for x in a.lengths.split(",")):
        for name in a.models.split(","):
            cmd = [sys.executable, __file__, "--one", name, str(length), "--batch", str(a.batch), "--steps",
                   str(a.steps), "--threads", str(a.threads)]  # fmt: skip
            run = subprocess.run(cmd, capture_output=True, text=True, cwd=Path(__file__).parent)
            if run.returncode:
                rows.append([name, length, "", "failed: " + run.stderr.strip().splitlines()[-1], "", ""])
                continue
            r = json.loads(run.stdout.strip().splitlines()[-1])
            rows.append([name, length, r["params"], f"{r['events_per_s']:.2f}", f"{r['peak_mb']:.0f}",
                         f"{r['growth_mb']:.0f}"])  # fmt: skip
            print(*rows[-1], sep="\t", flush=True)
    print(tabulate(rows, ["model", "pulses/event", "params", "events/s", "peak MB", "growth MB"], "github"))


if __name__ == "__main__":
    main()
