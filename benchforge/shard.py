"""One SLURM shard = one cell of one stage. Its attempts, budgets and dependency on generation.

Every start and stop of a shard is appended (fsynced) to the cell's ``logs/attempts.jsonl``:
that log is what ``status`` shows, what GPU-hours are accounted from when ``sacct`` is not
there, and how a requeued shard knows how often it already ran.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from benchforge import slurm
from benchforge.attempts import attempts_file, read_attempt_log
from benchforge.cellwindows import part_path, window_marker, windows_path
from benchforge.errors import BenchforgeError
from benchforge.manifest import annotate_cell, read_manifest
from benchforge.rundir import CellDir, RowAppender, utc_now

log = logging.getLogger(__name__)

ATTEMPTS_NAME = "attempts.jsonl"
# Stop reasons that are not the shard's own progress: they don't spend the requeue budget.
WAITING = "waiting for generate.done"


def attempts_path(cell_dir: CellDir, window: int | None = None) -> Path:
    """The shard attempt log of a cell (``logs/<ATTEMPTS_NAME>``; a window's shard of a cell
    with sample windows: ``logs/attempts.w<i>.jsonl``)."""
    return attempts_file(cell_dir.path, window)


def read_attempts(cell_dir: CellDir) -> list[dict[str, Any]]:
    """The cell's shard attempt records, all windows merged ([] before any; a torn last line
    ignored)."""
    return read_attempt_log(cell_dir.path)


def append_attempt(cell_dir: CellDir, record: dict[str, Any]) -> None:
    """Append one shard attempt record, stamped with the UTC time, fsynced (to its window's
    log when the record names a window of a cell with windows)."""
    cell_dir.logs.mkdir(parents=True, exist_ok=True)
    with RowAppender(attempts_path(cell_dir, record.get("window"))) as appender:
        appender.append({"utc": utc_now(), **record})


def attempt_gpu_hours(attempts: list[dict[str, Any]], now: float | None = None) -> float:
    """GPU-hours from the attempt log: each stop's elapsed x GPUs; a start with no stop (killed
    without notice, or still running) counts until ``now``."""
    now = time.time() if now is None else now
    total = 0.0
    open_starts: dict[str, dict[str, Any]] = {}
    for record in attempts:
        key = f"{record.get('job_id')}/{record.get('restart_count')}/{record.get('pid')}"
        if record.get("event") == "start":
            open_starts[key] = record
        elif record.get("event") == "stop":
            open_starts.pop(key, None)
            total += float(record.get("elapsed_s", 0)) * max(int(record.get("gpus", 0)), 0)
    for record in open_starts.values():
        total += max(now - float(record.get("t", now)), 0) * max(int(record.get("gpus", 0)), 0)
    return total / 3600


def run_gpu_hours(run_root: Path) -> tuple[float, str]:
    """GPU-hours spent by all shards of a run and where the number comes from.

    ``sacct`` (one record per run of a requeued job) is the authority where it answers; the
    attempt logs are the fallback (a cluster without accounting, or a run outside SLURM).
    """
    try:
        cells = read_manifest(run_root)
    except BenchforgeError:
        return 0.0, "no manifest"
    all_attempts = [read_attempts(CellDir(Path(c["dir"]))) for c in cells]
    job_ids = sorted({str(a["job_id"]) for attempts in all_attempts for a in attempts
                      if a.get("job_id")})
    runs = slurm.job_runs(job_ids) if job_ids else []
    if runs is not None and job_ids:
        return sum(r.elapsed_s * r.gpus for r in runs) / 3600, "sacct"
    return sum(attempt_gpu_hours(a) for a in all_attempts), "attempt logs"


def used_requeues(attempts: list[dict[str, Any]], job_id: str, restart_count: int) -> int:
    """Restarts of this job that count against ``max_requeue_per_shard``: SLURM's restart count
    less the requeues benchforge did itself while waiting for generation."""
    waits = sum(1 for a in attempts if a.get("event") == "stop" and a.get("job_id") == job_id
                and str(a.get("reason", "")).startswith(WAITING))
    return max(restart_count - waits, 0)


def shard_window(cfg: DictConfig, cell_dir: CellDir) -> int | None:
    """The sample window this shard works on (``compute.window``), or None for a shard of a
    whole cell (no window asked, or the cell has none: ``windows.json`` absent)."""
    index = cfg.compute.get("window")
    if index is None or not windows_path(cell_dir).exists():
        return None
    return int(index)


def _generate_job_state(attempts: list[dict[str, Any]], window: int | None = None
                        ) -> tuple[str | None, str | None]:
    starts = [a for a in attempts if a.get("event") == "start" and a.get("stage") == "generate"
              and (window is None or a.get("window") in (None, window))]
    if not starts:
        return None, None
    job_id = str(starts[-1]["job_id"])
    return job_id, slurm.job_states([job_id]).get(job_id)


@contextmanager
def shard_attempt(cfg: DictConfig, cell_dir: CellDir, run_root: Path) -> Iterator[None]:
    """Guard one attempt of a shard running under SLURM: budgets first, then log start and stop.

    submitit's signal handler requeues the job and raises ``SystemExit`` in the main thread;
    the stage's appenders have fsynced every row already, so the stop record is all that is
    left to write before the process exits and SLURM starts the shard again.
    """
    job = slurm.current_job()
    assert job is not None
    compute = cfg.compute
    shape = compute[str(compute.shard)]
    gpus = int(job["gpus"]) if int(job["gpus"]) >= 0 else int(shape.gpus)
    attempts = read_attempts(cell_dir)
    base = {"stage": str(cfg.stage), "job_id": job["job_id"],
            "restart_count": job["restart_count"], "pid": os.getpid(), "gpus": gpus}
    if cfg.compute.get("window") is not None:
        base["window"] = int(cfg.compute.window)

    def refuse(reason: str, message: str) -> None:
        append_attempt(cell_dir, {"event": "refused", **base, "reason": reason})
        annotate_cell(run_root, str(cell_dir.path),
                      {"shard_state": f"failed: {reason}", "shard_job": job["job_id"]},
                      window=shard_window(cfg, cell_dir))
        raise BenchforgeError(message)

    requeues = used_requeues(attempts, str(job["job_id"]), int(job["restart_count"]))
    if requeues > int(compute.max_requeue_per_shard):
        refuse("requeue budget",
               f"{cell_dir.path}: shard {job['job_id']} was requeued {requeues} times, more "
               f"than compute.max_requeue_per_shard={compute.max_requeue_per_shard}; it stops "
               "here (rerun the sweep to give it a fresh budget)")
    if gpus > 0:
        used, source = run_gpu_hours(run_root)
        if used >= float(compute.gpu_hour_budget):
            refuse("gpu-hour budget",
                   f"{run_root}: {used:.2f} GPU-hours used ({source}) of "
                   f"compute.gpu_hour_budget={compute.gpu_hour_budget}; not starting shard "
                   f"{job['job_id']}")

    started = time.time()
    append_attempt(cell_dir, {"event": "start", **base, "t": started,
                              "host": socket.gethostname(), "node": job["node"],
                              "partition": job["partition"], "qos": job["qos"]})
    # Written at start and again at stop: a cell's first shard creates its row only once the
    # stage has planned it.
    job_fields = {"shard_job": job["job_id"], f"{cfg.stage}_job": job["job_id"],
                  f"{cfg.stage}_array_parallelism": _array_parallelism()}
    annotate_cell(run_root, str(cell_dir.path),
                  {"shard_state": f"{cfg.stage}: running", **job_fields},
                  window=shard_window(cfg, cell_dir))
    reason = "completed"
    terminated: list[int] = []
    warned: list[int] = []
    warning_signal = getattr(signal, f"SIG{compute.signal}")
    submitit_handler = signal.getsignal(warning_signal)

    def on_warning(signum: int, frame: Any) -> None:
        # The pre-timeout/preemption signal: submitit's handler requeues the job and exits.
        # SLURM may deliver it twice in a few ms (the job's --signal and preempt_send_user_signal):
        # only the first reaches submitit, whose checkpoint is not reentrant (a second one
        # fails with "A temporary saved file already exists", submitit issue #1617).
        first = not warned
        warned.append(signum)
        if first and callable(submitit_handler):
            submitit_handler(signum, frame)

    def on_sigterm(signum: int, frame: object) -> None:
        # SLURM's SIGTERM (requeue, preemption, scancel, time limit): stop now and exit without
        # a result, so submitit's driver waits for the requeued run instead of failing. While
        # submitit is requeueing (its own `scontrol requeue` sends this), let it finish.
        terminated.append(signum)
        if not warned:
            raise ShardTerminated()

    previous_term = signal.signal(signal.SIGTERM, on_sigterm)
    previous_warning = signal.signal(warning_signal, on_warning)
    try:
        yield
    except SystemExit as exc:
        if warned:
            reason = f"signal: SIG{compute.signal}, requeued by submitit (exit {exc.code})"
        else:
            reason = ("terminated by SIGTERM (requeue, cancel or time limit)" if terminated
                      else f"exit {exc.code}")
        raise
    except WaitForGeneration as exc:
        reason = f"{WAITING} ({exc})"
        raise
    except BaseException as exc:
        if terminated:  # the server or sandbox died of the same SIGTERM first
            reason = f"terminated by SIGTERM ({type(exc).__name__} while stopping)"
            raise ShardTerminated() from exc
        reason = f"error: {type(exc).__name__}: {str(exc)[:300]}"
        raise
    finally:
        signal.signal(signal.SIGTERM, previous_term)
        signal.signal(warning_signal, previous_warning)
        elapsed = round(time.time() - started, 3)
        window = shard_window(cfg, cell_dir)
        rows = {kind: _lines(path if window is None else part_path(cell_dir, kind, window))
                for kind, path in (("samples", cell_dir.samples), ("results", cell_dir.results))}
        append_attempt(cell_dir, {"event": "stop", **base, "reason": reason,
                                  "elapsed_s": elapsed,
                                  "gpu_hours": round(elapsed * gpus / 3600, 6), **rows})
        state = {"completed": f"{cfg.stage}: done"}.get(reason, f"{cfg.stage}: {reason}")
        annotate_cell(run_root, str(cell_dir.path), {"shard_state": state, **job_fields},
                      window=window)


class ShardTerminated(SystemExit):
    """A SLURM shard told to stop (SIGTERM, time limit, preemption): exits 143 so the job is
    requeued and the shard resumes from disk."""

    def __init__(self) -> None:
        super().__init__(143)


def _lines(path: Path) -> int:
    """Rows on disk (progress in the attempt log; a torn tail counts, it is redone anyway)."""
    if not path.exists():
        return 0
    with open(path, "rb") as fh:
        return sum(1 for _ in fh)


def _array_parallelism() -> int | None:
    """The array width the launch chose (launch.preflight), from SLURM's own job record."""
    width = os.environ.get("SLURM_ARRAY_TASK_MAX") and _array_limit()
    return width or None


