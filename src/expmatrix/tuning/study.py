"""A tuning: the arms of an experiment, one optuna study per arm, and the job a trial trains.

An arm is one level combination of `tune.arms` (default: every factor). Its trials train the arm's
first cell of the matrix (its other factors at their first levels) at the tune seed, with the suggested
settings and `train.epochs = tune.epochs`: an ordinary job of the matrix built with those settings as a
last layer (`build_matrix(per_cell=...)`), so its id, validation and errors are the matrix's own. Its space
is `tune.space` plus the keys `tune.arm_space` adds for it; a key below an arm factor's own key refines the
arm's level (`tokenizer.codebook_size` under `tokenizer: vqvae512`), and only an arm space may set one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna

from expmatrix.config import SOURCE_TASKS, VAL_METRICS, Job, SpecError, TuneConfig, short_hash
from expmatrix.config.tune import Space
from expmatrix.matrix import Layer, Matrix, build_matrix, reseed
from expmatrix.metrics import higher_is_better
from expmatrix.tuning.files import TuneFiles
from expmatrix.tuning.space import arm_space, corners, names_arm

SPACE_LAYER = "tune.space: "  # how errors name a setting the tuning sets


@dataclass(frozen=True)
class Arm:
    name: str  # `factor=level,...`: its study's name and its best file's
    levels: dict[str, str]  # arm factor -> level
    job: Job  # the cell its trials train, at the tune seed, without tuned settings
    space: dict[str, Space] = field(default_factory=dict)  # tune.space and the keys its arm_space adds
    where: dict[str, str] = field(default_factory=dict)  # key -> where the tune section sets it (for errors)


def arm_name(levels: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in levels.items()) or "all"


@dataclass
class Tuning:
    """Everything a tune worker, export, report and the tuned run need; `Tuning.load` checks it all."""

    path: Path
    profile: str | None
    overrides: dict[str, Any]
    matrix: Matrix
    tune: TuneConfig
    files: TuneFiles
    arms: list[Arm] = field(default_factory=list)

    @classmethod
    def load(
        cls,
        path: str | Path,
        profile: str | None,
        overrides: dict[str, Any],
        runs_root: str | Path,
        arms: list[str] | None = None,
        trials: int | None = None,
    ) -> Tuning:
        """The experiment's tuning with `--arms` / `--trials` over its `tune` section; every arm's space,
        objective and trial job are checked here, before any trial runs."""
        path = Path(path)
        matrix = build_matrix(path, profile, overrides)
        if matrix.spec.tune is None:
            raise SpecError(f"{path}: no `tune` section: add one (see docs/tuning.md)")
        update = {"arms": arms} if arms else {}
        tune = matrix.spec.tune.model_copy(update=update | ({"trials": trials} if trials else {}))
        spec = matrix.spec
        files = TuneFiles(runs_root, spec.name, spec.run.stale_after_seconds)
        tuning = cls(path, profile, overrides, matrix, tune, files)
        tuning.arms = tuning._find_arms()
        tuning._check()
        return tuning

    # ------------------------------------------------------------ arms and trial jobs

    def _find_arms(self) -> list[Arm]:
        factors = self.factors
        unknown = [f for f in factors if f not in self.matrix.factor_names]
        if unknown:
            known = ", ".join(self.matrix.factor_names) or "none"
            raise SpecError(f"{self.path}: tune.arms: no factor {unknown[0]!r}; factors: {known}")
        seed = self.tune.seed if self.tune.seed is not None else self.matrix.jobs[0].seed
        found: dict[str, Arm] = {}
        for job in self.matrix.jobs:
            levels = {f: job.levels[f] for f in factors}
            if arm_name(levels) not in found:
                try:
                    keys = arm_space(self.tune, levels)
                except SpecError as e:
                    raise SpecError(f"{self.path}: {e} (arm {arm_name(levels)})") from None
                space, where = {k: s for k, (s, _) in keys.items()}, {k: w for k, (_, w) in keys.items()}
                found[arm_name(levels)] = Arm(arm_name(levels), levels, reseed(job, seed), space, where)
        for label in self.tune.arm_space:
            if not any(names_arm(label, a.levels) for a in found.values()):
                raise SpecError(f"{self.path}: tune.arm_space.{label}: names no arm; arms: {', '.join(found)}")
        return list(found.values())

    @property
    def factors(self) -> list[str]:
        """The arm factors: their levels are fixed within an arm, so an arm space may refine them."""
        return self.tune.arms if self.tune.arms is not None else self.matrix.factor_names

    def trial_job(self, arm: Arm, values: dict[str, Any]) -> Job:
        """The job of a trial of `arm` with the suggested `values` (dotted keys)."""
        layer: Layer = (SPACE_LAYER, {**values, "train.epochs": self.tune.epochs})

        def own(levels: dict[str, str]) -> Layer | None:
            return layer if levels == arm.job.levels else None

        matrix = build_matrix(self.path, self.profile, self.overrides, per_cell=own, refine=self.factors)
        job = next(j for j in matrix.jobs if j.levels == arm.job.levels)
        return reseed(job, arm.job.seed)

    def arm_of(self, levels: dict[str, str]) -> Arm:
        return next(a for a in self.arms if all(levels[f] == v for f, v in a.levels.items()))

    # ------------------------------------------------------------ checks before any trial

    @property
    def metric(self) -> str:
        return self.tune.objective.metric

    @property
    def direction(self) -> str:
        return self.tune.direction(higher_is_better(self.metric))

    def _check(self) -> None:
        """Every arm: the objective is a metric its task logs, every corner of the space builds a job, and
        every space key is read by the job (a setting with no effect is an error, as in the matrix)."""
        from expmatrix.inert import cached_reads, unread

        for arm in self.arms:
            task = SOURCE_TASKS[arm.job.config.data.source]
            if self.metric not in VAL_METRICS[task]:
                raise SpecError(
                    f"{self.path}: tune.objective.metric: {task} jobs log no {self.metric!r} "
                    f"(arm {arm.name}); they log: {', '.join(VAL_METRICS[task])}"
                )
            self._check_keys(arm)
            jobs = [self.trial_job(arm, point) for point in corners(arm.space)]
            reads = cached_reads(jobs[0].config, self.files.trials)
            never = unread(arm.where, reads)
            if never:
                raise SpecError(f"{self.path}: {never[0]}: arm {arm.name} never reads it: tuning it changes nothing")

    def _check_keys(self, arm: Arm) -> None:
        """A key below an arm factor's own key in the shared space (another arm's level may lack it), and a
        tokenizer option the arm's preset does not have, are errors naming the arm and the key."""
        for key in self.tune.space:
            factor = next((f for f in self.factors if key.startswith(f + ".")), None)
            if factor is not None:
                raise SpecError(
                    f"{self.path}: tune.space.{key}: refines the arm factor {factor!r}, whose levels differ in what "
                    f"they have: tune it per arm in tune.arm_space.<level> (arm {arm.name})"
                )
        tok = arm.job.config.tokenizer
        for key, where in arm.where.items():
            own = key.startswith("tokenizer.") and key not in self.tune.space  # shared keys: the matrix's checks
            option = key.split(".")[1] if own else None
            if option is not None and option not in type(tok).model_fields:
                options = ", ".join(k for k in type(tok).model_fields if k not in ("name", "kind"))
                raise SpecError(
                    f"{self.path}: {where}: arm {arm.name}: its tokenizer preset {tok.name!r} ({tok.kind}) has no "
                    f"option {option!r}; its options: {options}"
                )

    # ------------------------------------------------------------ studies

    def fingerprint(self) -> str:
        """What a journal was written for: experiment, arms (their cells' ids: profile and --set included),
        space, objective, epochs, sampler and pruner. Not `trials`: a study may be given more later."""
        tune = self.tune.model_dump(mode="json", exclude={"trials"})
        return short_hash({"experiment": self.matrix.spec.name, "arms": {a.name: a.job.id for a in self.arms}, **tune})

    def describe(self) -> str:
        arms, space = ", ".join(a.name for a in self.arms), ", ".join(self.tune.space) or "-"
        own = "".join(f"; {a.name} also {', '.join(k for k in a.space if k not in self.tune.space)}"
                      for a in self.arms if len(a.space) > len(self.tune.space))  # fmt: skip
        return (
            f"{self.matrix.spec.name}: arms {arms}; space {space}{own}; {self.metric}, {self.tune.epochs} epochs per "
            f"trial; fingerprint {self.fingerprint()}"
        )

    def sampler(self, arm: Arm, n: int) -> optuna.samplers.BaseSampler:
        """Seeded by (sampler_seed, arm, trial number): workers that share a study do not draw the same point,
        and the same history gives the same suggestion."""
        seed = int(short_hash([self.tune.sampler_seed, arm.name, n]), 16) % 2**31
        if self.tune.sampler == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        return optuna.samplers.TPESampler(seed=seed)

    def pruner(self) -> optuna.pruners.BasePruner:
        p = self.tune.pruner
        if p.kind == "median":
            return optuna.pruners.MedianPruner(n_startup_trials=p.startup_trials, n_warmup_steps=p.warmup_epochs)
        if p.kind == "hyperband":
            return optuna.pruners.HyperbandPruner(
                min_resource=p.min_epochs, max_resource=self.tune.epochs, reduction_factor=p.reduction_factor
            )
        return optuna.pruners.NopPruner()

    def study(self, storage: optuna.storages.BaseStorage, arm: Arm, n: int = 0) -> optuna.Study:
        return optuna.load_study(
            study_name=arm.name, storage=storage, sampler=self.sampler(arm, n), pruner=self.pruner()
        )

    def open_studies(self, storage: optuna.storages.BaseStorage) -> None:
        """Create the missing studies (the arm's own settings enqueued as its first trial); a journal
        written for another experiment, space or budget is an error naming it. Call under the budget lock."""
        from expmatrix.tuning.space import defaults

        fingerprint = self.fingerprint()
        existing = {s.study_name: s for s in optuna.get_all_study_summaries(storage)}
        for name, summary in existing.items():
            if summary.user_attrs.get("fingerprint") != fingerprint:
                raise SpecError(
                    f"{self.files.journal}: written for another experiment, arms, space or budget (study {name!r}: "
                    f"{summary.user_attrs.get('what', 'not written by expmatrix')}; now: {self.describe()}). "
                    "Move it away to start afresh, or tune with the settings it was written for"
                )
        for arm in self.arms:
            if arm.name in existing:
                continue
            study = optuna.create_study(study_name=arm.name, storage=storage, direction=self.direction)
            study.set_user_attr("fingerprint", fingerprint)
            study.set_user_attr("what", self.describe())
            study.set_user_attr("levels", arm.levels)
            first = defaults(arm.job.config, arm.space)
            if first:
                study.enqueue_trial(first, user_attrs={"defaults": True})
