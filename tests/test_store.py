"""Run-directory claims: exclusive, and a dead local owner's claim is taken over."""

from __future__ import annotations

import socket
import subprocess
import sys

from expmatrix.store import RunStore


def test_claims_are_exclusive_and_dead_owners_are_taken_over(tmp_path):
    store = RunStore(tmp_path, "exp")
    assert store.claim("job1") and not store.claim("job1")  # we are alive: nobody else gets it
    store.release("job1")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    store.path("job1", "claim").write_text(f"{socket.gethostname()} {dead.stdout.strip()}")
    assert store.claim("job1")  # its owner's process is gone
    store.path("job2", "claim").parent.mkdir(parents=True)
    store.path("job2", "claim").write_text("some-other-node 1")
    assert not store.claim("job2")  # another host's claim is never stolen here


def test_state_of_a_job_left_running_without_a_claim_is_failed(tmp_path):
    store = RunStore(tmp_path, "exp")
    assert store.state("j") == "new"
    store.set_status("j", "running")
    assert store.state("j") == "failed"  # resumable on the next run
    store.claim("j")
    assert store.state("j") == "running"
