"""Where local workers run: the pure placement (GPUs, threads, the default worker count) and its errors,
and the pool that starts each worker slot with its own environment."""

from __future__ import annotations

import os

import pytest
from click.testing import CliRunner
from conftest import write_experiment

from expmatrix.cli import main
from expmatrix.config import SpecError
from expmatrix.executors.placement import WORKERS_PER_GPU, Placement, parse_gpus, place
from expmatrix.executors.pool import Pool


def test_without_a_gpu_nothing_changes_one_worker_per_cpu_and_the_threads_split():
    assert place([], cpus=16, jobs=100) == Placement(workers=16, threads=1)
    assert place([], cpus=16, jobs=100, workers=4) == Placement(workers=4, threads=4)
    assert place([], cpus=16, jobs=3) == Placement(workers=3, threads=5)  # never more workers than jobs
    assert place([], cpus=16, jobs=100, workers=4, threads=2) == Placement(workers=4, threads=2)
    assert place([], cpus=16, jobs=100).env(0) == {}


def test_workers_spread_over_the_gpus_each_seeing_only_its_own():
    two = place(["0", "1"], cpus=16, jobs=100)
    assert two.workers == 2 * WORKERS_PER_GPU and two.threads == 16 // two.workers
    assert two.devices == ("0", "1") * WORKERS_PER_GPU
    assert [two.env(w)["CUDA_VISIBLE_DEVICES"] for w in range(3)] == ["0", "1", "0"]
    # --gpus picks by torch's index among the visible ones (a scheduler may have set CUDA_VISIBLE_DEVICES=4,6)
    assert place(["4", "6"], cpus=16, jobs=100, workers=3, gpus=[1]).devices == ("6", "6", "6")
    assert place(["0"], cpus=2, jobs=100).workers == 2  # at most one worker per CPU
    assert place(["0", "1", "2"], cpus=2, jobs=100).workers == 3  # but at least one per GPU


@pytest.mark.parametrize(
    ("visible", "gpus", "message"),
    [
        (["0", "1"], [2], "--gpus 2: no device 2 on this machine (visible: 0, 1)"),
        (["0"], [0, 3], "--gpus 0,3: no device 3 on this machine (visible: 0)"),
        ([], [0], "--gpus 0: no device 0 on this machine (no CUDA device is visible)"),
    ],
)
def test_a_gpu_that_is_not_there_is_a_clear_error(visible, gpus, message):
    with pytest.raises(SpecError) as e:
        place(visible, cpus=8, jobs=4, gpus=gpus)
    assert str(e.value) == message


def test_gpu_lists_are_parsed_or_refused():
    assert parse_gpus("0,1") == [0, 1] and parse_gpus(None) is None
    for bad in ("a", "0,0", "-1", ""):
        with pytest.raises(SpecError, match=f"--gpus {bad}: expected"):
            parse_gpus(bad)


def test_run_with_a_gpu_that_is_not_there_stops_before_anything_runs(tmp_path):
    exp, runs = write_experiment(tmp_path), tmp_path / "runs"
    result = CliRunner().invoke(main, ["run", str(exp), "--runs", str(runs), "--gpus", "7"])
    assert result.exit_code == 1 and "--gpus 7: no device 7 on this machine" in result.output, result.output
    assert not (runs / "tiny").exists()  # no job directory, no data prepared


def test_each_pool_worker_starts_with_its_slots_environment():
    tasks = {"gpu": (os.getenv, ("CUDA_VISIBLE_DEVICES",)), "slot": (os.getenv, ("EXPMATRIX_SLOT",))}
    with Pool(1, [{"CUDA_VISIBLE_DEVICES": "3", "EXPMATRIX_SLOT": "0"}]) as pool:
        events = list(pool.run(tasks))
    assert {k: v for e, k, v in events if e == "ok"} == {"gpu": "3", "slot": "0"}
    assert os.getenv("EXPMATRIX_SLOT") is None  # the parent's environment is untouched
