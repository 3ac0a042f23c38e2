"""A process pool that survives its workers: if one dies (killed, out of memory), the task it
held is reported as died with the exit code, a fresh worker replaces it, and the rest go on.
`stop()` ends it politely: running tasks get the stop signal (a job checkpoints where it is), waiting
ones are reported as skipped. Each worker slot may start with its own environment (its GPU,
`executors.placement`), set before the worker imports torch; a replacement gets the same one.

(`concurrent.futures.ProcessPoolExecutor` breaks as a whole when one worker dies.)
"""

from __future__ import annotations

import ctypes
import multiprocessing as mp
import os
import queue
import signal
import sys
from collections.abc import Callable, Iterator
from typing import Any

from expmatrix.stop import stop_requests

Task = tuple[Callable[..., Any], tuple]  # a picklable function and its arguments


def _die_with_parent() -> None:
    """Workers get SIGKILL when the runner dies (Linux), so no orphan goes on training."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _worker(wid: int, tasks: mp.Queue, results: mp.Queue, stopping: Any, env: dict[str, str]) -> None:
    _die_with_parent()
    os.environ.update(env)  # before any task imports torch: CUDA reads CUDA_VISIBLE_DEVICES when it starts
    with stop_requests():  # the runner's stop (or Ctrl-C, which reaches the process group): the job checkpoints
        while (item := tasks.get()) is not None:
            key, (fn, args) = item
            if stopping.is_set():
                results.put(("skipped", wid, key, None))
                continue
            results.put(("start", wid, key, None))
            try:
                results.put(("ok", wid, key, fn(*args)))
            except Exception as e:  # noqa: BLE001 - reported to the parent
                results.put(("error", wid, key, f"{type(e).__name__}: {e}"))


def _describe_exit(code: int | None) -> str:
    if code is not None and code < 0:
        name = signal.Signals(-code).name
        return f"worker process killed by {name}" + (" (out of memory?)" if name == "SIGKILL" else "")
    return f"worker process exited with status {code}"


class Pool:
    """`run(tasks)` yields (event, key, value): ("start", key, None) when a worker takes a task,
    then ("ok", key, result), ("error", key, message) or ("died", key, message); after `stop()`,
    ("skipped", key, None) for the tasks no worker started. `envs[slot]`: the environment of worker slot `slot`;
    `pids[key]`: the process that took task `key` (a died task's job is found by its claim)."""

    def __init__(self, workers: int, envs: list[dict[str, str]] | None = None):
        self.ctx = mp.get_context("spawn")  # fork after torch has started threads is unsafe
        self.tasks: mp.Queue = self.ctx.Queue()
        self.results: mp.Queue = self.ctx.Queue()
        self.procs: dict[int, mp.Process] = {}
        self.holding: dict[int, Any] = {}  # worker id -> key of its task
        self.pids: dict[Any, int] = {}
        self.envs = envs or [{}] * workers
        self.slots: dict[int, int] = {}  # worker id -> its slot
        self.stopping = self.ctx.Event()
        self._next = 0
        for slot in range(workers):
            self._spawn(slot)

    def _spawn(self, slot: int) -> None:
        wid, self._next = self._next, self._next + 1
        args = (wid, self.tasks, self.results, self.stopping, self.envs[slot])
        proc = self.ctx.Process(target=_worker, args=args, daemon=True)
        proc.start()
        self.procs[wid], self.slots[wid] = proc, slot

    def run(self, tasks: dict[Any, Task]) -> Iterator[tuple[str, Any, Any]]:
        for key, task in tasks.items():
            self.tasks.put((key, task))
        left = set(tasks)
        while left:
            try:
                event, wid, key, value = self.results.get(timeout=0.5)
            except queue.Empty:
                yield from self._reap(left)
                continue
            if event == "start":
                self.holding[wid] = key
                if wid in self.procs:
                    self.pids[key] = self.procs[wid].pid
            elif key in left:  # (not already reported as died)
                self.holding.pop(wid, None)
                left.discard(key)
            else:
                continue
            yield event, key, value

    def _reap(self, left: set) -> Iterator[tuple[str, Any, Any]]:
        for wid, proc in list(self.procs.items()):
            if proc.is_alive():
                continue
            del self.procs[wid]
            if not self.stopping.is_set():
                self._spawn(self.slots[wid])
            key = self.holding.pop(wid, None)
            if key is not None and key in left:
                left.discard(key)
                yield "died", key, _describe_exit(proc.exitcode)
        if self.stopping.is_set() and not self.procs:  # no worker left to report the waiting tasks
            for key in sorted(left, key=str):
                left.discard(key)
                yield "skipped", key, None

    def stop(self, signum: int = signal.SIGTERM) -> None:
        """No new task starts; each worker gets `signum` (its running job checkpoints and ends preempted)."""
        self.stopping.set()
        for proc in self.procs.values():
            if proc.is_alive() and proc.pid is not None:
                os.kill(proc.pid, signum)

    def close(self) -> None:
        for _ in self.procs:
            self.tasks.put(None)
        for proc in self.procs.values():
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()

    def __enter__(self) -> Pool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
