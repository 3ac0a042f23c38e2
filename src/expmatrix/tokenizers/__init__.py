"""Tokenizers: one module per strategy behind one interface (`base.Tokenizer`).

Which class implements a preset's `kind` is said once, in the registry `expmatrix.config.KINDS`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from expmatrix.config import KINDS, TokenizerFields
from expmatrix.tokenizers.errors import TokenizerError

if TYPE_CHECKING:
    from expmatrix.tokenizers.base import Tokenizer, Tokens


def __getattr__(name: str) -> Any:
    """`Tokenizer` and `Tokens` load torch: imported when asked for, so that the error class (and the
    commands that only catch it, like `plan`) stay free of torch."""
    if name in ("Tokenizer", "Tokens"):
        from expmatrix.tokenizers import base

        return getattr(base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def implementation(kind: str) -> type[Tokenizer]:
    """The `Tokenizer` class registered for `kind`."""
    module, _, name = KINDS[kind].implementation.partition(":")
    return getattr(importlib.import_module(module), name)


def build_tokenizer(config: TokenizerFields, features: tuple[str, ...], use_met: bool) -> Tokenizer:
    """The unfitted tokenizer a job's `tokenizer` section describes."""
    return implementation(config.kind)(config, features, use_met)


__all__ = ["Tokenizer", "TokenizerError", "Tokens", "build_tokenizer", "implementation"]
