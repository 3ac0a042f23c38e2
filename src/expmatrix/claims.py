"""Who owns a job: an exclusive-create claim file in its run directory, kept fresh by a heartbeat.

Two runners (two shells, a SLURM array and a laptop) never train one job at once: a worker claims a job
before it runs it and touches the claim while it does. A claim whose heartbeat is older than `stale_after`,
or whose owner is gone on this host, is abandoned and may be taken over.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from expmatrix.config import HEARTBEAT_SECONDS
from expmatrix.paths import RunPaths
from expmatrix.runfiles import DamagedFile


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


WAIT_SECONDS = 1.0  # between looks at a shared artifact another worker makes


def abandoned(claim: dict[str, Any], stale_after: float) -> bool:
    """A claim (`FileClaim.info`) without a heartbeat for `stale_after` seconds, or whose owner is gone on this host."""
    if claim["age"] > stale_after:
        return True
    return claim.get("host") == socket.gethostname() and "pid" in claim and not _pid_alive(claim["pid"])


class FileClaim:
    """An exclusive-create claim on one file, kept fresh by `beat`: a job's claim, or a shared stage's (a
    tokenizer fit that workers of a tuning may need at once). Abandoned: older than `stale_after`, or its
    owner is gone on this host; an abandoned claim is taken over."""

    def __init__(self, path: Path, stale_after: float):
        self.path, self.stale_after = path, stale_after
        self.nonce: str | None = None  # while this process holds it

    def info(self) -> dict[str, Any] | None:
        """The claim's owner (host, pid, nonce) and `age`: seconds since its last heartbeat."""
        try:
            text, mtime = self.path.read_text(), self.path.stat().st_mtime
        except FileNotFoundError:
            return None
        try:
            info = json.loads(text)
        except json.JSONDecodeError:  # being written right now, or its writer died before writing
            info = {}
        return {**info, "age": time.time() - mtime, "raw": text}

    def abandoned(self, claim: dict[str, Any]) -> bool:
        return abandoned(claim, self.stale_after)

    def take(self) -> bool:
        """Own it: exclusive create of the claim file. An abandoned claim is taken over."""
        p = self.path
        p.parent.mkdir(parents=True, exist_ok=True)
        nonce = uuid.uuid4().hex
        for _ in range(3):
            try:
                fd = os.open(p, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                old = self.info()
                if old is None:
                    continue  # released meanwhile
                if not self.abandoned(old) or not _take_over(p, old["raw"], nonce):
                    return False
                continue
            with os.fdopen(fd, "w") as f:
                json.dump({"host": socket.gethostname(), "pid": os.getpid(), "nonce": nonce, "since": time.time()}, f)
            self.nonce = nonce
            return True
        return False

    def beat(self) -> bool:
        """Touch our claim; False if it is no longer ours (taken over while we were stalled)."""
        info = self.info()
        if info is None or self.nonce is None or info.get("nonce") != self.nonce:
            return False
        os.utime(self.path)
        return True

    def release(self) -> None:
        """Drop our claim (never someone else's)."""
        info, nonce, self.nonce = self.info(), self.nonce, None
        if info is not None and nonce is not None and info.get("nonce") == nonce:
            self.path.unlink(missing_ok=True)


class Claims:
    """The claims of one experiment's jobs; `stale_after`: seconds without a heartbeat before a claim is abandoned."""

    def __init__(self, paths: RunPaths, stale_after: float):
        self.paths, self.stale_after = paths, stale_after
        self._held: dict[str, FileClaim] = {}  # job id -> the claims this process holds

    def _claim(self, job_id: str) -> FileClaim:
        return self._held.get(job_id) or FileClaim(self.paths.job(job_id).claim, self.stale_after)

    def info(self, job_id: str) -> dict[str, Any] | None:
        """The claim's owner (host, pid, nonce) and `age`: seconds since its last heartbeat."""
        return self._claim(job_id).info()

    def abandoned(self, claim: dict[str, Any]) -> bool:
        return abandoned(claim, self.stale_after)

    def take(self, job_id: str) -> bool:
        """Own the job: exclusive create of its claim file. An abandoned claim is taken over."""
        claim = FileClaim(self.paths.job(job_id).claim, self.stale_after)
        if not claim.take():
            return False
        self._held[job_id] = claim
        return True

    def beat(self, job_id: str) -> bool:
        """Touch our claim; False if it is no longer ours (taken over while we were stalled)."""
        return self._claim(job_id).beat()

    def release(self, job_id: str) -> None:
        """Drop our claim (never someone else's)."""
        claim = self._held.pop(job_id, None)
        if claim is not None:
            claim.release()


def _take_over(p: Path, stale: str, nonce: str) -> bool:
    """Move the abandoned claim aside; if a racing worker's fresh claim was moved instead, put it back."""
    aside = p.with_name(f".claim.{nonce}")
    try:
        os.rename(p, aside)
    except FileNotFoundError:
        return True  # someone else removed it: try to create ours
    if aside.read_text() != stale:
        with contextlib.suppress(FileExistsError):
            os.link(aside, p)
        aside.unlink()
        return False
    aside.unlink()
    return True


class Periodic:
    """Calls `tick()` every `every` seconds in a daemon thread while the `with` block runs,
    until the block ends or `tick` returns False."""

    def __init__(self, every: float, tick: Callable[[], bool | None], name: str = "periodic"):
        self.every, self.tick = every, tick
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            try:
                if self.tick() is False:
                    return
            except DamagedFile:
                continue  # a progress poll met a file a redo is about to set aside: the next tick reads the new one

    def __enter__(self) -> Periodic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


class Heartbeat(Periodic):
    """While the `with` block runs, touch the job's claim every `every` seconds;
    `lost` is set if the claim stops being ours."""

    def __init__(self, claims: Claims, job_id: str, every: float = HEARTBEAT_SECONDS):
        self.claims, self.job_id = claims, job_id
        self.lost = threading.Event()
        super().__init__(every, self._beat, f"heartbeat-{job_id}")

    def _beat(self) -> bool:
        if self.claims.beat(self.job_id):
            return True
        self.lost.set()
        return False


def make_once(claim: FileClaim, made: Callable[[], bool], make: Callable[[], None], every: float) -> None:
    """A shared artifact made once by whoever holds `claim` (heartbeat every `every` s): the others wait until
    `made()` (which raises for a recorded failure); a claim whose holder died is taken over."""
    while not made():
        if not claim.take():
            time.sleep(WAIT_SECONDS)  # another worker makes it
            continue
        try:
            if not made():  # (made between our look and our claim)
                with Periodic(every, claim.beat, f"make-{claim.path.name}"):
                    make()
        finally:
            claim.release()
        return
