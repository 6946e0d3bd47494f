"""Per-attempt records: every stage invocation on a cell appends to ``logs/attempts.jsonl``.

Each writing stage (plan, generate, score, aggregate, repair) runs as :func:`cell_stage`: it
holds the cell's lock for that stage (:mod:`benchforge.celllock`) and appends a ``begin``
record (start, host, pid, resolved-config hash, overrides, the execution settings that differ
from the plan-time ``config.yaml``, rows already on disk) and an ``end`` record (outcome,
wall and CPU seconds, rows written, tokens, sandbox mode and guarantees, workers). Locally and
under SLURM alike; SLURM shards add their own ``start``/``stop`` records (:mod:`benchforge.shard`).

An attempt killed without notice (SIGKILL, node failure) has a ``begin`` and no ``end``: its
end is taken as the last write to the stage's data file before the next attempt of that stage
began (the next ``begin`` records that mtime and the row count), so the cost of a cell is the
sum over all its attempts, interrupted ones included.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import hashlib
import os
import resource
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from benchforge.cellconfig import execution_diff
from benchforge.celllock import cell_lock
from benchforge.errors import BenchforgeError
from benchforge.provenance import record_stage
from benchforge.rundir import CellDir, RowAppender, read_rows, utc_now

ATTEMPTS_NAME = "attempts.jsonl"
SLURM_LOCK_WAIT_S = 600.0  # a SLURM shard waits this long for a held lock, then refuses
DATA_FILE = {"generate": "samples.jsonl", "score": "results.jsonl"}
_current: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "benchforge_attempt", default=None)
F = TypeVar("F", bound=Callable[..., Any])


def attempts_file(cell: Path, window: int | None = None) -> Path:
    """The attempt log of the cell dir ``cell`` (``logs/attempts.jsonl``); a command on one
    sample window (``compute.window=i``, a window's SLURM shard) appends to its own,
    ``logs/attempts.w<i>.jsonl`` (one writer per file, also on NFS, where appends from two
    hosts may interleave). Readers merge them (read_attempt_log)."""
    if window is not None:
        return cell / "logs" / f"attempts.w{window}.jsonl"
    return cell / "logs" / ATTEMPTS_NAME


def _record_time(record: dict[str, Any]) -> float:
    if isinstance(record.get("t"), int | float):
        return float(record["t"])
    try:
        from datetime import datetime

        return datetime.fromisoformat(str(record.get("utc"))).timestamp()
    except ValueError:
        return 0.0


def read_attempt_log(cell: Path) -> list[dict[str, Any]]:
    """Every record of the cell's attempt logs (a torn last line is ignored); read-only. The
    per-window logs of a cell with sample windows are merged in time order, each log's own
    order kept."""
    import heapq

    logs = cell / "logs"
    paths = [logs / ATTEMPTS_NAME, *sorted(logs.glob("attempts.w*.jsonl"))]
    found = [read_rows(p, torn_tail="ignore") for p in paths if p.exists()]
    if len(found) <= 1:
        return found[0] if found else []
    return list(heapq.merge(*found, key=_record_time))


def _append(cell: Path, record: dict[str, Any]) -> None:
    with RowAppender(attempts_file(cell, record.get("window"))) as appender:
        appender.append(record)


def _rows_and_mtime(path: Path) -> tuple[int, float | None]:
    if not path.exists():
        return 0, None
    with open(path, "rb") as fh:
        rows = sum(1 for line in fh if line.endswith(b"\n"))
    return rows, path.stat().st_mtime


def _cpu_s() -> float:
    own, children = (resource.getrusage(who) for who in
                     (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def note(**fields: Any) -> None:
    """Add fields (sandbox mode, workers, ...) to the end record of the running attempt."""
    current = _current.get()
    if current is not None:
        current.update(fields)


def _hydra_overrides() -> list[str]:
    try:
        from hydra.core.hydra_config import HydraConfig
    except ImportError:  # pragma: no cover - hydra is a dependency
        return []
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def _slurm_job() -> str | None:
    job = os.environ.get("SLURM_JOB_ID")
    array = os.environ.get("SLURM_ARRAY_JOB_ID")
    task = os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{array}_{task}" if array and task else job


@contextmanager
def stage_attempt(cell: Path, stage: str, cfg: Any) -> Iterator[dict[str, Any]]:
    """Record one attempt of ``stage`` on ``cell`` (begin now, end when the block exits)."""
    from omegaconf import OmegaConf

    resolved = OmegaConf.to_yaml(cfg, resolve=True)
    window = _window(cfg)
    data = _data_name(cell, stage, window)
    rows_before, mtime_before = _rows_and_mtime(cell / data) if data else (0, None)
    attempt = uuid.uuid4().hex[:12]
    begin = {
        "event": "begin", "attempt": attempt, "stage": stage, "utc": utc_now(), "t": time.time(),
        "host": socket.gethostname(), "pid": os.getpid(),
        "config_sha256": hashlib.sha256(resolved.encode()).hexdigest(),
        "overrides": _hydra_overrides(), "execution": execution_diff(cell / "config.yaml", cfg),
        "rows_before": rows_before, "data_mtime_before": mtime_before,
    }
    if _slurm_job():
        begin["slurm_job"] = _slurm_job()
    if window is not None:
        begin["window"] = window
    _append(cell, begin)
    started, cpu_started = time.monotonic(), _cpu_s()
    end: dict[str, Any] = {}
    token = _current.set(end)
    outcome = "completed"
    try:
        yield end
    except KeyboardInterrupt:
        outcome = "interrupted"
        raise
    except SystemExit as exc:
        outcome = f"exit {exc.code}"
        raise
    except BaseException as exc:
        outcome = f"error: {type(exc).__name__}: {str(exc)[:300]}"
        raise
    finally:
        _current.reset(token)
        # a cell planned by this very attempt may have windows now: count its window's part
        data = _data_name(cell, stage, window)
        rows_after, _ = _rows_and_mtime(cell / data) if data else (0, None)
        written = max(rows_after - rows_before, 0)
        record = {"event": "end", "attempt": attempt, "stage": stage, "utc": utc_now(),
                  "t": time.time(), "outcome": outcome,
                  "wall_s": round(time.monotonic() - started, 3),
                  "cpu_s": round(_cpu_s() - cpu_started, 3), "rows_written": written, **end}
        if window is not None:
            record["window"] = window  # into the window's own log, like its begin
        if stage == "generate" and written:
            record.setdefault("completion_tokens", _tokens(cell / str(data), rows_before))
        # a full disk: the stage's own error is the one reported
        with contextlib.suppress(OSError, BenchforgeError):
            _append(cell, record)


def _window(cfg: Any) -> int | None:
    """``compute.window``: the one sample window this command works on (None: all)."""
    compute = cfg.get("compute") if hasattr(cfg, "get") else None
    index = compute.get("window") if compute is not None else None
    return None if index is None else int(index)


def _window_count(cell: Path) -> int:
    """K of a cell planned with sample windows (``windows.json``), else 0."""
    import json

    try:
        return int(json.loads((cell / "windows.json").read_text(encoding="utf-8"))["of"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def _data_name(cell: Path, stage: str, window: int | None) -> str | None:
    """The file whose rows an attempt of ``stage`` writes: the cell's, or its window's part."""
    data = DATA_FILE.get(stage)
    if data and window is not None and (cell / "windows.json").exists():
        stem, _, suffix = data.partition(".")
        return f"{stem}.w{window}.{suffix}"
    return data


def _tokens(path: Path, skip: int) -> int:
    rows = read_rows(path, torn_tail="ignore")[skip:]
    return sum(int(r.get("completion_tokens") or 0) for r in rows)


def cell_stage(stage: str) -> Callable[[F], F]:
    """Decorate ``run_<stage>(cfg)``: hold the cell's lock for ``stage`` and record the attempt.

    The cell is ``cfg.run.dir``; ``score.reference`` runs pass through (they re-enter with the
    reference cell's config). A command on one sample window (``compute.window=i``) holds
    that window's lock (``<stage>.w<i>``), so the shards of one cell run side by side.
    """
    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        def run(cfg: Any, *args: Any, **kwargs: Any) -> Any:
            if stage == "score" and cfg.score.reference:
                return fn(cfg, *args, **kwargs)
            cell = Path(str(cfg.run.dir)).expanduser().resolve()
            created = _first_missing(cell)
            # A requeued SLURM shard may find the lock of its crashed predecessor still held
            # on the NFS server until the client's lease expires (~90 s): it waits a while.
            in_slurm = "SLURM_JOB_ID" in os.environ
            wait = bool(cfg.run.wait_for_lock) or in_slurm
            timeout = None if cfg.run.wait_for_lock else SLURM_LOCK_WAIT_S
            try:
                window = _window(cfg)
                lock = stage if window is None or stage not in DATA_FILE else f"{stage}.w{window}"
                with cell_lock(cell, lock, wait=wait, timeout_s=timeout), \
                        contextlib.ExitStack() as windows:
                    if lock == stage and stage in DATA_FILE:  # every window: hold each one
                        for i in range(_window_count(cell)):
                            windows.enter_context(cell_lock(cell, f"{stage}.w{i}", wait=wait,
                                                            timeout_s=timeout))
                    with stage_attempt(cell, stage, cfg):
                        result = fn(cfg, *args, **kwargs)
                    if stage in DATA_FILE and (cell / "provenance.json").exists():
                        _record_totals(cell, stage)
                    return result
            except BaseException:
                if created is not None:
                    _remove_if_only_records(created)
                raise
        return run  # type: ignore[return-value]
    return wrap


def _first_missing(path: Path) -> Path | None:
    """The outermost ancestor of ``path`` (or itself) that does not exist yet."""
    missing = None
    for candidate in (path, *path.parents):
        if candidate.exists():
            break
        missing = candidate
    return missing


def _remove_if_only_records(top: Path) -> None:
    """A stage that failed before writing anything (bad config) leaves no cell dir behind:
    remove ``top`` if all it holds is this attempt's record."""
    import shutil

    files = [p for p in top.rglob("*") if p.is_file()]
    if all(p.name == ATTEMPTS_NAME or p.name.endswith(".lock")
           or (p.name.startswith("attempts.w") and p.name.endswith(".jsonl")) for p in files):
        shutil.rmtree(top, ignore_errors=True)


def _record_totals(cell: Path, stage: str) -> None:
    """provenance.json ``stages.<stage>``: first start, last finish and times summed over all
    attempts (not the last one's)."""

    totals = stage_totals(attempt_summaries(cell), stage)
    record_stage(CellDir(cell), stage, started_utc=totals["started_utc"],
                 finished_utc=totals["finished_utc"], wall_s=totals["wall_s"],
                 attempts=totals["attempts"], killed_attempts=totals["killed"])


def attempt_summaries(cell: Path, records: list[dict[str, Any]] | None = None
                      ) -> list[dict[str, Any]]:
    """One entry per stage attempt, in start order: ``stage, started_utc, finished_utc, wall_s,
    cpu_s, rows_written, outcome, workers, sandbox_mode, ...``; killed attempts (no end record)
    are closed at the last write to their data file (``outcome: killed``)."""
    records = read_attempt_log(cell) if records is None else records
    begins = [r for r in records if r.get("event") == "begin"]
    ends = {r["attempt"]: r for r in records if r.get("event") == "end" and "attempt" in r}
    out = []
    for i, begin in enumerate(begins):
        end = ends.get(begin.get("attempt"))
        entry = {"stage": begin["stage"], "attempt": begin.get("attempt"),
                 "started_utc": begin.get("utc"), "host": begin.get("host"),
                 "pid": begin.get("pid"), "execution": begin.get("execution") or {}}
        if end is not None:
            entry.update({k: v for k, v in end.items() if k not in ("event", "t", "utc")})
            entry["finished_utc"] = end.get("utc")
        else:
            later = next((b for b in begins[i + 1:] if b.get("stage") == begin["stage"]
                          and b.get("window") == begin.get("window")), None)
            data = _data_name(cell, begin["stage"], begin.get("window"))
            if later is not None:
                last_write, rows_now = later.get("data_mtime_before"), later.get("rows_before", 0)
            elif data:
                rows_now, last_write = _rows_and_mtime(cell / data)
            else:
                rows_now, last_write = 0, None
            t0 = float(begin.get("t", 0))
            wall = max(float(last_write or t0) - t0, 0.0)
            entry.update({"outcome": "killed (no end record; ended at its last write)",
                          "wall_s": round(wall, 3), "cpu_s": None, "finished_utc": None,
                          "rows_written": max(int(rows_now or 0)
                                              - int(begin.get("rows_before", 0)), 0)})
        out.append(entry)
    return out


def stage_totals(summaries: list[dict[str, Any]], stage: str) -> dict[str, Any]:
    """Work of ``stage`` over all its attempts that wrote rows: summed wall seconds, CPU-seconds
    (wall x workers for scoring), first start, last finish, attempt counts."""
    working = [s for s in summaries if s["stage"] == stage and s.get("rows_written")]
    every = [s for s in summaries if s["stage"] == stage]
    wall = sum(float(s.get("wall_s") or 0) for s in working)
    return {
        "attempts": len(every), "working_attempts": len(working),
        "wall_s": round(wall, 3) if working else None,
        "worker_s": round(sum(float(s.get("wall_s") or 0) * int(s.get("workers") or 1)
                              for s in working), 3) if working else None,
        "started_utc": every[0]["started_utc"] if every else None,
        "finished_utc": every[-1].get("finished_utc") if every else None,
        "killed": sum(1 for s in every if str(s.get("outcome", "")).startswith("killed")),
    }


def sandbox_modes(summaries: list[dict[str, Any]]) -> list[str]:
    """Sandbox modes of the score attempts, in first-use order."""
    seen: list[str] = []
    for s in summaries:
        mode = s.get("sandbox_mode")
        if s["stage"] == "score" and mode and mode not in seen:
            seen.append(mode)
    return seen

