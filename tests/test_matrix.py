"""Experiment specs: validation that names the key, stable ids, profiles, exclusions."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from conftest import REPO, write_experiment

from expmatrix.config import SpecError
from expmatrix.matrix import build_matrix

FLAGSHIP = REPO / "experiments" / "binning_vs_direct.yaml"


def test_flagship_expands_to_36_cells_times_seeds():
    m = build_matrix(FLAGSHIP)
    assert len(m.cells) == 36 and len(m.jobs) == 108
    assert m.factor_names == ["model.pooling", "tokenizer", "met", "vect"]
    quick = build_matrix(FLAGSHIP, "quick")
    assert len(quick.jobs) == 72
    job = quick.jobs[0]
    assert job.config.train.epochs == 2 and job.config.model.target_params == 100_000
    assert job.config.tokenizer.kind == "direct"
    assert {j.levels["vect"]: j.config.data.cont_features for j in quick.jobs} == {
        "4": [1, 2, 3],
        "5": [0, 1, 2, 3],
    }
    assert len({j.id for j in quick.jobs}) == 72


def shipped() -> list[tuple[Path, str | None]]:
    out = []
    for path in sorted((REPO / "experiments").glob("*.yaml")):
        out += [(path, None)] + [(path, p) for p in yaml.safe_load(path.read_text()).get("profiles", {})]
    return out


@pytest.mark.parametrize(("path", "profile"), shipped(), ids=lambda v: getattr(v, "name", v))
def test_every_shipped_experiment_and_profile_builds(path, profile):
    """A spec or profile that no longer validates is found here, not by a user's first run."""
    matrix = build_matrix(path, profile)
    assert matrix.cells and len({j.id for j in matrix.jobs}) == len(matrix.jobs) >= len(matrix.cells)


def test_ids_are_stable_when_one_level_is_edited(tmp_path):
    before = build_matrix(write_experiment(tmp_path, seeds=[0, 1]))
    after = build_matrix(
        write_experiment(
            tmp_path, seeds=[0, 1], factors={"tokenizer": ["direct", "binned_ambre5"], "model.pooling": ["cls", "max"]}
        )
    )
    old = {(j.levels["tokenizer"], j.seed): j.id for j in before.jobs}
    kept = {(j.levels["tokenizer"], j.seed): j.id for j in after.jobs if j.levels["model.pooling"] == "cls"}
    assert old == kept  # cls is the default pooling: the same configs, the same ids
    assert len({j.cell for j in after.jobs}) == 4 and len(after.jobs) == 8


def _error(tmp_path: Path, **changes) -> str:
    with pytest.raises(SpecError) as e:
        build_matrix(write_experiment(tmp_path, **changes))
    return str(e.value)


def test_unknown_key_names_the_path_and_the_valid_keys(tmp_path):
    msg = _error(tmp_path, base={"train": {"epoch": 3}})
    assert "tiny.yaml: base.train.epoch: unknown key; valid keys: amp, batch_size, class_weights" in msg
    assert ", epochs, " in msg


def test_wrong_type_and_choice_name_the_key(tmp_path):
    assert "base.train.epochs: Input should be a valid integer" in _error(tmp_path, base={"train": {"epochs": "many"}})
    msg = _error(tmp_path, factors={"tokenizer": ["direct"], "model.pooling": ["cls", "avg"]})
    assert "factors.model.pooling: model.pooling: Input should be 'cls', 'mean' or 'max', got 'avg'" in msg
    assert "data.cont_features: Value error, expected distinct indices" in _error(
        tmp_path, data={"cont_features": [1, 9]}
    )
    assert "tiny.yaml: name: String should match pattern" in _error(tmp_path, name="x y")


def test_unknown_preset_lists_the_available_ones(tmp_path):
    msg = _error(tmp_path, factors={"tokenizer": ["direct", "binned_ambre6"]})
    assert "factors.tokenizer: tokenizer: unknown tokenizer preset 'binned_ambre6'" in msg
    assert "available: binned_ambre5, binned_ambre5_bkg, binned_factorized5, direct, fsq512, integer_fourtops, " in msg


def test_preset_errors_name_the_preset_file(tmp_path):
    presets = tmp_path / "presets"
    presets.mkdir()
    (presets / "broken.yaml").write_text(yaml.safe_dump({"kind": "binned", "n_bins": 1}))
    (presets / "typo.yaml").write_text(yaml.safe_dump({"kind": "binned", "n_bin": 4}))
    msg = _error(tmp_path, presets=str(presets), factors={"tokenizer": ["broken"]})
    assert "broken.yaml: n_bins: Input should be greater than or equal to 2, got 1" in msg
    msg = _error(tmp_path, presets=str(presets), factors={"tokenizer": ["typo"]})
    assert "typo.yaml: n_bin: unknown key; valid keys: fit_on, kind, n_bins, name, per_object_type, rules" in msg


def test_profile_and_set_may_not_shadow_a_factor(tmp_path):
    path = write_experiment(tmp_path, profiles={"p": {"tokenizer": "direct"}})
    with pytest.raises(SpecError, match="profiles.p: sets tokenizer, which factor 'tokenizer' varies"):
        build_matrix(path, "p")
    with pytest.raises(SpecError, match="unknown profile 'q'; defined: p"):
        build_matrix(path, "q")
    with pytest.raises(SpecError, match=r"--set train.epochs: Input should be greater than or equal to 1"):
        build_matrix(path, None, {"train.epochs": 0})


