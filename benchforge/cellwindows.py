"""A cell cut into sample windows on disk: its plan, its part files, and their union.

A cell planned with K > 1 windows (``compute.shards_per_cell`` / ``compute.tasks_per_shard``,
see :mod:`benchforge.windows`) records them once in ``windows.json``; K is then fixed for the
cell (another K is refused with one line). Each window has its own files next to the cell's:

- ``samples.w<i>.jsonl`` and ``generate.w<i>.done`` (rows and marker of window i's generation),
- ``results.w<i>.jsonl`` and ``score.w<i>.done`` (its verdicts),

each written by one process only (the window's lock, ``.generate.w<i>.lock``), with the same
append + fsync + torn-tail rules as the cell's own files (:mod:`benchforge.rundir`).

The cell is the union of its parts. When every window's marker is there, :func:`reconcile`
writes that union as the cell's ``samples.jsonl`` (``results.jsonl``): the parts concatenated
in window order, refused unless it holds exactly one row per (task, sample) key. The cell's
``generate.done`` / ``score.done`` are then written over the union as for an unsharded cell, so
every reader (score, aggregate, verify, inspect, publish, compare, users' scripts) reads a
finished sharded cell exactly as an unsharded one; while windows are still running,
:func:`row_files` names the parts (what ``status`` counts).

With K = 1 (the default) nothing here writes anything: the cell's files are as before.
"""

from __future__ import annotations

import bisect
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchforge.errors import BenchforgeError
from benchforge.rundir import (
    CellDir,
    RowAppender,
    first_rows_by_key,
    read_json,
    read_rows,
    sha256_file,
    utc_now,
    write_atomic,
    write_json_atomic,
)
from benchforge.windows import Window, WindowError, plan_windows

WINDOWS_NAME = "windows.json"
KINDS = ("samples", "results")  # the row files a window has a part of
_MARKER = {"samples": "generate", "results": "score"}


def windows_path(cdir: CellDir) -> Path:
    """``windows.json`` of the cell (present only when it was planned with K > 1)."""
    return cdir.path / WINDOWS_NAME


def part_path(cdir: CellDir, kind: str, index: int) -> Path:
    """Window ``index``'s part of ``kind`` (``samples`` | ``results``): ``<kind>.w<i>.jsonl``."""
    return cdir.path / f"{kind}.w{index}.jsonl"


def window_marker(cdir: CellDir, kind: str, index: int) -> Path:
    """The marker over one part: ``generate.w<i>.done`` (samples) or ``score.w<i>.done``."""
    return cdir.path / f"{_MARKER[kind]}.w{index}.done"


def union_path(cdir: CellDir, kind: str) -> Path:
    """The cell's own row file of ``kind`` (the union of the parts once they are complete)."""
    return cdir.samples if kind == "samples" else cdir.results


def union_marker(cdir: CellDir, kind: str) -> Path:
    """The cell's marker of ``kind``: ``generate.done`` or ``score.done``."""
    return cdir.generate_done if kind == "samples" else cdir.score_done


def _asked(compute: Any) -> tuple[int | None, int | None]:
    per_cell = compute.get("shards_per_cell") if compute is not None else None
    per_shard = compute.get("tasks_per_shard") if compute is not None else None
    return (None if per_cell is None else int(per_cell),
            None if per_shard is None else int(per_shard))


def requested_windows(compute: Any, n_tasks: int, n_samples: int) -> list[Window]:
    """The windows ``compute.shards_per_cell`` / ``compute.tasks_per_shard`` ask for.

    Args:
        compute: the ``compute`` config (or None: one window).
        n_tasks: tasks of the cell; n_samples: samples per task.

    Returns:
        The windows (one, the whole grid, by default).

    Raises:
        WindowError: a count below 1 or both keys set (names the key).
    """
    per_cell, per_shard = _asked(compute)
    return plan_windows(n_tasks, n_samples, shards_per_cell=per_cell, tasks_per_shard=per_shard)


def _asked_text(compute: Any) -> str:
    per_cell, per_shard = _asked(compute)
    if per_shard is not None:
        return f"compute.tasks_per_shard={per_shard}"
    return f"compute.shards_per_cell={per_cell or 1}"


