"""Tokenizer registry: config kind -> implementation."""

from __future__ import annotations

from pathlib import Path

from pydantic import TypeAdapter, ValidationError

import expmatrix.data  # noqa: F401 - spec imports data.layout: load the data package first (no import cycle)
from expmatrix.spec import (
    BinnedTokenizerConfig,
    DirectTokenizerConfig,
    FactorizedTokenizerConfig,
    IntegerTokenizerConfig,
    SpecError,
    TokenizerConfig,
    describe_errors,
    load_yaml,
)
from expmatrix.tokenizers.base import Tokenizer, TokenizerError, Tokens
from expmatrix.tokenizers.binned import BinnedTokenizer
from expmatrix.tokenizers.direct import DirectTokenizer
from expmatrix.tokenizers.factorized import FactorizedTokenizer
from expmatrix.tokenizers.integer import IntegerTokenizer

REGISTRY: dict[type, type[Tokenizer]] = {
    DirectTokenizerConfig: DirectTokenizer,
    BinnedTokenizerConfig: BinnedTokenizer,
    FactorizedTokenizerConfig: FactorizedTokenizer,
    IntegerTokenizerConfig: IntegerTokenizer,
}


def build_tokenizer(config, features: tuple[str, ...], use_met: bool) -> Tokenizer:
    """The unfitted tokenizer a job's `tokenizer` section describes."""
    return REGISTRY[type(config)](config, features, use_met)


def declared_features(config) -> list[str]:
    """The features a preset has a transform or rule for, in its order."""
    return list(config.transforms if config.kind == "direct" else config.rules)


def load_preset(name_or_path: str, folder: str | Path = "tokenizers"):
    """A validated tokenizer config from a preset name (in `folder`) or a .yaml path; errors name file and key."""
    is_file = str(name_or_path).endswith((".yaml", ".yml"))
    path = Path(name_or_path) if is_file else Path(folder) / f"{name_or_path}.yaml"
    if not path.exists():
        available = sorted(p.stem for p in Path(folder).glob("*.yaml"))
        raise SpecError(f"{path}: tokenizer preset not found; available in {folder}: {', '.join(available) or 'none'}")
    raw = load_yaml(path)
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: expected a mapping")
    try:
        return TypeAdapter(TokenizerConfig).validate_python({"name": path.stem, **raw})
    except ValidationError as e:
        key, msg = describe_errors(e, BinnedTokenizerConfig)[0]
        raise SpecError(f"{path}: {key}: {msg}") from None


__all__ = ["Tokenizer", "TokenizerError", "Tokens", "build_tokenizer", "declared_features", "load_preset"]
