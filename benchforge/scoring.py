"""Scoring mechanics: per-host time limits, the parallel verdict loop, the timeout audit.

Pure of config and cell-dir logic: :mod:`benchforge.stages` decides what to score and where
rows go; this module turns samples into verdict rows through a sandbox.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from benchforge.benchmarks import Benchmark, Task
from benchforge.errors import BenchforgeError
from benchforge.outcomes import relabel
from benchforge.rundir import (
    CellDir,
    RowAppender,
    first_rows_by_key,
    read_json,
    read_rows,
    row_key,
    write_json_atomic,
)
from benchforge.sandbox import CheckProgram, ExecResult, FailureMode, Sandbox

log = logging.getLogger("benchforge")


def reference_times(benchmark: Benchmark, tasks: list[Task], sandbox: Sandbox,
                    dataset_sha256: str, cache: Path, workers: int,
                    timeout_s: float) -> dict[str, float | None]:
    """Seconds each task's canonical solution takes through this sandbox on this host.

    Cached per (dataset, host, sandbox mode) in ``cache``; None where a task has no reference
    or its reference does not pass (those tasks fall back to ``sandbox.timeout_s``).
    """
    key = {"dataset_sha256": dataset_sha256, "host": socket.gethostname(),
           "sandbox_mode": sandbox.mode}
    stored = read_json(cache) if cache.exists() else {}
    times: dict[str, float | None] = stored.get("times", {}) if stored.get("key") == key else {}
    todo = [t for t in tasks if t.task_id not in times]
    failing: list[str] = []

    def measure(task: Task) -> tuple[str, float | None]:
        code = benchmark.reference_code(task)
        if code is None:
            return task.task_id, None
        result = sandbox.run(benchmark.check_program(task, code), timeout_s)
        if not result.passed:
            failing.append(f"{task.task_id} ({result.failure_mode})")
            return task.task_id, None
        return task.task_id, result.duration_s

    if todo:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            times.update(pool.map(measure, todo))
        write_json_atomic(cache, {"key": key, "times": times})
    if failing:
        log.warning("reference solution fails on this host for %d task(s): %s; they get "
                    "sandbox.timeout_s", len(failing), ", ".join(failing[:5]))
    return times


def time_limits(times: dict[str, float | None], tasks: Iterable[Task], min_time_limit_s: float,
                time_factor: float, timeout_s: float) -> dict[str, float]:
    """EvalPlus's rule: max(min_time_limit, factor x reference time), per task."""
    limits = {}
    for task in tasks:
        ref = times.get(task.task_id) if time_factor > 0 else None
        limits[task.task_id] = (round(max(min_time_limit_s, time_factor * ref), 3)
                                if ref is not None else timeout_s)
    return limits


def verdict_row(benchmark: Benchmark, task: Task, sample: dict[str, Any], result: ExecResult,
                mode: str, limit: float | None) -> dict[str, Any]:
    """One ``results.jsonl`` row of a scored sample.

    Args:
        benchmark: adds its columns (``result_fields``; ``failure_fields`` for a failure).
        task: the sample's task.
        sample: the ``samples.jsonl`` row (``task_id``, ``sample_idx``, ``code``).
        result: the sandbox's verdict.
        mode: the sandbox mode that ran it (recorded as ``sandbox_mode``).
        limit: the time limit applied, in seconds (None: the benchmark's own per-test limits).
    """
    return {"task_id": sample["task_id"], "sample_idx": sample["sample_idx"],
            "passed": result.passed, "failure_mode": result.failure_mode,
            "duration_s": result.duration_s, "time_limit_s": limit, "sandbox_mode": mode,
            **benchmark.result_fields(task, result.extra),
            **({} if result.passed else benchmark.failure_fields(task, sample["code"],
                                                                 result.detail)),
            "detail": result.detail}


def largest_first(benchmark: Benchmark, tasks: dict[str, Task], samples: list[dict[str, Any]],
                  limits: dict[str, float | None]) -> list[dict[str, Any]]:
    """Samples ordered by their task's reference time, longest first (the benchmark's own
    per-input reference times where it has them, else the derived limit), so a long sample
    does not start last and leave the other workers idle at the end. Stable for ties."""
    cost: dict[str, float] = {}
    for task_id in {s["task_id"] for s in samples}:
        seconds = benchmark.reference_seconds(tasks[task_id])
        cost[task_id] = seconds if seconds is not None else float(limits.get(task_id) or 0.0)
    return sorted(samples, key=lambda s: -cost[s["task_id"]])


