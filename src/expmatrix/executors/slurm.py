"""SLURM: one `sbatch` array per stage chained with --dependency=afterok, the report after them (afterany)."""

from __future__ import annotations

from expmatrix.executors.backend import Backend, Plan, SchedulerError, Submitted, run_command


def parse_sbatch(out: str) -> str:
    """`sbatch --parsable` prints `jobid` or `jobid;cluster`."""
    job_id = out.strip().split(";")[0]
    if not job_id.isdigit():
        raise SchedulerError(f"sbatch printed no job id: {out!r}")
    return job_id


def parse_squeue(out: str) -> dict[tuple[str, int], str]:
    """Lines of `squeue -h -r -t all -o '%i|%T|%r'`: `123_4|RUNNING|None` -> {('123', 4): 'RUNNING'}.

    A requeued task pending its restart reads `PENDING` with reason `BeginTime`: reported as REQUEUED.
    Jobs that are no array (the report job) count as task 0.
    """
    states: dict[tuple[str, int], str] = {}
    for line in out.splitlines():
        if not line.strip():
            continue
        job, state, reason = (line.split("|") + ["", ""])[:3]
        array, _, task = job.partition("_")
        if task.startswith("["):  # a pending range squeue did not expand; not with -r, but be safe
            continue
        if state == "PENDING" and reason == "BeginTime":
            state = "REQUEUED"
        states[(array, int(task or 0))] = state
    return states


def parse_sacct(out: str) -> dict[tuple[str, int], str]:
    """Lines of `sacct -n -P -X -o JobID,State`: `123_4|COMPLETED`, `123_5|CANCELLED by 0` -> first word."""
    states: dict[tuple[str, int], str] = {}
    for line in out.splitlines():
        if "|" not in line:
            continue
        job, state = line.split("|")[:2]
        array, _, task = job.partition("_")
        if task.isdigit() or not task:
            states[(array, int(task or 0))] = state.split()[0] if state else ""
    return states


class SlurmBackend(Backend):
    name = "slurm"

    def files(self, plan: Plan) -> dict[str, str]:
        out = {
            f"{st.name}.sbatch": self.render(plan, "array.sbatch.j2", stage=st)
            for st in plan.stages
        }
        if plan.settings.report:
            out["report.sbatch"] = self.render(plan, "report.sbatch.j2")
        return out

    def _sbatch(self, plan: Plan, file: str, dependency: str | None) -> list[str]:
        return [
            "sbatch",
            "--parsable",
            *([f"--dependency={dependency}"] if dependency else []),
            str(plan.folder / file),
        ]

    def _steps(self, plan: Plan, ids: dict[str, str]) -> list[tuple[str, list[str]]]:
        """(step name, sbatch command); `ids` fills dependencies (placeholders for --dry-run)."""
        steps = []
        for st in plan.stages:
            dep = "afterok:" + ":".join(ids.get(a, f"<{a}>") for a in st.after) if st.after else None
            steps.append((st.name, self._sbatch(plan, f"{st.name}.sbatch", dep)))
        if plan.settings.report and plan.stages:
            dep = "afterany:" + ":".join(ids.get(st.name, f"<{st.name}>") for st in plan.leaves)
            steps.append(("report", self._sbatch(plan, "report.sbatch", dep)))
        return steps

    def commands(self, plan: Plan) -> list[str]:
        return [" ".join(cmd) for _, cmd in self._steps(plan, {})]

    def submit(self, plan: Plan) -> Submitted:
        done = Submitted(self.name)
        for step, _ in self._steps(plan, {}):  # each step's dependencies are the ids submitted before it
            cmd = dict(self._steps(plan, done.ids))[step]
            done.ids[step] = parse_sbatch(run_command(cmd, cwd=plan.folder))
        return done

    def query(self, submitted: list[Submitted]) -> dict[tuple[str, int], str]:
        ids = sorted({i for s in submitted for i in s.ids.values()})
        if not ids:
            return {}
        # all of this user's jobs in one call, then ours: `-j` fails outright once one id is forgotten
        mine = parse_squeue(run_command(["squeue", "--me", "-h", "-r", "-t", "all", "-o", "%i|%T|%r"]))
        states = {k: v for k, v in mine.items() if k[0] in ids}
        try:  # finished tasks squeue has forgotten (after MinJobAge); without an accounting database it fails
            sacct = run_command(["sacct", "-n", "-P", "-X", "-o", "JobID,State", "-j", ",".join(ids)])
        except SchedulerError:
            return states
        return {**parse_sacct(sacct), **states}
