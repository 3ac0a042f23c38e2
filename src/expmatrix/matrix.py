"""Factor grid -> jobs with stable ids.

A job config is built in layers, each a set of dotted-key overrides:
``data`` and ``base`` of the experiment, one level of every factor, the profile,
then command-line ``--set``. The tokenizer preset named by ``tokenizer`` is read
from the presets folder. Every resolved config is validated before anything runs;
an error names the layer and key it came from.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from expmatrix.config import (
    ExperimentSpec,
    Job,
    JobConfig,
    Presets,
    SpecError,
    describe_errors,
    flatten,
    load_experiment,
    set_dotted,
)

Layer = tuple[str, dict[str, Any]]  # (prefix naming where it came from, flat dotted overrides)
CellLayer = Callable[[dict[str, str]], Layer | None]  # a cell's factor levels -> its own last layer (tuned settings)


@dataclass(frozen=True)
class Matrix:
    spec: ExperimentSpec
    path: Path
    jobs: list[Job]
    factor_names: list[str]
    settings: dict[str, dict[str, str]] = field(default_factory=dict)  # cell -> {key the spec sets: where}

    @property
    def cells(self) -> dict[str, dict[str, str]]:
        return {j.cell: j.levels for j in self.jobs}


ABSENT = "-"  # the level of a `when` factor in the jobs where it does not apply
LONG_FORM = ("levels", "zip", "key", "names", "when")


@dataclass(frozen=True)
class Factor:
    """A factor's levels as (level name, dotted overrides), and when it applies at all."""

    name: str
    levels: list[tuple[str, dict[str, Any]]]
    when: dict[str, list[str]] | None = None  # other factor -> the levels in which this one exists


def _parse_factor(name: str, value: Any) -> Factor:
    """Short forms: `key: [v1, v2]` (the name is the dotted key) or `name: {level: {overrides}}`.
    Long form (a mapping with `levels` or `zip`): `levels: [...]` with `key`, or `levels: {...}`;
    `zip: {key1: [...], key2: [...]}` varies keys together (level names from `names` or the values);
    `when: {factor: level or [levels]}` makes the factor exist only where those levels are."""
    where = f"factors.{name}"
    if isinstance(value, dict) and ("levels" in value or "zip" in value):
        unknown = sorted(set(value) - set(LONG_FORM))
        if unknown:
            raise SpecError(f"{where}.{unknown[0]}: unknown key; valid keys: {', '.join(LONG_FORM)}")
        if "levels" in value and "zip" in value:
            raise SpecError(f"{where}: give `levels` or `zip`, not both")
        when = {str(k): [str(x) for x in (v if isinstance(v, list) else [v])] for k, v in value.get("when", {}).items()}
        if "zip" in value:
            levels = _zip_levels(where, value["zip"], value.get("names"))
        else:
            levels = _short_levels(where, str(value.get("key", name)), value["levels"])
        return Factor(name, levels, when or None)
    return Factor(name, _short_levels(where, name, value))


def _short_levels(where: str, key: str, value: Any) -> list[tuple[str, dict[str, Any]]]:
    if isinstance(value, list) and value:
        return [(str(v), {key: v}) for v in value]
    if isinstance(value, dict) and value and all(isinstance(v, dict) for v in value.values()):
        return [(str(level), flatten(over)) for level, over in value.items()]
    raise SpecError(f"{where}: expected a non-empty list of values or a mapping of level name -> overrides")


def _zip_levels(where: str, zipped: Any, names: Any) -> list[tuple[str, dict[str, Any]]]:
    if not isinstance(zipped, dict) or not zipped or not all(isinstance(v, list) for v in zipped.values()):
        raise SpecError(f"{where}.zip: expected a mapping of dotted key -> list of values")
    lengths = {k: len(v) for k, v in zipped.items()}
    if len(set(lengths.values())) != 1:
        raise SpecError(f"{where}.zip: lists of different lengths {lengths}: zipped keys vary together")
    rows = [dict(zip(zipped, values, strict=True)) for values in zip(*zipped.values(), strict=True)]
    if names is None:
        names = ["/".join(str(v) for v in row.values()) for row in rows]
    if not isinstance(names, list) or len(names) != len(rows):
        raise SpecError(f"{where}.names: expected a list of {len(rows)} level names")
    return [(str(n), row) for n, row in zip(names, rows, strict=True)]


def _check_conditions(factors: dict[str, Factor], path: Path) -> None:
    for f in factors.values():
        for other, allowed in (f.when or {}).items():
            if other == f.name or other not in factors:
                raise SpecError(f"{path}: factors.{f.name}.when.{other}: no such (other) factor")
            names = [lv for lv, _ in factors[other].levels]
            for level in allowed:
                if level not in names:
                    raise SpecError(f"{path}: factors.{f.name}.when.{other}: no level {level!r}; levels: {names}")


