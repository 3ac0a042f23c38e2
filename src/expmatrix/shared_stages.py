"""Planning and dispatch of shared stages: work many jobs share, run once before them, cached by its own key.

Two kinds: a tokenizer fit (quantile edges, normalization constants, k-means centres, a VQ-VAE pretraining),
shared by every job whose fit key matches (`assembly.recipe.Recipe.fit_key`), also across experiments; and a
masked-modelling pretraining of the backbone for the jobs with `model.init: pretrained` (`pretrain_key`),
which fits the tokenizer it needs itself when it runs first. What each stage makes lives in `assembly/`
(the fit cache) and `pretraining/`; this module says which stages a set of jobs needs, in which state, and
runs one. Torch-free until a stage runs: `plan` and `status` read the stages.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

from expmatrix.assembly.recipe import Recipe
from expmatrix.config import Job
from expmatrix.paths import CachePaths, FitPaths, PretrainPaths
from expmatrix.store import RunStore

Kind = Literal["tokenizer-fit", "pretrain"]


@dataclass(frozen=True)
class SharedStage:
    """One piece of shared work and the jobs waiting for it."""

    key: str
    kind: Kind
    recipe: Recipe  # of any job that needs it: its config says what to do
    n_cells: int
    n_jobs: int = 0  # the jobs (all seeds) waiting for it
    state: str = "pending"  # pending | failed | done

    def describe(self) -> str:
        r = self.recipe
        features, met = "-".join(r.features), " + MET" if r.use_met else ""  # (pulses have no MET)
        model = f", model {r.cfg.model.target_params} params" if self.kind == "pretrain" else ""
        return f"{self.kind} {self.key}: {r.cfg.tokenizer.name} on {features}{met}{model}"

    def files(self, cache: CachePaths) -> FitPaths | PretrainPaths:
        """Its artifact and its failure record."""
        return cache.pretrained(self.key) if self.kind == "pretrain" else cache.fit(self.key)


def shared_stages(jobs: list[Job], store: RunStore) -> list[SharedStage]:
    """Every tokenizer fit and pretraining the jobs need, one per key (the fits first), with its state and the
    jobs waiting for it."""
    found: dict[tuple[Kind, str], list[Recipe]] = {}
    for job in jobs:
        recipe = Recipe.of(job)
        found.setdefault(("tokenizer-fit", recipe.fit_key), []).append(recipe)
        if recipe.pretrain_key is not None:
            found.setdefault(("pretrain", recipe.pretrain_key), []).append(recipe)
    out = []
    for (kind, key), group in sorted(found.items(), key=lambda item: item[0][0] == "pretrain"):
        stage = SharedStage(key, kind, group[0], len({r.job.cell for r in group}), len(group))
        files = stage.files(store.paths.cache)
        state = "done" if files.artifact.exists() else "failed" if files.failure.exists() else "pending"
        out.append(dataclasses.replace(stage, state=state))
    return out


def pending_stages(jobs: list[Job], store: RunStore) -> list[SharedStage]:
    """The shared stages the jobs need that are neither done nor failed, one per key."""
    return [s for s in shared_stages(jobs, store) if s.state == "pending"]


def clear_failed_stages(jobs: list[Job], store: RunStore) -> None:
    """`--retry-failed`: forget recorded stage failures, so that the stages run again."""
    for stage in shared_stages(jobs, store):
        stage.files(store.paths.cache).failure.unlink(missing_ok=True)


def run_stage(stage: SharedStage, store: RunStore) -> None:
    """Run one shared stage (its job's tokenizer fit, or its pretraining), on CUDA when present."""
    import torch  # (here: planning stays torch-free)

    from expmatrix.assembly.parts import Assembly

    parts = Assembly(stage.recipe.job, store, "cuda" if torch.cuda.is_available() else "cpu")
    if stage.kind == "pretrain":
        from expmatrix.pretraining.loop import run_pretraining

        run_pretraining(parts)
    else:
        _ = parts.tokenizer  # fitted on first use, and cached
