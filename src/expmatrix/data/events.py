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
        offsets:  (N + 1,)   int64 or None. Set: the events are ragged, and ids, cont and sensors hold every pulse
                  as one slot, (M, 1, ...), event i in rows offsets[i] .. offsets[i + 1] - 1; the rest is per event
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
    offsets: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.label)

    def pulse_view(self) -> Events:
        """Every real object as an event of one slot, event after event (ragged events: as they are held): what
        a tokenizer of pulses fits on, the same rows from either layout."""
        if self.offsets is None:
            real = self.real
            sensors = None if self.sensors is None else self.sensors[real][:, None]
            ids, cont = self.ids[real][:, None], self.cont[real][:, None]
        else:
            ids, cont, sensors = self.ids, self.cont, self.sensors
        zeros = np.zeros(len(ids), np.int64)
        return Events(ids, cont, None, zeros, zeros, self.feature_names, sensors=sensors)

    def padded(self, rows: slice = slice(None)) -> Events:
        """The events `rows` of ragged events as one table (n, their longest event, ...), zeros after each
        event's pulses (padded events: their `rows`)."""
        if self.offsets is None:
            return self.rows(rows)
        first, stop, _ = rows.indices(len(self))
        offsets = self.offsets[first : stop + 1]
        counts = np.diff(offsets)
        pulses, width = slice(offsets[0], offsets[-1]), int(counts.max(initial=1))

        def table(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else pad(a[pulses, 0], counts, width)

        def part(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[first:stop]

        return Events(table(self.ids), table(self.cont), part(self.globals_), self.label[first:stop],
                      self.process[first:stop], self.feature_names, part(self.target), table(self.sensors),
                      part(self.length))  # fmt: skip

    def padded_chunks(self, max_slots: int) -> list[slice]:
        """Consecutive ragged events whose padded table holds at most `max_slots` slots (an event longer alone)."""
        return slot_batches(np.diff(self.offsets).tolist(), len(self), max_slots)

    @property
    def real(self) -> np.ndarray:
        """(N, O) bool: slots that hold an object."""
        return self.ids > 0

    def rows(self, s: slice) -> Events:
        """The events in `s` (views, not copies; padded events)."""
        if self.offsets is not None:
            raise ValueError("rows() of ragged events: take rows of their pulse_view() or padded()")

        def part(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[s]

        return Events(self.ids[s], self.cont[s], part(self.globals_), self.label[s], self.process[s],
                      self.feature_names, part(self.target), part(self.sensors), part(self.length))  # fmt: skip


def pad(flat: np.ndarray, counts: np.ndarray, p: int) -> np.ndarray:
    """(M, ...) rows of len(counts) events, one event after the other -> (m, p, ...), zeros after each event's."""
    out = np.zeros((len(counts), p, *flat.shape[1:]), flat.dtype)
    out[np.arange(p)[None, :] < counts[:, None]] = flat
    return out


def slot_batches(lengths: list[int], max_events: int, max_slots: int) -> list[slice]:
    """Consecutive sequences of `lengths` in slices of at most `max_events`, each padded batch (its size x its
    longest) within `max_slots` slots; a sequence longer than that on its own."""
    out, start = [], 0
    while start < len(lengths):
        stop, longest = start + 1, lengths[start]
        while stop < len(lengths) and stop - start < max_events:
            longest = max(longest, lengths[stop])
            if (stop - start + 1) * longest > max_slots:
                break
            stop += 1
        out.append(slice(start, stop))
        start = stop
    return out


def split_holdout(n: int, share: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(training events, held-out events) of a seeded permutation: what a pretraining checks itself on."""
    order = rng.permutation(n)
    n_hold = max(1, int(round(share * n)))
    return np.sort(order[n_hold:]), np.sort(order[:n_hold])
