"""`kmeans`: each real object's code is its nearest k-means centre in the normalized feature space.

A baseline that cannot collapse: the centres come from Lloyd's algorithm (scikit-learn, k-means++
starts, a fixed seed) on a sample of the training split's real objects.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.cluster import KMeans

from expmatrix.config import KMeansTokenizerConfig
from expmatrix.tokenizers.base import TokenizerError
from expmatrix.tokenizers.codes import CodeTokenizer


def nearest(x: np.ndarray, centres: np.ndarray, rows: int = 1 << 16) -> np.ndarray:
    """(M,) index of the nearest centre of each row of x (M, F), in blocks of `rows` (bounded memory)."""
    out = np.empty(len(x), np.int64)
    c2 = (centres**2).sum(1)
    for i in range(0, len(x), rows):
        block = x[i : i + rows]
        out[i : i + rows] = np.argmin(c2[None, :] - 2 * block @ centres.T, axis=1)  # |x|^2 is the same per row
    return out


class KMeansTokenizer(CodeTokenizer):
    def __init__(self, config: KMeansTokenizerConfig, features: tuple[str, ...], use_met: bool):
        super().__init__(config, features, use_met)
        self.n_codes = config.codes
        self.iterations = config.iterations
        self.max_fit_objects = config.max_fit_objects
        self.centres: np.ndarray | None = None  # (k, F) float32

    def fit_codes(self, x: np.ndarray, ids: np.ndarray, real: np.ndarray) -> None:
        objects = x[real]  # real objects only: padding never reaches the centres
        if len(objects) < self.n_codes:
            raise TokenizerError(
                f"tokenizer {self.config.name!r}: {self.n_codes} codes but only {len(objects)} real training "
                "objects: lower `codes` or use more events"
            )
        rng = np.random.default_rng(self.seed)
        if len(objects) > self.max_fit_objects:
            objects = objects[rng.choice(len(objects), self.max_fit_objects, replace=False)]
        km = KMeans(self.n_codes, n_init=1, max_iter=self.iterations, random_state=self.seed)
        self.centres = km.fit(objects.astype(np.float64)).cluster_centers_.astype(np.float32)

    def codes(self, x: np.ndarray, ids: np.ndarray, real: np.ndarray) -> np.ndarray:
        out = np.zeros(real.shape, np.int64)
        out[real] = nearest(x[real], self.centres)
        return out

    @property
    def fitted(self) -> bool:
        return self.centres is not None

    def quantizer_state(self) -> dict[str, Any]:
        return {"centres": None if self.centres is None else self.centres.tolist()}

    def load_quantizer_state(self, state: dict[str, Any]) -> None:
        centres = np.asarray(state["centres"], np.float32)
        if centres.shape != (self.n_codes, len(self.features)):
            raise TokenizerError(
                f"saved k-means centres have shape {centres.shape}; the config needs ({self.n_codes}, "
                f"{len(self.features)}) for {self.n_codes} codes of {self.features}"
            )
        self.centres = centres
