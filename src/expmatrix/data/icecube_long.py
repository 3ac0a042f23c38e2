"""Generator of long IceCube-like events (`data.synthetic.generator: long`), written in the ragged layout.

The tracks, detector, direct-light timing, noise and trigger of `icecube_synthetic.py`, with what makes
real events long:

* Brightness ``A`` (expected p.e. at 10 m from the track) is heavy-tailed: Pareto ``A = 1.5 / u`` truncated
  at 10^4, so most events are faint and a few are thousands of times brighter (the cap keeps the longest
  events near 15,000 pulses; the Kaggle data have longer ones). The expected p.e. of a sensor at
  distance ``d`` is ``A * 10 m / (d + 10 m) * exp(-d / 40 m)``: a brighter event lights sensors further from
  the track, so it holds more direction information than a faint one.
* Several pulses per sensor (DOM): of ``n`` photo-electrons the first arrives with the direct light (delay as
  in `icecube_synthetic`: exponential, mean 4 ns + 0.2 ns/m * d, 3 ns jitter); each further one is a separate
  pulse with probability 1/2 (late, scattered light: a further exponential delay of mean 30 ns + 1 ns/m * d);
  afterpulses: Poisson(0.06 n), 0.6 to 6 us after the first pulse. Charges: log-normal (sigma 0.35) about
  the first pulse's share of the p.e., about 1 p.e. for the others.
* ``auxiliary``: 1 for every pulse of a sensor without a hard local coincidence (as in `icecube_synthetic`)
  and for pulses more than 6.4 us after their sensor's first pulse (outside the coincidence readout), else 0.

Event length (pulses per event) with the defaults, 20,000 events (seed 0): see docs/icecube.md#long-events.
Its shape follows the Kaggle data ("IceCube - Neutrinos in Deep Ice", described in Bukhari et al.,
arXiv:2310.15674): most events hold tens of pulses, about 1% more than 1,000, a few more than 10,000.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from expmatrix.config.layout import SPLITS
from expmatrix.data.icecube import PULSE_FEATURES
from expmatrix.data.icecube_ragged import RaggedWriter
from expmatrix.data.icecube_synthetic import (
    ATTENUATION,
    NOISE_RATE,
    T0,
    TRIGGER,
    WINDOW,
    draw_tracks,
    local_coincidence,
    sensor_positions,
)

PARETO_SCALE, PARETO_INDEX, BRIGHTEST = 1.5, 1.0, 1e4  # brightness A = scale * u^(-1 / index), at most BRIGHTEST
LATE_SHARE = 0.5  # chance that a photo-electron after the first is a pulse of its own
LATE_DELAY = (30.0, 1.0)  # ns, ns/m: mean extra delay of late light
AFTERPULSES, AFTER_NS = 0.06, (600.0, 6000.0)  # afterpulses per p.e., their delay after the first pulse
READOUT_NS = 6400.0  # pulses later than this after their sensor's first pulse are auxiliary
CHUNK = 64  # candidate events simulated at once


def simulate_long(rng: np.random.Generator, m: int, pos: np.ndarray):
    """`m` candidate events: pulses (M, 7) in `PULSE_FEATURES` order, event by event in time order, counts (m,),
    triggered (m,) bool, direction (m, 3)."""
    direction, _, t_shift, t_geo, d = draw_tracks(rng, m, pos)
    brightness = np.minimum(PARETO_SCALE * rng.uniform(size=m) ** (-1 / PARETO_INDEX), BRIGHTEST)
    n_pe = rng.poisson(brightness[:, None] * 10 / (d + 10) * np.exp(-d / ATTENUATION))
    hit = n_pe > 0
    first = t_geo + rng.exponential(4 + 0.2 * d) + rng.normal(0, 3, d.shape)
    noise = ~hit & (rng.uniform(size=d.shape) < NOISE_RATE * (WINDOW[1] - WINDOW[0]))
    first = np.where(hit, first, np.where(noise, T0 + t_shift[:, None] + rng.uniform(*WINDOW, d.shape), np.inf))
    hlc = local_coincidence(first)
    event, sensor = np.nonzero(hit | noise)  # sensors with a first pulse, event-major
    pe = np.maximum(n_pe[event, sensor], 1)
    late = rng.binomial(pe - 1, LATE_SHARE)
    after = rng.poisson(AFTERPULSES * pe)
    t1, dist = first[event, sensor], d[event, sensor]
    # every pulse: its sensor (row of `event, sensor`) and its kind (0 first, 1 late, 2 afterpulse)
    row = np.concatenate([np.arange(len(event)), np.repeat(np.arange(len(event)), late),
                          np.repeat(np.arange(len(event)), after)])  # fmt: skip
    kind = np.concatenate([np.zeros(len(event)), np.ones(late.sum()), np.full(after.sum(), 2)]).astype(np.int8)
    delay = np.zeros(len(row))
    is_late, is_after = kind == 1, kind == 2
    delay[is_late] = rng.exponential(LATE_DELAY[0] + LATE_DELAY[1] * dist[row[is_late]])
    delay[is_after] = rng.uniform(*AFTER_NS, size=int(is_after.sum()))
    time = t1[row] + delay
    charge = np.where(kind == 0, (pe - late)[row], 1.0) * rng.lognormal(0, 0.35, len(row))
    aux = ~hlc[event[row], sensor[row]] | (delay > READOUT_NS)
    order = np.lexsort((time, event[row]))
    row, time, charge, aux = row[order], time[order], charge[order], aux[order]
    s = sensor[row]
    pulses = np.stack([time, charge, *pos[s].T, s, aux], axis=1).astype(np.float32)
    counts = np.bincount(event[row], minlength=m)
    triggered = np.bincount(event[row], weights=~aux, minlength=m) >= TRIGGER
    return pulses, counts, triggered, direction


def write_long_events(path: str | Path, events: int, seed: int) -> Path:
    """Write `events` triggered long events (80/10/10 splits) in the ragged layout, chunk by chunk; returns the
    path. The same (events, seed) give the same file."""
    rng, pos = np.random.default_rng(seed), sensor_positions()
    bounds = np.array([int(0.8 * events), int(0.9 * events), events])  # end of train, val, test
    attrs = {"generator": "expmatrix.data.icecube_long", "events": events, "seed": seed}
    have = 0
    with RaggedWriter(path, PULSE_FEATURES, attrs, geometry=pos) as out:
        while have < events:
            pulses, counts, triggered, direction = simulate_long(rng, CHUNK, pos)
            ends = np.cumsum(counts)
            keep = np.flatnonzero(triggered)[: events - have]
            rows = np.concatenate([np.arange(ends[i] - counts[i], ends[i]) for i in keep]) if len(keep) else []
            split = np.searchsorted(bounds, have + np.arange(len(keep)), side="right")
            ev_split = np.repeat(split, counts[keep])
            for k, name in enumerate(SPLITS):
                sel = split == k
                if sel.any():
                    out.append(name, pulses[rows][ev_split == k], counts[keep][sel], direction[keep][sel])
            have += len(keep)
    return Path(path)
