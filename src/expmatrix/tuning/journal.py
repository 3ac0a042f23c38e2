"""optuna's journal file, shared by workers on any filesystem, and the guard against damaged lines.

optuna appends one JSON line per operation under `JournalFileOpenLock` (O_EXCL create: NFSv3 and later).
A worker killed mid-append leaves a line without its end; optuna skips it while it is last, but the next
append glues the next operation onto it, and from then on every read raises `JSONDecodeError`. `repair`
runs under the journal's own lock before a worker uses it: the damaged part of a line becomes a no-op
operation (the line count every reader has seen stays the same), the operation glued behind it is kept,
and the journal as it was is copied aside.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

from expmatrix.runfiles import atomic_write

NO_OP = 10  # JournalOperation.DISCARD_TRIALS: optuna's replay skips it (a test checks the number)
OP_START = b'{"op_code":'


@contextmanager
def locked(path: Path, grace_seconds: int | None = 30) -> Iterator[None]:
    """Hold optuna's file lock `<path>.lock`; one left by a killed holder is broken after `grace_seconds`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = JournalFileOpenLock(str(path), grace_period=grace_seconds)
    lock.acquire()
    try:
        yield
    finally:
        lock.release()


def open_journal(path: Path) -> JournalStorage:
    path.parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(path), lock_obj=JournalFileOpenLock(str(path))))


def _mend(line: bytes) -> list[bytes]:
    """A line that does not parse -> a no-op line for its damaged part, then the operation glued behind it."""
    start = line.find(OP_START, 1)
    while start != -1:
        try:
            json.loads(line[start:])
            break
        except ValueError:
            start = line.find(OP_START, start + 1)
    damaged, kept = (line, b"") if start == -1 else (line[:start], line[start:])
    note = json.dumps({"op_code": NO_OP, "worker_id": "expmatrix-repair", "damaged": damaged.decode(errors="replace")})
    return [note.encode() + b"\n", *([kept if kept.endswith(b"\n") else kept + b"\n"] if kept else [])]


def repair(path: Path) -> list[str]:
    """Mend the journal's damaged lines in place (under its lock); what was mended, for the user."""
    if not path.exists():
        return []
    with locked(path):
        lines = path.read_bytes().splitlines(keepends=True)
        out, problems = [], []
        for n, line in enumerate(lines, start=1):
            try:
                json.loads(line)
            except ValueError:
                pass
            else:
                out.append(line if line.endswith(b"\n") else line + b"\n")  # cut right before its end
                continue
            problems.append(f"{path}: line {n} was damaged (a write cut short?): {line[:80]!r}...; skipped")
            out += _mend(line)
        if out != lines:
            aside = path.with_name(f"{path.name}.damaged-{time.strftime('%Y%m%dT%H%M%S')}")
            atomic_write(aside, b"".join(lines))
            atomic_write(path, b"".join(out))
            problems.append(f"the journal as it was: {aside}")
    return problems
