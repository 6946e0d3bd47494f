"""``manifest.jsonl``: one row per cell of a run, the single source of truth for its cells.

Every stage that touches a cell upserts its row under an exclusive file lock, so parallel sweep
jobs (local or SLURM array tasks on a shared filesystem) can register cells concurrently.
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


def read_manifest(run_root: Path) -> list[dict[str, Any]]:
    """The run's cell rows, each ``dir`` resolved under ``run_root`` (absolute; the stored,
    relative value is kept as ``dir_recorded``)."""
    path = manifest_path(run_root)
    if not path.exists():
        raise BenchforgeError(
            f"{path}: no manifest; run `benchforge plan` (or `benchforge run`) for this run.name"
        )
    return [{**row, "dir_recorded": row["dir"], "dir": str(cell_dir_of(run_root, row))}
            for row in read_rows(path)]


def upsert_cell(run_root: Path, row: dict[str, Any]) -> None:
    """Insert or refresh the row of one cell, keyed by its directory.

    A different cell id at the same directory means the config changed under an existing
    cell; mixing its rows would give a wrong score, so that is refused.
    """
    path = manifest_path(run_root)
    with _locked(path):
        rows = read_rows(path) if path.exists() else []
        here = cell_dir_of(run_root, row)
        for i, existing in enumerate(rows):
            if cell_dir_of(run_root, existing) != here:
                continue
            if existing["cell_id"] != row["cell_id"]:
                raise BenchforgeError(
                    f"{row['dir']}: this cell was planned with a different config "
                    f"(cell id {existing['cell_id']}, now {row['cell_id']}); "
                    "use another run.name or remove the cell dir"
                )
            rows[i] = {**existing, **row, "planned_utc": existing.get("planned_utc")}
            break
        else:
            rows.append({**row, "planned_utc": utc_now()})
        write_atomic(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))


def annotate_cell(run_root: Path, cell_dir: str, fields: dict[str, Any]) -> bool:
    """Merge operational fields (SLURM job, shard state) into an existing cell's row.

    A cell that has no row yet (its shard has not planned it) is left alone: the row is born
    with the cell's identity in ``upsert_cell``, never from a job's side note.
    """
    path = manifest_path(run_root)
    if not path.exists():
        return False
    with _locked(path):
        rows = read_rows(path)
        wanted = Path(cell_dir).resolve()
        for row in rows:
            if cell_dir_of(run_root, row) == wanted:
                row.update(fields)
                break
        else:
            return False
        write_atomic(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
    return True
