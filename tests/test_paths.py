"""Run paths: every file of a run directory, of _cache/ and of _submit/ is named once, nothing is read or
written to name it, and an experiment name that would leave its runs root is refused."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import write_experiment

from expmatrix.cli import main
from expmatrix.config import SpecError
from expmatrix.paths import CachePaths, JobPaths, RunPaths


def _files(obj: object) -> list:
    """The paths a paths object names (its properties)."""
    names = [n for n, v in vars(type(obj)).items() if isinstance(v, property)]
    return [getattr(obj, n) for n in names]


@pytest.mark.parametrize("name", ["..", ".", "", "_cache", "a/b", "../x"])
def test_a_name_that_does_not_stay_inside_the_runs_root_is_refused(tmp_path, name):
    with pytest.raises(SpecError, match="must name a folder of its own inside"):
        RunPaths(tmp_path, name)
    assert not any(tmp_path.iterdir())  # nothing was written to find out


def test_an_experiment_named_dot_dot_stops_before_anything_is_written(tmp_path):
    exp = write_experiment(tmp_path, name="..")
    runs = tmp_path / "sub" / "runs"
    result = CliRunner().invoke(main, ["run", str(exp), "--runs", str(runs)])
    assert result.exit_code != 0 and "experiment name '..': must name a folder of its own" in result.output
    assert not (tmp_path / "sub").exists()


def test_every_file_of_a_run_has_its_own_name_inside_its_folder(tmp_path):
    paths = RunPaths(tmp_path, "exp")
    job = paths.job("abc")
    files = _files(job)
    assert len(files) == len(set(files)) >= 10 and all(f.parent == paths.dir / "abc" for f in files)
    fit, pretrained = paths.cache.fit("k1"), paths.cache.pretrained("k1")
    cache = [*dataclasses.astuple(fit), *_files(pretrained), paths.cache.consumed("s"), paths.cache.size("k1")]
    assert len(cache) == len(set(cache)) and all(paths.root / "_cache" in f.parents for f in cache)
    assert paths.cache == CachePaths.under(tmp_path)  # what a command without an experiment uses
    submission = paths.submit.submission("slurm", "d1")
    assert submission == paths.submit.folder(submission.dir.name) and submission.dir.parent == paths.dir / "_submit"
    inside = [submission.jobs_list("fit"), submission.jobs_list("train"), submission.logs]
    assert len(set(inside)) == 3 and all(f.parent == submission.dir for f in inside)
    assert paths.submit.log.parent == submission.dir.parent
    assert not any(tmp_path.iterdir())  # names only: nothing was created


def test_a_job_record_is_found_from_its_path_and_nothing_else_is(tmp_path):
    record = RunPaths(tmp_path / "runs", "exp").job("abc").record
    assert RunPaths.of_record(record) == (RunPaths(tmp_path / "runs", "exp"), "abc")
    for wrong in (record.with_name("other.yaml"), JobPaths(Path(tmp_path.anchor)).record):  # not a record; too shallow
        with pytest.raises(SpecError, match="not a job record runs/<experiment>/<job-id>/"):
            RunPaths.of_record(wrong)
