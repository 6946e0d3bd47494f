"""``benchforge generate``: the cell's samples from a model server, appended row by row.

Each row is written as it arrives (a kill loses at most the requests in flight), and
``generate.done`` only once every (task, sample) row is there.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from benchforge.answers.offload import extraction_worker
from benchforge.answers.stops import sent_stops, stop_at_stop_token
from benchforge.answers.thinking import split_thinking
from benchforge.attempts import cell_stage
from benchforge.benchmarks import Benchmark, Task, oracle_answers
from benchforge.cell import (
    Cell,
    chat_template_sha256,
    check_rows_belong,
    mark_generate_done,
    prepare_cell,
)
from benchforge.celllock import cell_lock
from benchforge.cellwindows import (
    KeyIndex,
    PartAppender,
    mark_window,
    part_mismatch,
    part_path,
    selected_windows,
    window_keys,
)
from benchforge.client import (
    ClientSettings,
    Completion,
    Request,
    api_key,
    generate,
    thinking_kwargs,
)
from benchforge.config import Launch, Mode, Provider
from benchforge.console import progress_bar
from benchforge.engine import concurrency, model_endpoint
from benchforge.errors import BenchforgeError
from benchforge.images import verify_image
from benchforge.integrity import MarkerMismatch, require_samples_intact
from benchforge.outcomes import count_outcomes, warning_lines
from benchforge.provenance import update_provenance
from benchforge.rundir import RowAppender, first_rows_by_key, read_rows
from benchforge.serving import serving_settings
from benchforge.stats import require_samples_for_ks
from benchforge.windows import Window

log = logging.getLogger("benchforge")


def request_max_tokens(cfg: DictConfig, benchmark: Benchmark, mode: str) -> tuple[int, str]:
    """``max_tokens`` of each request and the key that sets it: ``benchmark.max_tokens``, else
    the official harness's value for the mode (CRUXEval), else ``model.max_tokens``.

    Returns:
        ``(tokens, key)``; the key is named in the truncation warning.
    """
    if cfg.benchmark.get("max_tokens") is not None:
        return int(cfg.benchmark.max_tokens), "benchmark.max_tokens"
    official = benchmark.max_tokens(mode)
    if official is not None:
        return official, "benchmark.max_tokens (the official harness's default is in use)"
    return int(cfg.model.max_tokens), "model.max_tokens"


def pending_requests(cell: Cell, mode: str,
                     windows: Sequence[Window] | None = None) -> tuple[int, list[Request]]:
    """The requests still to send: one per (task, sample) not yet in ``samples.jsonl`` (for a
    cell with sample windows: not yet in the part of its window, for ``windows`` only).

    Args:
        cell: the prepared cell.
        mode: ``chat`` | ``completion`` (the prompt's form).
        windows: the windows to do (default: all of the cell's); ignored when unsharded.

    Returns:
        (rows already on disk, the requests in task order), a torn last line repaired.

    Raises:
        BenchforgeError: ``samples.jsonl`` (or a part) holds rows of another cell.
        MarkerMismatch: the rows no longer match ``generate.done`` (or a window's marker).
    """
    require_samples_intact(cell.dir)
    if cell.windows and not cell.dir.generate_done.exists():
        todo_windows = list(cell.windows if windows is None else windows)
        have: dict[tuple[str, int], dict[str, Any]] = {}
        wanted: set[tuple[str, int]] = set()
        for w in todo_windows:
            problem = part_mismatch(cell.dir, "samples", w.index)
            if problem:
                raise MarkerMismatch(f"{problem}; run `benchforge verify`, then `benchforge "
                                     "repair` with this cell's overrides")
            part = part_path(cell.dir, "samples", w.index)
            rows = first_rows_by_key(read_rows(part, torn_tail="repair"))
            check_rows_belong(rows, cell, part)
            have |= rows
            wanted |= window_keys(w, cell.task_ids, cell.n_samples)
    else:
        have = first_rows_by_key(read_rows(cell.dir.samples, torn_tail="repair"))
        check_rows_belong(have, cell, cell.dir.samples)
        wanted = cell.expected_keys
    todo = [Request(t.task_id, i, cell.benchmark.prompt(t, mode))
            for t in cell.dataset.tasks for i in range(cell.n_samples)
            if (t.task_id, i) in wanted and (t.task_id, i) not in have]
    return len(have), todo


def sample_row(extract_code: Callable[[Task, str, str], str], task: Task, request: Request,
               completion: Completion, stop: list[str], mode: str,
               template_sha256: str | None) -> dict[str, Any]:
    """The ``samples.jsonl`` row of one reply: every stop string cut client-side (whatever the
    server did with it), a chat reply's reasoning split off and never graded
    (:mod:`benchforge.answers`), the code extracted by ``extract_code`` (the benchmark's
    :meth:`~benchforge.benchmarks.Benchmark.extract_code`, as its official evaluator does), and
    the server's token counts and timings."""
    answer = stop_at_stop_token(completion.text, stop)
    inline_reasoning = ""
    if mode == Mode.chat:
        answer, inline_reasoning = split_thinking(answer)
    return {
        "task_id": request.task_id, "sample_idx": request.sample_idx,
        "prompt_sha256": request.prompt.sha256, "completion": completion.text,
        "code": extract_code(task, answer, mode),
        "finish_reason": completion.finish_reason,
        "prompt_tokens": completion.prompt_tokens,
        "completion_tokens": completion.completion_tokens,
        "reasoning_tokens": completion.reasoning_tokens,
        "reasoning_chars": len(completion.reasoning) + len(inline_reasoning),
        "latency_s": completion.latency_s, "decode_s": completion.decode_s,
        "chat_template_sha256": template_sha256,
    }


def generate_samples(cell: Cell, todo: list[Request], settings: ClientSettings,
                     template_sha256: str | None, progress: bool = False,
                     extract_code: Callable[[Task, str, str], str] | None = None,
                     windows: Sequence[Window] | None = None) -> None:
    """The core of the stage: send ``todo`` to the server ``settings`` names and append one
    row per reply to the cell's ``samples.jsonl`` (fsynced as it arrives, so a kill loses only
    the requests in flight); a cell with sample windows appends each row to its window's part
    instead (``windows``: the ones ``todo`` is drawn from, default all). Prints nothing unless
    ``progress``. ``extract_code`` (default: the benchmark's, in this process) turns each
    answer into the graded program.

    Raises:
        BenchforgeError: the server is unreachable or keeps failing after its retries.
        DiskFull: no space left (every complete row is kept).
    """
    mode = settings.mode
    tasks = {t.task_id: t for t in cell.dataset.tasks}
    extract = extract_code or cell.benchmark.extract_code
    sink = (PartAppender(cell.dir, "samples", KeyIndex(cell.windows, cell.task_ids,
                                                       cell.n_samples),
                         cell.windows if windows is None else windows)
            if cell.windows else RowAppender(cell.dir.samples))
    with (sink as appender, progress_bar("generate", len(todo), progress) as advance):

        def on_completion(request: Request, completion: Completion) -> None:
            appender.append(sample_row(extract, tasks[request.task_id], request, completion,
                                       settings.stop, mode, template_sha256))

        generate(todo, settings, on_completion, advance)


@cell_stage("generate")
def run_generate(cfg: DictConfig) -> Cell:
    """Generate the cell's samples: query the model server (launched when the provider needs
    one) for every (task, sample) not yet in ``samples.jsonl``, append each reply as a row,
    then write ``generate.done`` once every row is there. Resumes where it stopped.

    A cell planned with sample windows (``compute.shards_per_cell`` > 1 or
    ``compute.tasks_per_shard``) writes each window's rows to its own part file:
    ``compute.window=i`` does that window only (a SLURM shard; the last window to finish
    writes the union and ``generate.done``), without it every window is done here.

    Returns:
        The :class:`~benchforge.cell.Cell`, its samples complete.

    Raises:
        BenchforgeError: a bad ``model.mode``/``model.thinking``, fewer samples than a k of
            ``aggregate.ks`` needs, an unreachable or wrong server, rows of another cell, or
            rows that do not reconcile (rerun).
        MarkerMismatch: ``samples.jsonl`` no longer matches its ``generate.done``
            (``benchforge repair``).
    """
    mode = str(cfg.model.mode)  # chat | completion: an enum, checked at composition
    template_kwargs = thinking_kwargs(cfg.model)  # a bad value fails before any cell is made
    require_samples_for_ks(list(cfg.aggregate.ks), int(cfg.model.n_samples), "model.n_samples")
    cell = prepare_cell(cfg)
    max_tokens, max_tokens_key = request_max_tokens(cfg, cell.benchmark, mode)
    index = cfg.compute.get("window")
    windows = selected_windows(cell.windows, None if index is None else int(index))
    if windows == []:
        log.info("generate: compute.window=%s: this cell has %d window(s); nothing to do here",
                 index, max(len(cell.windows), 1))
        return cell
    return _generate_windows(cfg, cell, mode, template_kwargs, max_tokens, max_tokens_key,
                             windows, index)


def _generate_windows(cfg: DictConfig, cell: Cell, mode: str, template_kwargs: Any,
                      max_tokens: int, max_tokens_key: str, windows: list[Window] | None,
                      index: Any) -> Cell:
    """run_generate's work on the cell (``windows`` None) or on some of its windows."""
    have, todo = pending_requests(cell, mode, windows)
    if todo:
        log.info("generate: %d of %d samples to do (%d already on disk)", len(todo),
                 len(cell.expected_keys), have)
        template_sha = chat_template_sha256(cfg)
        if cfg.model.provider == Provider.hf and cfg.engine.launch == Launch.apptainer:
            sif = Path(str(cfg.engine.image)).expanduser()
            update_provenance(cell.dir, engine_image={
                "path": str(sif), "source": cfg.engine.image_source,
                "sha256": verify_image(sif, Path(str(cfg.paths.images)).expanduser())})

        def answers(mode: str) -> list[dict[str, str]]:
            return oracle_answers(cell.benchmark, cell.dataset.tasks, mode)

        tasks = {t.task_id: t for t in cell.dataset.tasks}
        # the extraction worker forks first, before the server or any thread starts
        # one window's engine logs (server.log, gpu.jsonl) under logs/w<i>/: shards run at once
        logs = cell.dir.logs / f"w{index}" if index is not None and cell.windows \
            else cell.dir.logs
        with (extraction_worker(cell.benchmark, tasks) as extract_code,
              model_endpoint(cfg.model, logs, cfg.engine, cfg.paths,
                             answers=answers) as base_url):
            in_flight = concurrency(cfg.model, cfg.engine)
            serving = serving_settings(cfg.model, base_url, api_key(cfg.model), todo[0].prompt,
                                       in_flight, answer_tokens=max_tokens)
            update_provenance(cell.dir, serving=serving)
            settings = ClientSettings(
                base_url=base_url, served_name=str(cfg.model.served_name),
                api_key=api_key(cfg.model),
                mode=mode, temperature=cfg.model.temperature, top_p=cfg.model.top_p,
                max_tokens=serving["max_tokens"], seed=cfg.model.seed,
                stop=[*cfg.model.stop, *cell.benchmark.stop_sequences(mode)],
                concurrency=in_flight,
                timeout_s=serving["request_timeout_s"],
                max_retries=cfg.model.max_retries,
                chat_template_kwargs=template_kwargs, sampling=serving["sampling"],
            )
            generate_samples(cell, todo, settings, template_sha, bool(cfg.generate.progress),
                             extract_code, windows)
        update_provenance(cell.dir, request={"max_tokens": settings.max_tokens,
                                             "stop_sent": sent_stops(settings.stop),
                                             "stop_cut_client_side": list(settings.stop)})
    if windows is not None:
        incomplete = [w.index for w in windows
                      if not mark_window(cell.dir, "samples", w, cell.task_ids, cell.n_samples)]
        if incomplete:
            raise BenchforgeError(
                f"{part_path(cell.dir, 'samples', incomplete[0])}: rows do not reconcile with "
                f"window {incomplete[0]}; rerun `benchforge generate` with the same overrides")
        if index is not None:  # one shard of several: the last one to finish writes the union
            with cell_lock(cell.dir.path, "generate", wait=True, timeout_s=600):
                done = mark_generate_done(cell)
            log.info("generate: window %s of %d complete%s", index, len(cell.windows),
                     "; the cell's generate.done is there (every window done)" if done else "")
            return cell
    if not mark_generate_done(cell):
        raise BenchforgeError(
            f"{cell.dir.samples}: rows do not reconcile with {len(cell.expected_keys)} expected; "
            "rerun `benchforge generate` with the same overrides"
        )
    for line in warning_lines(count_outcomes(read_rows(cell.dir.samples)), max_tokens_key):
        log.warning("generate: %s", line)
    log.info("generate: %d samples complete in %s", len(cell.expected_keys), cell.dir.samples)
    return cell
