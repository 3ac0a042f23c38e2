"""Shared fixtures: small synthetic files and a tiny experiment on disk."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

# One OpenMP/BLAS thread per process, set before numpy, torch or scikit-learn start their pools (the processes the
# tests start inherit it): pytest-xdist already runs one worker per core, and threads fighting over the cores
# made one scikit-learn fit ~20x slower on a loaded 2-core machine. `--threads` still sets torch's own count.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402
from slurm_cluster import LocalSlurm  # noqa: E402

from expmatrix.data.events import Events  # noqa: E402
from expmatrix.data.synthetic import write_fourtops  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PRESETS = REPO / "tokenizers"


# the modules that take longest (`make test PYTEST="-n auto --dist loadgroup --durations=0"`), slowest first
SLOWEST_FIRST = (
    "test_contract.py", "test_runner.py", "test_pythia.py", "test_tuning.py", "test_icecube_job.py",
    "test_pretraining.py", "test_signals.py", "test_native.py", "test_data.py", "test_report_outputs.py",
    "test_packed.py", "test_trainer_regression.py", "test_tokenizers_contract.py", "test_codes.py",
    "test_end_to_end.py", "test_icecube_data.py",
)  # fmt: skip

# modules whose tests share no costly module fixture: pytest-xdist spreads their tests over its workers
SPREAD = {"test_runner.py", "test_signals.py", "test_tokenizers_contract.py", "test_model.py", "test_docs.py"}


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Groups for `pytest -n N --dist loadgroup` (`make test`): a test of the local SLURM starts a scheduler on
    fixed ports, so every such test is slow and runs on one worker, one cluster at a time; the other tests of a
    module stay together, so that its module fixtures (a trained matrix, a report) are made once."""
    for item in items:
        if item.get_closest_marker("slurm"):
            item.add_marker(pytest.mark.slow)
            item.add_marker(pytest.mark.xdist_group("slurm"))
        elif item.path.name not in SPREAD:
            item.add_marker(pytest.mark.xdist_group(item.path.name))
    # the slowest modules first (pytest-xdist hands out groups in this order): otherwise a worker may draw a
    # long one last while the other idles; a stale list only balances the workers less well
    rank = {name: i for i, name in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


@pytest.hookimpl(optionalhook=True)  # pytest-xdist's controller, with the node ids a worker collected
def pytest_xdist_node_collection_finished(node, ids: list[str]) -> None:
    """A pytest/pytest-xdist pair that ignores the groups would make every module fixture once per worker."""
    grouped = [i for i in ids if i.split("::")[0].rsplit("/", 1)[-1] not in SPREAD]
    if node.config.getvalue("dist") == "loadgroup" and grouped and not any("@" in i for i in grouped):
        pytest.exit(
            f"--dist loadgroup grouped nothing (pytest {pytest.__version__}): this pytest-xdist cannot rewrite "
            "this pytest's node ids; install the versions that pyproject.toml's dev extra allows",
            returncode=4,
        )


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models on a shared 2-core machine: one torch thread is many times faster than two fighting."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def slurm(tmp_path_factory) -> LocalSlurm:
    """One local SLURM (tests/slurm_cluster.py) for every SLURM test of the session: they run one at a time, on
    one worker (its xdist group above), and each waits until the queue is drained; starting and stopping the
    daemons once instead of once per module saves ~7 s a module."""
    cluster = LocalSlurm(tmp_path_factory.mktemp("slurm")).start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def small_h5(tmp_path_factory) -> Path:
    """6000 synthetic events in the real layout."""
    return write_fourtops(tmp_path_factory.mktemp("data") / "4tops.h5", events=6000, seed=3)


def make_events(ids, cont, globals_=None, label=None, features=("pT", "eta", "phi")) -> Events:
    ids = np.asarray(ids, dtype=np.int64)
    n = len(ids)
    return Events(
        ids=ids,
        cont=np.asarray(cont, dtype=np.float32),
        globals_=None if globals_ is None else np.asarray(globals_, dtype=np.float32),
        label=np.asarray(label if label is not None else [i % 2 for i in range(n)], dtype=np.int64),
        process=np.ones(n, dtype=np.int64),
        feature_names=tuple(features),
    )


def write_experiment(folder: Path, **changes) -> Path:
    """A tiny experiment (2 tokenizers x 1 seed, 1 epoch) on a small synthetic file."""
    spec = {
        "name": "tiny",
        "presets": str(PRESETS),
        "data": {"path": "synthetic", "synthetic": {"events": 3000, "seed": 1}},
        "base": {
            "model": {"target_params": 20000, "layers": 2, "heads": 4},
            "train": {"epochs": 1, "batch_size": 128, "warmup_steps": 5, "lr": 1e-3},
        },
        "factors": {"tokenizer": ["direct", "binned_ambre5"]},
        "seeds": [0],
    }
    spec.update(changes)
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def expmatrix(*args: str, env: dict | None = None, **kw) -> subprocess.Popen:
    """`python -m expmatrix ARGS` as a real process (output in `.stdout`, stderr merged)."""
    return subprocess.Popen(
        [sys.executable, "-m", "expmatrix", *args],
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kw,
    )
