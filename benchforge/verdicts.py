"""A scored cell's verdicts as per-task arrays: what pass@k, CIs, mean@N and breakdowns need.

``results.jsonl`` is read column-wise with pyarrow's multithreaded JSON reader (only the
columns aggregation uses; a million rows in ~0.4 s), and everything after that is numpy. A
file that reader does not take as-is (a torn or blank line, a value of an unexpected type)
goes through the row reader instead, which names the bad line; both paths build the same
arrays, so the numbers never depend on which one ran.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchforge.errors import BenchforgeError
from benchforge.rundir import first_rows_by_key, read_rows

# results-row labels to split by (DS-1000: category = library, perturbation = its type)
BREAKDOWN_FIELDS = ("difficulty", "category", "platform", "perturbation")
LABEL_FIELDS = ("contaminated", *BREAKDOWN_FIELDS)  # per task, from its first row


@dataclass(frozen=True)
class Columns:
    """Deduplicated result rows (first row of each ``(task_id, sample_idx)``), file order.
    Task ids and failure modes are codes into name lists (failure mode -1: null)."""

    task_codes: np.ndarray  # int64
    task_names: list[str]
    sample_idx: np.ndarray  # int64, per row
    passed: np.ndarray  # bool
    skipped: np.ndarray  # bool
    mode_codes: np.ndarray  # int64
    mode_names: list[Any]
    labels: dict[str, Callable[[np.ndarray], list[Any]]]  # LABEL_FIELDS: values at row indices


@dataclass(frozen=True)
class CellVerdicts:
    """Per-task verdict counts, tasks sorted by id (the order bootstrap draws index)."""

    tasks: list[str]
    rows: np.ndarray  # result rows per task
    n: np.ndarray  # verdicts pass@k counts per task (CRUXEval's skip rule applied)
    c: np.ndarray  # of which passed
    # counted verdicts, flattened task by task (by sample_idx within a task, whatever order
    # the rows sit in the file), and where each task starts in it: mean@N takes the first N
    # sample indices of every task, so column j is "run j" (seed model.seed + j)
    counted: np.ndarray
    starts: np.ndarray
    labels: dict[str, list[Any]]  # first row's value per task
    failure_modes: dict[str, int]  # over failed rows

    def pass_rates(self) -> dict[str, float]:
        """Each task's share of counted samples that passed (``c / n``), by task id."""
        return dict(zip(self.tasks, (self.c / self.n).tolist(), strict=True))

    def task_verdicts(self, task_index: int) -> list[bool]:
        """The counted verdicts (True: passed) of the task at ``task_index``, in sample order."""
        start = self.starts[task_index]
        return self.counted[start:start + self.n[task_index]].tolist()

    def matrix(self, task_indices: np.ndarray) -> np.ndarray | None:
        """Counted verdicts of the given tasks, first ``N = min n`` of each: tasks x N."""
        if task_indices.size == 0:
            return None
        width = int(self.n[task_indices].min())
        offsets = self.starts[task_indices][:, None] + np.arange(width)[None, :]
        return self.counted[offsets]


def _columns_arrow(path: Path) -> Columns | None:
    """The pyarrow fast path; None when the file needs the row reader's checks."""
    import pyarrow as pa
    import pyarrow.json as pajson

    with open(path, "rb") as fh:
        fh.seek(0, 2)
        if fh.tell() == 0:
            return None
        fh.seek(-1, 2)
        if fh.read(1) != b"\n":  # torn tail: the row reader decides what it is
            return None
    label_types = {"contaminated": pa.bool_()}
    schema = pa.schema([("task_id", pa.string()), ("sample_idx", pa.int64()),
                        ("passed", pa.bool_()), ("skipped", pa.bool_()),
                        ("failure_mode", pa.string()),
                        *((name, label_types.get(name, pa.string())) for name in LABEL_FIELDS)])
    try:
        table = pajson.read_json(path, read_options=pajson.ReadOptions(block_size=8 << 20),
                                 parse_options=pajson.ParseOptions(
                                     explicit_schema=schema, unexpected_field_behavior="ignore"))
    except (pa.ArrowException, OSError):  # unparsable or an unexpected type somewhere
        return None
    if any(table.column(name).null_count for name in ("task_id", "sample_idx", "passed")):
        return None  # a row without a required field: the row reader names it
    tasks = table.column("task_id").combine_chunks().dictionary_encode()
    task_codes = tasks.indices.to_numpy().astype(np.int64)
    keep = _first_of_each_key(task_codes, table.column("sample_idx").to_numpy())
    if keep is not None:
        table = table.take(pa.array(keep))
        task_codes = task_codes[keep]
    modes = table.column("failure_mode").combine_chunks().dictionary_encode()
    mode_codes = modes.indices.fill_null(-1).to_numpy().astype(np.int64)

    def label(name: str) -> Callable[[np.ndarray], list[Any]]:
        column = table.column(name)
        return lambda rows: column.take(pa.array(rows, type=pa.int64())).to_pylist()

    return Columns(
        task_codes=task_codes, task_names=tasks.dictionary.to_pylist(),
        sample_idx=table.column("sample_idx").to_numpy().astype(np.int64),
        passed=table.column("passed").to_numpy().astype(bool),
        skipped=table.column("skipped").fill_null(False).to_numpy().astype(bool),
        mode_codes=mode_codes, mode_names=modes.dictionary.to_pylist(),
        labels={name: label(name) for name in LABEL_FIELDS})


