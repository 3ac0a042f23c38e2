"""Which code produced a result: package version and a hash of its source files."""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

import expmatrix


@functools.cache
def code_version() -> dict[str, str]:
    """{'version': '0.1.0', 'code': '<12 hex>'}; the hash covers every .py file of the package."""
    root = Path(expmatrix.__file__).parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return {"version": expmatrix.__version__, "code": digest.hexdigest()[:12]}


def is_stale(status: dict) -> bool:
    """A finished job whose recorded code differs from the code running now."""
    return status.get("state") == "done" and status.get("code_version") != code_version()
