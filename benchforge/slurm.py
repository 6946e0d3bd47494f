"""What the SLURM cluster says: thin parsers over ``sinfo``, ``squeue``, ``sacct``, ``scontrol``.

Each function runs one command and returns plain data; a missing command or a failing one is
reported as ``None`` (or an empty result) so callers can fall back to what the run dir records.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass

# Job states after which a job will not run again (sacct/squeue long names).
TERMINAL_STATES = frozenset({
    "BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL", "OUT_OF_MEMORY",
    "PREEMPTED", "TIMEOUT", "REVOKED",
})
ACTIVE_STATES = frozenset({
    "PENDING", "RUNNING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "CONFIGURING",
    "COMPLETING", "RESIZING", "SUSPENDED", "STAGE_OUT", "SIGNALING", "RESV_DEL_HOLD",
})


def available(command: str = "sinfo") -> bool:
    """Whether the SLURM client ``command`` (``sinfo``, ``sbatch``, ...) is on PATH."""
    return shutil.which(command) is not None


def _run(argv: list[str], timeout: float = 30) -> str | None:
    if not available(argv[0]):
        return None
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout if proc.returncode == 0 else None


def _gpu_count(gres: str) -> int:
    """GPUs in a gres string: ``gpu:2``, ``gpu:a100:4(S:0-1)``, ``gpu:0(IDX:N/A),shard:0``."""
    total = 0
    for item in re.split(r",(?![^()]*\))", gres or ""):
        item = re.sub(r"\(.*?\)", "", item).strip()
        parts = item.split(":")
        if parts[0] == "gpu" and len(parts) >= 2 and parts[-1].isdigit():
            total += int(parts[-1])
    return total


@dataclass(frozen=True)
class PartitionLoad:
    """GPUs and CPUs of a partition: idle now and in total (from ``sinfo``)."""

    idle_gpus: int
    total_gpus: int
    idle_cpus: int
    total_cpus: int


def partition_load(partition: str | None) -> PartitionLoad | None:
    """Free GPUs and CPUs on the partition's usable nodes (idle or mixed), from ``sinfo``."""
    columns = "NodeHost:80,Gres:200,GresUsed:200,CPUsState:40,StateLong:40"
    argv = ["sinfo", "-h", "-N", "-O", columns]
    if partition:
        argv[2:2] = ["-p", partition]
    out = _run(argv)
    if out is None:
        return None
    seen: set[str] = set()
    idle_gpus = total_gpus = idle_cpus = total_cpus = 0
    for line in out.splitlines():
        fields = line.split()
        if len(fields) < 5 or fields[0] in seen:
            continue
        seen.add(fields[0])
        _host, gres, used, cpus, state = fields[:5]
        _alloc, idle, _other, total = (int(x) for x in cpus.split("/"))
        gpus = _gpu_count(gres)
        total_gpus += gpus
        total_cpus += total
        if state.rstrip("*~#!%$@^-").lower() in ("idle", "mixed", "allocated", "completing"):
            idle_gpus += max(gpus - _gpu_count(used), 0)
            idle_cpus += idle
    return PartitionLoad(idle_gpus, total_gpus, idle_cpus, total_cpus)


@dataclass(frozen=True)
class NodeSize:
    """One node of a partition: host name, CPUs, memory (MiB) and GPUs."""

    host: str
    cpus: int
    mem_mb: int
    gpus: int


def partition_nodes(partition: str | None) -> list[NodeSize] | None:
    """Size of each node of the partition (CPUs, real memory, GPUs), from ``sinfo``."""
    argv = ["sinfo", "-h", "-N", "-O", "NodeHost:80,CPUs:10,Memory:20,Gres:200"]
    if partition:
        argv[2:2] = ["-p", partition]
    out = _run(argv)
    if out is None:
        return None
    nodes: dict[str, NodeSize] = {}
    for line in out.splitlines():
        fields = line.split()
        if len(fields) < 3 or not fields[1].isdigit():
            continue
        memory = re.sub(r"\D.*", "", fields[2]) or "0"
        nodes[fields[0]] = NodeSize(fields[0], int(fields[1]), int(memory),
                                    _gpu_count(fields[3] if len(fields) > 3 else ""))
    return list(nodes.values())


def partition_limits(partition: str) -> dict[str, str] | None:
    """``scontrol show partition`` as ``{key: value}`` (MaxTime, MaxCPUsPerNode, ...)."""
    out = _run(["scontrol", "show", "partition", partition, "-o"])
    if out is None:
        return None
    return dict(item.split("=", 1) for item in out.split() if "=" in item)


# Pending reasons that never resolve by waiting: the request or the account must change.
UNRESOLVABLE_REASONS = ("PartitionConfig", "PartitionNodeLimit", "PartitionTimeLimit",
                        "QOSMax", "AssocMax", "InvalidAccount", "InvalidQOS", "AccountNotAllowed",
                        "QOSNotAllowed", "BadConstraints", "ReqNodeNotAvail, UnavailableNodes")


