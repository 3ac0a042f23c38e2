"""What every tokenizer preset shares: the feature names it may declare, and its base."""

from __future__ import annotations

from typing import Literal

from expmatrix.config.strict import Strict

# Feature names a tokenizer preset may declare: the 4tops columns and globals, and IceCube pulse features.
TOKEN_FEATURES = Literal[
    "E", "pT", "eta", "phi", "MET", "MET_phi", "time", "charge", "x", "y", "z", "sensor_id", "auxiliary"
]  # fmt: skip
PI = 3.141592653589793


class TokenizerFields(Strict):
    """Fields of every tokenizer preset."""

    name: str  # the preset's file name: a label, not part of the job id

    def declared_features(self) -> list[str]:
        """The features the preset has a transform or rule for, in its order."""
        raise NotImplementedError
