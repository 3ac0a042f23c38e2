"""Chunked work on several threads: numpy releases the GIL inside its loops, so chunks of a
transform or of a fit run in parallel. The thread budget is torch's (`torch.set_num_threads`):
a job that was given one thread per worker keeps one."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import torch

T = TypeVar("T")
R = TypeVar("R")


def threads() -> int:
    return max(1, torch.get_num_threads())


def parallel_map(fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
    """[fn(x) for x in items], on `threads()` threads; results in order, the first error re-raised."""
    items = list(items)
    n = min(threads(), len(items))
    if n <= 1:
        return [fn(x) for x in items]
    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(fn, items))


def chunks(n: int, size: int) -> list[slice]:
    """Consecutive slices of range(n), `size` long (the last one shorter)."""
    return [slice(s, min(s + size, n)) for s in range(0, n, size)]