def _array_limit() -> int | None:
    job = os.environ.get("SLURM_ARRAY_JOB_ID")
    out = slurm.scontrol_job(job) if job else None
    match = re.search(r"ArrayTaskThrottle=(\d+)", out or "")
    return int(match.group(1)) if match else None


class WaitForGeneration(BenchforgeError):
    """A score shard started before its cell's generation finished; it is requeued."""


def require_generation(cell_dir: CellDir, window: int | None = None) -> None:
    """In a score shard: go on only with ``generate.done`` (a window's shard: with its own
    window's ``generate.w<i>.done``, so it scores while other windows still generate). If
    the generate job is still queued or running, requeue this shard to try again later (a
    window whose generate element has not started yet: while the cell's generate array still
    has elements queued or running, as when ``benchforge score -m`` runs beside the generate
    sweep); otherwise refuse.

    Raises:
        WaitForGeneration: requeue and try again (SLURM delays a requeued job's start).
        BenchforgeError: generation is not running and not done (one line: run it first).
    """
    marker = cell_dir.generate_done if window is None else window_marker(cell_dir, "samples",
                                                                         window)
    if cell_dir.generate_done.exists() or marker.exists():
        return
    attempts = read_attempts(cell_dir)
    job_id, state = _generate_job_state(attempts, window)
    if job_id and state in slurm.ACTIVE_STATES:
        raise WaitForGeneration(f"generate job {job_id} is {state}")
    if job_id is None and window is not None:
        # a score sweep started beside the generate sweep: this window's generate element may
        # still be queued behind the others (array width); wait while that array is alive
        arrays = sorted({str(a["job_id"]).split("_")[0] for a in attempts
                         if a.get("event") == "start" and a.get("stage") == "generate"
                         and a.get("job_id")})
        for array in arrays:
            if slurm.array_active(array):
                raise WaitForGeneration(f"window {window}'s generate shard has not started "
                                        f"yet; the cell's generate array {array} is active")
    where = f"generate job {job_id} is {state or 'unknown to SLURM'}" if job_id else \
        f"no generate job has run for {'this cell' if window is None else f'window {window}'}"
    raise BenchforgeError(
        f"{marker} is missing and {where}; run the generate sweep "
        "(`benchforge generate -m ...`) first")


