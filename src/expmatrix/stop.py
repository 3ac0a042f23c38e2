"""Polite stops: the signals that ask running work to checkpoint where it is and end.

SIGTERM (kill, a scheduler's preemption), SIGUSR1 (SLURM's warning before a time limit) and
SIGINT (Ctrl-C) all mean the same: the running jobs checkpoint at the next optimizer step and
end `preempted`, nothing new starts, and the process exits `PREEMPTED_EXIT` (75). Run the same
command again to resume.
"""

from __future__ import annotations

import signal
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

STOP_SIGNALS = tuple(getattr(signal, s) for s in ("SIGTERM", "SIGUSR1", "SIGINT") if hasattr(signal, s))


@dataclass
class StopRequest:
    """Set by the first stop signal; every block nested in the same `stop_requests` shares it."""

    signal: int | None = None

    @property
    def name(self) -> str:
        return signal.Signals(self.signal).name if self.signal is not None else ""


_active: StopRequest | None = None  # the outermost request of this process's main thread


@contextmanager
def stop_requests(
    signals: tuple[int, ...] = STOP_SIGNALS, on_stop: Callable[[int], None] | None = None
) -> Iterator[StopRequest]:
    """Inside the block the stop signals set `.signal` (and call `on_stop(signum)` once) instead of
    killing the process; the previous handlers come back on exit. A nested block shares the outer
    request, so a runner's stop reaches the job it runs. Handlers can only be installed from the
    main thread: elsewhere the request is never set."""
    global _active
    if _active is not None:
        yield _active
        return
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return

    def handler(signum: int, frame: Any) -> None:
        first = request.signal is None
        request.signal = request.signal or signum
        if first and on_stop is not None:
            on_stop(signum)

    previous = {s: signal.signal(s, handler) for s in signals}
    _active = request
    try:
        yield request
    finally:
        _active = None
        for s, h in previous.items():
            signal.signal(s, h)


class Stopped(Exception):
    """A runner stopped by a signal: its running jobs checkpointed (`preempted`), the rest did not start."""

    def __init__(self, signal_name: str, states: Counter, not_started: int):
        self.signal_name, self.states, self.not_started = signal_name, states, not_started
        preempted = states.get("preempted", 0)
        super().__init__(
            f"stopped by {signal_name}: {preempted} running job(s) checkpointed and left preempted, "
            f"{not_started} not started; run the same command again to resume"
        )
