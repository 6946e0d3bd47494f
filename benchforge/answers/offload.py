"""Answer extraction in a worker process: off the generation client's event loop and its GIL.

The client already hands each answer to a worker thread (:func:`benchforge.client.generate`);
extraction itself (EvalPlus's ``sanitize``: many ``ast.parse`` calls, each holding the GIL for
its whole length) then runs in one process forked before generation starts, so the requests
in flight are never held back by it. Where a process cannot be forked or the worker dies, the
extraction runs in this process instead (same result, one warning).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from benchforge.config import Mode

log = logging.getLogger("benchforge")

_STATE: dict[str, Any] = {}  # set before the fork: the worker reads it copy-on-write

Extract = Callable[[Any, str, str], str]  # (task, answer, model.mode) -> code


def _extract(task_id: str, answer: str, mode: str) -> str:
    benchmark, tasks = _STATE["benchmark"], _STATE["tasks"]
    return benchmark.extract_code(tasks[task_id], answer, mode)


def _quiet_signals(parent: int) -> None:
    """In the worker: Ctrl-C is the parent's to handle; SIGTERM just ends it; and it ends
    when ``parent`` (the pid that forked it) is gone.

    A parent killed outright (SIGKILL, the OOM killer) never shuts the pool down, and the
    worker, holding both ends of its task pipe, would wait on it forever: a thread here
    polls the parent pid once a second and exits the worker once it changed.
    """
    import signal
    import threading

    def watch_parent() -> None:
        import os
        import time

        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch_parent, name="parent-watch", daemon=True).start()

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    # SLURM signals every process of the step: the pre-timeout/preemption signal is the main
    # process's to act on (submitit's requeue). Inherited here, submitit's handler would run a
    # second checkpoint beside the main one and break it.
    for name in ("SIGUSR1", "SIGUSR2"):
        signal.signal(getattr(signal, name), signal.SIG_IGN)


def _ready() -> bool:
    """Run once in the worker: loads the extractors' lazy imports before any answer."""
    from contextlib import suppress

    benchmark, tasks = _STATE["benchmark"], _STATE["tasks"]
    for task in list(tasks.values())[:1]:
        for mode in Mode:
            with suppress(Exception):  # a warm-up only: real answers report their own errors
                benchmark.extract_code(task, "", mode)
    return True


@contextmanager
def extraction_worker(benchmark: Any, tasks: dict[str, Any]) -> Iterator[Extract]:
    """Yield ``extract(task, answer, mode) -> code``: ``benchmark.extract_code`` run in one
    worker process forked now (it sees ``benchmark`` and ``tasks`` as they are here).

    Args:
        benchmark: the cell's :class:`benchforge.benchmarks.Benchmark`.
        tasks: task id -> task, every task an answer may belong to.

    Yields:
        The extraction function; exceptions ``extract_code`` raises are raised by it. If the
        worker cannot start or dies, it extracts in this process (a warning says so).
    """
    import multiprocessing
    import os
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    _STATE.update(benchmark=benchmark, tasks=tasks)
    pool: ProcessPoolExecutor | None = None
    try:
        pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork"),
                                   initializer=_quiet_signals, initargs=(os.getpid(),))
        pool.submit(_ready).result()  # forks here, from this thread, before generation
    except (OSError, ValueError, BrokenProcessPool) as exc:
        log.warning("generate: answers are extracted in this process (no worker: %s)", exc)
        pool = None

    def extract(task: Any, answer: str, mode: str) -> str:
        nonlocal pool
        if pool is not None:
            try:
                return pool.submit(_extract, task.task_id, answer, mode).result()
            except BrokenProcessPool:
                log.warning("generate: the answer-extraction worker died; extracting in "
                            "this process from now on")
                pool = None
        return benchmark.extract_code(task, answer, mode)

    try:
        yield extract
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        _STATE.clear()
