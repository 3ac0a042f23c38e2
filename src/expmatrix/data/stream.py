"""A split of a pulse file read block by block (`data.stream`): training from a file larger than memory.

Memory holds the split's per-event arrays (direction, pulses per event, offsets, zero labels: about 44 bytes
an event) and the blocks a job is reading, never the split's pulses. A block is `read_pulses` of its events:
the same pulse selection and the same padded width as the whole split read at once, so its tokens are those
rows of the in-memory tokens. Shapes and offsets are checked when the split is opened; the pulses themselves
(counts, NaN, sensor ids) when their block is read.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from expmatrix.config import PulsesConfig
from expmatrix.data.events import Events
from expmatrix.data.pulses import PulseReader


class StreamedSplit:
    """One split, `block_events` events per block; `target`, `length`, `label`, `process` and `len` as `Events`
    has them. `ragged`: as `PulseReader.read` takes it. The file is opened for each block read."""

    def __init__(self, path: str | Path, split: str, features: tuple[str, ...], fraction: float,
                 pulses: PulsesConfig, sensors: bool, block_events: int, ragged: bool | None):  # fmt: skip
        self.path, self.block_events = Path(path), block_events
        self.reader = PulseReader(self.path, split, features, fraction, pulses, sensors)
        self.ragged = self.reader.holds_ragged(ragged)
        self.target, self.length, self.feature_names = self.reader.direction, self.reader.length, tuple(features)
        self.label = self.process = np.zeros(len(self.reader), np.int64)

    def __len__(self) -> int:
        return len(self.reader)

    @property
    def n_blocks(self) -> int:
        return math.ceil(len(self) / self.block_events)

    @property
    def slots(self) -> int:
        """Pulse slots per event of a padded block (the longest selected event of the split)."""
        return self.reader.p

    def block(self, b: int) -> Events:
        """The events of block `b` (ragged or padded to `slots`, as the split is read at once)."""
        first = b * self.block_events
        return self.reader.read(first, min(len(self), first + self.block_events), ragged=self.ragged)

    def head(self, n: int) -> Events:
        """The first `n` events (what the tokenizer is fitted on)."""
        return self.reader.read(0, min(n, len(self)), ragged=self.ragged)
