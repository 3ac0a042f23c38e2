"""Deterministic generator of a 4-top-like data set in the exact `4tops_splitted.h5` layout.

The physics is a caricature, tuned so that the task behaves like the real one:
4t events have more jets and b-jets, higher HT and MET than tt+X, but the
distributions overlap so a good classifier reaches an AUROC of about 0.85,
not 0.99. Energies are in GeV; every event passes HT > 400 GeV.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
from scipy.special import ndtr, ndtri

from expmatrix.config.layout import DEFAULT_KEYS, N_COLUMNS, N_OBJECTS, SPLITS

HT_CUT = 400.0  # GeV, applied to jets + leptons
MAX_JETS, MAX_LEPTONS, MAX_PHOTONS = 13, 4, 1


@dataclass(frozen=True)
class Process:
    """Per-process knobs: multiplicities and energy scales (GeV)."""

    weight: float
    jets: tuple[int, int, float]  # min jets, binomial n, binomial p
    true_b: tuple[int, float]  # 2 b from tt, plus 2 more with this probability (4 for 4t)
    leptons: tuple[float, ...]  # P(0..4 leptons)
    jet_pt: float  # exponential scale above 25 GeV
    met: float  # gamma(k=2) scale


PROCESSES = {
    1: Process(0.44, (3, 9, 0.50), (4, 0.0), (0.30, 0.38, 0.24, 0.06, 0.02), 46.0, 32.0),  # 4t
    2: Process(0.18, (2, 9, 0.46), (2, 0.58), (0.42, 0.40, 0.15, 0.03, 0.00), 46.0, 27.0),  # ttH
    3: Process(0.17, (2, 9, 0.38), (2, 0.00), (0.15, 0.45, 0.32, 0.08, 0.00), 44.0, 33.0),  # ttW
    4: Process(0.04, (2, 9, 0.44), (2, 0.00), (0.15, 0.35, 0.32, 0.14, 0.04), 45.0, 35.0),  # ttWW
    5: Process(0.17, (2, 9, 0.44), (2, 0.15), (0.30, 0.35, 0.25, 0.08, 0.02), 44.0, 27.0),  # ttZ
}
B_TAG_EFF, MISTAG = 0.77, 0.03


def _truncated_normal(rng: np.random.Generator, sigma: float, limit: float, shape) -> np.ndarray:
    """Normal(0, sigma) restricted to |x| < limit, by inverse CDF (no rejection loop)."""
    lo = ndtr(-limit / sigma)
    u = rng.uniform(lo, 1.0 - lo, size=shape)
    return ndtri(u) * sigma


def _objects(rng, n, n_max, pt_min, pt_scale, eta_sigma, eta_max, mass_frac):
    """pT, eta, phi, E of up to `n_max` objects per event; slots >= n are empty."""
    m = len(n)
    live = np.arange(n_max)[None, :] < n[:, None]
    pt = pt_min + rng.exponential(1.0, size=(m, n_max)) * pt_scale[:, None]
    eta = _truncated_normal(rng, eta_sigma, eta_max, (m, n_max))
    phi = rng.uniform(-np.pi, np.pi, size=(m, n_max))
    mass = pt * rng.uniform(*mass_frac, size=(m, n_max))
    energy = np.sqrt((pt * np.cosh(eta)) ** 2 + mass**2)  # E >= pT cosh(eta)
    return live, pt, eta, phi, energy


def _chunk(rng: np.random.Generator, m: int) -> tuple[np.ndarray, np.ndarray]:
    """`m` candidate events before the HT cut: rows in the file layout and process ids."""
    proc = rng.choice(list(PROCESSES), size=m, p=[p.weight for p in PROCESSES.values()])

    def per_event(field):  # a process knob, looked up for every event
        return np.array([field(p) for p in PROCESSES.values()])[proc - 1]

    n_jets = per_event(lambda p: p.jets[0]) + rng.binomial(
        per_event(lambda p: p.jets[1]), per_event(lambda p: p.jets[2])
    )
    n_jets = np.minimum(n_jets, MAX_JETS)
    true_b = per_event(lambda p: p.true_b[0]) + 2 * (rng.uniform(size=m) < per_event(lambda p: p.true_b[1]))
    n_b = np.minimum(rng.binomial(true_b, B_TAG_EFF), n_jets)
    n_b = n_b + rng.binomial(n_jets - n_b, MISTAG)
    n_lep = (rng.uniform(size=(m, 1)) > np.cumsum(per_event(lambda p: p.leptons), axis=1)).sum(axis=1)
    n_pho = (rng.uniform(size=m) < 0.05).astype(int)
    jet_scale, met_scale = per_event(lambda p: p.jet_pt), per_event(lambda p: p.met)

    jets = _objects(rng, n_jets, MAX_JETS, 25.0, jet_scale, 1.4, 2.5, (0.05, 0.2))
    leps = _objects(rng, n_lep, MAX_LEPTONS, 10.0, np.full(m, 32.0), 1.2, 2.47, (0.0, 0.001))
    phos = _objects(rng, n_pho, MAX_PHOTONS, 15.0, np.full(m, 30.0), 1.2, 2.37, (0.0, 0.0))
    jet_id = np.where(np.arange(MAX_JETS)[None, :] < n_b[:, None], 2, 1)
    lep_id = rng.integers(3, 7, size=(m, MAX_LEPTONS))  # e+, e-, mu+, mu-
    ids = np.concatenate([jet_id, lep_id, np.full((m, MAX_PHOTONS), 7)], axis=1)
    live, pt, eta, phi, energy = (np.concatenate(parts, axis=1) for parts in zip(jets, leps, phos, strict=True))
    ids = np.where(live, ids, 0)
    ht = np.where(live[:, : MAX_JETS + MAX_LEPTONS], pt[:, : MAX_JETS + MAX_LEPTONS], 0).sum(axis=1)

    # object-major slots ordered by pT, empty slots last
    order = np.argsort(np.where(live, -pt, np.inf), axis=1, kind="stable")[:, :N_OBJECTS]
    take = lambda a: np.take_along_axis(np.where(live, a, 0.0), order, axis=1)  # noqa: E731
    n_slots = order.shape[1]
    cont = np.stack([take(energy), take(pt), take(eta), take(phi)], axis=2)  # (m, n_slots, 4)
    rows = np.zeros((m, N_COLUMNS), dtype=np.float32)
    rows[:, :n_slots] = np.take_along_axis(ids, order, axis=1)
    rows[:, N_OBJECTS] = rng.gamma(2.0, met_scale)
    rows[:, N_OBJECTS + 1] = rng.uniform(-np.pi, np.pi, size=m)
    rows[:, N_OBJECTS + 2 : N_OBJECTS + 2 + 4 * n_slots] = cont.reshape(m, -1)
    keep = ht > HT_CUT
    return rows[keep], proc[keep].astype(np.float32)


def generate(events: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`events` rows of the file layout (float32, [events, 92]) and their process ids."""
    rng = np.random.default_rng(seed)
    rows, labels, have = [], [], 0
    while have < events:
        r, y = _chunk(rng, 50_000)
        rows.append(r)
        labels.append(y)
        have += len(y)
    return np.concatenate(rows)[:events], np.concatenate(labels)[:events]


def write_fourtops(path: str | Path, events: int, seed: int) -> Path:
    """Write a synthetic `4tops_splitted.h5` (80/10/10 splits) atomically; returns the path."""
    x, y = generate(events, seed)
    return write_splits(path, x, y, {"generator": "expmatrix.data.synthetic", "events": events, "seed": seed})


def write_splits(path: str | Path, x: np.ndarray, y: np.ndarray, attrs: dict) -> Path:
    """Rows `x` (4tops layout) and process ids `y` -> an .h5 file with 80/10/10 splits, written atomically."""
    path = Path(path)
    events = len(x)
    n_train, n_val = int(0.8 * events), int(0.1 * events)
    bounds = {"train": (0, n_train), "val": (n_train, n_train + n_val), "test": (n_train + n_val, events)}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{np.random.default_rng().integers(1 << 30)}")
    with h5py.File(tmp, "w") as f:
        for split in SPLITS:
            lo, hi = bounds[split]
            f.create_dataset(DEFAULT_KEYS[f"x_{split}"], data=x[lo:hi])
            f.create_dataset(DEFAULT_KEYS[f"y_{split}"], data=y[lo:hi])
        f.attrs.update({**attrs, "unit": "GeV"})
    tmp.replace(path)
    return path
