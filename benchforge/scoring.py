"""Scoring mechanics: per-host time limits, the parallel verdict loop, the timeout audit.

Pure of config and cell-dir logic: :mod:`benchforge.stages` decides what to score and where
rows go; this module turns samples into verdict rows through a sandbox.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import queue
import socket
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
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
from benchforge.sandbox.types import cpu_limit_reached

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
                  advance: Callable[[], None], workers: int,
                  audit: TimeoutAudit | None = None) -> None:
    """Score samples on ``workers`` threads (one sandbox worker each), largest first; append
    rows as they end (on this thread only).

    With ``audit``, a sample that times out is queued for its audit rerun behind every sample
    not yet started: reruns take the workers that the last, longest samples leave idle instead
    of running after the stage (:class:`TimeoutAudit` still keeps them to the idle cores).

    Raises:
        BenchforgeError: the sandbox could not score a sample (an ``environment`` verdict);
            the rows appended so far stay on disk.
    """

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

    finished: queue.SimpleQueue[tuple[Future[dict[str, Any]], dict[str, Any] | None]] = \
        queue.SimpleQueue()

    def submit(pool: ThreadPoolExecutor, job: Callable[..., dict[str, Any]],
               sample: dict[str, Any], rerun_of: dict[str, Any] | None = None) -> None:
        args = (sample,) if rerun_of is None else (sample, rerun_of)
        future = pool.submit(job, *args)
        future.add_done_callback(lambda f: finished.put((f, rerun_of)))

    with ThreadPoolExecutor(max_workers=workers) as pool:
        outstanding = 0
        try:
            for sample in largest_first(benchmark, tasks, samples, limits):
                submit(pool, score, sample)
                outstanding += 1
            by_key = {row_key(s): s for s in samples} if audit is not None else {}
            left = len(samples)
            while outstanding:
                future, rerun_of = finished.get()
                outstanding -= 1
                row = future.result()
                if rerun_of is not None:
                    audit.add(row)  # type: ignore[union-attr]
                    continue
                appender.append(row)
                advance()
                left -= 1
                if not left and audit is not None:
                    audit.scoring_ended()
                if audit is not None and audit.plan(by_key[row_key(row)], row):
                    submit(pool, audit.rerun, by_key[row_key(row)], row)
                    outstanding += 1
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)  # the rows so far are on disk
            raise


def idle_cores(interval_s: float = 0.25, floor: int = 1) -> int:
    """CPUs of this process's affinity mask left idle by everything else on the host now:
    the idle share of /proc/stat over ``interval_s`` times the CPU count (at least
    ``floor``)."""
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
        return max(floor, 1)
    share = (idle1 - idle0) / (total1 - total0) if total1 > total0 else 0.0
    host_cpus = os.cpu_count() or cpus
    return max(floor, min(cpus, int(share * host_cpus + 0.5)))


class TimeoutAudit:
    """The timeout audit of one results file: rerun what timed out with twice its limits and
    append the rerun's row to ``path`` (``logs/timeout_audit.jsonl``). Verdicts are never
    changed: the audit measures how much of the timeout count came from an overloaded node.

    Only the part that timed out is rerun where the benchmark can name it (EvalPlus: the
    suite, and within it the input). Reruns go side by side on at most ``workers`` sandbox
    workers and never more than the host's idle cores at the moment each starts (one always
    may, once a worker is free), so the node stays unloaded. During scoring
    (:func:`score_samples` with ``audit=``) a rerun starts only once every sample has started,
    on a worker the last samples left idle; :meth:`rerun_left` reruns, after scoring, the
    timeouts of rows without an audit row yet (a resumed cell). Identical code of one task
    that timed out in the same part is rerun once: the other samples get a copy of that
    rerun's row with ``audit_same_as`` (CRUXEval's 10 samples per task repeat code often).

    Args:
        benchmark, tasks: build each rerun's program (``audit_program``).
        sandbox: the open sandbox.
        path: the audit file; rows already in it are not rerun.
        workers: the most reruns at once.
    """

    def __init__(self, benchmark: Benchmark, tasks: dict[str, Task], sandbox: Sandbox,
                 path: Path, workers: int = 1) -> None:
        self.benchmark, self.tasks, self.sandbox = benchmark, tasks, sandbox
        self.workers = max(1, workers)
        self._done = set(first_rows_by_key(read_rows(path, torn_tail="repair")))
        self._path = path
        self._appender: RowAppender | None = None  # the file is created by the first row
        self._lock = threading.Lock()
        self._running = 0
        self._first: float | None = None  # monotonic start of the first rerun
        self._last: float | None = None  # and end of the last one
        self._scoring_end: float | None = None
        self.reran = 0  # reruns done now
        self.written = 0  # audit rows written now (reruns and their duplicates)
        self.most_at_once = 0
        # duplicates: (task, code sha256, part, limit) -> the sample key rerun for it
        self._first_of: dict[tuple[Any, ...], tuple[str, int]] = {}
        self._rows: dict[tuple[str, int], dict[str, Any]] = {}  # reruns done, by key
        self._waiting: dict[tuple[str, int], list[dict[str, Any]]] = {}

    def plan(self, sample: dict[str, Any], row: dict[str, Any]) -> bool:
        """Does ``row`` (the verdict of ``samples.jsonl`` row ``sample``) need a rerun now?

        False when it is not a timeout, or the CPU limit ended it (CPU time does not grow
        with load), or it has an audit row already. A sample whose code,
        task and timed-out part equal one already rerun (or queued) is not rerun again: its
        audit row is that rerun's, with ``audit_same_as`` naming it (written now if that rerun
        is done, else with it in :meth:`add`).
        """
        key = row_key(row)
        if (row.get("failure_mode") != FailureMode.TIMEOUT or key in self._done
                or cpu_limit_reached(str(row.get("detail", "")))):
            return False
        self._done.add(key)
        _, part = self.benchmark.audit_program(self.tasks[row["task_id"]], sample["code"], row)
        same = (row["task_id"], hashlib.sha256(sample["code"].encode()).hexdigest(),
                json.dumps(part, sort_keys=True), row.get("time_limit_s"))
        if same not in self._first_of:
            self._first_of[same] = key
            return True
        first = self._first_of[same]
        if first in self._rows:
            self._write_copy(self._rows[first], row)
        else:
            self._waiting.setdefault(first, []).append(row)
        return False

    def _write_copy(self, rerun: dict[str, Any], row: dict[str, Any]) -> None:
        self._write({**rerun, "task_id": row["task_id"], "sample_idx": row["sample_idx"],
                     "audit_same_as": [rerun["task_id"], rerun["sample_idx"]]})

    def scoring_ended(self) -> None:
        """The last sample's verdict is in: the audit's time from here on is added time."""
        self._scoring_end = time.monotonic()

    def _start(self) -> None:
        while True:
            with self._lock:  # one 0.25 s measurement at a time
                if self._running == 0 or (self._running < self.workers
                                          and idle_cores(floor=0) >= 1):
                    self._running += 1
                    self.most_at_once = max(self.most_at_once, self._running)
                    if self._first is None:
                        self._first = time.monotonic()
                    return
            time.sleep(0.25)

    def rerun(self, sample: dict[str, Any], row: dict[str, Any]) -> dict[str, Any]:
        """Rerun the timed-out part of ``row``'s sample (``samples.jsonl`` row ``sample``)
        with twice its limits, once an idle core allows; returns the audit row (not yet
        written: :meth:`add` does that)."""
        self._start()
        try:
            task = self.tasks[row["task_id"]]
            program, part = self.benchmark.audit_program(task, sample["code"], row)
            limit = (None if self.benchmark.per_test_time_limits
                     else 2 * float(row.get("time_limit_s") or 0) or None)
            result = self.sandbox.run(program, limit, time_scale=2.0)
            shown = limit if limit is not None else program.wall_limit_s()
            return {**verdict_row(self.benchmark, task, sample, result, self.sandbox.mode,
                                  shown * 2 if limit is None and shown is not None else shown),
                    "original_time_limit_s": row.get("time_limit_s"), **part}
        finally:
            with self._lock:
                self._running -= 1
                self._last = time.monotonic()

    def add(self, row: dict[str, Any]) -> None:
        """Append the audit row of a rerun (fsynced), then those of its duplicates."""
        self._write(row)
        self.reran += 1
        key = row_key(row)
        self._rows[key] = row
        for other in self._waiting.pop(key, []):
            self._write_copy(row, other)

    def _write(self, row: dict[str, Any]) -> None:
        if self._appender is None:
            self._appender = RowAppender(self._path)
        self._appender.append(row)
        self.written += 1

    def rerun_left(self, samples: dict[tuple[str, int], dict[str, Any]],
                   results: Iterable[dict[str, Any]]) -> None:
        """Rerun every timeout of ``results`` without an audit row yet, in parallel."""
        todo = [r for r in results if self.plan(samples[row_key(r)], r)]
        if not todo:
            return
        if self._scoring_end is None:
            self._scoring_end = time.monotonic()
        with ThreadPoolExecutor(max_workers=min(len(todo), self.workers)) as pool:
            for future in as_completed([pool.submit(self.rerun, samples[row_key(r)], r)
                                        for r in todo]):
                self.add(future.result())

    def close(self, cell: CellDir | None = None) -> None:
        """Close the audit file; where anything was rerun, log it and record in ``cell``'s
        provenance ``stages.timeout_audit``: ``rerun``, ``wall_s`` (first rerun's start to
        last rerun's end, overlapping scoring) and ``added_s`` (how long the stage ran on
        after its last sample's verdict because of the audit)."""
        if self._appender is not None:
            self._appender.close()
        if not self.reran or self._first is None or self._last is None:
            return
        wall = self._last - self._first
        added = max(0.0, self._last - self._scoring_end) if self._scoring_end else wall
        log.info("score: timeout audit reran %d sample(s) (%d timeout(s) in all: identical "
                 "code is rerun once), up to %d at a time, %.1f s after the last verdict",
                 self.reran, self.written, self.most_at_once, added)
        if cell is not None:
            from benchforge.provenance import record_stage

            record_stage(cell, "timeout_audit", rerun=self.reran, audited=self.written,
                         wall_s=round(wall, 3), added_s=round(added, 3))


def audit_summary(audit: Path) -> dict[str, int]:
    """Counts of the timeout audit's file ``audit``: samples rerun, those that passed
    at twice the limit (``flipped_to_pass``) and those that timed out again.
    """
    rows = list(first_rows_by_key(read_rows(audit)).values())
    return {"rerun": len(rows), "flipped_to_pass": sum(bool(r["passed"]) for r in rows),
            "still_timeout": sum(r["failure_mode"] == "timeout" for r in rows)}