def test_generator_settings_with_a_real_file_are_inert_and_rejected(tmp_path):
    msg = _error(tmp_path, data={"path": "4tops.h5", "synthetic": {"events": 3000}})
    assert "data.synthetic has no effect when data.path is a file (4tops.h5)" in msg


def test_levels_that_change_nothing_are_rejected(tmp_path):
    msg = _error(
        tmp_path, factors={"tokenizer": ["direct"], "sched": {"a": {"train.lr": 1e-3}, "b": {"train.lr": 1e-3}}}
    )
    assert "resolve to the same config: a factor level has no effect" in msg


def test_exclude_skips_partial_assignments_and_checks_levels(tmp_path):
    m = build_matrix(write_experiment(tmp_path, exclude=[{"tokenizer": "direct"}]))
    assert [j.levels for j in m.jobs] == [{"tokenizer": "binned_ambre5"}]
    assert "exclude[0].tokenizer: no such factor level 'vq'" in _error(tmp_path, exclude=[{"tokenizer": "vq"}])


def test_when_factor_exists_only_for_some_levels_and_overrides_the_preset(tmp_path):
    factors = {
        "tokenizer": ["direct", "binned_ambre5"],
        "fit": {"when": {"tokenizer": "binned_ambre5"}, "key": "tokenizer.fit_on", "levels": ["all", "background"]},
    }
    m = build_matrix(write_experiment(tmp_path, factors=factors))
    got = sorted((j.levels["tokenizer"], j.levels["fit"], getattr(j.config.tokenizer, "fit_on", None)) for j in m.jobs)
    assert got == [
        ("binned_ambre5", "all", "all"),
        ("binned_ambre5", "background", "background"),
        ("direct", "-", None),
    ]


def test_zip_varies_keys_together(tmp_path):
    arch = {"zip": {"model.layers": [1, 2], "model.target_params": [10000, 30000]}, "names": ["small", "big"]}
    m = build_matrix(write_experiment(tmp_path, factors={"tokenizer": ["direct", "binned_ambre5"], "arch": arch}))
    got = {
        (j.levels["tokenizer"], j.levels["arch"]): (j.config.model.layers, j.config.model.target_params)
        for j in m.jobs
    }
    assert got == {
        ("direct", "small"): (1, 10000),
        ("direct", "big"): (2, 30000),
        ("binned_ambre5", "small"): (1, 10000),
        ("binned_ambre5", "big"): (2, 30000),
    }
    unnamed = build_matrix(write_experiment(tmp_path, factors={"tokenizer": ["direct"], "arch": {"zip": arch["zip"]}}))
    assert [j.levels["arch"] for j in unnamed.jobs] == ["1/10000", "2/30000"]


def test_exclude_skips_partial_assignments(tmp_path):
    factors = {"tokenizer": ["direct", "binned_ambre5"], "model.pooling": ["cls", "mean", "max"]}
    m = build_matrix(
        write_experiment(tmp_path, factors=factors, exclude=[{"tokenizer": "direct", "model.pooling": "max"}])
    )
    assert len(m.jobs) == 5 and ("direct", "max") not in {
        (j.levels["tokenizer"], j.levels["model.pooling"]) for j in m.jobs
    }


@pytest.mark.parametrize(
    ("factor", "expected"),
    [
        ({"zip": {"model.layers": [1, 2], "model.heads": [2]}}, "factors.f.zip: lists of different lengths"),
        ({"levels": [1], "key": "model.layers", "whn": {}}, "factors.f.whn: unknown key; valid keys: levels, zip"),
        ({"levels": [1], "key": "model.layers", "when": {"tokeniser": "direct"}}, "factors.f.when.tokeniser: no such"),
        ({"levels": [1], "key": "model.layers", "when": {"tokenizer": "binned"}}, "factors.f.when.tokenizer: no level"),
        ({"zip": {"model.layers": [1]}, "names": ["a", "b"]}, "factors.f.names: expected a list of 1 level names"),
        ([], "factors.f: expected a non-empty list of values or a mapping"),
    ],
)
def test_bad_grid_is_rejected_with_the_key_path(tmp_path, factor, expected):
    assert expected in _error(tmp_path, factors={"tokenizer": ["direct", "binned_ambre5"], "f": factor})


def test_renaming_a_preset_keeps_job_ids(tmp_path):
    presets = tmp_path / "presets"
    presets.mkdir()
    for name in ("direct", "binned_ambre5"):
        (presets / f"{name}.yaml").write_text((REPO / "tokenizers" / f"{name}.yaml").read_text())
    before = {j.id for j in build_matrix(write_experiment(tmp_path, presets=str(presets))).jobs}
    (presets / "continuous.yaml").write_text((presets / "direct.yaml").read_text())
    after = build_matrix(
        write_experiment(tmp_path, presets=str(presets), factors={"tokenizer": ["continuous", "binned_ambre5"]})
    )
    assert {j.id for j in after.jobs} == before  # a label is not a setting
    assert "resolve to the same config" in _error(
        tmp_path, presets=str(presets), factors={"tokenizer": ["direct", "continuous"]}
    )  # two names for one tokenizer would train one model twice


def test_an_empty_section_in_a_profile_keeps_what_base_set(tmp_path):
    exp = write_experiment(tmp_path, profiles={"q": {"train": {}, "model.layers": 3}})
    config = build_matrix(exp, "q").jobs[0].config
    assert config.train.epochs == 1 and config.train.lr == 1e-3 and config.model.layers == 3
