"""Run-directory claims: exclusive, heartbeats, abandoned claims taken over, never a live one."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

from expmatrix.store import Heartbeat, RunStore


def _dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(done.stdout)


def _foreign_claim(store: RunStore, job: str, host: str, pid: int, age: float = 0.0) -> None:
    p = store.path(job, "claim")
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps({"host": host, "pid": pid, "nonce": "someone"}))
    os.utime(p, (time.time() - age, time.time() - age))


def test_claims_are_exclusive_and_only_abandoned_ones_are_taken_over(tmp_path):
    store, other = RunStore(tmp_path, "exp", stale_after=60), RunStore(tmp_path, "exp", stale_after=60)
    assert store.claim("j1") and not other.claim("j1")  # we are alive and beating: nobody else gets it
    other.release("j1")  # releasing someone else's claim does nothing
    assert store.path("j1", "claim").exists()
    store.release("j1")
    assert not store.path("j1", "claim").exists()

    _foreign_claim(store, "j2", socket.gethostname(), _dead_pid())
    assert store.claim("j2")  # its owner's process on this host is gone
    _foreign_claim(store, "j3", "some-other-node", 1, age=10)
    assert not store.claim("j3")  # another host's claim with a fresh heartbeat is never stolen
    _foreign_claim(store, "j4", "some-other-node", 1, age=61)
    assert store.claim("j4")  # its heartbeat is older than stale_after: taken over
    assert json.loads(store.path("j4", "claim").read_text())["host"] == socket.gethostname()
    store.path("j5", "claim").parent.mkdir()
    store.path("j5", "claim").write_text("")  # a writer died between create and write
    assert not store.claim("j5")
    os.utime(store.path("j5", "claim"), (time.time() - 61, time.time() - 61))
    assert store.claim("j5")


def test_heartbeat_keeps_a_claim_alive_and_notices_a_takeover(tmp_path):
    store = RunStore(tmp_path, "exp", stale_after=60)
    assert store.claim("j")
    os.utime(store.path("j", "claim"), (time.time() - 50, time.time() - 50))
    with Heartbeat(store, "j", every=0.05) as beat:
        time.sleep(0.3)
        assert store.claim_info("j")["age"] < 1  # touched
        assert not beat.lost.is_set()
        thief = RunStore(tmp_path, "exp", stale_after=0.01)
        time.sleep(0.02)
        assert thief.claim("j")  # our heartbeat looks stale to a very impatient worker
        time.sleep(0.3)
        assert beat.lost.is_set()  # we notice and stop writing
    assert not store.heartbeat("j")
    store.release("j")
    assert store.path("j", "claim").exists()  # the thief's claim stays


def test_state_of_a_job_left_running_without_a_live_claim_is_interrupted(tmp_path):
    store = RunStore(tmp_path, "exp", stale_after=60)
    assert store.state("j") == "new"
    store.set_status("j", "running")
    assert store.state("j") == "interrupted"  # resumable on the next run
    store.claim("j")
    assert store.state("j") == "running"
    os.utime(store.path("j", "claim"), (time.time() - 61, time.time() - 61))
    assert store.state("j") == "interrupted"


def test_a_write_killed_halfway_leaves_the_previous_file(tmp_path):
    target = tmp_path / "metrics.json"
    target.write_text('{"epoch": 1}')
    code = "from pathlib import Path; from expmatrix.store import write_json; write_json(Path(r'%s'), {'epoch': 2})"
    env = {**os.environ, "EXPMATRIX_CRASH_WRITE": "metrics.json:1"}
    done = subprocess.run([sys.executable, "-c", code % target], env=env)
    assert done.returncode == -9  # killed by SIGKILL in the middle of the write
    assert json.loads(target.read_text()) == {"epoch": 1}
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # the torn temp file, never read