def _combos(factors: dict[str, Factor]) -> Iterator[dict[str, tuple[str, dict[str, Any]]]]:
    """Every assignment of levels; a `when` factor takes its levels where it applies, else ABSENT."""
    options = [f.levels + ([(ABSENT, {})] if f.when else []) for f in factors.values()]
    for combo in itertools.product(*options):
        chosen = dict(zip(factors, combo, strict=True))
        if all(
            (chosen[f.name][0] == ABSENT) != all(chosen[k][0] in v for k, v in f.when.items())
            for f in factors.values()
            if f.when
        ):
            yield chosen


def _origin(layers: list[Layer], key: str) -> str:
    """Where `key` (or the section holding it) was set, e.g. 'base.train.epoch' or 'profiles.quick: train.epochs'.

    The most specific setting wins (`tokenizer.object_type` in base over the factor's `tokenizer: NAME`),
    then the last layer."""
    found, depth = None, 0
    for where, over in layers:
        for k in over:
            if k == key or key.startswith(k + ".") or k.startswith(key + "."):
                d = min(k.count("."), key.count(".")) + 1
                if d >= depth:
                    found, depth = where, d
    return key if found is None else found + key


def resolve(layers: list[Layer], presets: Presets, exp_path: Path) -> JobConfig:
    """Load the tokenizer preset, apply the layers' overrides on top, validate; returns the job's config.

    The last layer that names a preset (`tokenizer: binned_ambre5`) picks it; `tokenizer.<key>`
    overrides from any layer apply to it (e.g. a factor over `tokenizer.n_bins`). The code target of a
    pretraining names its preset the same way (`pretrain.targets.code.tokenizer: vqvae512`)."""
    named = [(where, v) for where, over in layers for k, v in over.items() if k == "tokenizer" and isinstance(v, str)]
    raw: dict[str, Any] = {}
    preset_file = None
    if named:
        where, name = named[-1]
        preset_file = presets.path(name)
        raw["tokenizer"] = presets.get(name, f"{exp_path}: {where}tokenizer")
    for _, over in layers:
        for k, v in over.items():
            if not (k == "tokenizer" and isinstance(v, str)):
                set_dotted(raw, k, v)
    if "tokenizer" not in raw:
        raise SpecError(f"{exp_path}: no tokenizer: set base.tokenizer or a `tokenizer` factor to a preset name")
    for name, target in ((raw.get("pretrain") or {}).get("targets") or {}).items():
        if isinstance(target, dict) and isinstance(target.get("tokenizer"), str):  # the code target's preset
            key = f"pretrain.targets.{name}.tokenizer"
            target["tokenizer"] = presets.get(target["tokenizer"], f"{exp_path}: {_origin(layers, key)}")
    try:
        return JobConfig.model_validate(raw)
    except ValidationError as e:
        key, msg = describe_errors(e, JobConfig)[0]
        overridden = any(k != "tokenizer" and (k == key or key.startswith(k + ".")) for _, over in layers for k in over)
        if key.startswith("tokenizer.") and preset_file is not None and not overridden:
            raise SpecError(f"{preset_file}: {key.removeprefix('tokenizer.')}: {msg}") from None
        raise SpecError(f"{exp_path}: {_origin(layers, key)}: {msg}") from None


def _check_no_shadowing(
    factors: dict[str, Factor], later: list[Layer], exp_path: Path, refine: Collection[str] = ()
) -> None:
    """A profile or --set that overrides a factor's key would make the factor inert. A factor in `refine` (whose
    level is the same in every cell the layers reach) may have keys below its own set: `tokenizer.n_bins`
    under `tokenizer: binned_ambre5` refines the level's preset, it does not undo the factor."""
    for name, factor in factors.items():
        keys, below = {k for _, over in factor.levels for k in over}, name not in refine

        def clash(k: str, keys: set[str] = keys, below: bool = below) -> bool:
            return any(k == f or f.startswith(k + ".") or (below and k.startswith(f + ".")) for f in keys)

        for where, over in later:
            hit = sorted(k for k in over if clash(k))
            if hit:
                raise SpecError(
                    f"{exp_path}: {where}sets {', '.join(hit)}, which factor {name!r} varies: "
                    "every level would train the same model"
                )


