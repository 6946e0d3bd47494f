"""Expected outputs of an EvalPlus dataset, as evalplus.evaluate.get_groundtruth makes them.

    python -m benchforge.benchmarks._groundtruth <humaneval|mbpp> <dataset file> <out dir> <workers>

Runs each task's canonical solution (trusted dataset code) with evalplus's trusted_exec on its
base and plus inputs, recording per-input times on this host. Tasks are independent, so
``workers`` forked processes share them (largest first). Each task gets one file, written
straight into a private build folder that is renamed to ``<out dir>`` once ``index.json`` (per
task: file, its size in bytes and per-input reference times) is in it. A task's file holds:

- each expected output pickled on its own, one after the other, so that a sample's process
  unpickles only the output of the input it is comparing (one Mbpp/255 output is ~200 MB of
  objects, its whole plus suite ~2 GB), and the store is smaller than one pickle of the whole
  table (the memo of one huge pickle makes its references long);
- then the header: a pickle of, per suite, the inputs, the per-input reference times, where each
  expected output lies (``offsets``: ``[start, length, codec]``, bytes; codec 1 = zlib, for
  outputs of ``COMPRESS_FROM`` bytes or more, else 0) and ``first_float`` (the
  first input whose expected output is floats, for EvalPlus's atol rule);
- then the header's start, 8 bytes big-endian (``read_header`` reads it).

Nothing holds the whole table at once. Progress goes to stdout (``done <n> <total>``); a
failure is one line on stderr and removes the build folder.
Kept out of the benchforge process so dataset code never runs inside it.
"""

from __future__ import annotations

import copy
import json
import os
import pickle
import shutil
import sys
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from benchforge.benchmarks._store import file_stamp

SUITES = ("base", "plus")
# An expected output whose pickle is this large is stored zlib-compressed (level 1): a few
# such outputs are most of the store (HumanEval/15, /130; Mbpp/255), and they compress 3x.
COMPRESS_FROM = 1 << 20
ROWS: list[dict[str, Any]] = []  # set before the fork: the workers share it copy-on-write
STATE: dict[str, Any] = {}


def fixture_name(task_id: str) -> str:
    """The file name of ``task_id``'s file in the store (``/`` -> ``_``)."""
    return f"{task_id.replace('/', '_')}.pkl"


def run_canonical(code: str, inputs: list[Any], entry_point: str, not_none: bool,
                  sink: Callable[[Any], None]) -> list[float]:
    """evalplus.gen.util.trusted_exec(code, inputs, entry_point, record_time=True,
    output_not_none=not_none) (0.3.1), except that each output goes to ``sink`` as soon as it
    exists instead of into a list: the same exec in fresh globals, deepcopy of each input and
    ``time.time()`` around the call alone, so the reference times are measured the same way,
    but one output is alive at a time (Mbpp/255's plus suite holds ~2 GB at once otherwise).

    Returns:
        The per-input reference times in seconds, one per input.
    Raises:
        StoreWriteError: ``sink`` failed with an OSError (the disk).
        Whatever the canonical solution raises.
    """
    namespace: dict[str, Any] = {}
    exec(code, namespace)  # trusted dataset code (the canonical solution), as evalplus does
    function = namespace[entry_point]
    times = []
    for args in inputs:
        args = copy.deepcopy(args)
        start = time.time()
        out = function(*args)
        times.append(time.time() - start)
        try:
            sink(out is not None if not_none else out)
        except OSError as exc:  # the disk, not the canonical solution
            raise StoreWriteError(exc) from None
        del out
    return times


class StoreWriteError(Exception):
    """Writing the store failed (``args[0]``: the OSError, e.g. no space left): reported as
    that error, never as the canonical solution's."""


class SuiteWriter:
    """Appends one suite's expected outputs to a task's open store file, one pickle each."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.offsets: list[list[int]] = []  # [start, length, codec] per input
        self.first_float: int | None = None

    def add(self, value: Any) -> None:
        """Write the next input's expected output (zlib level 1 from ``COMPRESS_FROM`` bytes)."""
        from evalplus.eval import is_floats

        blob, codec = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL), 0
        if len(blob) >= COMPRESS_FROM:  # HumanEval/15's plus outputs: 147 MB -> 47 MB
            blob, codec = zlib.compress(blob, 1), 1
        if self.first_float is None and is_floats(value):
            self.first_float = len(self.offsets)
        self.offsets.append([self.out.tell(), len(blob), codec])
        self.out.write(blob)


def compute(index: int) -> tuple[str, dict[str, list[float]]]:
    """One task: run its canonical solution on both suites, write its fixture file."""
    row = ROWS[index]
    code = row["prompt"] + row["canonical_solution"]
    data, times = {}, {}
    with open(Path(STATE["build"]) / fixture_name(row["task_id"]), "wb") as out:
        for suite in SUITES:
            writer = SuiteWriter(out)
            try:
                spent = run_canonical(code, row[f"{suite}_input"], row["entry_point"],
                                      row["entry_point"] in STATE["not_none"], writer.add)
            except StoreWriteError as exc:
                raise exc.args[0] from None
            except Exception as exc:  # reported as one line naming the task
                raise RuntimeError(f"{row['task_id']} {suite}: the canonical solution raised "
                                   f"{type(exc).__name__}: {exc}") from None
            data[suite] = {"inputs": row[f"{suite}_input"], "times": spent,
                           "offsets": writer.offsets, "first_float": writer.first_float}
            times[suite] = spent
        start = out.tell()
        pickle.dump(data, out, protocol=pickle.HIGHEST_PROTOCOL)
        out.write(start.to_bytes(8, "big"))
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
        for entry in index.values():  # what the reader checks before trusting a file
            entry.update(file_stamp(build_dir / entry["file"]))
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
