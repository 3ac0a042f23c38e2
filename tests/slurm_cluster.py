"""A real single-node SLURM on localhost for the integration tests (Debian's slurm-wlm, no systemd).

`LocalSlurm(folder).start()` writes a slurm.conf whose state, spool, pid and log files all live
under `folder`, starts munged (unless one already answers), slurmctld and slurmd, and waits until
the node is idle. `stop()` ends exactly the daemons it started, by their PID files. Why the slurm.conf
lines are there: cgroup process tracking fails without systemd (linuxproc tracking instead), the node's
CPUs and memory must match `slurmd -C` (else it is INVAL), `kill_invalid_depend` ends a job whose `afterok`
parent failed (else it pends for ever), and without slurmdbd finished jobs come from jobcomp/filetxt.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

DAEMONS = ("/usr/sbin/slurmctld", "/usr/sbin/slurmd", "/usr/sbin/munged")


def available() -> str | None:
    """None when a local SLURM can run here, else the reason it cannot."""
    if os.geteuid() != 0:
        return "needs root (slurmd runs jobs as their user)"
    missing = [d for d in DAEMONS if not Path(d).exists()] + [c for c in ("sbatch", "squeue") if not shutil.which(c)]
    return (
        f"not installed: {', '.join(missing)} (.ci/run installs slurmctld slurmd slurm-client munge)"
        if missing
        else None
    )


def _node_line() -> str:
    """NodeName line from `slurmd -C` (advertising more CPUs or memory than exist marks the node INVAL)."""
    out = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, check=True).stdout
    fields = dict(f.split("=", 1) for f in out.split()[:-1] if "=" in f)
    return f"NodeName={socket.gethostname().split('.')[0]} NodeAddr=127.0.0.1 CPUs={fields['CPUs']} " + (
        f"RealMemory={fields['RealMemory']} State=UNKNOWN"
    )


def slurm_conf(folder: Path) -> str:
    host = socket.gethostname().split(".")[0]
    return "\n".join(
        [
            "ClusterName=expmatrix-test",
            f"SlurmctldHost={host}(127.0.0.1)",
            "SlurmUser=root",
            "SlurmctldPort=16817",
            "SlurmdPort=16818",
            "AuthType=auth/munge",
            f"StateSaveLocation={folder}/state",
            f"SlurmdSpoolDir={folder}/spool",
            f"SlurmctldPidFile={folder}/slurmctld.pid",
            f"SlurmdPidFile={folder}/slurmd.pid",
            f"SlurmctldLogFile={folder}/slurmctld.log",
            f"SlurmdLogFile={folder}/slurmd.log",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core",
            "DependencyParameters=kill_invalid_depend",
            "SchedulerParameters=batch_sched_delay=0,sched_interval=2",  # pending jobs are tried every 2 s
            "AuthInfo=cred_expire=10",  # a requeued job may start again after 10 s (default 120 s)
            "JobCompType=jobcomp/filetxt",
            f"JobCompLoc={folder}/jobcomp.txt",
            "MailProg=/bin/true",
            "ReturnToService=2",
            "KillWait=5",
            "MinJobAge=300",
            _node_line(),
            f"PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP",
            "",
        ]
    )


class LocalSlurm:
    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.conf = self.folder / "slurm.conf"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}
        self.pid_files: list[Path] = []

    def start(self) -> LocalSlurm:
        for sub in ("state", "spool"):
            (self.folder / sub).mkdir(parents=True, exist_ok=True)
        self.conf.write_text(slurm_conf(self.folder))
        self._start_munge()
        for daemon, pid in (("slurmctld", "slurmctld.pid"), ("slurmd", "slurmd.pid")):
            subprocess.run([daemon, "-f", str(self.conf)], env=self.env, check=True)
            self.pid_files.append(self.folder / pid)
        self._wait(lambda: self.sinfo_state() == "idle", 30, "the node to become idle")
        return self

    def _start_munge(self) -> None:
        if self._munge_ok():
            return
        run = Path("/run/munge")
        run.mkdir(exist_ok=True)
        shutil.chown(run, "munge", "munge")
        run.chmod(0o755)
        subprocess.run(["runuser", "-u", "munge", "--", "/usr/sbin/munged"], check=True)  # as root it refuses
        self._wait(self._munge_ok, 10, "munged")
        self.pid_files.append(run / "munged.pid")

    @staticmethod
    def _munge_ok() -> bool:
        munge = subprocess.run(["munge", "-n"], capture_output=True)
        return (
            munge.returncode == 0
            and subprocess.run(["unmunge"], input=munge.stdout, capture_output=True).returncode == 0
        )

    def _wait(self, ready, seconds: float, what: str) -> None:
        deadline = time.monotonic() + seconds
        while not ready():
            if time.monotonic() > deadline:
                logs = "".join(
                    (self.folder / f).read_text()[-2000:]
                    for f in ("slurmctld.log", "slurmd.log")
                    if (self.folder / f).exists()
                )
                raise TimeoutError(f"waited {seconds} s for {what}\n{logs}")
            time.sleep(0.3)

    def sinfo_state(self) -> str:
        out = subprocess.run(["sinfo", "-h", "-o", "%T"], env=self.env, capture_output=True, text=True)
        return out.stdout.strip() if out.returncode == 0 else ""

    def queue_empty(self) -> bool:
        out = subprocess.run(["squeue", "-h", "-o", "%i"], env=self.env, capture_output=True, text=True, check=True)
        return not out.stdout.strip()

    def wait_idle(self, seconds: float) -> None:
        """Until no job is pending or running."""
        self._wait(self.queue_empty, seconds, "the queue to drain")

    def finished_jobs(self) -> str:
        """The jobcomp records of finished jobs (there is no slurmdbd)."""
        loc = self.folder / "jobcomp.txt"
        return loc.read_text() if loc.exists() else ""

    def stop(self) -> None:
        """End the daemons this object started, by their PID files (slurmd first)."""
        for pid_file in reversed(self.pid_files):
            try:
                pid = int(pid_file.read_text().split()[0])
                os.kill(pid, signal.SIGTERM)
            except (FileNotFoundError, ValueError, ProcessLookupError):
                continue
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
                time.sleep(0.1)
        self.pid_files.clear()
