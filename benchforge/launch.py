"""Launching sweeps on SLURM: the checks before a job array is submitted, and ``probe``.

``compute/slurm.yaml`` points ``hydra/launcher`` at hydra-submitit-launcher. Before the CLI
hands a ``-m`` sweep to Hydra, :func:`plan_launch` composes its first job and, for a SLURM
profile, runs :func:`preflight`: it refuses unresolved ``PLACEHOLDER_*`` values and launches
beyond the GPU-hour budget, and sizes the job array from the partition's idle GPUs. (Hydra
only instantiates launchers from the ``hydra_plugins`` namespace, which editable installs do
not expose, so the checks run here rather than in a launcher subclass.)
"""

from __future__ import annotations

import getpass
import logging
import os
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

from omegaconf import DictConfig, OmegaConf

from benchforge import slurm
from benchforge.cell import run_root
from benchforge.config import compose, slurm_minutes
from benchforge.console import print_table
from benchforge.errors import BenchforgeError
from benchforge.rundir import RowAppender, utc_now
from benchforge.shard import run_gpu_hours

log = logging.getLogger(__name__)

PLACEHOLDER = "PLACEHOLDER_"
# The command that tells each cluster-specific value (shown when one is unresolved).
PROBE_COMMANDS = {
    "partition": "sinfo -h -o '%R %G %a %l' (a partition with gres gpu)",
    "account": "sacctmgr -nP show assoc user=$USER format=account",
    "qos": "sacctmgr -nP show assoc user=$USER format=qos (and: sacctmgr -nP show qos)",
    "time": "scontrol show partition <partition> (MaxTime)",
}


