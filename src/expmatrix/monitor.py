"""What the run directories say about a matrix: each job's state, counts, and the tables
`expmatrix list`, `plan`, `status` and `run` print. Reads run files only; starts nothing."""

from __future__ import annotations

import re
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from tabulate import tabulate

from expmatrix.config import Job, short_hash
from expmatrix.matrix import Matrix
from expmatrix.provenance import code_version, is_stale
from expmatrix.runfiles import DamagedFile, read_file, set_aside, write_json
from expmatrix.states import STATES
from expmatrix.store import RunStore

ORDER = (*STATES, "stale")  # stale: done, but by other code than the installed one


@dataclass(frozen=True)
class JobState:
    job: Job
    state: str  # one of ORDER; `stale`: done, but by other code than the installed one
    status: dict[str, Any]


def job_states(matrix: Matrix, store: RunStore) -> list[JobState]:
    out = []
    for job in matrix.jobs:
        state, status = store.state_of(job.id)
        out.append(JobState(job, "stale" if state == "done" and is_stale(status) else state, status))
    return out


def _solved_size(job: Job, store: RunStore) -> tuple[int, int]:
    """(parameters, width) of the job's model, from the disk cache or solved (which needs torch)."""
    shape = job.config.model_dump(mode="json", include={"tokenizer", "data", "model"})  # all that decides the size
    path = store.paths.cache.size(short_hash([shape, code_version()]))
    try:
        size = read_file(path)
        return size["params"], size["d_model"]
    except FileNotFoundError:
        pass
    except (DamagedFile, KeyError, TypeError):
        set_aside(path)  # a cache: solve again
    from expmatrix.assembly.fits import tokenizer_for
    from expmatrix.config import n_outputs
    from expmatrix.models.sizing import solve_size

    cfg = job.config
    size = solve_size(tokenizer_for(cfg), cfg.model, n_outputs(cfg.data))
    write_json(path, {"params": size.params, "d_model": size.d_model, "d_ff": size.d_ff})
    return size.params, size.d_model


def list_table(matrix: Matrix, store: RunStore) -> str:
    """Every job: id, factor levels, seed, parameter count, width, state. Sizes are solved once per cell
    (its seeds share it) and cached per shape, so a repeated `list` never imports torch."""
    sizes: dict[str, tuple[int, int]] = {}
    rows = []
    for job in matrix.jobs:
        if job.cell not in sizes:
            sizes[job.cell] = _solved_size(job, store)
        rows.append([job.id, *job.levels.values(), job.seed, *sizes[job.cell], store.state(job.id)])
    table = tabulate(rows, headers=["job", *matrix.factor_names, "seed", "params", "width", "state"])
    return f"{table}\n{len(matrix.jobs)} jobs in {len(matrix.cells)} cells"


def counts(states: list[JobState]) -> str:
    found = Counter(s.state for s in states)
    return ", ".join(f"{found[k]} {k}" for k in ORDER if found[k]) + f"  ({len(states)} jobs)"


def _one_line(text: str | None, width: int = 120) -> str:
    """The error on one line, folders cut from paths (`status` shows what went wrong, not where files live)."""
    text = re.sub(r"/(?:[^\s/:'\"]+/)+([^\s/:'\"]+)", r"\1", " ".join((text or "").split()))
    return text if len(text) <= width else text[: width - 1] + "…"


def _levels(job: Job) -> list[str]:
    return [*job.levels.values(), str(job.seed)]


def stages_table(states: list[JobState], store: RunStore) -> str:
    """The shared stages (tokenizer fits, VQ-VAE pretrainings) the unfinished jobs need: which are ready,
    which wait (and how many jobs wait for each), which failed and why."""
    from expmatrix.shared_stages import shared_stages  # reads h5py, not torch

    waiting = [s.job for s in states if s.state not in ("done", "stale")]
    if not waiting:
        return ""
    try:
        stages = shared_stages(waiting, store)
    except FileNotFoundError as e:
        return f"shared stages: unknown, the data file {e.filename} is not there"
    rows = []
    for st in stages:
        if st.state != "done":
            failure = st.files(store.paths.cache).failure
            why = _one_line(read_file(failure).get("error"), 80) if st.state == "failed" else ""
            rows.append([st.describe(), st.state, f"{st.n_jobs} ({st.n_cells} cells)", why])
    ready = sum(st.state == "done" for st in stages)
    head = f"shared stages the unfinished jobs need: {ready} of {len(stages)} fitted"
    return head + ("\n" + tabulate(rows, headers=["stage", "state", "jobs waiting", "error"]) if rows else "")


