"""The processes the Pythia generator makes, their labels in the 4tops layout, and their Pythia settings.

Pythia 8 has no Standard-Model gg -> tt̄tt̄. The four-top signal is tt̄ produced with a heavy neutral scalar
(H2, 500 GeV) that decays to tt̄ only: four real tops with real decays, but the second pair comes from a
resonance (its mass peaks at 500 GeV and it is a colour singlet), where the SM process spreads it out.
The tt̄Z stand-in is tt̄ + a scalar with the Z mass, width and branching ratios, produced through the
top Yukawa coupling: its decay products are right, their angles are those of a spin-0 decay.
"""

from __future__ import annotations

from dataclasses import dataclass

BEAMS = ("Beams:eCM = 13000.",)  # LHC Run 2; the default tune (Monash), hadronization and MPI on
TTBAR = ("Top:gg2ttbar = on", "Top:qqbar2ttbar = on")
TTH = ("HiggsSM:gg2Httbar = on", "HiggsSM:qqbar2Httbar = on")

# Z branching ratios (PDG): (decay products, BR); meMode 0 keeps them fixed for a resonance
Z_CHANNELS = (
    ((1, -1), 0.156), ((2, -2), 0.116), ((3, -3), 0.156), ((4, -4), 0.120), ((5, -5), 0.152),
    ((11, -11), 0.0337), ((13, -13), 0.0337), ((15, -15), 0.0337), ((12, -12), 0.0667), ((14, -14), 0.0667),
    ((16, -16), 0.0667),
)  # fmt: skip


def _z_like_higgs() -> tuple[str, ...]:
    """The SM Higgs (25) turned into a scalar with the Z's mass, width and branching ratios."""
    first, *rest = Z_CHANNELS
    channel = lambda verb, c: f"25:{verb} = 1 {c[1]} 0 {c[0][0]} {c[0][1]}"  # noqa: E731
    return ("25:m0 = 91.1876", "25:mWidth = 2.4952", "25:doForceWidth = on", channel("oneChannel", first),
            *(channel("addChannel", c) for c in rest))  # fmt: skip


@dataclass(frozen=True)
class Process:
    """One process: its label in the file (`config.layout.PROCESSES`), its share of the events, what it is."""

    label: int
    share: float  # of all events, before the shares of the processes left out are shared out again
    what: str  # the honest name, for the docs and `--help`
    settings: tuple[str, ...]


PROCESSES = {
    "4t": Process(1, 0.50, "tt̄ + H2 (500 GeV scalar) -> tt̄: four tops", (
        *BEAMS, "Higgs:useBSM = on", "HiggsBSM:gg2H2ttbar = on", "HiggsBSM:qqbar2H2ttbar = on",
        "35:m0 = 500.", "35:onMode = off", "35:onIfMatch = 6 -6")),
    "ttH": Process(2, 0.20, "tt̄H, H(125) with its SM decays", (*BEAMS, *TTH)),
    "ttZ": Process(5, 0.15, "tt̄ + a scalar with the Z mass, width and branching ratios", (*BEAMS, *TTH,
                                                                                           *_z_like_higgs())),
    "tt": Process(6, 0.15, "tt̄ + jets from the parton shower (hard process pT > 100 GeV)", (
        *BEAMS, *TTBAR, "PhaseSpace:pTHatMin = 100.")),
}  # fmt: skip


def select(names: list[str] | None) -> dict[str, Process]:
    """The named processes (all when None); an unknown name is a `ValueError` listing the valid ones."""
    if names is None:
        return dict(PROCESSES)
    unknown = [n for n in names if n not in PROCESSES]
    if unknown or not names:
        raise ValueError(f"unknown process {', '.join(map(repr, unknown)) or '(none given)'}; "
                         f"valid: {', '.join(PROCESSES)}")  # fmt: skip
    return {n: PROCESSES[n] for n in dict.fromkeys(names)}


def counts(processes: dict[str, Process], events: int) -> dict[str, int]:
    """Events per process: `events` shared in proportion to the shares (largest remainder, sums to `events`)."""
    total = sum(p.share for p in processes.values())
    exact = {n: events * p.share / total for n, p in processes.items()}
    out = {n: int(v) for n, v in exact.items()}
    for n in sorted(exact, key=lambda n: out[n] - exact[n])[: events - sum(out.values())]:
        out[n] += 1
    return out