def score_samples(benchmark: Benchmark, tasks: dict[str, Task], samples: list[dict[str, Any]],
                  sandbox: Sandbox, limits: dict[str, float | None], appender: RowAppender,
                  advance: Callable[[], None], workers: int) -> None:
    """Score samples on ``workers`` threads (one sandbox worker each), largest first; append
    rows as they end."""

    def score(sample: dict[str, Any]) -> dict[str, Any]:
        task = tasks[sample["task_id"]]
        verdict = benchmark.prejudge(task, sample["code"])
        if verdict is not None:
            return relabel({"task_id": sample["task_id"], "sample_idx": sample["sample_idx"],
                            "failure_mode": None, "duration_s": 0.0, "time_limit_s": None,
                            "sandbox_mode": None, "detail": "", **verdict}, sample)
        program: CheckProgram = benchmark.check_program(task, sample["code"])
        limit = limits[task.task_id]
        result = sandbox.run(program, limit)
        if result.failure_mode == FailureMode.ENVIRONMENT:  # not the sample's verdict
            raise BenchforgeError(f"{task.task_id}: the sandbox could not score this sample: "
                                  f"{result.detail}")
        # a reply cut by max_tokens or empty: that is why its code failed
        return relabel(verdict_row(benchmark, task, sample, result, sandbox.mode,
                                   limit if limit is not None else program.wall_limit_s()),
                       sample)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        ordered = largest_first(benchmark, tasks, samples, limits)
        try:
            for future in as_completed([pool.submit(score, s) for s in ordered]):
                appender.append(future.result())
                advance()
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)  # the rows so far are on disk
            raise


def idle_cores(interval_s: float = 0.25) -> int:
    """CPUs of this process's affinity mask left idle by everything else on the host now:
    the idle share of /proc/stat over ``interval_s`` times the CPU count (at least 1)."""
    cpus = len(os.sched_getaffinity(0)) or 1

    def idle_total() -> tuple[float, float]:
        with open("/proc/stat") as fh:
            values = [float(v) for v in fh.readline().split()[1:]]
        return values[3] + values[4], sum(values)  # idle + iowait, all

    try:
        idle0, total0 = idle_total()
        time.sleep(interval_s)
        idle1, total1 = idle_total()
    except (OSError, ValueError, IndexError):
        return 1
    share = (idle1 - idle0) / (total1 - total0) if total1 > total0 else 0.0
    host_cpus = os.cpu_count() or cpus
    return max(1, min(cpus, int(share * host_cpus + 0.5)))


def audit_timeouts(benchmark: Benchmark, tasks: dict[str, Task],
                   samples: dict[tuple[str, int], dict[str, Any]],
                   results: Iterable[dict[str, Any]], sandbox: Sandbox, audit: Path,
                   workers: int = 1, cell: CellDir | None = None) -> int:
    """Rerun what timed out with twice its limits; rows go to ``audit``.

    Only the part that timed out is rerun where the benchmark can name it (EvalPlus: the
    suite, and within it the input); reruns go side by side on at most ``workers`` sandbox
    workers and never more than the host's idle cores, so the node stays unloaded.
    Verdicts are not changed: the audit measures how much of the timeout count came from an
    overloaded node. Where ``cell`` is given and anything was rerun, its wall time goes to
    provenance ``stages.timeout_audit`` (``rerun``, ``wall_s``). Returns how many samples were
    rerun now.
    """
    done = first_rows_by_key(read_rows(audit, torn_tail="repair"))
    todo = [r for r in results if r["failure_mode"] == "timeout" and row_key(r) not in done]
    if not todo:
        return 0

    def rerun(row: dict[str, Any]) -> dict[str, Any]:
        sample = samples[row_key(row)]
        task = tasks[row["task_id"]]
        program, part = benchmark.audit_program(task, sample["code"], row)
        limit = (None if benchmark.per_test_time_limits
                 else 2 * float(row.get("time_limit_s") or 0) or None)
        result = sandbox.run(program, limit, time_scale=2.0)
        shown = limit if limit is not None else program.wall_limit_s()
        return {**verdict_row(benchmark, task, sample, result, sandbox.mode,
                              shown * 2 if limit is None and shown is not None else shown),
                "original_time_limit_s": row.get("time_limit_s"), **part}

    started = time.monotonic()
    parallel = max(1, min(len(todo), workers, idle_cores()))
    with RowAppender(audit) as appender, ThreadPoolExecutor(max_workers=parallel) as pool:
        for future in as_completed([pool.submit(rerun, r) for r in todo]):
            appender.append(future.result())
    log.info("score: timeout audit reran %d sample(s), %d at a time", len(todo), parallel)
    if cell is not None:
        from benchforge.provenance import record_stage

        record_stage(cell, "timeout_audit", rerun=len(todo),
                     wall_s=round(time.monotonic() - started, 3))
    return len(todo)


def audit_summary(audit: Path) -> dict[str, int]:
    """Counts of the timeout audit's file ``audit``: samples rerun, those that passed
    at twice the limit (``flipped_to_pass``) and those that timed out again.
    """
    rows = list(first_rows_by_key(read_rows(audit)).values())
    return {"rerun": len(rows), "flipped_to_pass": sum(bool(r["passed"]) for r in rows),
            "still_timeout": sum(r["failure_mode"] == "timeout" for r in rows)}