def build_matrix(
    path: str | Path,
    profile: str | None = None,
    overrides: dict[str, Any] | None = None,
    per_cell: CellLayer | None = None,
    refine: Collection[str] = (),
) -> Matrix:
    """Expand the experiment at `path` into validated jobs (no training, no data read). `per_cell(levels)`
    adds a last layer to one cell (an arm's tuned settings); like --set, it may not set a key a factor varies,
    except keys below the key of a factor in `refine` (the arm factors: `tokenizer.codebook_size`)."""
    path = Path(path)
    spec = load_experiment(path)
    presets = Presets((path.parent / spec.presets).resolve())
    seeds = spec.seeds
    later: list[Layer] = []
    if profile is not None:
        if profile not in spec.profiles:
            raise SpecError(f"{path}: unknown profile {profile!r}; defined: {', '.join(spec.profiles) or 'none'}")
        prof = dict(spec.profiles[profile])
        seeds = prof.pop("seeds", seeds)
        if not isinstance(seeds, list) or not all(isinstance(x, int) and not isinstance(x, bool) for x in seeds):
            raise SpecError(f"{path}: profiles.{profile}.seeds: expected a list of integers, got {seeds!r}")
        later.append((f"profiles.{profile}: ", flatten(prof)))
    if overrides:
        later.append(("--set ", dict(overrides)))
    try:
        factors = {name: _parse_factor(name, value) for name, value in spec.factors.items()}
    except SpecError as e:
        raise SpecError(f"{path}: {e}") from None
    _check_conditions(factors, path)
    _check_no_shadowing(factors, later, path)
    for i, ex in enumerate(spec.exclude):
        for name, level in ex.items():
            names = [lv for lv, _ in factors[name].levels] + [ABSENT] if name in factors else []
            if str(level) not in names:
                raise SpecError(f"{path}: exclude[{i}].{name}: no such factor level {level!r}")

    base: list[Layer] = [("", {"data." + k: v for k, v in flatten(spec.data).items()}), ("base.", flatten(spec.base))]
    jobs: list[Job] = []
    settings: dict[str, dict[str, str]] = {}
    for chosen in _combos(factors):
        levels = {name: lv for name, (lv, _) in chosen.items()}
        if any(all(levels[k] == str(v) for k, v in ex.items()) for ex in spec.exclude):
            continue
        fac_layers = [
            (f"factors.{name}" + ("" if list(over) == [name] else f".{lv}") + ": ", over)
            for name, (lv, over) in chosen.items()
            if over
        ]
        layers = base + fac_layers + later
        own = per_cell(levels) if per_cell is not None else None
        if own:
            _check_no_shadowing(factors, [own], path, refine)
            layers.append(own)
        config = resolve(layers, presets, path)  # validated once per cell: seeds differ in `seed` only
        data_path = config.data.path
        if data_path != "synthetic":
            data_path = str((path.parent / data_path).resolve())
        no_seed = {k: v for k, v in _identity(config).items() if k != "seed"}
        cell = _hash_sections(no_seed)
        for seed in seeds:
            job_config = config.model_copy(update={"seed": seed})  # sections shared between the seeds: read-only
            job_id = _hash_sections({**no_seed, "seed": json.dumps(seed)})
            jobs.append(Job(job_id, cell, levels, seed, job_config, data_path, spec.run))
        settings[cell] = explicit_settings(layers, presets)
    _check_distinct_cells(jobs, path)
    return Matrix(spec, path, jobs, list(factors), settings)


def explicit_settings(layers: list[Layer], presets: Presets) -> dict[str, str]:
    """Every key the spec (or a preset) sets for a cell -> where, as an error message names it."""
    out: dict[str, str] = {}
    for where, over in layers:
        for k, v in over.items():
            if k == "tokenizer" and isinstance(v, str):
                out = {key: src for key, src in out.items() if not key.startswith("tokenizer.")}
                preset = flatten(presets.get(v, where, copied=False))
                out.update({f"tokenizer.{p}": f"{presets.path(v)}: {p}" for p in preset})
            else:
                out[k] = where + k
    return {k: v for k, v in out.items() if k not in ("tokenizer.name", "tokenizer.kind")}


def reseed(job: Job, seed: int) -> Job:
    """The job of the same cell with another seed (its id computed as `build_matrix` does)."""
    no_seed = {k: v for k, v in _identity(job.config).items() if k != "seed"}
    job_id = _hash_sections({**no_seed, "seed": json.dumps(seed)})
    return Job(job_id, job.cell, job.levels, seed, job.config.model_copy(update={"seed": seed}), job.data_path, job.run)


COSMETIC = ("tokenizer.name",)  # labels, not settings: renaming a preset keeps its jobs' ids


def _identity(config: JobConfig) -> dict[str, str]:
    """Each top-level section of the resolved config, without cosmetic keys, as canonical JSON."""
    out = {}
    for section, value in config.model_dump(mode="json").items():
        if isinstance(value, dict):
            value = {k: v for k, v in value.items() if f"{section}.{k}" not in COSMETIC}
        out[section] = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return out


def _hash_sections(sections: dict[str, str]) -> str:
    """`short_hash` of the dict whose sections are already JSON (the same text json.dumps would give)."""
    text = "{" + ",".join(f"{json.dumps(k)}:{sections[k]}" for k in sorted(sections)) + "}"
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def _check_distinct_cells(jobs: list[Job], path: Path) -> None:
    """Two cells with the same resolved config would train one model under two labels."""
    seen: dict[str, dict[str, str]] = {}
    for job in jobs:
        other = seen.setdefault(job.cell, job.levels)
        if other != job.levels:
            raise SpecError(
                f"{path}: factor levels {other} and {job.levels} resolve to the same config: "
                "a factor level has no effect"
            )
