"""Tokenizer presets: `tokenizers/<name>.yaml` files that an experiment names by file name."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from expmatrix.config.loading import load_mapping, validate
from expmatrix.config.strict import SpecError
from expmatrix.config.tokenizers import TokenizerConfig, TokenizerFields


class Presets:
    """The presets of one folder, each read once."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self._cache: dict[str, dict[str, Any]] = {}

    def available(self) -> list[str]:
        return sorted(p.stem for p in self.folder.glob("*.yaml"))

    def path(self, name: str) -> Path:
        return self.folder / f"{name}.yaml"

    def get(self, name: str, where: str, copied: bool = True) -> dict[str, Any]:
        """The preset's raw settings with its `name`; `where` says who asked for it in the error."""
        if name not in self._cache:
            if not self.path(name).exists():
                raise SpecError(
                    f"{where}: unknown tokenizer preset {name!r} (looked in {self.folder}); available: "
                    f"{', '.join(self.available()) or 'none'}"
                )
            self._cache[name] = {"name": name, **load_mapping(self.path(name))}
        return copy.deepcopy(self._cache[name]) if copied else self._cache[name]


def load_preset(name_or_path: str, folder: str | Path = "tokenizers") -> TokenizerFields:
    """A validated tokenizer config from a preset name (in `folder`) or a .yaml path; errors name file and key."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml"):
        presets, name = Presets(path.parent), path.stem
    else:
        presets, name = Presets(folder), str(name_or_path)
    raw = presets.get(name, "--tokenizer")
    return validate(TokenizerConfig, raw, str(presets.path(name)))
