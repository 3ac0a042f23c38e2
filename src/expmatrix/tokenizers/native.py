"""The fused binning kernels of `native.c`, compiled at first use, with numpy as the fallback.

The C source is compiled once per source version and machine type with the system's C compiler
(``$CC``, else ``cc``) into ``$EXPMATRIX_CACHE`` (default ``~/.cache/expmatrix``), atomically, so
that parallel workers may race. Without a compiler, or with ``EXPMATRIX_NATIVE=0``, `lib()` is
None and the tokenizers take their numpy path, which gives the same tokens (bit-identical:
tests/test_native.py), several times slower. Flags: ``-O3`` without ``-march``, so that a cache
on a shared home directory runs on every node of its architecture, and without fast-math.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from functools import cache
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)
SOURCE = Path(__file__).with_suffix(".c")
FLAGS = ["-O3", "-std=c11", "-fPIC", "-shared", "-ffp-contract=off", "-fno-fast-math"]
N_TYPES = 8  # object types 0..7, as NT in native.c
MAX_FEATURES = 16  # features one kernel call bins, as MAX_FEAT in native.c


class Feature(ctypes.Structure):
    """One binned feature, as `native.c` reads it."""

    _fields_ = [
        ("col", ctypes.c_int32),
        ("cyclic", ctypes.c_int32),
        ("upper_out", ctypes.c_int32),
        ("n_edges", ctypes.c_int32),
        ("per_type", ctypes.c_int32),
        ("lo", ctypes.c_float),
        ("hi", ctypes.c_float),
        ("low", ctypes.c_double),
        ("period", ctypes.c_double),
        ("radix", ctypes.c_int64),
        ("edges", ctypes.c_void_p),
    ]


def cache_dir() -> Path:
    if os.environ.get("EXPMATRIX_CACHE"):
        return Path(os.environ["EXPMATRIX_CACHE"]) / "native"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "expmatrix" / "native"


def build(out: Path) -> None:
    """Compile `native.c` into the shared library `out` (atomically: a temporary file, then a rename)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    compiler = os.environ.get("CC") or "cc"
    if not shutil.which(compiler):
        raise OSError(f"no C compiler {compiler!r} on PATH")
    fd, tmp = tempfile.mkstemp(dir=out.parent, suffix=".so")
    os.close(fd)
    try:
        subprocess.run([compiler, *FLAGS, str(SOURCE), "-o", tmp, "-lm"], check=True, capture_output=True,
                       text=True, timeout=120)  # fmt: skip
        os.replace(tmp, out)
    except subprocess.CalledProcessError as e:
        raise OSError(f"{compiler} failed on {SOURCE}: {e.stderr.strip()[-2000:]}") from e
    finally:
        Path(tmp).unlink(missing_ok=True)


@cache
def lib() -> ctypes.CDLL | None:
    """The compiled kernels, or None (no compiler, or EXPMATRIX_NATIVE=0): then numpy bins."""
    if os.environ.get("EXPMATRIX_NATIVE", "1") == "0":
        return None
    key = hashlib.sha256(SOURCE.read_bytes() + " ".join(FLAGS).encode()).hexdigest()[:16]
    path = cache_dir() / f"binning-{key}-{sys.platform}-{platform.machine()}.so"
    try:
        if not path.exists():
            build(path)
        so = ctypes.CDLL(str(path))
    except OSError as e:
        log.warning("expmatrix: binning falls back to numpy (several times slower): %s", e)
        return None
    i64, i32, ptr = ctypes.c_int64, ctypes.c_int32, ctypes.c_void_p
    feats = ctypes.POINTER(Feature)
    so.joint_tokens.argtypes = [i64, i64, ptr, ptr, i32, i32, feats, i64, ptr, ptr, i64, i64, ptr, i64, i64, ptr]
    so.factorized_codes.argtypes = [i64, i64, ptr, ptr, i32, i32, feats, ptr, ptr]
    so.gather.argtypes = [i64, i64, ptr, ptr, i32, i32, ptr, ptr, i64, ptr]
    so.bracket_count.argtypes = [i64, ptr, i32, ptr, ptr, ptr, ptr]
    for fn in (so.joint_tokens, so.factorized_codes, so.gather, so.bracket_count):
        fn.restype = i64
    return so


def address(a: np.ndarray | None) -> int | None:
    """The address of an array's first element (None stays None: a NULL pointer)."""
    return None if a is None else a.ctypes.data


def rows(a: np.ndarray) -> Callable[[int], int]:
    """The address of row r of `a` (its base address is read once: `.ctypes` costs microseconds)."""
    base, stride = a.ctypes.data, a.strides[0]
    return lambda r: base + r * stride