def read_windows(cdir: CellDir) -> list[Window] | None:
    """The windows the cell was planned with; None for an unsharded cell (no ``windows.json``).

    Raises:
        BenchforgeError: ``windows.json`` is not valid (names the file).
    """
    path = windows_path(cdir)
    if not path.exists():
        return None
    data = read_json(path)
    try:
        return [Window(int(w["index"]), int(w["start"]), int(w["stop"]))
                for w in data["windows"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise BenchforgeError(f"{path}: not a windows record ({exc}); restore it from the "
                              "plan or use another run.name") from None


def fix_windows(cdir: CellDir, compute: Any, n_tasks: int,
                n_samples: int) -> list[Window] | None:
    """Plan (first time) or check (every later command) the cell's windows.

    The first command on a cell fixes K: K > 1 writes ``windows.json`` once; K = 1 writes
    nothing. A later command asking for another K is refused, since its windows would not
    match the part files on disk.

    Returns:
        The cell's windows when it has K > 1, else None.

    Raises:
        WindowError: one line naming both K values and what to do.
    """
    asked = requested_windows(compute, n_tasks, n_samples)
    planned = read_windows(cdir)
    if planned is None:
        started = (cdir.generate_done.exists()
                   or (cdir.samples.exists() and cdir.samples.stat().st_size > 0))
        if len(asked) == 1:
            return None
        if started:
            raise WindowError(
                f"{cdir.path}: this cell was planned with K=1 window (unsharded) and this "
                f"command asks for K={len(asked)} ({_asked_text(compute)}); the number of "
                "windows is fixed per cell: drop that override (or set "
                "compute.shards_per_cell=1), or use another run.name")
        write_json_atomic(windows_path(cdir), {
            "of": len(asked), "n_tasks": n_tasks, "n_samples": n_samples,
            "asked": _asked_text(compute), "planned_utc": utc_now(),
            "windows": [w.as_dict() for w in asked]})
        return asked
    if planned != asked:
        recorded = read_json(windows_path(cdir)).get("asked", f"K={len(planned)}")
        raise WindowError(
            f"{cdir.path}: this cell was planned with K={len(planned)} windows ({recorded}) "
            f"and this command asks for K={len(asked)} ({_asked_text(compute)})"
            + (", cut at other keys" if len(asked) == len(planned) else "")
            + f"; the windows are fixed per cell: rerun with {recorded}, or use another run.name")
    return planned


def selected_windows(windows: Sequence[Window], index: int | None) -> list[Window] | None:
    """The windows one command works on, given ``compute.window``.

    Args:
        windows: the cell's windows ([] or () for an unsharded cell).
        index: ``compute.window`` (None: every window, in one process).

    Returns:
        None for the whole cell the unsharded way (no windows, index None or 0); else the
        windows to do: all, the one named, or [] when the index is past this cell's last
        window (a sweep sized for a cell with more windows: nothing to do here).

    Raises:
        WindowError: a negative index (one line).
    """
    if index is not None and index < 0:
        raise WindowError(f"compute.window={index}: a window index is 0 or more (the SLURM "
                          "sweep sets it per array element; leave it unset to do every window)")
    if not windows:
        return None if index in (None, 0) else []
    if index is None:
        return list(windows)
    return [windows[index]] if 0 <= index < len(windows) else []


class KeyIndex:
    """Which window a ``(task_id, sample_idx)`` key falls in (grid position, then bisect)."""

    def __init__(self, windows: Sequence[Window], task_ids: Sequence[str],
                 n_samples: int) -> None:
        self._windows = list(windows)
        self._starts = [w.start for w in windows]
        self._task = {t: i for i, t in enumerate(task_ids)}
        self._n = n_samples

    def window(self, task_id: str, sample_idx: int) -> int:
        """The index of the window holding the key.

        Raises:
            KeyError: the task is not one of the cell's.
        """
        position = self._task[task_id] * self._n + int(sample_idx)
        return self._windows[bisect.bisect_right(self._starts, position) - 1].index


class PartAppender:
    """Append each row to the part file of its window (one :class:`RowAppender` per part):
    what a local command working on several windows at once writes through."""

    def __init__(self, cdir: CellDir, kind: str, index: KeyIndex,
                 windows: Sequence[Window]) -> None:
        self._index = index
        self._appenders = {w.index: RowAppender(part_path(cdir, kind, w.index))
                           for w in windows}

    def append(self, row: dict[str, Any]) -> None:
        """Append ``row`` to its window's part, fsynced (see RowAppender.append).

        Raises:
            KeyError: the row's window is not one this appender writes.
            DiskFull: no space left.
        """
        self._appenders[self._index.window(row["task_id"], row["sample_idx"])].append(row)

    def close(self) -> None:
        """Close every part (idempotent)."""
        for appender in self._appenders.values():
            appender.close()

    def __enter__(self) -> PartAppender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def window_keys(window: Window, task_ids: Sequence[str], n_samples: int) -> set[tuple[str, int]]:
    """Every key of ``window`` (what its part holds once complete)."""
    return set(window.keys(task_ids, n_samples))


def part_mismatch(cdir: CellDir, kind: str, index: int) -> str | None:
    """Why a part no longer matches its window marker (None: it matches, or no marker)."""
    marker = window_marker(cdir, kind, index)
    if not marker.exists():
        return None
    info = read_json(marker)
    part = part_path(cdir, kind, index)
    if not part.exists():
        return f"{part}: missing although {marker.name} is present"
    if sha256_file(part) != info.get("sha256"):
        return f"{part}: changed after {marker.name} was written"
    return None


def mark_window(cdir: CellDir, kind: str, window: Window, task_ids: Sequence[str],
                n_samples: int) -> bool:
    """Write window ``window``'s marker iff its part holds exactly its keys (a torn tail is
    left to the next run); an existing marker is kept.

    Returns:
        Whether the window is complete (marker present).

    Raises:
        BenchforgeError: the part holds rows of another window (names the part and the key).
    """
    marker = window_marker(cdir, kind, window.index)
    if marker.exists():
        return True
    part = part_path(cdir, kind, window.index)
    rows = first_rows_by_key(read_rows(part))
    want = window_keys(window, task_ids, n_samples)
    stray = sorted(set(rows) - want)
    if stray:
        raise BenchforgeError(f"{part}: {len(stray)} row(s) outside window {window.index} "
                              f"(first: {stray[0]}); move that file away and rerun")
    if set(rows) != want:
        return False
    write_json_atomic(marker, {"window": window.as_dict(), "rows": len(rows),
                               "sha256": sha256_file(part), "finished_utc": utc_now()})
    return True


def windows_done(cdir: CellDir, kind: str, windows: Sequence[Window]) -> bool:
    """Whether every window's marker of ``kind`` is present."""
    return all(window_marker(cdir, kind, w.index).exists() for w in windows)


def reconcile(cdir: CellDir, kind: str, windows: Sequence[Window],
              expected: set[tuple[str, int]]) -> dict[str, Any] | None:
    """Write the cell's row file of ``kind`` as the union of its complete parts.

    Only when every window's marker is there and every part still matches it; the union is
    the parts' bytes concatenated in window order, written atomically, and must hold exactly
    one row per key of ``expected``. Idempotent: an existing union with the same bytes is
    kept as is.

    Returns:
        ``{"windows": [{"index", "rows", "sha256"}, ...]}`` for the cell's marker, or None
        while a window is not complete.

    Raises:
        BenchforgeError: a part changed after its marker, or the union does not reconcile
            (a duplicate or missing key; names the file).
    """
    if not windows_done(cdir, kind, windows):
        return None
    parts = []
    for w in windows:
        problem = part_mismatch(cdir, kind, w.index)
        if problem:
            raise BenchforgeError(f"{problem}; run `benchforge verify`, then `benchforge "
                                  "repair` with this cell's overrides")
        parts.append(part_path(cdir, kind, w.index).read_bytes())
    blob = b"".join(parts)
    target = union_path(cdir, kind)
    rows = [json.loads(line) for line in blob.splitlines() if line.strip()]
    keyed = first_rows_by_key(rows)
    if len(keyed) != len(rows) or set(keyed) != expected:
        raise BenchforgeError(
            f"{cdir.path}: the {len(windows)} {kind} parts hold {len(rows)} rows for "
            f"{len(keyed)} keys, {len(expected)} expected; run `benchforge verify`")
    if not (target.exists() and target.read_bytes() == blob):
        write_atomic(target, blob)
    return {"windows": [{"index": w.index, "rows": w.size,
                         "sha256": read_json(window_marker(cdir, kind, w.index))["sha256"]}
                        for w in windows]}


def row_files(cdir: CellDir, kind: str) -> list[Path]:
    """The files holding the cell's rows of ``kind`` now: the cell's own file, or while a
    sharded cell has no union yet, its parts (what ``status`` and the attempt log count)."""
    own = union_path(cdir, kind)
    if own.exists() or not windows_path(cdir).exists():
        return [own]
    return sorted(cdir.path.glob(f"{kind}.w*.jsonl"),
                  key=lambda p: int(p.name.split(".w")[1].split(".")[0]))


def count_lines(paths: Sequence[Path]) -> int:
    """Complete lines over ``paths`` (absent files count 0)."""
    total = 0
    for path in paths:
        try:
            with open(path, "rb") as fh:
                total += sum(1 for line in fh if line.endswith(b"\n"))
        except OSError:
            continue
    return total


def window_progress(cdir: CellDir, windows: Sequence[Window]) -> list[dict[str, Any]]:
    """Per window: ``{"index", "start", "stop", "generated", "scored", "generate_done",
    "score_done"}`` (rows are complete lines of its parts), for ``status``."""
    out = []
    for w in windows:
        out.append({**w.as_dict(),
                    "generated": count_lines([part_path(cdir, "samples", w.index)]),
                    "scored": count_lines([part_path(cdir, "results", w.index)]),
                    "generate_done": window_marker(cdir, "samples", w.index).exists(),
                    "score_done": window_marker(cdir, "results", w.index).exists()})
    return out


def window_problems(cdir: CellDir) -> list[str]:
    """Parts that no longer match their window markers (for ``verify``)."""
    windows = read_windows(cdir)
    if not windows:
        return []
    problems = []
    for w in windows:
        for kind in KINDS:
            try:
                found = part_mismatch(cdir, kind, w.index)
            except (BenchforgeError, OSError) as exc:
                found = str(exc)
            if found:
                problems.append(found)
    return problems


def repair_parts(cdir: CellDir) -> tuple[list[str], list[str]]:
    """What ``benchforge repair`` moves away for parts that no longer match their window
    markers: the part, its marker, what was derived from it (the window's verdicts, the
    cell's unions and markers, metrics).

    Returns:
        (problems found, cell file names to archive).
    """
    problems: list[str] = []
    move: list[str] = []
    for w in read_windows(cdir) or []:
        for kind in KINDS:
            problem = part_mismatch(cdir, kind, w.index)
            if not problem:
                continue
            problems.append(problem)
            kinds = KINDS if kind == "samples" else ("results",)
            for each in kinds:
                move += [part_path(cdir, each, w.index).name,
                         window_marker(cdir, each, w.index).name,
                         union_path(cdir, each).name, union_marker(cdir, each).name]
            move.append(cdir.metrics.name)
    return problems, list(dict.fromkeys(move))


def archive_parts(cdir: CellDir, kind: str, windows: Sequence[Window], target: Path) -> None:
    """Move the parts of ``kind`` of ``windows`` and their markers into ``target``
    (``score.force``: kept, never deleted)."""
    target.mkdir(parents=True, exist_ok=True)
    for w in windows:
        for path in (part_path(cdir, kind, w.index), window_marker(cdir, kind, w.index)):
            if path.exists():
                os.replace(path, target / path.name)


def window_rows(cdir: CellDir, kind: str, windows: Sequence[Window],
                torn_tail: str = "ignore") -> dict[tuple[str, int], dict[str, Any]]:
    """The rows of ``kind`` of ``windows``' parts, keyed (first of duplicates kept).

    Raises:
        BenchforgeError: a part changed after its marker, or a corrupt line (names it).
    """
    rows: dict[tuple[str, int], dict[str, Any]] = {}
    for w in windows:
        problem = part_mismatch(cdir, kind, w.index)
        if problem:
            raise BenchforgeError(f"{problem}; run `benchforge verify`, then `benchforge "
                                  "repair` with this cell's overrides")
        for key, row in first_rows_by_key(read_rows(part_path(cdir, kind, w.index),
                                                    torn_tail=torn_tail)).items():
            rows.setdefault(key, row)
    return rows


__all__ = [
    "WINDOWS_NAME",
    "KeyIndex",
    "PartAppender",
    "WindowError",
    "archive_parts",
    "count_lines",
    "fix_windows",
    "mark_window",
    "part_mismatch",
    "part_path",
    "read_windows",
    "reconcile", "repair_parts",
    "requested_windows",
    "row_files",
    "selected_windows",
    "union_marker",
    "union_path",
    "window_keys",
    "window_marker",
    "window_problems",
    "window_progress",
    "window_rows",
    "windows_done",
    "windows_path",
]
