"""`fsq`: finite scalar quantisation of the normalized object features (Mentzer et al. 2023).

The normalized features are projected on the leading principal axes of the training split's real
objects and whitened (one axis per level), then each axis is bounded and rounded to its number of
levels by `vector_quantize_pytorch.FSQ`; the code is the mixed-radix index. Nothing is learned but
the PCA, so every code stays reachable: a baseline that cannot collapse.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from vector_quantize_pytorch import FSQ

from expmatrix.config import FSQTokenizerConfig
from expmatrix.tokenizers.base import TokenizerError
from expmatrix.tokenizers.codes import CodeTokenizer


class FSQTokenizer(CodeTokenizer):
    def __init__(self, config: FSQTokenizerConfig, features: tuple[str, ...], use_met: bool):
        super().__init__(config, features, use_met)
        self.levels = list(config.levels)
        if len(self.levels) > len(features):
            raise TokenizerError(
                f"tokenizer {config.name!r}: {len(self.levels)} FSQ levels {self.levels} but only "
                f"{len(features)} features {features}: give at most one level per feature"
            )
        try:
            self.quantizer = FSQ(self.levels)
        except (AssertionError, ValueError) as e:  # vector-quantize-pytorch checks with assert
            raise TokenizerError(f"tokenizer {config.name!r}: FSQ levels {self.levels} cannot be built: {e}") from None
        self.n_codes = int(self.quantizer.codebook_size)
        self.mean: np.ndarray | None = None  # (F,) of the real training objects
        self.axes: np.ndarray | None = None  # (F, D): principal axes scaled to unit variance

    def fit_codes(self, x: np.ndarray, ids: np.ndarray, real: np.ndarray) -> None:
        objects = x[real].astype(np.float64)  # real objects only: padding never reaches the PCA
        if len(objects) <= len(self.features):
            raise TokenizerError(f"tokenizer {self.config.name!r}: {len(objects)} real training objects are too few")
        self.mean = objects.mean(0)
        variance, vectors = np.linalg.eigh(np.cov(objects - self.mean, rowvar=False))
        top = np.argsort(variance)[::-1][: len(self.levels)]
        self.axes = vectors[:, top] / np.sqrt(np.maximum(variance[top], 1e-12))
        self.axes *= np.sign(self.axes[np.abs(self.axes).argmax(0), range(len(top))])  # one sign per axis: stable

    def codes(self, x: np.ndarray, ids: np.ndarray, real: np.ndarray) -> np.ndarray:
        z = torch.from_numpy(((x.reshape(-1, x.shape[-1]) - self.mean) @ self.axes).astype(np.float32))
        with torch.no_grad():
            _, indices = self.quantizer(z.unsqueeze(0))  # (1, N*O)
        return indices[0].long().numpy().reshape(real.shape)

    @property
    def fitted(self) -> bool:
        return self.axes is not None

    def quantizer_state(self) -> dict[str, Any]:
        if self.axes is None:
            return {"levels": self.levels, "mean": None, "axes": None}
        return {"levels": self.levels, "mean": self.mean.tolist(), "axes": self.axes.tolist()}

    def load_quantizer_state(self, state: dict[str, Any]) -> None:
        if state["levels"] != self.levels:
            raise TokenizerError(f"saved FSQ levels {state['levels']} differ from the config's {self.levels}")
        self.mean, self.axes = np.asarray(state["mean"]), np.asarray(state["axes"])
