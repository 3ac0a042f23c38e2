"""`vqvae`: codes from a VQ-VAE pretrained on the training split's real objects (OmniJet-alpha, MPM).

`fit` is the pretraining stage (`pretrain.py`): its artifact (weights and health record) is the
tokenizer's fitted state, cached once per preset, feature selection and data selection like any
fit, and shared by every job that names it. After the fit the encoder and codebook are frozen:
they are no parameter of the classifier. The code embedding is, and is counted in its budget:
a fresh table, or one initialised from the code vectors and projected (`embedding_init: codebook`).
"""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np
import torch
from torch import nn

from expmatrix.config import VQVAETokenizerConfig
from expmatrix.tokenizers.base import TokenizerError
from expmatrix.tokenizers.codes import CodeTokenizer
from expmatrix.tokenizers.transforms import invert
from expmatrix.tokenizers.vqvae.model import ObjectVQVAE
from expmatrix.tokenizers.vqvae.pretrain import Settings, pretrain


def _to_text(model: nn.Module) -> str:
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return base64.b64encode(buffer.getvalue()).decode()


class VQVAETokenizer(CodeTokenizer):
    def __init__(self, config: VQVAETokenizerConfig, features: tuple[str, ...], use_met: bool):
        super().__init__(config, features, use_met)
        self.settings = Settings.from_config(config)
        self.n_codes = self.settings.codebook_size
        self.embedding_init = config.embedding_init
        self.model: ObjectVQVAE | None = None
        self.record: dict[str, Any] | None = None  # the health record of the pretraining
        self._weights = ""  # base64 of the saved weights, as stored

    def to_physical(self, y: np.ndarray) -> np.ndarray:
        """(M, F) normalized object features -> physical units (GeV for energies)."""
        n = self.normalizer
        cols = [invert(y[:, k], n.transforms[f], n.center[f], n.factor[f]) for k, f in enumerate(self.features)]
        return np.stack(cols, axis=1)

    def fit_codes(self, x: np.ndarray, ids: np.ndarray, real: np.ndarray) -> None:
        self.model, self.record = pretrain(x, ids, real, self.settings, self.seed, self.features, self.to_physical)
        self._weights = _to_text(self.model)

    @torch.no_grad()
    def codes(self, x: np.ndarray, ids: np.ndarray, real: np.ndarray) -> np.ndarray:
        R = torch.from_numpy(real)
        z = self.model.encode(torch.from_numpy(x), torch.from_numpy(ids), R)
        out = torch.zeros(real.shape, dtype=torch.long)
        out[R] = self.model.lookup(z)[1]
        return out.numpy()

    def code_table(self, d_model: int) -> nn.Module | None:
        if self.embedding_init == "fresh":
            return None
        table = nn.Embedding(self.n_codes + 1, self.settings.code_dim)  # row 0: padding
        if self.model is not None:
            with torch.no_grad():
                table.weight[1:] = self.model.vq.codebook.detach().reshape(self.n_codes, -1)
        return nn.Sequential(table, nn.Linear(self.settings.code_dim, d_model))

    @property
    def fitted(self) -> bool:
        return self.model is not None

    def summary(self) -> dict[str, float]:
        """The final held-out health of the codebook: utilisation, perplexity, dead codes, and the resolution
        (rmse in physical units) per feature."""
        if self.record is None:
            return {}
        last = self.record["history"][-1]
        rmse = {f"{f}_rmse": e["rmse"] for f, e in last["errors"].items()}
        return {k: last[k] for k in ("utilisation", "perplexity", "dead_codes")} | rmse

    def quantizer_state(self) -> dict[str, Any]:
        return {"weights": self._weights, "health": self.record}

    def load_quantizer_state(self, state: dict[str, Any]) -> None:
        model = ObjectVQVAE(len(self.features), self.settings)
        try:
            weights = torch.load(io.BytesIO(base64.b64decode(state["weights"])), weights_only=True)
            model.load_state_dict(weights)
        except (RuntimeError, ValueError, KeyError) as e:
            raise TokenizerError(f"the saved VQ-VAE does not fit the preset {self.settings.name!r}: {e}") from None
        self.model, self.record, self._weights = model.eval(), state["health"], state["weights"]
