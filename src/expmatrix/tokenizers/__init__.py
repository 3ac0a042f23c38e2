"""Tokenizer registry: config kind -> implementation."""

from __future__ import annotations

from expmatrix.spec import BinnedTokenizerConfig, DirectTokenizerConfig
from expmatrix.tokenizers.base import Tokenizer, TokenizerError, Tokens
from expmatrix.tokenizers.binned import BinnedTokenizer
from expmatrix.tokenizers.direct import DirectTokenizer

REGISTRY: dict[type, type[Tokenizer]] = {
    DirectTokenizerConfig: DirectTokenizer,
    BinnedTokenizerConfig: BinnedTokenizer,
}


def build_tokenizer(config, features: tuple[str, ...], use_met: bool) -> Tokenizer:
    """The unfitted tokenizer a job's `tokenizer` section describes."""
    return REGISTRY[type(config)](config, features, use_met)


__all__ = ["Tokenizer", "TokenizerError", "Tokens", "build_tokenizer"]
