"""Which code produced a result: package version and a hash of its source files.

The hash covers every file of the package that can change a result: the Python modules, the C
kernels (`tokenizers/native.c`, compiled at first use) and any data file shipped beside them. It
skips what a build, an interpreter or an editor leaves there (bytecode, compiled libraries, swap
and backup files, hidden files), so that importing or compiling never makes a finished run stale.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterator
from pathlib import Path

import expmatrix

SKIP_DIRS = ("__pycache__",)  # plus every hidden folder (.mypy_cache, .ipynb_checkpoints, ...)
SKIP_SUFFIXES = (".pyc", ".pyo", ".so", ".pyd", ".dylib", ".dll", ".o", ".tmp", ".swp", ".swo", ".bak", ".orig")


def _generated(relative: Path) -> bool:
    """A cache, build product or editor file: hidden, in __pycache__, `name~`, `#name#`, or a skipped suffix."""
    name = relative.name
    return (
        any(part in SKIP_DIRS or part.startswith(".") for part in relative.parts)
        or name.endswith("~")
        or (name.startswith("#") and name.endswith("#"))
        or name.endswith(SKIP_SUFFIXES)
    )


def source_files(root: Path) -> Iterator[Path]:
    """The files under `root` that the hash covers, in a fixed order."""
    for path in sorted(root.rglob("*")):
        if path.is_file() and not _generated(path.relative_to(root)):
            yield path


def source_hash(root: str | Path) -> str:
    """12 hex digits of sha256 over the relative path and bytes of every source file under `root`:
    the same for a copy of the tree elsewhere, different when any source file changes, appears or moves."""
    root = Path(root)
    digest = hashlib.sha256()
    for path in source_files(root):
        data = path.read_bytes()  # framed by its length: no two trees give the same byte stream
        digest.update(f"{path.relative_to(root).as_posix()}\0{len(data)}\0".encode() + data)
    return digest.hexdigest()[:12]


@functools.cache
def code_version() -> dict[str, str]:
    """{'version': '0.1.0', 'code': '<12 hex>'} of the running package; computed once per process."""
    return {"version": expmatrix.__version__, "code": source_hash(Path(expmatrix.__file__).parent)}


def is_stale(status: dict) -> bool:
    """A finished job whose recorded code differs from the code running now."""
    return status.get("state") == "done" and status.get("code_version") != code_version()
