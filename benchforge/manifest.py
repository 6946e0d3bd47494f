"""``manifest.jsonl``: one row per cell of a run, the single source of truth for its cells.

Every stage that touches a cell upserts its row under an exclusive file lock, so parallel sweep
jobs (local or SLURM array tasks on a shared filesystem) can register cells concurrently.

A cell planned with sample windows (K > 1, :mod:`benchforge.cellwindows`) has one row per
window instead, each with the cell's fields plus ``window: {"index", "of", "start", "stop"}``
and its own shard fields (``shard_state``, ``<stage>_job``). :func:`read_manifest` folds them
back into one row per cell (its windows' rows under ``shards``), so every reader still sees
cells.
"""

from __future__ import annotations

import fcntl
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from benchforge.errors import BenchforgeError
from benchforge.rundir import read_rows, utc_now, write_atomic

MANIFEST_NAME = "manifest.jsonl"


def manifest_path(run_root: Path) -> Path:
    """``<run root>/manifest.jsonl``: one row per cell of the run."""
    return run_root / MANIFEST_NAME


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def cell_dir_of(run_root: Path, row: dict[str, Any]) -> Path:
    """The directory of a manifest row's cell, read under ``run_root`` (where the manifest was
    found): rows store it relative to the run root, so a moved or copied run reads its own
    cells. A row written before that (an absolute path) is read as
    ``<run_root>/<model>/<benchmark>`` when that exists, else where it points."""
    recorded = Path(str(row["dir"]))
    if not recorded.is_absolute():
        return (run_root / recorded).resolve()
    moved = run_root / recorded.parent.name / recorded.name  # <model>/<benchmark>
    return moved if moved.is_dir() else recorded


# Fields of a window's row that belong to that shard, not to its cell.
SHARD_FIELDS = ("window", "shard_state", "shard_job")


def _is_shard_field(key: str) -> bool:
    return key in SHARD_FIELDS or key.endswith(("_job", "_array_parallelism"))


def read_manifest(run_root: Path) -> list[dict[str, Any]]:
    """The run's cell rows, each ``dir`` resolved under ``run_root`` (absolute; the stored,
    relative value is kept as ``dir_recorded``). The rows of a cell's windows are folded into
    one: the cell's fields, ``windows`` (K) and ``shards`` (each window's row, in order)."""
    path = manifest_path(run_root)
    if not path.exists():
        raise BenchforgeError(
            f"{path}: no manifest; run `benchforge plan` (or `benchforge run`) for this run.name"
        )
    cells: list[dict[str, Any]] = []
    by_dir: dict[str, dict[str, Any]] = {}
    for row in read_rows(path):
        row = {**row, "dir_recorded": row["dir"], "dir": str(cell_dir_of(run_root, row))}
        if "window" not in row:
            cells.append(row)
            continue
        cell = by_dir.get(row["dir"])
        if cell is None:
            cell = {k: v for k, v in row.items() if not _is_shard_field(k)}
            cell |= {"windows": int(row["window"]["of"]), "shards": []}
            by_dir[row["dir"]] = cell
            cells.append(cell)
        cell["shards"].append(row)
    for cell in by_dir.values():
        cell["shards"].sort(key=lambda r: int(r["window"]["index"]))
    return cells


def _window_index(row: dict[str, Any]) -> int | None:
    window = row.get("window")
    return None if window is None else int(window["index"])


def upsert_cell(run_root: Path, row: dict[str, Any],
                windows: list[dict[str, int]] | None = None) -> None:
    """Insert or refresh the row of one cell, keyed by its directory.

    Args:
        run_root: the run's root (where ``manifest.jsonl`` is).
        row: the cell's fields (``dir`` relative to the run root).
        windows: for a cell with K > 1 sample windows, ``{"index", "of", "start", "stop"}``
            of each: the cell then gets one row per window (keyed by dir and index); an
            unsharded row of the same dir (a cell only planned before) is replaced.

    Raises:
        BenchforgeError: a different cell id at the same directory (the config changed
            under an existing cell; mixing its rows would give a wrong score).
    """
    path = manifest_path(run_root)
    wanted: list[int | None] = [None] if not windows else [int(w["index"]) for w in windows]
    by_index = {int(w["index"]): w for w in windows or []}
    with _locked(path):
        rows = read_rows(path) if path.exists() else []
        here = cell_dir_of(run_root, row)
        out: list[dict[str, Any]] = []
        mine: dict[int | None, dict[str, Any]] = {}
        position = None
        for existing in rows:
            if cell_dir_of(run_root, existing) != here:
                out.append(existing)
                continue
            if existing["cell_id"] != row["cell_id"]:
                raise BenchforgeError(
                    f"{row['dir']}: this cell was planned with a different config "
                    f"(cell id {existing['cell_id']}, now {row['cell_id']}); "
                    "use another run.name or remove the cell dir"
                )
            position = len(out) if position is None else position
            mine[_window_index(existing)] = existing
        first_planned = next((r["planned_utc"] for r in mine.values()
                              if r.get("planned_utc")), None) or utc_now()
        fresh = []
        for index in wanted:
            window = {"window": by_index[index]} if index is not None else {}
            if index in mine:
                old = mine[index]
                fresh.append({**old, **row, **window, "planned_utc": old.get("planned_utc")})
            else:
                fresh.append({**row, **window, "planned_utc": first_planned})
        at = len(out) if position is None else position
        out[at:at] = fresh
        write_atomic(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in out))


def annotate_cell(run_root: Path, cell_dir: str, fields: dict[str, Any],
                  window: int | None = None) -> bool:
    """Merge operational fields (SLURM job, shard state) into an existing cell's row (the row
    of its window ``window`` for a cell with sample windows).

    A cell that has no row yet (its shard has not planned it) is left alone: the row is born
    with the cell's identity in ``upsert_cell``, never from a job's side note.

    Returns:
        Whether a row was found and updated.
    """
    path = manifest_path(run_root)
    if not path.exists():
        return False
    with _locked(path):
        rows = read_rows(path)
        wanted = Path(cell_dir).resolve()
        for row in rows:
            if cell_dir_of(run_root, row) == wanted and _window_index(row) == window:
                row.update(fields)
                break
        else:
            return False
        write_atomic(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
    return True
