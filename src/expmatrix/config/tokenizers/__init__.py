"""The tokenizer registry: kind -> preset schema -> implementation.

A new tokenizer is its implementation module (`expmatrix/tokenizers/<kind>.py`), its preset
schema (a module here, torch-free like all of `config/`) and one line in `KINDS`. The
implementation is named by its import path so that validating a config never loads torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Union

from pydantic import Field

from expmatrix.config.tokenizers.binned import BinnedTokenizerConfig, FactorizedTokenizerConfig
from expmatrix.config.tokenizers.codes import CodeFields, FSQTokenizerConfig, KMeansTokenizerConfig
from expmatrix.config.tokenizers.common import TOKEN_FEATURES, TokenizerFields
from expmatrix.config.tokenizers.direct import DirectTokenizerConfig, FeatureTransform
from expmatrix.config.tokenizers.integer import IntegerTokenizerConfig
from expmatrix.config.tokenizers.vqvae import VQVAETokenizerConfig


@dataclass(frozen=True)
class Kind:
    config: type[TokenizerFields]  # the preset schema; its `kind` literal is the registry key
    implementation: str  # "module:Class" of the `Tokenizer`, imported when a job builds one


KINDS: dict[str, Kind] = {
    "direct": Kind(DirectTokenizerConfig, "expmatrix.tokenizers.direct:DirectTokenizer"),
    "binned": Kind(BinnedTokenizerConfig, "expmatrix.tokenizers.binned:BinnedTokenizer"),
    "factorized": Kind(FactorizedTokenizerConfig, "expmatrix.tokenizers.factorized:FactorizedTokenizer"),
    "integer": Kind(IntegerTokenizerConfig, "expmatrix.tokenizers.integer:IntegerTokenizer"),
    "kmeans": Kind(KMeansTokenizerConfig, "expmatrix.tokenizers.kmeans:KMeansTokenizer"),
    "fsq": Kind(FSQTokenizerConfig, "expmatrix.tokenizers.fsq:FSQTokenizer"),
    "vqvae": Kind(VQVAETokenizerConfig, "expmatrix.tokenizers.vqvae:VQVAETokenizer"),
}
for _name, _kind in KINDS.items():
    assert _kind.config.model_fields["kind"].annotation.__args__ == (_name,), f"{_name}: registry key != kind"

# The `tokenizer` section of a job: one of the registered presets, chosen by its `kind`.
TokenizerConfig = Annotated[Union[tuple(k.config for k in KINDS.values())], Field(discriminator="kind")]  # noqa: UP007



def fit_signature(config: TokenizerFields, features: tuple[str, ...], use_met: bool) -> str:
    """Everything that shapes a fitted tokenizer and its input layer: the cache key of its fit and sizing."""
    return f"{config.model_dump_json()}|{features}|{use_met}"


__all__ = [
    "KINDS",
    "TOKEN_FEATURES",
    "BinnedTokenizerConfig",
    "CodeFields",
    "FSQTokenizerConfig",
    "KMeansTokenizerConfig",
    "VQVAETokenizerConfig",
    "DirectTokenizerConfig",
    "FactorizedTokenizerConfig",
    "FeatureTransform",
    "IntegerTokenizerConfig",
    "Kind",
    "TokenizerConfig",
    "TokenizerFields",
]
