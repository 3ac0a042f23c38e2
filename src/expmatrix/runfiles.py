"""One file of the run store at a time: atomic writes and appends, and reads that tell a damaged file
(truncated, empty, corrupt) from a good one by raising `DamagedFile`, which names the job and the file.
Which file is where is `RunPaths`' business (paths.py); this module knows formats only.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml


class DamagedFile(Exception):
    """A file that exists but cannot be read: truncated, empty or corrupt."""

    def __init__(self, path: Path, problem: str, job_id: str | None = None):
        self.path, self.problem, self.job_id = Path(path), problem, job_id
        super().__init__(f"{f'job {job_id}: ' if job_id else ''}{self.path.name} is damaged ({problem}): {self.path}")


def atomic_write(path: Path, data: bytes | str) -> None:
    """Write to a temp file in the same folder, then rename over `path`: readers see the old or
    the new file, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    payload = data.encode() if isinstance(data, str) else data
    if _crash_now(path.name):
        tmp.write_bytes(payload[: len(payload) // 2])
        os.kill(os.getpid(), signal.SIGKILL)
    tmp.write_bytes(payload)
    tmp.replace(path)


@contextlib.contextmanager
def writing(path: Path) -> Iterator[Path]:
    """A temp name beside `path` for a writer that wants a file name (parquet); renamed over `path` at the end."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    yield tmp
    tmp.replace(path)


_writes: dict[str, int] = {}


def _crash_now(name: str) -> bool:
    """Fault injection for the reliability tests: EXPMATRIX_CRASH_WRITE=checkpoint.pt:2 kills this
    process halfway through its 2nd write of checkpoint.pt."""
    target, _, nth = os.environ.get("EXPMATRIX_CRASH_WRITE", "").partition(":")
    if target != name:
        return False
    _writes[name] = _writes.get(name, 0) + 1
    return _writes[name] == int(nth or 1)


def write_json(path: Path, obj: Any) -> None:
    atomic_write(path, json.dumps(obj, indent=2, default=str) + "\n")


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    atomic_write(path, "".join(json.dumps(r, default=str) + "\n" for r in rows))


def append_jsonl(path: Path, row: dict[str, Any]) -> None:
    """Add one line. The old bytes are copied unparsed (a damaged line is kept, not a reason to lose the
    new one) and the whole file is renamed into place, atomic like every write; each of these logs has
    one writer at a time (the job's claim holder, or the one submitting shell)."""
    old = path.read_bytes() if path.exists() else b""
    if old and not old.endswith(b"\n"):
        old += b"\n"  # a cut last line stays cut, on a line of its own
    atomic_write(path, old + (json.dumps(row, default=str) + "\n").encode())


def _json_problem(text: str, e: json.JSONDecodeError) -> str:
    truncated = e.pos >= len(text.rstrip()) or e.msg.startswith("Unterminated")
    return f"{'truncated' if truncated else 'corrupt'} JSON: {e.msg}: line {e.lineno} column {e.colno}"


def _parse(path: Path, text: str) -> Any:
    if path.suffix == ".yaml":
        return yaml.safe_load(text)
    if path.suffix != ".jsonl":
        return json.loads(text)
    rows = []
    for n, line in enumerate(text.splitlines(), start=1):
        try:
            rows += [json.loads(line)] if line.strip() else []
        except json.JSONDecodeError as e:
            raise ValueError(f"line {n}: {_json_problem(line, e)}") from None
    return rows


def read_file(path: Path, job_id: str | None = None) -> Any:
    """A .json, .jsonl (a list of rows) or .yaml file, parsed; `DamagedFile` (naming `job_id`, if given) when it
    is empty, not text, or does not parse. A missing file is the caller's FileNotFoundError, not damage."""
    data = path.read_bytes()
    if not data.strip():
        raise DamagedFile(path, "empty file", job_id)
    try:
        text = data.decode()
        return _parse(path, text)
    except UnicodeDecodeError as e:
        problem = f"not text: byte {e.start} is not UTF-8"
    except json.JSONDecodeError as e:
        problem = _json_problem(text, e)
    except yaml.YAMLError as e:
        problem = f"corrupt YAML: {' '.join(str(e).split())}"
    except ValueError as e:  # a line of a .jsonl
        problem = str(e)
    raise DamagedFile(path, problem, job_id)


read_json = read_file  # the name callers outside the package know


def read_object(path: Path, job_id: str | None, needs: str) -> dict[str, Any]:
    """A file that holds one mapping with key `needs`."""
    value = read_file(path, job_id)
    if not isinstance(value, dict) or needs not in value:
        raise DamagedFile(path, f"corrupt: expected a mapping with {needs!r}, got {type(value).__name__}", job_id)
    return value


def _check_zip(path: Path, job_id: str | None, full: bool = True) -> None:
    """A checkpoint is a zip archive: truncation loses its central directory; `full` also checks
    every member's CRC (torch records them), which catches corruption that torch.load would miss."""
    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip() if full else None
    except (zipfile.BadZipFile, EOFError, OSError) as e:
        raise DamagedFile(path, f"truncated or not a zip archive: {e}", job_id) from None
    if bad is not None:
        raise DamagedFile(path, f"corrupt: CRC mismatch in {bad}", job_id)


def _check_parquet(path: Path, job_id: str | None) -> None:
    """A parquet file starts and ends with b'PAR1': a truncated one lacks its footer."""
    with open(path, "rb") as f:
        head, size = f.read(4), f.seek(0, os.SEEK_END)
        f.seek(max(0, size - 4))
        tail = f.read(4)
    if size < 12 or head != b"PAR1" or tail != b"PAR1":
        raise DamagedFile(path, f"truncated or not parquet ({size} bytes, no PAR1 footer)", job_id)


def read_parquet(path: Path, job_id: str | None = None) -> Any:
    """A polars frame; `DamagedFile` if the file is missing (a finished job's result is gone) or unreadable."""
    import polars as pl  # not every command needs it

    if not path.exists():
        raise DamagedFile(path, "missing, though the job is done", job_id)
    _check_parquet(path, job_id)
    try:
        return pl.read_parquet(path)
    except Exception as e:  # noqa: BLE001 - whatever polars says, the file is what is wrong
        raise DamagedFile(path, f"corrupt parquet: {' '.join(str(e).split())}", job_id) from None


def check_file(path: Path, job_id: str | None = None, full: bool = True) -> None:
    """`DamagedFile` if a store file cannot be read, by its kind; other files (claim, folders) pass.
    `full=False` checks a checkpoint's end only (cheap enough for every `status`)."""
    if path.suffix in (".json", ".jsonl", ".yaml"):
        read_file(path, job_id)
    elif path.suffix == ".parquet":
        _check_parquet(path, job_id)
    elif path.suffix == ".pt":
        _check_zip(path, job_id, full)


def set_aside(path: Path) -> Path | None:
    """Rename a damaged file to `<name>.damaged-<time>` (kept for a look, never deleted); None if it is gone."""
    stamp = f"{path.name}.damaged-{time.strftime('%Y%m%dT%H%M%S')}"
    aside, n = path.with_name(stamp), 1
    while aside.exists():
        aside, n = path.with_name(f"{stamp}-{n}"), n + 1
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return None  # another worker set it aside first
    return aside
