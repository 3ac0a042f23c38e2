"""Where the workers of one machine run: how many, on which GPU, with how many CPU threads.

A small job (a 400k-parameter transformer at batch 64) uses a few per cent of a GPU, so several
workers share one: worker `w` sees only GPU `gpus[w % len(gpus)]` (its `CUDA_VISIBLE_DEVICES`, set
before torch starts CUDA in that process) and the CPU threads are split among all workers. Without a
GPU nothing changes: one worker per CPU by default. `place` is a pure function; `visible_gpus` asks torch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from expmatrix.config import SpecError

WORKERS_PER_GPU = 4  # default workers per GPU (benchmarks/matrix_throughput.py measures the best packing)


@dataclass(frozen=True)
class Placement:
    """`workers` processes, `threads` torch threads each; `devices[w]` is the CUDA_VISIBLE_DEVICES of worker
    slot `w` (empty on a CPU machine)."""

    workers: int
    threads: int
    devices: tuple[str, ...] = ()

    def env(self, slot: int) -> dict[str, str]:
        """The environment worker slot `slot` starts with."""
        return {"CUDA_VISIBLE_DEVICES": self.devices[slot]} if self.devices else {}


def parse_gpus(text: str | None) -> list[int] | None:
    """`--gpus 0,1` -> [0, 1]; None stays None (all visible GPUs)."""
    if text is None:
        return None
    try:
        gpus = [int(part) for part in text.split(",")]
    except ValueError:
        raise SpecError(f"--gpus {text}: expected device indices separated by commas, e.g. 0,1") from None
    if len(set(gpus)) != len(gpus) or min(gpus) < 0:
        raise SpecError(f"--gpus {text}: expected distinct device indices >= 0")
    return gpus


def place(
    visible: list[str],
    cpus: int,
    jobs: int,
    workers: int | None = None,
    threads: int | None = None,
    gpus: list[int] | None = None,
) -> Placement:
    """Workers for `jobs` jobs on a machine with `cpus` CPUs and the GPUs `visible` (as CUDA_VISIBLE_DEVICES
    names them; index i is torch's `cuda:i`). `gpus` picks among them [default: all]; `workers` defaults to
    `WORKERS_PER_GPU` per GPU (at most one per CPU), or the CPU count without a GPU; never more than `jobs`."""
    if gpus is not None:
        missing = [g for g in gpus if g >= len(visible)]
        if missing:
            there = f"visible: {', '.join(map(str, range(len(visible))))}" if visible else "no CUDA device is visible"
            raise SpecError(f"--gpus {','.join(map(str, gpus))}: no device {missing[0]} on this machine ({there})")
    chosen = [visible[g] for g in (gpus if gpus is not None else range(len(visible)))]
    if workers is None:
        workers = max(len(chosen), min(WORKERS_PER_GPU * len(chosen), cpus)) if chosen else cpus
    workers = max(1, min(workers, jobs))
    threads = threads or max(1, cpus // workers)
    return Placement(workers, threads, tuple(chosen[w % len(chosen)] for w in range(workers)) if chosen else ())


def visible_gpus() -> list[str]:
    """The CUDA devices this process may use, as CUDA_VISIBLE_DEVICES names them ([] without CUDA)."""
    import torch

    if not torch.cuda.is_available():
        return []
    count = torch.cuda.device_count()
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    names = [d.strip() for d in listed.split(",") if d.strip()] if listed else [str(i) for i in range(count)]
    return names[:count]
