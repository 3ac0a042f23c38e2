"""One Pythia event as numpy arrays: what the detector emulation needs and the truth the checks compare with."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from expmatrix.data.pythia.processes import Process

SEED_MAX = 900_000_000  # Pythia's Random:seed range is 0..900,000,000


@dataclass(frozen=True)
class Particles:
    """The final state of one event (visible particles only) and its B hadrons and neutrinos.

    Shape:
        visible:   (P, 5)  px, py, pz, E, pdg id of the visible final-state particles
        b_hadrons: (B, 4)  px, py, pz, E of every hadron with a b quark (each step of a decay chain)
        nu_pt:     (2,)    px, py summed over the final-state neutrinos
    """

    visible: np.ndarray
    b_hadrons: np.ndarray
    nu_pt: np.ndarray


def pythia_seed(seed: int, label: int, chunk: int) -> int:
    """Pythia's seed for one chunk of one process: the same (seed, process, chunk) always gives the same events."""
    return int(np.random.SeedSequence([seed, label, chunk]).generate_state(1)[0]) % SEED_MAX + 1


def is_b_hadron(pid: np.ndarray) -> np.ndarray:
    """Hadrons with a b quark: mesons (|id| = ..5.., e.g. 511) and baryons (..5..., e.g. 5122)."""
    a = np.abs(pid)
    return (a > 100) & (((a // 100) % 10 == 5) | ((a // 1000) % 10 == 5))


NEUTRINOS = (12, 14, 16)


def start(process: Process, seed: int):
    """A Pythia instance set up for `process` with `seed`, quiet, initialised."""
    import pythia8mc

    pythia = pythia8mc.Pythia("", False)  # no banner
    for line in (*process.settings, "Print:quiet = on", "Random:setSeed = on", f"Random:seed = {seed}"):
        if not pythia.readString(line):
            raise RuntimeError(f"Pythia refused the setting {line!r} of the process {process.what!r}")
    if not pythia.init():
        raise RuntimeError(f"Pythia could not initialise the process {process.what!r}")
    return pythia


def events(pythia) -> Iterator[Particles]:
    """The events of an initialised Pythia, as `Particles`; an event Pythia fails to make is skipped."""
    event = pythia.event
    while True:
        if not pythia.next():
            continue
        parts = event.particles()
        ids = np.fromiter((p.id() for p in parts), np.int64, len(parts))
        final = np.fromiter((p.isFinal() for p in parts), bool, len(parts))
        nu = final & np.isin(np.abs(ids), NEUTRINOS)
        take = np.flatnonzero((final & ~nu) | is_b_hadron(ids))
        mom = np.array([(parts[i].px(), parts[i].py(), parts[i].pz(), parts[i].e()) for i in take]).reshape(-1, 4)
        visible = final[take]
        nu_mom = np.array([(parts[i].px(), parts[i].py()) for i in np.flatnonzero(nu)]).reshape(-1, 2)
        yield Particles(
            visible=np.column_stack([mom[visible], ids[take][visible]]),
            b_hadrons=mom[~visible],
            nu_pt=nu_mom.sum(axis=0),
        )
