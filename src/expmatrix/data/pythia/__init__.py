"""Events from Pythia 8 with a FastJet detector emulation, written in the 4tops layout (the `physics` extra).

`write_pythia` plans chunks of events per process, makes the missing ones in parallel (resumable), and writes
the file the 4tops reader reads, with its seed, processes and detector settings as attributes.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import asdict
from importlib.metadata import version
from pathlib import Path

from expmatrix.data.fourtops import DataError
from expmatrix.data.pythia import chunks
from expmatrix.data.pythia.detector import Detector, load_detector
from expmatrix.data.pythia.processes import PROCESSES, select

INSTALL = "pip install 'expmatrix[physics]'  (or: pip install pythia8mc==8.317.2 fastjet==3.5.2)"
MODULES = ("pythia8mc", "fastjet", "awkward")


def require_physics() -> None:
    """A `DataError` saying how to install the `physics` extra when Pythia or FastJet is missing."""
    missing = []
    for module in MODULES:
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise DataError(f"the Pythia generator needs {', '.join(missing)}, not installed; install them with: {INSTALL}")


def check_output(path: Path, events: int) -> None:
    """A `DataError` for a number of events below 1 or an output file in a missing folder."""
    if events <= 0:
        raise DataError(f"the number of events must be positive, got {events}")
    if not path.parent.is_dir():
        raise DataError(f"{path}: the folder {path.parent} does not exist")


def write_pythia(path: str | Path, events: int, seed: int, *, workers: int | None = None,
                 processes: list[str] | None = None, detector: Detector | None = None, chunk_size: int = 500,
                 progress: bool = True) -> Path:  # fmt: skip
    """Generate `events` events (all splits, 80/10/10) of `processes` (default: all) into `path`; returns it.

    The same seed and settings give the same file; chunks already made by a stopped run are reused."""
    from expmatrix.data.synthetic import write_splits

    path, det = Path(path), detector or Detector()
    workers = workers or os.cpu_count() or 1
    check_output(path, events)
    if workers <= 0 or chunk_size <= 0:
        raise DataError(f"workers and chunk size must be positive, got {workers} and {chunk_size}")
    try:
        names = list(select(processes))
    except ValueError as e:
        raise DataError(str(e)) from None
    require_physics()
    settings = chunks.settings_of(names, events, seed, det, chunk_size)
    folder = chunks.parts_folder(path, settings)
    plan = chunks.plan(names, events, chunk_size)
    chunks.make_all(plan, seed, det, folder, workers, progress)
    x, y, acceptance = chunks.join(plan, folder, seed)
    attrs = {"generator": f"pythia8mc {version('pythia8mc')} + fastjet {version('fastjet')}", "events": events,
             "seed": seed, "processes": str({n: PROCESSES[n].label for n in names}),
             "detector": str(asdict(det)), "acceptance": str(acceptance), "chunk": chunk_size}  # fmt: skip
    write_splits(path, x, y, attrs)
    chunks.remove(folder)
    return path


__all__ = ["INSTALL", "check_output", "PROCESSES", "Detector", "load_detector", "require_physics", "write_pythia"]