def placeholders(compute: DictConfig) -> list[tuple[str, str]]:
    """``(key, value)`` of every compute value still set to a ``PLACEHOLDER_*`` string."""
    found: list[tuple[str, str]] = []

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{prefix}.{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{prefix}[{i}]")
        elif isinstance(node, str) and node.startswith(PLACEHOLDER):
            found.append((prefix, node))

    walk(OmegaConf.to_container(compute, resolve=True), "compute")
    return found


def placeholder_error(found: list[tuple[str, str]], profile: str) -> BenchforgeError:
    """The error for a compute profile with unresolved ``PLACEHOLDER_*`` values
    (``found``: ``(key, value)`` pairs): one line per key with how to find its value (``benchforge
    probe`` or the SLURM command to ask).
    """
    lines = [f"compute={profile} has {len(found)} unresolved placeholder(s); nothing was "
             f"submitted. Run `benchforge probe compute={profile}` or set them:"]
    for key, value in found:
        field = key.split(".")[-1]
        how = PROBE_COMMANDS.get(field, "ask your cluster's documentation")
        lines.append(f"  {key}={value}  <- {how}")
    return BenchforgeError("\n".join(lines))


def array_width(compute: DictConfig, shape: DictConfig) -> tuple[int, str]:
    """How many shards may run at once, and why.

    GPU shards: idle GPUs on the partition minus ``headroom`` (at least 1), so a sweep fills
    the free GPUs without taking the last ones. CPU shards: idle CPUs / CPUs per shard.
    """
    if compute.array_parallelism is not None:
        width = int(compute.array_parallelism)
        return max(width, 1), f"compute.array_parallelism={width}"
    load = slurm.partition_load(compute.partition)
    if load is None:
        return 1, "sinfo unavailable: 1 at a time"
    if int(shape.gpus) > 0:
        width = max(load.idle_gpus - int(compute.headroom), 1)
        return width, (f"{load.idle_gpus} idle GPUs on {compute.partition} - headroom "
                       f"{compute.headroom}")
    width = max(load.idle_cpus // max(int(shape.cpus), 1), 1)
    return width, f"{load.idle_cpus} idle CPUs on {compute.partition} / {shape.cpus} per shard"


def check_budget(config: DictConfig, n_shards: int, shape: DictConfig) -> str:
    """Refuse a launch whose worst case (every GPU shard using its whole time limit once)
    exceeds what is left of ``compute.gpu_hour_budget``; return the budget line."""

    compute = config.compute
    budget = float(compute.gpu_hour_budget)
    used, source = run_gpu_hours(run_root(config))
    left = budget - used
    hours = slurm_minutes(str(compute.time)) / 60
    need = n_shards * int(shape.gpus) * hours
    line = (f"GPU-hours: {used:.2f} used ({source}), {left:.2f} of {budget:g} left; this launch "
            f"needs up to {need:.2f} ({n_shards} shards x {shape.gpus} GPU x {hours:g} h)")
    if need > 0 and need > left:
        raise BenchforgeError(
            f"refusing to launch: {line}. Raise compute.gpu_hour_budget, shorten compute.time, "
            "or sweep fewer cells")
    return line


def _limit(value: str | None) -> int | None:
    return int(value) if value and value.isdigit() else None


def check_shape(compute: DictConfig, shard: str) -> None:
    """Refuse a shard shape no node of the partition can run (it would pend forever with
    reason PartitionConfig), naming the ``compute.*`` key to change.

    Raises:
        BenchforgeError: CPUs, memory, GPUs or time beyond the partition's nodes or limits.
    """
    shape = compute[shard]
    partition = str(compute.partition) if compute.partition else None
    nodes = slurm.partition_nodes(partition)
    if nodes is None:
        return  # no sinfo: SLURM itself will judge
    where = f"partition {partition}" if partition else "the default partition"
    if not nodes:
        raise BenchforgeError(f"compute.partition={partition}: no nodes in it (sinfo); "
                              "nothing was submitted")
    limits = slurm.partition_limits(partition) if partition else None
    cpus, mem_mb, gpus = int(shape.cpus), int(shape.mem_gb) * 1024, int(shape.gpus)
    nothing = "nothing was submitted"
    if limits:
        max_time = limits.get("MaxTime", "UNLIMITED")
        if max_time not in ("UNLIMITED", "INFINITE", "") and \
                slurm_minutes(str(compute.time)) > slurm_minutes(max_time):
            raise BenchforgeError(
                f"compute.time={compute.time} is longer than {where}'s MaxTime={max_time}; "
                f"set compute.time={max_time} or less; {nothing}")
        cap = _limit(limits.get("MaxCPUsPerNode"))
        if cap is not None and cpus > cap:
            raise BenchforgeError(
                f"compute.{shard}.cpus={cpus} is more than {where}'s MaxCPUsPerNode={cap}; "
                f"set compute.{shard}.cpus={cap} or less; {nothing}")
        cap = _limit(limits.get("MaxMemPerNode"))
        if cap is not None and mem_mb > cap:
            raise BenchforgeError(
                f"compute.{shard}.mem_gb={shape.mem_gb} is more than {where}'s "
                f"MaxMemPerNode={cap} MB; set compute.{shard}.mem_gb={cap // 1024} or less; "
                f"{nothing}")
    if any(n.cpus >= cpus and n.mem_mb >= mem_mb and n.gpus >= gpus for n in nodes):
        return
    for key, want, have, unit in (("cpus", cpus, max(n.cpus for n in nodes), "CPUs"),
                                  ("gpus", gpus, max(n.gpus for n in nodes), "GPUs"),
                                  ("mem_gb", mem_mb, max(n.mem_mb for n in nodes), "MB")):
        if want > have:
            shown = shape[key]
            largest = have // 1024 if key == "mem_gb" else have
            raise BenchforgeError(
                f"compute.{shard}.{key}={shown}: no node of {where} has that many {unit} "
                f"(largest: {have} {unit}); set compute.{shard}.{key}={largest} or less, or "
                f"use another compute.partition; {nothing}")
    raise BenchforgeError(
        f"compute.{shard}: no single node of {where} has {cpus} CPUs, {shape.mem_gb} GB and "
        f"{gpus} GPUs together; lower compute.{shard}.* or use another compute.partition; "
        f"{nothing}")


def preflight(config: DictConfig, n_shards: int, cells: int | None = None,
              windows: int = 1) -> dict[str, Any]:
    """Everything checked and decided before a SLURM job array of ``n_shards`` is submitted;
    returns the launch record (also appended to the run's ``logs/launches.jsonl``).

    Args:
        config: the sweep's first job's config.
        n_shards: array elements (cells x windows).
        cells: cells of the sweep (default ``n_shards``); windows: sample windows per cell.

    Raises:
        BenchforgeError: unresolved placeholders, a shape no node can run, or the GPU-hour
            budget.
    """
    compute = config.compute
    found = placeholders(compute)
    if found:
        raise placeholder_error(found, str(compute.name))
    shard = str(compute.shard)
    shape = compute[shard]
    slurm_minutes(str(compute.time))  # the config's own format first, before asking SLURM
    check_shape(compute, shard)
    budget = check_budget(config, n_shards, shape)
    width, why = array_width(compute, shape)
    # submitit reads the signal name from the environment, here (sbatch --signal) and in the
    # job (its handler); sbatch passes the environment on.
    os.environ["SUBMITIT_PREEMPT_SIGNAL"] = str(compute.signal)
    record = {
        "utc": utc_now(), "stage": str(config.stage), "shard": shard, "shards": n_shards,
        "cells": n_shards if cells is None else cells, "windows_per_cell": windows,
        "partition": compute.partition, "qos": compute.qos, "account": compute.account,
        "array_parallelism": width, "array_parallelism_from": why, "gpus_per_shard": shape.gpus,
        "time": str(compute.time), "signal": f"{compute.signal}@{compute.signal_delay_s}",
        "budget": budget,
    }
    launches = run_root(config) / "logs" / "launches.jsonl"
    with RowAppender(launches) as appender:
        appender.append(record)
    per_cell = f" ({record['cells']} cells x {windows} shards)" if windows > 1 else ""
    log.info("slurm: %d %s shard(s)%s, array width %d (%s); %s", n_shards, shard, per_cell,
             width, why, budget)
    return record


# ------------------------------------------------------------------------------------ probe
def _lines(argv: list[str]) -> list[str] | None:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout.splitlines() if proc.returncode == 0 else None


def probe_values(compute: DictConfig) -> list[dict[str, str]]:
    """What the cluster says about each placeholder-able value: one row per key with the value
    found and the command it came from."""
    user = os.environ.get("USER") or getpass.getuser()
    rows: list[dict[str, str]] = []

    partitions = _lines(["sinfo", "-h", "-o", "%R|%G|%a|%l|%D"]) or []
    gpu_parts = []
    for line in partitions:
        name, gres, avail, limit, nodes = [*line.split("|"), "", "", "", ""][:5]
        if "gpu" in gres and avail == "up":
            gpu_parts.append((name, limit, nodes))
    rows.append({"key": "compute.partition", "current": str(compute.partition),
                 "found": ",".join(p[0] for p in gpu_parts) or "(no partition with GPUs)",
                 "command": "sinfo -h -o '%R|%G|%a|%l|%D'"})
    assoc = _lines(["sacctmgr", "-nP", "show", "assoc", f"user={user}",
                    "format=account,qos"]) or []
    accounts = sorted({line.split("|")[0] for line in assoc if line.split("|")[0]})
    qos = sorted({q for line in assoc for q in line.split("|")[-1].split(",") if q})
    rows.append({"key": "compute.account", "current": str(compute.account),
                 "found": ",".join(accounts) or "(no association)",
                 "command": f"sacctmgr -nP show assoc user={user} format=account,qos"})
    rows.append({"key": "compute.qos", "current": str(compute.qos),
                 "found": ",".join(qos) or "(none listed)",
                 "command": f"sacctmgr -nP show assoc user={user} format=account,qos"})
    if gpu_parts:
        limit = gpu_parts[0][1]
        rows.append({"key": "compute.time", "current": str(compute.time),
                     "found": f"MaxTime={limit} on {gpu_parts[0][0]}",
                     "command": f"scontrol show partition {gpu_parts[0][0]}"})
    return rows


def run_probe(cfg: DictConfig) -> list[dict[str, str]]:
    """``benchforge probe``: ask SLURM (sinfo, sacctmgr, scontrol) for the compute profile's
    ``PLACEHOLDER_*`` values and print them.

    Returns:
        One ``{"key", "current", "found", "command"}`` per value asked for.

    Raises:
        BenchforgeError: ``sinfo`` is not on PATH (not a SLURM login node).
    """
    if not slurm.available("sinfo"):
        raise BenchforgeError("probe: sinfo not found; run it on a SLURM login node")
    rows = probe_values(cfg.compute)
    print_table(f"compute={cfg.compute.name}: what the cluster says",
                ["key", "current", "found", "command"],
                [[r["key"], r["current"], r["found"], r["command"]] for r in rows])
    suggestions = []
    for row in rows:
        if row["current"].startswith(PLACEHOLDER) and row["found"] and \
                not row["found"].startswith("("):
            suggestions.append(f"{row['key']}={row['found'].split(',')[0]}")
    if suggestions:
        print("overrides: " + " ".join(suggestions))
    unresolved = [k for k, _ in placeholders(cfg.compute)]
    if unresolved:
        print(f"still unresolved in compute={cfg.compute.name}: {', '.join(unresolved)}")
    return rows


# ------------------------------------------------------------------------------ run phases
def first_job_overrides(overrides: Sequence[str]) -> list[str]:
    """The overrides of a sweep's first job (each sweep reduced to its first value)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    plain = [o for o in overrides if "=" in o and not o.startswith("-")]
    result = []
    for override in OverridesParser.create().parse_overrides(plain):
        if not override.is_sweep_override():
            result.append(override.input_line or "")
            continue
        first = next(iter(override.sweep_string_iterator()))
        result.append(f"{override.get_key_element()}={first}")  # the key keeps its +/++
    return result


def collapse_sweep(overrides: Sequence[str], key: str) -> list[str]:
    """The overrides with the sweep over ``key`` (e.g. ``benchmark=a,b``) reduced to its first
    value; everything else, flags included, unchanged."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    result = []
    for item in overrides:
        if "=" in item and not item.startswith("-"):
            override = parser.parse_overrides([item])[0]
            if override.get_key_element().lstrip("+~") == key and override.is_sweep_override():
                item = f"{override.get_key_element()}={next(override.sweep_string_iterator())}"
        result.append(item)
    return result


def sweep_size(overrides: Sequence[str]) -> int:
    """How many jobs Hydra's basic sweeper makes of these overrides (its own expansion)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    plain = [o for o in overrides if "=" in o and not o.startswith("-")]
    batches = BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(plain), None)
    return sum(len(batch) for batch in batches)


def first_job_config(overrides: Sequence[str], stage: str) -> DictConfig | None:
    """The composed config of the sweep's first job; None if it does not compose (the real
    launch then reports the config error itself, as one line)."""

    try:
        return compose(first_job_overrides(overrides), stage=stage)
    except Exception:  # the real launch reports config errors properly
        return None


def sweep_windows(cfg: DictConfig, overrides: Sequence[str], stage: str) -> int:
    """K, the sample windows per cell of a sweep (``compute.shards_per_cell`` or
    ``compute.tasks_per_shard``; 1 without them): the most any of its cells has, so every
    window of every cell gets an array element (a cell with fewer ends its extra ones at
    once). ``tasks_per_shard`` needs each cell's size: every job's config is composed and its
    benchmark loaded.

    Raises:
        WindowError: a bad count, or both keys set.
    """
    from benchforge.benchmarks import load_benchmark
    from benchforge.cellwindows import requested_windows

    if cfg.compute.get("window") is not None:
        return 1  # the user named the window: that one only
    if cfg.compute.get("tasks_per_shard") is None:
        requested_windows(cfg.compute, 1, 1)  # a bad count is refused before submission
        return max(int(cfg.compute.get("shards_per_cell") or 1), 1)
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    plain = [o for o in overrides if "=" in o and not o.startswith("-")]
    batches = BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(plain), None)
    most = 1
    for job in (job for batch in batches for job in batch):
        job_cfg = compose(list(job), stage=stage)
        n_tasks = len(load_benchmark(job_cfg).load().tasks)
        most = max(most, len(requested_windows(job_cfg.compute, n_tasks,
                                               int(job_cfg.model.n_samples))))
    return most


def plan_launch(stage: str, overrides: Sequence[str]) -> list[str]:
    """Checks before a ``-m`` sweep of ``stage`` is handed to Hydra; returns the extra
    overrides the launch needs (the array width; with sample windows, the sweep over
    ``compute.window``: one array element per window of each cell). Nothing for a local
    sweep."""
    cfg = first_job_config(overrides, stage)
    if cfg is None or str(cfg.compute.launcher) != "slurm":
        return []
    cells = sweep_size(overrides)
    # windows split the stages that write rows; a smoke or repair sweep stays one per cell
    k = sweep_windows(cfg, overrides, stage) if stage in ("generate", "score") else 1
    if k > 1:
        log.info("slurm: %d cell(s) x %d shard(s) (sample windows) = %d %s shards", cells, k,
                 cells * k, stage)
        print(f"benchforge {stage}: {cells} cell(s) x {k} shards (sample windows)",
              file=sys.stderr)
    record = preflight(cfg, cells * k, cells=cells, windows=k)
    extra = [f"hydra.launcher.array_parallelism={record['array_parallelism']}"]
    return extra + ([f"compute.window={','.join(str(i) for i in range(k))}"] if k > 1 else [])



# ----------------------------------------------------------------------- waiting for a sweep
class PendingWatch:
    """While a sweep's job arrays wait, log each array's state and pending reason every
    ``interval_s`` (also into ``<run>/logs/pending.json`` for ``status``), and stop the sweep
    when a job pends for a reason that cannot resolve itself (PartitionConfig, QOSMax*, ...):
    its jobs are cancelled and the driver is interrupted with that reason.

    Args:
        name: the SLURM job name of the sweep's shards (``bf-<stage>``).
        record: file for the latest observation (read by ``status``).
        interval_s: seconds between two looks.
    """

    def __init__(self, name: str, record: Any, interval_s: float = 120.0) -> None:
        import threading

        self.name, self.record, self.interval_s = name, record, interval_s
        self.user = os.environ.get("USER") or getpass.getuser()
        self.before = {job for job, _, _ in slurm.pending_jobs(name, self.user)}
        self.stopped: str | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> PendingWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()

    def look(self) -> list[tuple[str, str, str]]:
        """One look: log and record the sweep's jobs; stop the sweep on a hopeless reason."""
        import json

        jobs = [j for j in slurm.pending_jobs(self.name, self.user)
                if j[0] not in self.before]
        if not jobs:
            return jobs
        arrays: dict[str, tuple[str, str]] = {}
        for job, state, reason in jobs:
            arrays.setdefault(job.split("_")[0], (state, reason))
        for array, (state, reason) in arrays.items():
            log.warning("slurm: array %s (%s) %s%s", array, self.name, state,
                        f" ({reason})" if state == "PENDING" else "")
        try:
            self.record.parent.mkdir(parents=True, exist_ok=True)
            self.record.write_text(json.dumps({"utc": utc_now(), "jobs": [
                {"job": j, "state": s, "reason": r} for j, s, r in jobs]}) + "\n")
        except OSError:
            pass
        hopeless = [(j, r) for j, s, r in jobs if s == "PENDING" and slurm.unresolvable(r)]
        if hopeless and self.stopped is None:
            job, reason = hopeless[0]
            slurm.cancel(sorted({j.split("_")[0] for j, _, _ in jobs}))
            self.stopped = (f"job {job} pends with reason {reason}, which waiting cannot "
                            f"resolve (the request exceeds what the partition, QOS or account "
                            f"allows); its sweep was cancelled: change compute.* and rerun")
            import _thread

            _thread.interrupt_main()
        return jobs

    def _loop(self) -> None:
        first = min(15.0, self.interval_s)
        if self._done.wait(first):
            return
        while not self._done.is_set():
            self.look()
            if self.stopped or self._done.wait(self.interval_s):
                return