def _first_of_each_key(codes: np.ndarray, sample_idx: np.ndarray) -> np.ndarray | None:
    """Indices of the first row of each (task, sample) in file order; None if all unique."""
    low = int(sample_idx.min())
    span = int(sample_idx.max()) - low + 1
    key = codes * span + (sample_idx - low)
    unique, first = np.unique(key, return_index=True)
    if unique.size == key.size:
        return None
    return np.sort(first)


def _codes(values: list[Any]) -> tuple[np.ndarray, list[Any]]:
    """Codes into a list of distinct values (first-seen order); None gets -1."""
    index: dict[Any, int] = {}
    codes = np.fromiter((-1 if v is None else index.setdefault(v, len(index)) for v in values),
                        dtype=np.int64, count=len(values))
    return codes, list(index)


def _columns_rows(path: Path) -> Columns:
    return columns_from_rows(read_rows(path, torn_tail="error"), path)


def columns_from_rows(rows: list[dict[str, Any]], path: Path) -> Columns:
    """:class:`Columns` of already-read result rows (``path`` names them in errors)."""
    rows = list(first_rows_by_key(_checked(rows, path)).values())
    task_codes, task_names = _codes([str(r["task_id"]) for r in rows])
    mode_codes, mode_names = _codes([r.get("failure_mode") for r in rows])

    def label(name: str) -> Callable[[np.ndarray], list[Any]]:
        values = [r.get(name) for r in rows]
        return lambda indices: [values[i] for i in indices.tolist()]

    return Columns(
        task_codes=task_codes, task_names=task_names,
        sample_idx=np.fromiter((int(r["sample_idx"]) for r in rows), dtype=np.int64,
                               count=len(rows)),
        passed=np.fromiter((bool(r["passed"]) for r in rows), dtype=bool, count=len(rows)),
        skipped=np.fromiter((bool(r.get("skipped")) for r in rows), dtype=bool,
                            count=len(rows)),
        mode_codes=mode_codes, mode_names=mode_names,
        labels={name: label(name) for name in LABEL_FIELDS})


def _checked(rows: list[dict[str, Any]], path: Path) -> list[dict[str, Any]]:
    for lineno, row in enumerate(rows, start=1):
        missing = [k for k in ("task_id", "sample_idx", "passed") if k not in row]
        if missing:
            raise BenchforgeError(f"{path}: row {lineno} has no {', '.join(missing)}; "
                                  "rescore the cell (benchforge score)")
    return rows


def read_columns(path: Path) -> Columns:
    """The deduplicated verdict columns of a ``results.jsonl`` (pyarrow when the file
    ends cleanly, else the row reader, which also checks a torn tail).

    Raises:
        BenchforgeError: the file is missing (score the cell first), or a bad or torn row.
    """
    if not path.exists():
        raise BenchforgeError(f"{path}: missing; score this cell first")
    return _columns_arrow(path) or _columns_rows(path)


def cell_verdicts(columns: Columns) -> CellVerdicts:
    """Group by task: rows, counted verdicts, labels. A task's rows marked ``skipped`` (never
    executed, e.g. CRUXEval's rule) are dropped unless no other sample passed; then all of
    the task's rows count as failures."""
    n_tasks = len(columns.task_names)
    by_name = np.argsort(np.asarray(columns.task_names, dtype=object))
    rank = np.empty(n_tasks, dtype=np.int64)
    rank[by_name] = np.arange(n_tasks)
    codes = rank[columns.task_codes]  # codes into the sorted task ids
    order = np.lexsort((columns.sample_idx, codes))  # task by task, by sample_idx within each
    rows = np.bincount(codes, minlength=n_tasks)
    kept_pass = columns.passed & ~columns.skipped
    any_pass = np.bincount(codes, weights=kept_pass, minlength=n_tasks) > 0
    # a row counts if its task has a passing kept row and it is kept, or the task has none
    counts_row = ~any_pass[codes] | ~columns.skipped
    verdict = kept_pass & any_pass[codes]
    n = np.bincount(codes, weights=counts_row, minlength=n_tasks).astype(np.int64)
    c = np.bincount(codes, weights=verdict, minlength=n_tasks).astype(np.int64)
    counted = verdict[order][counts_row[order]]
    starts = np.concatenate(([0], np.cumsum(n)[:-1])).astype(np.int64)
    first_row = order[np.concatenate(([0], np.cumsum(rows)[:-1])).astype(np.int64)]
    failed = columns.mode_codes[~columns.passed]
    mode_counts = np.bincount(failed + 1, minlength=len(columns.mode_names) + 1)
    mode_names = ["None", *map(str, columns.mode_names)]
    failure_modes: dict[str, int] = {}
    for name, count in zip(mode_names, mode_counts.tolist(), strict=True):
        if count:
            failure_modes[name] = failure_modes.get(name, 0) + count
    return CellVerdicts(
        tasks=[columns.task_names[i] for i in by_name.tolist()], rows=rows, n=n, c=c,
        counted=counted, starts=starts,
        labels={name: take(first_row) for name, take in columns.labels.items()},
        failure_modes=dict(sorted(failure_modes.items())))


def read_verdicts(path: Path) -> CellVerdicts:
    """The verdicts of a ``results.jsonl`` (see the module docstring)."""
    return verdicts_of(read_columns(path), path)


def verdicts_of(columns: Columns, path: Path) -> CellVerdicts:
    """The verdicts of the columns read from ``path``.

    Raises:
        BenchforgeError: no result rows (names ``path``).
    """
    if not columns.task_names:
        raise BenchforgeError(f"{path}: no results to aggregate")
    return cell_verdicts(columns)
