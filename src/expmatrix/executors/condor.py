"""HTCondor: one cluster of N processes per stage, ordered by a DAGMan file, the report as its last node."""

from __future__ import annotations

import json
import re

from expmatrix.executors.backend import Backend, Plan, SchedulerError, Submitted, run_command

# JobStatus codes of a job ClassAd
JOB_STATUS = {1: "IDLE", 2: "RUNNING", 3: "REMOVED", 4: "COMPLETED", 5: "HELD", 6: "TRANSFERRING", 7: "SUSPENDED"}


def parse_submit_dag(out: str) -> str:
    """`condor_submit_dag` ends with `1 job(s) submitted to cluster 1234.`"""
    found = re.search(r"submitted to cluster (\d+)", out)
    if not found:
        raise SchedulerError(f"condor_submit_dag printed no cluster id: {out.strip()!r}")
    return found.group(1)


def parse_condor_json(out: str) -> dict[tuple[str, int], str]:
    """`condor_q -json` / `condor_history -json` ads -> {('<dag id>:<node>', proc): state}.

    A process that started before and waits again (NumJobStarts > 0, idle) was retried after a
    preemption: REQUEUED. The DAGMan job itself (no DAGNodeName) is skipped.
    """
    states: dict[tuple[str, int], str] = {}
    for ad in json.loads(out or "[]") or []:
        if "DAGNodeName" not in ad or "DAGManJobId" not in ad:
            continue
        state = JOB_STATUS.get(int(ad.get("JobStatus", 0)), "UNKNOWN")
        if state == "IDLE" and int(ad.get("NumJobStarts", 0)) > 0:
            state = "REQUEUED"
        if state == "COMPLETED" and int(ad.get("ExitCode", 0)) != 0:
            state = "FAILED"
        states[(f"{ad['DAGManJobId']}:{ad['DAGNodeName']}", int(ad.get("ProcId", 0)))] = state
    return states


class CondorBackend(Backend):
    name = "condor"

    def _job(self, plan: Plan, step: str, cmd: list[str]) -> str:
        return self.render(plan, "job.sh.j2", step=step, cmd=cmd)

    def files(self, plan: Plan) -> dict[str, str]:
        out: dict[str, str] = {}
        for st in plan.stages:
            out[f"{st.name}.sh"] = self._job(plan, st.name, plan.worker_command(st))
            out[f"{st.name}.sub"] = self.render(
                plan, "array.sub.j2", stage=st, executable=str(plan.folder / f"{st.name}.sh")
            )
        if plan.settings.report and plan.stages:
            report = [*plan.settings.command, "report", str(plan.experiment), "--runs", str(plan.runs)]
            out["report.sh"] = self._job(plan, "report", [*report, *plan.report_args, "--format", "markdown"])
            out["report.sub"] = self.render(plan, "report.sub.j2", executable=str(plan.folder / "report.sh"))
        out["experiment.dag"] = self.render(plan, "experiment.dag.j2")
        return out

    def commands(self, plan: Plan) -> list[str]:
        return [f"condor_submit_dag -batch-name {plan.job_name} {plan.folder / 'experiment.dag'}"]

    def submit(self, plan: Plan) -> Submitted:
        out = run_command(["condor_submit_dag", "-batch-name", plan.job_name, "experiment.dag"], cwd=plan.folder)
        dag = parse_submit_dag(out)
        steps = [st.name for st in plan.stages] + (["report"] if plan.settings.report else [])
        return Submitted(self.name, {step: f"{dag}:{step}" for step in steps})

    def query(self, submitted: list[Submitted]) -> dict[tuple[str, int], str]:
        dags = sorted({i.split(":")[0] for s in submitted for i in s.ids.values()})
        if not dags:
            return {}
        constraint = " || ".join(f"DAGManJobId == {d}" for d in dags)
        attrs = "DAGManJobId,DAGNodeName,ProcId,JobStatus,NumJobStarts,ExitCode"
        history = run_command(["condor_history", "-json", "-constraint", constraint, "-attributes", attrs])
        queue = run_command(["condor_q", "-json", "-constraint", constraint, "-attributes", attrs])
        return {**parse_condor_json(history), **parse_condor_json(queue)}
