"""Expected outputs of an EvalPlus dataset, as evalplus.evaluate.get_groundtruth makes them.

    python -m benchforge.benchmarks._groundtruth <humaneval|mbpp> <dataset file> <out dir> <workers>

Runs each task's canonical solution (trusted dataset code) with evalplus's trusted_exec on its
base and plus inputs, recording per-input times on this host. Tasks are independent, so
``workers`` forked processes share them (largest first); each task's inputs, expected outputs
and times go to their own pickle, written straight into a private build folder that is renamed
to ``<out dir>`` once ``index.json`` (per task: file and per-input reference times) is in it.
Nothing holds the whole table at once. Progress goes to stdout (``done <n> <total>``); a
failure is one line on stderr and removes the build folder.
Kept out of the benchforge process so dataset code never runs inside it.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import sys
from pathlib import Path
from typing import Any

SUITES = ("base", "plus")
ROWS: list[dict[str, Any]] = []  # set before the fork: the workers share it copy-on-write
STATE: dict[str, Any] = {}


def fixture_name(task_id: str) -> str:
    """The file name of ``task_id``'s fixture pickle in the store (``/`` -> ``_``)."""
    return f"{task_id.replace('/', '_')}.pkl"


def compute(index: int) -> tuple[str, dict[str, list[float]]]:
    """One task: run its canonical solution on both suites, write its fixture file."""
    from evalplus.gen.util import trusted_exec

    row = ROWS[index]
    code = row["prompt"] + row["canonical_solution"]
    data, times = {}, {}
    for suite in SUITES:
        try:
            expected, spent = trusted_exec(
                code, row[f"{suite}_input"], row["entry_point"], record_time=True,
                output_not_none=row["entry_point"] in STATE["not_none"])
        except Exception as exc:  # reported as one line naming the task
            raise RuntimeError(f"{row['task_id']} {suite}: the canonical solution raised "
                               f"{type(exc).__name__}: {exc}") from None
        data[suite] = {"inputs": row[f"{suite}_input"], "expected": expected, "times": spent}
        times[suite] = spent
    with open(Path(STATE["build"]) / fixture_name(row["task_id"]), "wb") as fh:
        pickle.dump(data, fh, protocol=pickle.HIGHEST_PROTOCOL)
    return row["task_id"], times


def build(kind: str, source: Path, target: Path, workers: int) -> None:
    """Build the expected-output store of one EvalPlus dataset.

    Args:
        kind: ``humaneval`` or ``mbpp`` (evalplus's dataset names).
        source: the dataset file (JSON lines, ``.gz`` allowed).
        target: the store dir; created by renaming a private build dir once complete, so a
            reader never sees a half-built store (a concurrent builder's finished store wins).
        workers: forked processes running tasks' canonical solutions, largest task first.

    Raises:
        whatever a canonical solution or the pool raises (the build dir is removed first).
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    from evalplus.eval._special_oracle import MBPP_OUTPUT_NOT_NONE_TASKS

    from benchforge.benchmarks._evalplus import read_tasks

    rows, _ = read_tasks(source, kind)
    ROWS[:] = rows
    STATE["not_none"] = MBPP_OUTPUT_NOT_NONE_TASKS if kind == "mbpp" else []
    build_dir = target.parent / f".{target.name}.build-{os.getpid()}"
    build_dir.mkdir(parents=True)
    STATE["build"] = str(build_dir)
    try:
        # largest first (by input count), so one long task does not start last
        order = sorted(range(len(rows)), key=lambda i: -(len(rows[i]["base_input"])
                                                          + len(rows[i]["plus_input"])))
        index: dict[str, Any] = {}
        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(max(1, workers), mp_context=context) as pool:
            # a worker that dies (OOM kill) raises BrokenProcessPool here instead of hanging
            try:
                for future in as_completed([pool.submit(compute, i) for i in order]):
                    task_id, times = future.result()
                    index[task_id] = {"file": fixture_name(task_id), "times": times}
                    print(f"done {len(index)} {len(rows)}", flush=True)
            except BaseException:
                pool.shutdown(wait=False, cancel_futures=True)  # fail now, not after the rest
                raise
        (build_dir / "index.json").write_text(json.dumps(index))
        try:
            os.rename(build_dir, target)
        except OSError:  # another process finished the same build first: keep theirs
            if not (target / "index.json").is_file():
                raise
            shutil.rmtree(build_dir, ignore_errors=True)
    except BaseException:
        shutil.rmtree(build_dir, ignore_errors=True)
        raise


def main() -> None:
    """``python -m benchforge.benchmarks._groundtruth <kind> <source> <target> <workers>``:
    :func:`build`; progress lines ``done <n> <total>`` on stdout (the host shows them), a failure
    as one line on stderr and exit status 1.
    """
    kind, source, target, workers = (sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]),
                                     int(sys.argv[4]))
    try:
        build(kind, source, target, workers)
    except Exception as exc:  # one line for the host to show; the build folder is gone
        print(f"{type(exc).__name__}: {exc}".splitlines()[0][:500], file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
