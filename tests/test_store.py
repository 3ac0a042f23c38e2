"""Run directories: claims (exclusive, heartbeats, abandoned ones taken over, never a live one), atomic writes,
damaged files named with their job, the store of a spec and of a job record."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import replace

import pytest
from conftest import write_experiment

from expmatrix.claims import Heartbeat
from expmatrix.matrix import build_matrix
from expmatrix.runfiles import DamagedFile, write_json
from expmatrix.store import RunStore


def _dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(done.stdout)


def _foreign_claim(store: RunStore, job: str, host: str, pid: int, age: float = 0.0) -> None:
    p = store.job(job).claim
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps({"host": host, "pid": pid, "nonce": "someone"}))
    os.utime(p, (time.time() - age, time.time() - age))


def test_claims_are_exclusive_and_only_abandoned_ones_are_taken_over(tmp_path):
    store, other = RunStore(tmp_path, "exp", stale_after=60), RunStore(tmp_path, "exp", stale_after=60)
    assert store.claims.take("j1") and not other.claims.take("j1")  # we are alive and beating: nobody else gets it
    other.claims.release("j1")  # releasing someone else's claim does nothing
    assert store.job("j1").claim.exists()
    store.claims.release("j1")
    assert not store.job("j1").claim.exists()

    _foreign_claim(store, "j2", socket.gethostname(), _dead_pid())
    assert store.claims.take("j2")  # its owner's process on this host is gone
    _foreign_claim(store, "j3", "some-other-node", 1, age=10)
    assert not store.claims.take("j3")  # another host's claim with a fresh heartbeat is never stolen
    _foreign_claim(store, "j4", "some-other-node", 1, age=61)
    assert store.claims.take("j4")  # its heartbeat is older than stale_after: taken over
    assert json.loads(store.job("j4").claim.read_text())["host"] == socket.gethostname()
    store.job("j5").claim.parent.mkdir()
    store.job("j5").claim.write_text("")  # a writer died between create and write
    assert not store.claims.take("j5")
    os.utime(store.job("j5").claim, (time.time() - 61, time.time() - 61))
    assert store.claims.take("j5")


def until(condition, timeout: float = 30) -> None:
    """Polls `condition` (a generous time limit: a loaded machine only makes it slower)."""
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, f"not true within {timeout} s"
        time.sleep(0.005)


def test_heartbeat_keeps_a_claim_alive_and_notices_a_takeover(tmp_path):
    store = RunStore(tmp_path, "exp", stale_after=60)
    assert store.claims.take("j")
    os.utime(store.job("j").claim, (time.time() - 50, time.time() - 50))
    with Heartbeat(store.claims, "j", every=0.05) as beat:
        until(lambda: store.claims.info("j")["age"] < 1)  # touched
        assert not beat.lost.is_set()
        thief = RunStore(tmp_path, "exp", stale_after=0.01)
        until(lambda: thief.claims.take("j"))  # our heartbeat looks stale to a very impatient worker (between beats)
        assert beat.lost.wait(timeout=30)  # we notice and stop writing
    assert not store.claims.beat("j")
    store.claims.release("j")
    assert store.job("j").claim.exists()  # the thief's claim stays


def test_state_of_a_job_left_running_without_a_live_claim_is_interrupted(tmp_path):
    store = RunStore(tmp_path, "exp", stale_after=60)
    assert store.state("j") == "new"
    store.set_status("j", "running")
    assert store.state("j") == "interrupted"  # resumable on the next run
    store.claims.take("j")
    assert store.state("j") == "running"
    os.utime(store.job("j").claim, (time.time() - 61, time.time() - 61))
    assert store.state("j") == "interrupted"


def test_a_write_killed_halfway_leaves_the_previous_file(tmp_path):
    target = tmp_path / "numbers.json"
    target.write_text('{"epoch": 1}')
    code = "from pathlib import Path; from expmatrix.runfiles import write_json; write_json(Path(r'%s'), {'epoch': 2})"
    env = {**os.environ, "EXPMATRIX_CRASH_WRITE": "numbers.json:1"}
    done = subprocess.run([sys.executable, "-c", code % target], env=env)
    assert done.returncode == -9  # killed by SIGKILL in the middle of the write
    assert json.loads(target.read_text()) == {"epoch": 1}
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # the torn temp file, never read


# ---------------------------------------------------------------- damaged files


def test_a_damaged_file_is_named_with_its_job_and_the_job_is_damaged_not_an_exception(tmp_path):
    store = RunStore(tmp_path, "exp")
    store.set_status("3fa9c1d2e0", "running")
    path = store.job("3fa9c1d2e0").status
    path.write_text(path.read_text()[:12])
    with pytest.raises(DamagedFile) as caught:
        store.status("3fa9c1d2e0")
    assert str(caught.value) == (
        f"job 3fa9c1d2e0: status.json is damaged (truncated JSON: Expecting value: line 2 column 11): {path}"
    )
    state, record = store.state_of("3fa9c1d2e0")
    assert state == "damaged" and record["damaged"] == path.name and record["error"] == str(caught.value)
    path.write_text('{"state": "done"} and more')
    assert "(corrupt JSON: Extra data: line 1 column 19)" in store.state_of("3fa9c1d2e0")[1]["error"]
    path.write_bytes(b"\x00\xff\x00")
    assert "(not text: byte 1 is not UTF-8)" in store.state_of("3fa9c1d2e0")[1]["error"]
    path.write_text("[1, 2]")
    assert "(corrupt: expected a mapping with 'state', got list)" in store.state_of("3fa9c1d2e0")[1]["error"]


def test_a_done_job_needs_readable_results(tmp_path):
    store = RunStore(tmp_path, "exp")
    store.set_status("j", "done")
    missing = f"job j: metrics.json is damaged (missing, though the job is done): {store.job('j').metrics}"
    assert store.state_of("j")[1]["error"] == missing
    write_json(store.job("j").metrics, {"test": {"auroc": 0.7}})
    assert store.state("j") == "done"
    store.job("j").history.write_text('{"epoch": 1}\n{"epoch": 2, "lo')
    assert "metrics.jsonl is damaged (line 2: truncated JSON: Unterminated string" in store.state_of("j")[1]["error"]
    store.job("j").history.write_text('{"epoch": 1}\n')
    store.job("j").predictions.write_bytes(b"PAR1" + b"\0" * 100)  # cut before its footer
    assert "predictions.parquet is damaged (truncated or not parquet (104 bytes" in store.state_of("j")[1]["error"]


def test_set_status_and_appends_never_lose_a_damaged_file(tmp_path):
    store = RunStore(tmp_path, "exp")
    store.job("j").status.parent.mkdir(parents=True)
    store.job("j").status.write_text("")
    store.mark_failed("j", "boom")
    (aside,) = store.job("j").dir.glob("status.json.damaged-*")
    assert aside.read_text() == "" and store.status("j")["failures"] == 1
    store.job("j").starts.write_text('{"time": 1}\n{"ti')  # a line cut by hand: kept, and the new one added
    store.log_start("j", resumed=False)
    lines = store.job("j").starts.read_text().splitlines()
    assert lines[:2] == ['{"time": 1}', '{"ti'] and json.loads(lines[2])["resumed"] is False
    assert [d.path for d in store.damaged_files("j")] == [store.job("j").starts]


def test_a_checkpoint_is_checked_by_its_zip_directory_and_crcs(tmp_path):
    import zipfile

    store = RunStore(tmp_path, "exp")
    store.set_status("j", "preempted")
    path = store.job("j").checkpoint
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("ck/data/0", b"x" * 1000)
    assert store.state("j") == "preempted" and not store.damaged_files("j")
    data = bytearray(path.read_bytes())
    data[500] ^= 0xFF
    path.write_bytes(bytes(data))
    assert store.state("j") == "preempted"  # `status` reads the end of the file only
    (damaged,) = store.damaged_files("j")  # a run reads all of it before resuming
    assert str(damaged) == f"job j: checkpoint.pt is damaged (corrupt: CRC mismatch in ck/data/0): {path}"
    path.write_bytes(bytes(data[:700]))
    assert store.state_of("j")[1]["damaged"] == path.name


def test_the_store_of_a_job_record_and_of_a_spec(tmp_path):
    from expmatrix.config import SpecError, load_experiment

    exp = write_experiment(tmp_path, run={"stale_after_seconds": 120, "heartbeat_seconds": 1})
    spec = load_experiment(exp)
    store = RunStore.for_spec(tmp_path / "runs", spec)
    assert (store.dir, store.stale_after) == (tmp_path / "runs" / "tiny", 120)
    job = build_matrix(exp).jobs[0]
    job = replace(job, run=job.run.model_copy(update={"stale_after_seconds": 90}))
    store.write_job(job)
    found, read = RunStore.for_job_file(store.job(job.id).record)
    assert (found.dir, read, found.stale_after) == (store.dir, job, 90)
    copied = store.job("xyz").record
    copied.parent.mkdir()
    copied.write_text(store.job(job.id).record.read_text())
    with pytest.raises(SpecError, match=f"holds job {job.id}, but its folder is xyz"):
        RunStore.for_job_file(copied)
    copied.write_text("id: [")
    with pytest.raises(DamagedFile, match=rf"^job xyz: {copied.name} is damaged \(corrupt YAML: "):
        RunStore.for_job_file(copied)