def unresolvable(reason: str) -> bool:
    """Whether a pending job's ``squeue`` reason can never clear by waiting (a limit or a bad
    account, QOS or constraint): the sweep stops instead of waiting."""
    return any(reason.startswith(r) for r in UNRESOLVABLE_REASONS)


def pending_jobs(name: str, user: str | None = None) -> list[tuple[str, str, str]]:
    """``(job id, state, reason)`` of this user's jobs called ``name`` (``squeue``)."""
    argv = ["squeue", "-h", "-n", name, "-o", "%i|%T|%r"]
    if user:
        argv += ["-u", user]
    out = _run(argv)
    jobs = []
    for line in (out or "").splitlines():
        parts = line.split("|")
        if len(parts) == 3:
            jobs.append((parts[0].strip(), parts[1].strip(), parts[2].strip()))
    return jobs


def cancel(job_ids: list[str]) -> bool:
    """``scancel`` the jobs; False when there are none or scancel failed."""
    return bool(job_ids) and _run(["scancel", *job_ids]) is not None


def job_states(job_ids: list[str]) -> dict[str, str]:
    """Current state per job id (``123`` or ``123_4``): squeue for live jobs, sacct for the rest."""
    ids = sorted({j for j in job_ids if j})
    if not ids:
        return {}
    states: dict[str, str] = {}
    out = _run(["squeue", "-h", "-t", "all", "-o", "%i|%T", "-j", ",".join(ids)])
    for line in (out or "").splitlines():
        job, _, state = line.partition("|")
        states[job.strip()] = state.strip()
    missing = [j for j in ids if j not in states]
    if missing:
        out = _run(["sacct", "-n", "-P", "-X", "-o", "JobID,State", "-j", ",".join(missing)])
        for line in (out or "").splitlines():
            job, _, state = line.partition("|")
            if job in missing:  # the last record of a requeued job is its latest run
                states[job] = state.split()[0] if state else "UNKNOWN"
    return states


def array_active(array_id: str) -> bool:
    """Whether job array ``array_id`` (``123``) still has an element queued or running
    (``squeue -j 123`` lists its pending elements as ``123_[4-7]``); False when squeue cannot
    say."""
    out = _run(["squeue", "-h", "-t", "all", "-o", "%i|%T", "-j", array_id])
    return any(line.partition("|")[2].strip() in ACTIVE_STATES
               for line in (out or "").splitlines())


@dataclass(frozen=True)
class JobRun:
    """One job (or array element) as ``sacct`` reports it: id, state, elapsed seconds, GPUs."""

    job_id: str
    state: str
    elapsed_s: int
    gpus: int


def job_runs(job_ids: list[str]) -> list[JobRun] | None:
    """Every run of each job (``sacct -D``: a requeued job has one record per attempt)."""
    ids = sorted({j for j in job_ids if j})
    if not ids:
        return []
    out = _run(["sacct", "-n", "-P", "-X", "-D", "-o", "JobID,State,ElapsedRaw,AllocTRES",
                "-j", ",".join(ids)])
    if out is None:
        return None
    runs = []
    for line in out.splitlines():
        parts = line.split("|")
        if len(parts) < 4:
            continue
        job, state, elapsed, tres = parts[:4]
        # AllocTRES lists gres/gpu=N and, per type, gres/gpu:a100=N: count the untyped total.
        typed = re.findall(r"gres/gpu:[^=,]+=(\d+)", tres)
        untyped = re.findall(r"gres/gpu=(\d+)", tres)
        gpus = sum(map(int, untyped)) if untyped else sum(map(int, typed))
        runs.append(JobRun(job, state.split()[0] if state else "UNKNOWN",
                           int(elapsed or 0), gpus))
    return runs


def scontrol_job(job_id: str) -> str | None:
    """``scontrol show job <id>`` as text; None when scontrol fails or is missing."""
    return _run(["scontrol", "show", "job", job_id])


def requeue(job_id: str) -> bool:
    """``scontrol requeue <id>``; False when it failed."""
    return _run(["scontrol", "requeue", job_id]) is not None


def current_job() -> dict[str, str | int] | None:
    """This process's SLURM job, from the environment SLURM sets; None outside SLURM."""
    env = os.environ
    if "SLURM_JOB_ID" not in env:
        return None
    array_job, array_task = env.get("SLURM_ARRAY_JOB_ID"), env.get("SLURM_ARRAY_TASK_ID")
    job_id = f"{array_job}_{array_task}" if array_job and array_task else env["SLURM_JOB_ID"]
    gpus = env.get("SLURM_GPUS_ON_NODE") or ""
    return {
        "job_id": job_id,
        "raw_job_id": env["SLURM_JOB_ID"],
        "restart_count": int(env.get("SLURM_RESTART_COUNT") or 0),
        "partition": env.get("SLURM_JOB_PARTITION", ""),
        "qos": env.get("SLURM_JOB_QOS", ""),
        "node": env.get("SLURMD_NODENAME", ""),
        "gpus": int(gpus) if gpus.isdigit() else -1,
    }
