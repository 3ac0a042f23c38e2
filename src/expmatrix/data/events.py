"""The in-memory event table every source produces and every tokenizer consumes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Events:
    """One split of events, already reduced to the features a job selected.

    Shape:
        ids:      (N, O)     int64, object-type id per slot, 0 = empty slot
        cont:     (N, O, F)  float32, the selected continuous features per object
        globals_: (N, G)     float32 (MET, MET-phi) or None when MET is off
        label:    (N,)       int64 class index (binary: 1 = the declared signal); 0 for a regression source
        process:  (N,)       int64 process id as stored in the file; 0 for a regression source
        target:   (N, 3)     float32 regression target (IceCube: the unit direction) or None
        sensors:  (N, O, 4)  float32 sensor_id, x, y, z of each pulse (the hierarchical model's DOMs) or None
        length:   (N,)       int64 pulses of the event in the file, before any selection (pulse sources) or None
    """

    ids: np.ndarray
    cont: np.ndarray
    globals_: np.ndarray | None
    label: np.ndarray
    process: np.ndarray
    feature_names: tuple[str, ...]
    target: np.ndarray | None = None
    sensors: np.ndarray | None = None
    length: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.label)

    @property
    def real(self) -> np.ndarray:
        """(N, O) bool: slots that hold an object."""
        return self.ids > 0

    def rows(self, s: slice) -> Events:
        """The events in `s` (views, not copies)."""
        def part(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[s]

        return Events(self.ids[s], self.cont[s], part(self.globals_), self.label[s], self.process[s],
                      self.feature_names, part(self.target), part(self.sensors), part(self.length))  # fmt: skip


def split_holdout(n: int, share: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(training events, held-out events) of a seeded permutation: what a pretraining checks itself on."""
    order = rng.permutation(n)
    n_hold = max(1, int(round(share * n)))
    return np.sort(order[n_hold:]), np.sort(order[:n_hold])
