"""Chunks of Pythia events: planned, made in parallel, kept on disk as they finish (a kill loses only the
chunks in flight), joined into one 4tops file at the end.

A chunk is a process and an index; its events depend only on (seed, process, index), so the file is the
same whatever the number of workers and however often the generation was stopped and resumed.
"""

from __future__ import annotations

import json
import multiprocessing
import shutil
from dataclasses import asdict, dataclass
from itertools import islice
from pathlib import Path

import numpy as np

from expmatrix.data.fourtops import DataError
from expmatrix.data.pythia.detector import Detector, reconstruct
from expmatrix.data.pythia.particles import events, pythia_seed, start
from expmatrix.data.pythia.processes import PROCESSES, counts

BATCH = 50  # events clustered in one FastJet call
MAX_TRIES = 50  # a chunk gives up after this many events tried per event wanted with none kept


@dataclass(frozen=True)
class Chunk:
    process: str
    index: int
    events: int  # events kept (after the HT cut) that this chunk makes

    @property
    def name(self) -> str:
        return f"{self.process}-{self.index:05d}.npz"


def plan(names: list[str], events: int, size: int) -> list[Chunk]:
    """The chunks of `events` events over the processes `names`, interleaved so that all progress together."""
    per_process = counts({n: PROCESSES[n] for n in names}, events)
    chunks = [Chunk(n, i, min(size, k - i * size)) for n, k in per_process.items() for i in range(-(-k // size))]
    return sorted(chunks, key=lambda c: (c.index, names.index(c.process)))


def make_chunk(chunk: Chunk, seed: int, det: Detector) -> dict[str, np.ndarray]:
    """The rows (n, 92), labels and truth (neutrino px, py) of one chunk; the events tried and passing the cut."""
    process = PROCESSES[chunk.process]
    rng = np.random.default_rng([seed, process.label, chunk.index])
    source = events(start(process, pythia_seed(seed, process.label, chunk.index)))
    rows, truth, tried = [], [], 0
    while sum(len(r) for r in rows) < chunk.events:
        if tried >= MAX_TRIES * chunk.events and not rows:
            raise DataError(f"process {chunk.process}: no event of {tried} passed the selection (HT > {det.ht_min})")
        batch = list(islice(source, BATCH))
        tried += len(batch)
        r, kept = reconstruct(batch, det, rng)
        rows.append(r)
        truth.append(np.array([batch[i].nu_pt for i in kept]).reshape(-1, 2))
    x = np.concatenate(rows)
    n = chunk.events
    return {"x": x[:n], "y": np.full(n, process.label, np.float32), "nu_pt": np.concatenate(truth)[:n],
            "tried": np.array(tried), "passed": np.array(len(x))}  # fmt: skip


def _work(job: tuple[Chunk, int, Detector, str]) -> tuple[Chunk, int]:
    """In a worker process: make one chunk and save it atomically."""
    chunk, seed, det, folder = job
    out = make_chunk(chunk, seed, det)
    path = Path(folder) / chunk.name
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **out)
    tmp.replace(path)
    return chunk, int(out["tried"])


def parts_folder(out: Path, settings: dict) -> Path:
    """The folder of the finished chunks of `out`; one left by other settings is an error (not mixed in)."""
    folder = out.with_name(out.name + ".parts")
    manifest = folder / "settings.json"
    if folder.exists() and manifest.exists() and json.loads(manifest.read_text()) != settings:
        raise DataError(f"{folder}: chunks of a generation with other settings ({manifest}); "
                        "remove the folder or generate with the same settings to resume")  # fmt: skip
    folder.mkdir(exist_ok=True)
    manifest.write_text(json.dumps(settings, indent=1))
    return folder


def make_all(chunks: list[Chunk], seed: int, det: Detector, folder: Path, workers: int, progress: bool) -> None:
    """Make the chunks not on disk yet in `workers` processes, with a progress bar over events."""
    from tqdm import tqdm

    todo = [c for c in chunks if not (folder / c.name).exists()]
    bar = tqdm(total=sum(c.events for c in chunks), initial=sum(c.events for c in chunks if c not in todo),
               unit="ev", desc="pythia", disable=not progress, smoothing=0.1)  # fmt: skip
    jobs = [(c, seed, det, str(folder)) for c in todo]
    with bar:
        if workers <= 1:
            results = map(_work, jobs)
            for chunk, _ in results:
                bar.update(chunk.events)
            return
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            for chunk, _ in pool.imap_unordered(_work, jobs):
                bar.update(chunk.events)


def join(chunks: list[Chunk], folder: Path, seed: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """All chunks' rows and labels, shuffled with `seed`, and the acceptance (kept / tried) per process."""
    parts = [np.load(folder / c.name) for c in chunks]
    x = np.concatenate([p["x"] for p in parts])
    y = np.concatenate([p["y"] for p in parts])
    passed, tried = {}, {}
    for c, p in zip(chunks, parts, strict=True):
        passed[c.process] = passed.get(c.process, 0) + int(p["passed"])
        tried[c.process] = tried.get(c.process, 0) + int(p["tried"])
    order = np.random.default_rng(seed).permutation(len(y))
    return x[order], y[order], {n: round(passed[n] / tried[n], 4) for n in passed}


def settings_of(names: list[str], events: int, seed: int, det: Detector, chunk_size: int) -> dict:
    return {"processes": names, "events": events, "seed": seed, "chunk": chunk_size, "detector": asdict(det)}


def remove(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
