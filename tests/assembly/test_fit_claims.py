"""The tokenizer-fit cache under workers that need the same new fit at once (tuning trials): one fits under the
key's claim, the others wait for its artifact; a claim whose worker died is taken over."""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time

import pytest
from conftest import write_experiment

from expmatrix.assembly.fits import fitted_tokenizer
from expmatrix.assembly.parts import Assembly
from expmatrix.assembly.recipe import Recipe
from expmatrix.matrix import build_matrix
from expmatrix.store import RunStore

pytestmark = pytest.mark.slow  # generates data, fits in threads


@pytest.fixture
def two_jobs(tmp_path):
    """Two seeds of one cell (one fit key), their store and the training split."""
    exp = write_experiment(tmp_path, factors={}, seeds=[0, 1], base={"tokenizer": "direct"},
                           data={"path": "synthetic", "synthetic": {"events": 600, "seed": 1}})  # fmt: skip
    jobs = build_matrix(exp).jobs
    store = RunStore(tmp_path / "runs", "tiny")
    train = Assembly(jobs[0], store).splits["train"]
    recipes = [Recipe.of(j) for j in jobs]
    assert recipes[0].fit_key == recipes[1].fit_key
    return recipes, store.paths.cache.fit(recipes[0].fit_key), train


def test_a_fit_another_worker_holds_is_waited_for_not_repeated(two_jobs):
    (first, second), files, train = two_jobs
    entered, go, calls, out = threading.Event(), threading.Event(), {"first": 0, "second": 0}, {}

    def slow_train():  # the first worker's fit, held open until the test lets it finish
        calls["first"] += 1
        entered.set()
        go.wait(60)
        return train

    def counted_train():
        calls["second"] += 1
        return train

    a = threading.Thread(target=lambda: out.update(a=fitted_tokenizer(first, files, slow_train)))
    b = threading.Thread(target=lambda: out.update(b=fitted_tokenizer(second, files, counted_train)))
    a.start()
    assert entered.wait(60) and files.claim.exists()  # the first fits under the key's claim
    b.start()
    time.sleep(2.0)  # (ordering, not timing: b looks while a still fits)
    assert b.is_alive() and calls["second"] == 0 and not files.artifact.exists()
    go.set()
    a.join(60), b.join(60)
    assert calls == {"first": 1, "second": 0}  # fitted once; the second loaded the first's artifact
    assert out["a"].state_dict() == out["b"].state_dict()
    assert not files.claim.exists()


def test_the_claim_of_a_dead_worker_is_taken_over(two_jobs):
    (first, _), files, train = two_jobs
    dead = subprocess.Popen(["true"])
    dead.wait()
    files.claim.parent.mkdir(parents=True, exist_ok=True)
    files.claim.write_text(json.dumps({"host": socket.gethostname(), "pid": dead.pid, "nonce": "gone"}))
    calls = []
    tokenizer = fitted_tokenizer(first, files, lambda: calls.append(1) or train)
    assert calls == [1] and files.artifact.exists() and not files.claim.exists()
    assert json.loads(files.artifact.read_text())["state"] == tokenizer.state_dict()
