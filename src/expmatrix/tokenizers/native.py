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
import shlex
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from functools import cache
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)
SOURCE = Path(__file__).with_suffix(".c")
BUILD_TIMEOUT = 300  # seconds a compiler may take before binning falls back to numpy
FLAGS = ["-O3", "-std=c11", "-fPIC", "-shared", "-ffp-contract=off", "-fno-fast-math"]
_BUILDING = threading.Lock()
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
        ("offset", ctypes.c_int64),
        ("edges", ctypes.c_void_p),
    ]


def cache_dir() -> Path:
    if os.environ.get("EXPMATRIX_CACHE"):
        return Path(os.environ["EXPMATRIX_CACHE"]) / "native"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "expmatrix" / "native"


def build(out: Path) -> None:
    """Compile `native.c` into the shared library `out` (atomically: a temporary file, then a rename)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    for stale in out.parent.glob("*.tmp"):  # left by a build that was killed
        if time.time() - stale.stat().st_mtime > 3600:
            stale.unlink(missing_ok=True)
    compiler = shlex.split(os.environ.get("CC") or "cc")
    if not compiler or not shutil.which(compiler[0]):
        raise OSError(f"no C compiler {' '.join(compiler)!r} on PATH")
    tmp = out.with_name(f"{out.name}.{os.getpid()}.tmp")
    try:
        subprocess.run([*compiler, *FLAGS, str(SOURCE), "-o", str(tmp), "-lm"], check=True, capture_output=True,
                       text=True, timeout=BUILD_TIMEOUT)  # fmt: skip
        if not tmp.is_file() or tmp.stat().st_size == 0:
            raise OSError(f"{compiler[0]} wrote no library")
        tmp.chmod(0o755)  # a cache shared by a group stays loadable by all of it
        os.replace(tmp, out)
    except subprocess.CalledProcessError as e:
        raise OSError(f"{compiler[0]} failed on {SOURCE}: {e.stderr.strip()[-2000:]}") from e
    except subprocess.TimeoutExpired as e:
        raise OSError(f"{compiler[0]} took more than {e.timeout:.0f} s on {SOURCE}") from e
    finally:
        tmp.unlink(missing_ok=True)


def library_path() -> Path:
    """Where the library for this source, flags, machine type and C library is cached."""
    key = hashlib.sha256(SOURCE.read_bytes() + " ".join(FLAGS).encode()).hexdigest()[:16]
    libc = "-".join(platform.libc_ver()) or "libc"  # a newer glibc's symbols do not load on an older one
    return cache_dir() / f"binning-{key}-{sys.platform}-{platform.machine()}-{libc}.so"


def open_library() -> ctypes.CDLL:
    """The cached library, built first if missing or damaged."""
    path = library_path()
    if not path.exists():
        build(path)
    try:
        return ctypes.CDLL(str(path))
    except OSError:  # e.g. truncated by a full disk: build it afresh, once
        build(path)
        return ctypes.CDLL(str(path))


@cache
def lib() -> ctypes.CDLL | None:
    """The compiled kernels, or None (no compiler, or EXPMATRIX_NATIVE=0): then numpy bins."""
    if os.environ.get("EXPMATRIX_NATIVE", "1") == "0":
        return None
    try:
        with _BUILDING:  # a fit's threads ask at once: one builds, the others then load its file
            so = open_library()
    except OSError as e:
        log.warning("expmatrix: binning falls back to numpy (several times slower): %s", e)
        return None
    i64, i32, ptr = ctypes.c_int64, ctypes.c_int32, ctypes.c_void_p
    feats = ctypes.POINTER(Feature)
    so.joint_tokens.argtypes = [i64, i64, ptr, ptr, i32, i32, feats, i64, ptr, ptr, i64, i64, ptr, i32, feats, i64, ptr]
    so.factorized_codes.argtypes = [i64, i64, ptr, ptr, i32, i32, feats, ptr, ptr]
    so.gather.argtypes = [i64, i64, ptr, ptr, i32, i32, ptr, ptr, i64, ptr, ptr, ptr]
    so.bracket_count.argtypes = [i64, ptr, i32, ptr, ptr, ptr]
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
