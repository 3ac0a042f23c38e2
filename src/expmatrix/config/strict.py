"""`Strict`, the base of every config section, and the read tracer that finds inert settings.

A strict section rejects unknown keys. While a job's parts are built inside `record_reads`,
every field they read is noted: a key the experiment sets that nobody reads is an error
(see `inert.py`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, model_serializer

# While a job's components are built, `record_reads` notes every config field they read.
_TRACE: ContextVar[tuple[dict[int, str], set[str]] | None] = ContextVar("config_reads", default=None)


class SpecError(ValueError):
    """A config that cannot run; the message names the file and key path."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # fields added after runs existed, with their defaults: at that value a field stays out of the resolved
    # config, so existing job ids and cache keys do not change
    LATER_DEFAULTS: ClassVar[dict[str, Any]] = {}

    @model_serializer(mode="wrap")
    def _canonical(self, handler) -> dict[str, Any]:
        out = handler(self)
        for key, default in self.LATER_DEFAULTS.items():
            if key in out and out[key] == default:
                del out[key]
        return self._trim(out)

    def _trim(self, out: dict[str, Any]) -> dict[str, Any]:
        """What a section leaves out of its resolved form besides `LATER_DEFAULTS` (settings that do nothing there)."""
        return out

    def __getattribute__(self, name: str) -> Any:
        value = super().__getattribute__(name)
        if name[0] != "_":
            trace = _TRACE.get()
            if trace is not None and name in type(self).model_fields:
                paths, reads = trace  # a section (a Strict value) read counts for its tag only: `<key>#`
                reads.add(paths.get(id(self), "") + name + ("#" if isinstance(value, Strict) else ""))
        return value


@contextmanager
def record_reads(config: Strict) -> Iterator[set[str]]:
    """Collect the dotted keys of `config` whose values are read inside the block
    (a dict-valued field counts as read as a whole; `model_dump` reads nothing). A section
    read as a whole is noted as `<key>#`: it consumes the key itself and its `kind` tag."""
    paths: dict[int, str] = {}

    def walk(model: Strict, prefix: str) -> None:
        paths[id(model)] = prefix
        for name in type(model).model_fields:
            value = model.__dict__[name]
            if isinstance(value, Strict):
                walk(value, f"{prefix}{name}.")

    walk(config, "")
    reads: set[str] = set()
    token = _TRACE.set((paths, reads))
    try:
        yield reads
    finally:
        _TRACE.reset(token)


def tagged(value: Any) -> Any:
    """A bare string in YAML is the `kind` of an option block: `phi: cyclic` == `phi: {kind: cyclic}`."""
    return {"kind": value} if isinstance(value, str) else value