def run_as_shard(cfg: DictConfig, cell_dir: CellDir, run_root: Path,
                 body: Callable[[], Any]) -> Any:
    """Run a stage body as a SLURM shard: attempt log, budgets, score-after-generate."""
    job = slurm.current_job()
    assert job is not None
    try:
        with shard_attempt(cfg, cell_dir, run_root):
            if str(cfg.compute.shard) == "score" and not cfg.score.samples:
                require_generation(cell_dir, shard_window(cfg, cell_dir))
            return body()
    except WaitForGeneration as exc:
        log.warning("%s: %s; requeueing this shard", cell_dir.path, exc)
        if not slurm.requeue(str(job["raw_job_id"])):
            raise BenchforgeError(f"{cell_dir.path}: {exc}, and `scontrol requeue` "
                                  "failed; rerun the score sweep later") from None
        sys.exit(0)  # SLURM ends this run and starts the shard again (like submitit's requeue)


def shard_summaries(cells: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per cell dir: its latest SLURM job and state, attempts, GPU-hours and shard state.

    One ``squeue``/``sacct`` call for the whole run; cells that never ran under SLURM are left
    out.
    """
    # SLURM shard records only (local stage attempts have no job_id)
    logs = {c["dir"]: [a for a in read_attempts(CellDir(Path(c["dir"])))
                       if a.get("job_id") is not None] for c in cells}
    starts = {d: [a for a in attempts if a.get("event") == "start"]
              for d, attempts in logs.items()}
    latest = {d: str(s[-1]["job_id"]) for d, s in starts.items() if s}
    all_ids = sorted({str(a["job_id"]) for attempts in logs.values() for a in attempts
                      if a.get("job_id")})
    stage_jobs = {c["dir"]: {stage: str(c[f"{stage}_job"]) for stage in ("generate", "score", "run")
                             if c.get(f"{stage}_job")} for c in cells}
    # a cell with sample windows: each window's shard has its own jobs (manifest row per window)
    window_jobs = {c["dir"]: {int(s["window"]["index"]): {
        stage: str(s[f"{stage}_job"]) for stage in ("generate", "score", "run")
        if s.get(f"{stage}_job")} for s in c.get("shards", [])} for c in cells}
    states = slurm.job_states([*latest.values(),
                               *(job for jobs in stage_jobs.values() for job in jobs.values()),
                               *(job for windows in window_jobs.values()
                                 for jobs in windows.values() for job in jobs.values())])
    runs = slurm.job_runs(all_ids)
    summaries = {}
    for cell in cells:
        attempts = logs[cell["dir"]]
        if not attempts:
            continue
        jobs = {str(a["job_id"]) for a in attempts if a.get("job_id")}
        if runs is not None:
            gpu_hours = sum(r.elapsed_s * r.gpus for r in runs if r.job_id in jobs) / 3600
        else:
            gpu_hours = attempt_gpu_hours(attempts)
        job = latest.get(cell["dir"]) or str(cell.get("shard_job") or "")
        summaries[cell["dir"]] = {
            "job_id": job, "job_state": states.get(job, "UNKNOWN" if job else ""),
            "stage": next((a["stage"] for a in reversed(attempts) if a.get("stage")), ""),
            "attempts": len(starts[cell["dir"]]), "gpu_hours": round(gpu_hours, 4),
            "shard_state": cell.get("shard_state", ""),
            "jobs": stage_jobs[cell["dir"]],
            "job_states": {job: states.get(job, "") for job in [
                *stage_jobs[cell["dir"]].values(),
                *(j for jobs in window_jobs[cell["dir"]].values() for j in jobs.values())]},
            "window_jobs": window_jobs[cell["dir"]],
        }
    return summaries


def ended_without_marker(cell: dict[str, Any], summary: dict[str, Any]) -> list[str]:
    """Problems of a cell whose shard's job has ended but whose stage marker is missing."""
    cdir = CellDir(Path(cell["dir"]))
    problems = []
    for index, jobs in summary.get("window_jobs", {}).items():
        for stage, job in jobs.items():
            state = summary["job_states"].get(job, "")
            marker = window_marker(cdir, "samples" if stage == "generate" else "results", index)
            if state and state not in slurm.ACTIVE_STATES and not marker.exists():
                problems.append(f"{cdir.path}: {stage} job {job} of window {index} ended "
                                f"({state}) but {marker.name} is missing; rerun the sweep to "
                                "resume it")
    for stage, job in summary["jobs"].items():
        state = summary["job_states"].get(job, "")
        # a run job ends with score.done too (score.done is never written before generate.done)
        marker = cdir.generate_done if stage == "generate" else cdir.score_done
        if state and state not in slurm.ACTIVE_STATES and not marker.exists():
            problems.append(f"{cdir.path}: {stage} job {job} ended ({state}) but "
                            f"{marker.name} is missing; rerun the sweep to resume it")
    return problems
