"""The code target: the code a fitted code tokenizer (a VQ-VAE, k-means, FSQ) gives each object, as a class.

A job reads its own inputs (continuous ones, say) and learns to predict discrete codes at its masked objects.
The code tokenizer is fitted as a job with that tokenizer fits it: on the job's training split, through the
shared fit cache (one artifact per fit key, shared with the matrix's VQ jobs of the same data).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from expmatrix.assembly.fits import fitted_tokenizer
from expmatrix.assembly.parts import Assembly, fit_view
from expmatrix.assembly.recipe import Recipe
from expmatrix.config.pretrain import CODE, TargetSpec
from expmatrix.data import Events
from expmatrix.pretraining.targets import Target
from expmatrix.tokenizers.codes import CodeTokenizer


def code_tokenizer(parts: Assembly, spec: TargetSpec) -> CodeTokenizer:
    """The target's code tokenizer, fitted on the job's training split (or read from the fit cache)."""
    job = dataclasses.replace(parts.job, config=parts.cfg.model_copy(update={"tokenizer": spec.tokenizer}))
    recipe = Recipe.of(job)
    files = parts.store.paths.cache.fit(recipe.fit_key)
    tokenizer = fitted_tokenizer(recipe, files, lambda: fit_view(parts.splits["train"]))  # as the matrix's jobs fit
    assert isinstance(tokenizer, CodeTokenizer)  # (the config allows code presets only)
    return tokenizer


def code_values(tokenizer: CodeTokenizer, events: Events) -> np.ndarray:
    """(N, O) int64: the code 0..n_codes-1 of every object (0 at empty slots, which are never masked)."""
    codes = tokenizer.transform(events)["codes"][..., 0].numpy()  # codes + 1, 0 at empty slots
    return np.maximum(codes - 1, 0)


def code_target(parts: Assembly, spec: TargetSpec, events: Events) -> tuple[Target, np.ndarray]:
    """The fitted code target and its value per object slot of `events` (the tokenizer's features only)."""
    tokenizer = code_tokenizer(parts, spec)
    return Target(CODE, "class", classes=tokenizer.n_codes), code_values(tokenizer, events)
