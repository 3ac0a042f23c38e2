"""Deterministic generator of IceCube-like muon tracks in the `icecube` pulse layout (see `icecube.py`).

A caricature with the real geometry and timing, so that direction reconstruction behaves like
the real task (learnable from pulse times and positions, not trivially):

* Detector: 86 strings on a hexagonal grid with 125 m spacing (the 86 sites nearest the centre),
  60 sensors each from z = -500 to +500 m; ``sensor_id = string * 60 + dom``.
* Event: an infinite muon track, direction isotropic, through a point uniform in a cylinder
  (r < 600 m, |z| < 600 m) around the detector; it passes that point at t0 ~ 1e4 ns.
* Light: Cherenkov photons (cone angle 41 deg, group index 1.35). A sensor at distance ``l``
  along the track from that point and ``d`` from the track sees direct light at
  ``t_geo = t0 + (l - d / tan(theta_c)) / c + n d / (c sin(theta_c))``, then an exponential
  scattering delay (mean 4 ns + 0.2 ns/m * d) and 3 ns Gaussian jitter.
* Charge: expected photo-electrons ``mu = A * 10 m / (d + 10 m) * exp(-d / 40 m)`` with A
  log-uniform in [2, 60] (the muon's brightness); hits are Poisson, charge log-normal about n_pe.
* Noise: 300 Hz per sensor over a 10 us readout window (single p.e., uniform times).
* ``auxiliary``: 0 for a pulse in a hard local coincidence (a sensor within 2 on its string hit
  within 1 us), else 1. Trigger: >= 8 such pulses (IceCube's SMT8); other events are redrawn.
* One pulse per sensor; the first ``max_pulses`` in time are kept.

With the defaults an event has 32 / 65 / 128 pulses (5th percentile / median / 95th), 13% hit the
cap of 128, about 15 are noise; 2000 events take about 2 s.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from expmatrix.config.layout import SPLITS
from expmatrix.data.icecube import PulseWriter

N_STRINGS, DOMS = 86, 60
SPACING = 125.0  # m between neighbouring strings
C = 0.299792458  # m/ns
N_GROUP = 1.35  # group index of ice
THETA_C = np.arccos(1 / 1.33)  # Cherenkov angle (phase index), ~41 deg
T0 = 1e4  # ns, time at which the muon passes the generated point
ATTENUATION = 40.0  # m
NOISE_RATE, WINDOW = 300e-9, (-4000.0, 6000.0)  # hits per ns per sensor; readout window around t0
HLC_DOMS, HLC_NS, TRIGGER = 2, 1000.0, 8
MAX_PULSES = 128
CHUNK = 256  # events simulated at once


def sensor_positions() -> np.ndarray:
    """(5160, 3) x, y, z in m, row = sensor_id."""
    q, r = np.meshgrid(np.arange(-6, 7), np.arange(-6, 7), indexing="ij")
    q, r = q.ravel(), r.ravel()
    x, y = SPACING * (q + r / 2), SPACING * r * np.sqrt(3) / 2
    dist = np.round(np.hypot(x, y), 6)
    order = np.lexsort((np.round(np.arctan2(y, x), 6), dist))[:N_STRINGS]  # nearest sites, then by angle
    z = np.linspace(500.0, -500.0, DOMS)  # dom 0 at the top, as in IceCube
    xy = np.stack([x[order], y[order]], axis=1)
    return np.concatenate([np.repeat(xy, DOMS, axis=0), np.tile(z, N_STRINGS)[:, None]], axis=1)


def unit_vector(zenith: np.ndarray, azimuth: np.ndarray) -> np.ndarray:
    """(N,) zenith, azimuth (rad) -> (N, 3) unit vectors."""
    s = np.sin(zenith)
    return np.stack([s * np.cos(azimuth), s * np.sin(azimuth), np.cos(zenith)], axis=-1)


@dataclass
class Truth:
    """What a chunk of events was generated from (for tests of the physics)."""

    direction: np.ndarray  # (m, 3) where the muon comes from
    point: np.ndarray  # (m, 3) m, passed at T0 + t_shift
    t_shift: np.ndarray  # (m,) ns
    t_geo: np.ndarray  # (m, S) ns, direct-light time at every sensor
    hit: np.ndarray  # (m, S) bool, a signal (non-noise) pulse


def arrival_times(pos: np.ndarray, point: np.ndarray, travel: np.ndarray, t0: np.ndarray):
    """Direct Cherenkov time (m, S) and distance to the track (m, S) of every sensor."""
    rel = pos[None] - point[:, None]  # (m, S, 3)
    along = np.einsum("msk,mk->ms", rel, travel)
    d = np.maximum(np.linalg.norm(rel - along[..., None] * travel[:, None], axis=-1), 0.1)
    t = t0[:, None] + (along - d / np.tan(THETA_C)) / C + N_GROUP * d / (C * np.sin(THETA_C))
    return t, d


def local_coincidence(times: np.ndarray) -> np.ndarray:
    """(m, S) hit times (inf = no hit) -> (m, S) bool: a neighbour within HLC_DOMS on the string within HLC_NS."""
    t = times.reshape(len(times), N_STRINGS, DOMS)
    hlc = np.zeros(t.shape, dtype=bool)
    for s in range(1, HLC_DOMS + 1):
        with np.errstate(invalid="ignore"):  # inf - inf
            close = np.abs(t[:, :, s:] - t[:, :, :-s]) < HLC_NS
        hlc[:, :, s:] |= close
        hlc[:, :, :-s] |= close
    return hlc.reshape(times.shape)


def draw_tracks(rng: np.random.Generator, m: int, pos: np.ndarray):
    """`m` isotropic muon tracks: direction (m, 3), point (m, 3), t_shift (m,), and per sensor the direct-light
    time t_geo (m, S) and the distance to the track d (m, S)."""
    zenith, azimuth = np.arccos(rng.uniform(-1, 1, m)), rng.uniform(0, 2 * np.pi, m)
    direction = unit_vector(zenith, azimuth)
    radius, phi = 600 * np.sqrt(rng.uniform(size=m)), rng.uniform(0, 2 * np.pi, m)
    point = np.stack([radius * np.cos(phi), radius * np.sin(phi), rng.uniform(-600, 600, m)], axis=1)
    t_shift = rng.normal(0, 300, m)
    t_geo, d = arrival_times(pos, point, -direction, T0 + t_shift)
    return direction, point, t_shift, t_geo, d


def simulate(rng: np.random.Generator, m: int, pos: np.ndarray, max_pulses: int = MAX_PULSES):
    """`m` candidate events: pulses (m, P, 7), n_pulses (m,), triggered (m,) bool, `Truth`."""
    direction, point, t_shift, t_geo, d = draw_tracks(rng, m, pos)
    brightness = np.exp(rng.uniform(np.log(2), np.log(60), m))
    mu = brightness[:, None] * 10 / (d + 10) * np.exp(-d / ATTENUATION)
    n_pe = rng.poisson(mu)
    hit = n_pe > 0
    delay = rng.exponential(4 + 0.2 * d) + rng.normal(0, 3, d.shape)
    noise = ~hit & (rng.uniform(size=d.shape) < NOISE_RATE * (WINDOW[1] - WINDOW[0]))
    noise_t = T0 + t_shift[:, None] + rng.uniform(*WINDOW, size=d.shape)
    times = np.where(hit, t_geo + delay, np.where(noise, noise_t, np.inf))
    charge = np.where(hit, n_pe, 1) * rng.lognormal(0, 0.35, d.shape)
    aux = ~local_coincidence(times)
    order = np.argsort(times, axis=1, kind="stable")[:, :max_pulses]  # earliest first
    n_pulses = np.minimum(np.isfinite(times).sum(axis=1), max_pulses)
    real = np.arange(max_pulses)[None] < n_pulses[:, None]
    sensor = order.astype(np.float64)
    cols = [np.take_along_axis(times, order, 1), np.take_along_axis(charge, order, 1), *pos[order].transpose(2, 0, 1),
            sensor, np.take_along_axis(aux, order, 1).astype(np.float64)]  # fmt: skip
    pulses = np.where(real[..., None], np.stack(cols, axis=-1), 0.0).astype(np.float32)
    triggered = (np.isfinite(times) & ~aux).sum(axis=1) >= TRIGGER
    return pulses, n_pulses, triggered, Truth(direction, point, t_shift, t_geo, hit)


def generate(events: int, seed: int, max_pulses: int = MAX_PULSES) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`events` triggered events: pulses (N, P, 7) float32, n_pulses (N,) int32, direction (N, 3) float64."""
    rng, pos = np.random.default_rng(seed), sensor_positions()
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    have = 0
    while have < events:
        pulses, n, trig, truth = simulate(rng, CHUNK, pos, max_pulses)
        parts.append((pulses[trig], n[trig], truth.direction[trig]))
        have += int(trig.sum())
    pulses, n, direction = (np.concatenate(p)[:events] for p in zip(*parts, strict=True))
    return pulses, n.astype(np.int32), direction


def write_icecube(path: str | Path, events: int, seed: int, max_pulses: int = MAX_PULSES) -> Path:
    """Write a synthetic `icecube` pulse file (80/10/10 splits) atomically; returns the path."""
    pulses, n, direction = generate(events, seed, max_pulses)
    n_train, n_val = int(0.8 * events), int(0.1 * events)
    bounds = {"train": (0, n_train), "val": (n_train, n_train + n_val), "test": (n_train + n_val, events)}
    attrs = {"generator": "expmatrix.data.icecube_synthetic", "events": events, "seed": seed}
    with PulseWriter(path, max_pulses, attrs) as out:
        for split in SPLITS:
            rows = slice(*bounds[split])
            out.append(split, pulses[rows], n[rows], direction[rows].astype(np.float32))
    return Path(path)
