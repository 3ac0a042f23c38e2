"""Tokenizers: one module per strategy behind one interface (`base.Tokenizer`).

Which class implements a preset's `kind` is said once, in the registry `expmatrix.config.KINDS`.
"""

from __future__ import annotations

import importlib

from expmatrix.config import KINDS, TokenizerFields
from expmatrix.tokenizers.base import Tokenizer, TokenizerError, Tokens


def implementation(kind: str) -> type[Tokenizer]:
    """The `Tokenizer` class registered for `kind`."""
    module, _, name = KINDS[kind].implementation.partition(":")
    return getattr(importlib.import_module(module), name)


def build_tokenizer(config: TokenizerFields, features: tuple[str, ...], use_met: bool) -> Tokenizer:
    """The unfitted tokenizer a job's `tokenizer` section describes."""
    return implementation(config.kind)(config, features, use_met)


__all__ = ["Tokenizer", "TokenizerError", "Tokens", "build_tokenizer", "implementation"]
