"""Matrix runner costs: expanding and planning a 10,000-job grid, and the per-job overhead of a
local worker (process start, imports, data load from the cache, tokenizer fit from the cache).

Targets (issue 5): expand + plan < 2 s for 10,000 jobs; per-job overhead < 3 s. Each figure is
printed beside its target and, for the per-job overhead, beside the training time of the same job.

    python benchmarks/runner_overhead.py
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from expmatrix.datafiles import prepare_data
from expmatrix.matrix import build_matrix
from expmatrix.monitor import counts, job_states
from expmatrix.runfiles import read_json
from expmatrix.store import RunStore

REPO = Path(__file__).resolve().parents[1]


def grid(folder: Path, seeds: int, epochs: int = 1) -> Path:
    spec = {
        "name": "bench",
        "presets": str(REPO / "tokenizers"),
        "data": {"path": "synthetic", "synthetic": {"events": 100_000, "seed": 0}},
        "base": {"model": {"target_params": 20_000, "layers": 2, "heads": 4}, "train": {"epochs": epochs}},
        "factors": {
            "tokenizer": ["direct", "binned_ambre5"],
            "model.pooling": ["cls", "mean", "max"],
            "train.lr": [round(1e-4 * (i + 1), 6) for i in range(20)],
            "train.weight_decay": [0.0, 0.01, 0.02, 0.05, 0.1],
        },
        "seeds": list(range(seeds)),
    }
    path = folder / "bench.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        exp = grid(tmp, seeds=17)  # 600 cells x 17 seeds = 10,200 jobs
        matrix, expand = timed(lambda: build_matrix(exp))
        store = RunStore(tmp / "runs", "bench")
        states, plan = timed(lambda: job_states(matrix, store))
        total = expand + plan
        print(f"grid: {len(matrix.jobs):,} jobs in {len(matrix.cells)} cells; {counts(states)}")
        print(f"  expand {expand:.2f} s + plan {plan:.2f} s = {total:.2f} s   target 2.00 s   ratio {total / 2:.2f}")

        small = matrix
        jobs = [j for j in small.jobs if j.levels["train.weight_decay"] == "0.0" and j.levels["train.lr"] == "0.0001"]
        jobs = [j for j in jobs if j.seed == 0][:4]
        prepare_data(jobs[:1], store)  # the synthetic file, generated once (not per-job cost)
        _, imports = timed(
            lambda: subprocess.run([sys.executable, "-c", "import expmatrix.training.job, expmatrix.executors.pool"])
        )
        from expmatrix.executors.local import run_local
        from expmatrix.matrix import Matrix

        sub = Matrix(small.spec, small.path, jobs, small.factor_names, small.settings)
        _, wall = timed(lambda: run_local(sub, store, workers=1))
        train = [read_json(store.job(j.id).metrics)["train_seconds"] for j in jobs]
        per_job = (wall - sum(train)) / len(jobs)
        print(f"per job ({len(jobs)} jobs, 1 epoch on 80k events, one worker in-process):")
        print(f"  wall {wall / len(jobs):.2f} s, of which training {sum(train) / len(jobs):.2f} s")
        print(f"  overhead (data load from cache, tokenizer from cache, model, writes) {per_job:.2f} s")
        print(f"  + worker process start and imports {imports:.2f} s (once per pool worker)")
        print(f"  = {per_job + imports:.2f} s at worst   target 3.00 s   ratio {(per_job + imports) / 3:.2f}")


if __name__ == "__main__":
    main()