def plan_table(matrix: Matrix, states: list[JobState], limit: int | None = 50, store: RunStore | None = None) -> str:
    """Jobs grouped by state, at most `limit` per state; then the shared stages they wait for."""
    parts = []
    for state in ORDER:
        rows = [[s.job.id, *_levels(s.job)] for s in states if s.state == state]
        if not rows:
            continue
        shown = rows if limit is None else rows[:limit]
        more = f"\n... and {len(rows) - len(shown)} more (--all)" if len(shown) < len(rows) else ""
        table = tabulate(shown, headers=["job", *matrix.factor_names, "seed"])
        parts.append(f"{state} ({len(rows)}):\n{table}{more}")
    stages = stages_table(states, store) if store is not None else ""
    return "\n\n".join(parts + ([stages] if stages else []))


def status_tables(matrix: Matrix, states: list[JobState], store: RunStore) -> str:
    """Running jobs with their progress, resumable and failed ones with why."""
    now, parts = time.time(), []
    headers = ["job", *matrix.factor_names, "seed"]
    running = []
    for s in states:
        if s.state == "running":
            claim = store.claims.info(s.job.id) or {}
            beat = f"{claim.get('age', float('nan')):.0f} s ago"
            epoch = f"{s.status.get('epoch', 0)}/{s.status.get('epochs', '?')}"
            running.append([s.job.id, *_levels(s.job), epoch, claim.get("host", "?"), beat])
    if running:
        parts.append("running:\n" + tabulate(running, headers=[*headers, "epoch", "host", "heartbeat"]))
    resumable = [
        [s.job.id, *_levels(s.job), f"{s.status.get('epoch', 0)}/{s.status.get('epochs', '?')}", s.state]
        for s in states
        if s.state in ("interrupted", "preempted")
    ]
    if resumable:
        parts.append("to resume:\n" + tabulate(resumable, headers=[*headers, "epoch", "state"]))
    failed = [
        [s.job.id, *_levels(s.job), s.status.get("failures", 1), s.status.get("host"), _one_line(s.status.get("error"))]
        for s in states
        if s.state == "failed"
    ]
    if failed:
        parts.append("failed:\n" + tabulate(failed, headers=[*headers, "attempts", "host", "error"]))
    damaged = [[s.job.id, *_levels(s.job), s.status.get("error")] for s in states if s.state == "damaged"]
    if damaged:
        parts.append("damaged (`expmatrix run` redoes them):\n" + tabulate(damaged, headers=[*headers, "error"]))
    done = [s for s in states if s.state in ("done", "stale") and "wall_seconds" in s.status]
    if done:
        mean = sum(s.status["wall_seconds"] for s in done) / len(done)
        last = max(s.status.get("finished", 0) for s in done)
        parts.append(f"finished: {len(done)}, {mean:.0f} s per job on average, last {now - last:.0f} s ago")
    stages = stages_table(states, store)
    return "\n\n".join(([stages] if stages else []) + parts)


def run_outcome(matrix: Matrix, store: RunStore, since: float) -> list[str]:
    """What `run` says after its jobs: which jobs it redid after damage and from where, which failed and why."""
    lines, failed = [], []
    for job in matrix.jobs:
        state, status = store.state_of(job.id)
        if status.get("redone") and status.get("started", 0) >= since:
            lines.append(f"  redone {job.id} {job.describe()}: {status['redone']}")
        if state == "failed":
            failed.append(f"  failed {job.id} {job.describe()}: {status.get('error')}")
    return lines + failed[:10]
