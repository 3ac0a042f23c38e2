"""Checkpoint files and the training position they record: the trainer's and the pretraining loop's.

A checkpoint holds everything a run needs to continue bitwise-identically on CPU: model,
optimizer, scheduler, EMA and best weights, RNG states, the history so far, and the
position in the data order (epoch and next batch), so a preempted run resumes mid-epoch.
"""

from __future__ import annotations

import io
import pickle
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from expmatrix.runfiles import DamagedFile, atomic_write


@dataclass
class Position:
    """Where training continues: the 0-based epoch and the next batch within it."""

    epoch: int = 0
    batch: int = 0


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Atomic: a temp file in the same folder, then rename (a kill mid-write leaves the previous one)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write(path, buffer.getvalue())


def load_checkpoint(path: Path, job_id: str | None = None) -> dict[str, Any] | None:
    """The saved state, None without a checkpoint; `DamagedFile` if torch cannot read it."""
    if not path.exists():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError) as e:  # what a cut file raises
        raise DamagedFile(path, f"unreadable checkpoint: {' '.join(str(e).split())[:200]}", job_id) from None


def checkpoint_position(path: Path, job_id: str) -> Position | None:
    """Where the checkpoint at `path` continues (None without one); `DamagedFile` if it cannot be loaded."""
    state = load_checkpoint(path, job_id)
    return None if state is None else Position(**state.get("position", {}))


def rng_state(device: torch.device) -> dict[str, Any]:
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and state["cuda"] is not None:
        torch.cuda.set_rng_state(state["cuda"], device)
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


def epoch_order(n: int, seed: int, epoch: int, device: torch.device) -> torch.Tensor:
    """The shuffled event order of one epoch: a pure function of (seed, epoch)."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch)).to(device)


def block_order(n: int, block: int, seed: int, epoch: int, device: torch.device) -> torch.Tensor:
    """The epoch order of events read in blocks of `block` events: the blocks in a shuffled order, the events of
    each block in a shuffled order, so that consecutive batches read one block; a pure function of (seed,
    epoch), `epoch_order` itself when one block holds every event."""
    if block >= n:
        return epoch_order(n, seed, epoch, device)
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    blocks = torch.randperm(-(-n // block), generator=generator).tolist()
    parts = [b * block + torch.randperm(min(block, n - b * block), generator=generator) for b in blocks]
    return torch.cat(parts).to(device)
