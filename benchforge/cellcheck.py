"""What ``status`` and ``verify`` find in one cell, read-only and never stopping at a bad file.

Every problem of a cell (a corrupt line, a file that is not valid JSON, duplicates, a marker
whose hash no longer matches, stale metrics) becomes words in that cell's row; the other cells
of the run are still read. Nothing here writes, so both commands work on a full disk.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any

from benchforge.celllock import held_locks
from benchforge.cellwindows import read_windows, row_files, window_problems, window_progress
from benchforge.errors import BenchforgeError
from benchforge.integrity import results_mismatch, samples_mismatch
from benchforge.metrics import compute_metrics
from benchforge.provenance import sandbox_mismatch
from benchforge.rundir import (
    CellDir,
    RowKey,
    first_rows_by_key,
    read_json,
    read_rows,
    row_key,
    sha256_file,
)

log = logging.getLogger("benchforge")


def _short(text: str, cell: CellDir) -> str:
    return str(text).replace(f"{cell.path}/", "")


def rows_state(path: Path) -> dict[str, Any]:
    """``{"rows": distinct keys, "total": lines, "error": text or None}`` of a JSONL file."""
    try:
        rows = read_rows(path)
    except (BenchforgeError, OSError, KeyError, ValueError) as exc:
        return {"rows": None, "total": None, "error": str(exc), "keyed": None}
    try:
        keyed = first_rows_by_key(rows)
    except (KeyError, ValueError, TypeError) as exc:
        return {"rows": None, "total": len(rows), "error": f"{path}: row without a key ({exc})",
                "keyed": None}
    return {"rows": len(keyed), "total": len(rows), "error": None, "keyed": keyed}


def _json(path: Path, problems: list[str]) -> dict[str, Any] | None:
    if not path.exists():
        return None
    try:
        data = read_json(path)
    except (BenchforgeError, OSError, UnicodeDecodeError) as exc:
        problems.append(str(exc) if isinstance(exc, BenchforgeError) else f"{path}: {exc}")
        return None
    if not isinstance(data, dict):
        problems.append(f"{path}: not a JSON object")
        return None
    return data


def fresh_pass_at_1(cdir: CellDir, cfg_aggregate: Any) -> dict[str, Any] | None:
    """pass@1 recomputed from the cell's rows; None when they cannot give one (the status row then
    says why)."""
    try:
        return compute_metrics(cdir, cfg_aggregate).get("pass@1")
    except (BenchforgeError, OSError, KeyError, ValueError):
        return None


def cell_status(cell: dict[str, Any], cfg_aggregate: Any) -> dict[str, Any]:
    """The status row of a manifest cell: progress, markers, pass@1 (recomputed when
    ``metrics.json`` is stale), duplicates, corrupt files and held locks, in words."""

    cdir = CellDir(Path(cell["dir"]))
    expected = int(cell["n_tasks"]) * int(cell["n_samples"])
    notes: list[str] = []
    status: dict[str, Any] = {
        "cell_id": cell["cell_id"], "model": cell["model"], "benchmark": cell["benchmark"],
        "dir": str(cdir.path), "expected": expected, "generated": None, "scored": None,
        "generate_done": cdir.generate_done.exists(), "score_done": cdir.score_done.exists(),
        "pass@1": None, "serving": None, "metrics": None, "notes": notes, "model_info": {},
    }
    if not cdir.path.is_dir():
        notes.append("cell dir missing")
        return status
    for name, kind in (("generated", "samples"), ("scored", "results")):
        counts: list[int | None] = []
        for path in row_files(cdir, kind):  # the cell's file, or its window parts until then
            state = rows_state(path)
            counts.append(state["rows"])
            if state["error"]:
                notes.append(f"{path.name} corrupt: {_short(state['error'], cdir)}")
            elif state["total"] and state["total"] > state["rows"]:
                notes.append(f"{path.name}: {state['total'] - state['rows']} duplicate row(s)")
        status[name] = None if None in counts else sum(c or 0 for c in counts)
    try:
        windows = read_windows(cdir)
    except BenchforgeError as exc:
        windows = None
        notes.append(str(exc))
    if windows:
        status["windows"] = window_progress(cdir, windows)
    provenance = _json(cdir.provenance, notes)
    if provenance:
        status["model_info"] = provenance.get("model", {})
    metrics = _json(cdir.metrics, notes)
    if metrics:
        status["pass@1"] = metrics.get("pass@1")
        status["serving"] = metrics.get("serving")
        status["gpu"] = (metrics.get("cost") or {}).get("gpu")
        status["metrics"] = "current"
        try:
            current = sha256_file(cdir.results) if cdir.results.exists() else None
        except OSError:
            current = None
        if metrics.get("results_sha256") != current:
            fresh = fresh_pass_at_1(cdir, cfg_aggregate)
            status["metrics"] = "stale"
            if fresh is not None:
                status["pass@1"] = fresh
                notes.append("metrics.json stale: pass@1 recomputed from results.jsonl")
            else:
                status["pass@1"] = None
                notes.append("metrics.json stale (results.jsonl changed); rerun aggregate")
    for problem in [*marker_problems(cdir), *window_problems(cdir)]:
        notes.append(_short(problem, cdir))
    for holder in held_locks(cdir.path):
        notes.append(f"{holder.get('stage')} running: pid {holder.get('pid')} on "
                     f"{holder.get('host')}")
    notes[:] = [_short(note, cdir) for note in notes]
    return status


def marker_problems(cdir: CellDir) -> list[str]:
    """Markers whose hashes no longer match their rows, and markers out of order."""

    problems: list[str] = []
    for check in (samples_mismatch, results_mismatch):
        try:
            found = check(cdir)
        except (BenchforgeError, OSError) as exc:
            found = str(exc)
        if found:
            problems.append(found)
    if cdir.score_done.exists() and not cdir.generate_done.exists():
        problems.append(f"{cdir.score_done}: present without generate.done (the samples it "
                        "scored are not known to be complete)")
    return problems


def verify_cell(cell: dict[str, Any], cfg_aggregate: Any) -> list[str]:
    """Every inconsistency between a cell's markers, rows, hashes, config and metrics."""
    cdir = CellDir(Path(cell["dir"]))
    where = str(cdir.path)
    if not cdir.path.is_dir():
        return [f"{where}: cell dir missing"]
    problems: list[str] = []
    try:
        _verify(cdir, cell, cfg_aggregate, problems)
    except (BenchforgeError, OSError, ValueError, KeyError, TypeError) as exc:
        problems.append(f"{where}: could not be checked to the end ({exc})")
    return problems


def _verify(cdir: CellDir, cell: dict[str, Any], cfg_aggregate: Any,
            problems: list[str]) -> None:
    expected = int(cell["n_tasks"]) * int(cell["n_samples"])

    def rows_of(path: Path) -> dict[RowKey, dict[str, Any]] | None:
        try:
            rows = read_rows(path)
        except BenchforgeError as exc:
            problems.append(str(exc))
            return None
        keyed = first_rows_by_key(rows)
        if len(keyed) != len(rows):
            dup = Counter(row_key(r) for r in rows).most_common(1)[0][0]
            problems.append(f"{path}: {len(rows) - len(keyed)} duplicate row(s), e.g. {dup}")
        return keyed

    def check_marker(marker: Path, data: Path, sha_key: str, rows: int | None,
                     want: int) -> None:
        info = _json(marker, problems)
        if info is None:
            return
        if rows is not None and rows != want:
            problems.append(f"{marker}: present but {data.name} has {rows} of {want} rows")
        if not data.exists():
            problems.append(f"{marker}: present but {data.name} is missing")
        elif info.get(sha_key) != sha256_file(data):
            problems.append(f"{marker}: {data.name} changed after the marker was written")

    samples = rows_of(cdir.samples)
    check_marker(cdir.generate_done, cdir.samples, "samples_sha256",
                 None if samples is None else len(samples), expected)
    results = rows_of(cdir.results)
    if results is not None and samples is not None and set(results) - set(samples):
        problems.append(f"{cdir.results}: verdicts for samples that do not exist")
    check_marker(cdir.score_done, cdir.results, "results_sha256",
                 None if results is None else len(results),
                 len(samples) if samples is not None else expected)
    score_done = _json(cdir.score_done, []) if cdir.score_done.exists() else None
    if (score_done and score_done.get("samples_sha256") and cdir.samples.exists()
            and score_done["samples_sha256"] != sha256_file(cdir.samples)):
        problems.append(f"{cdir.score_done}: samples.jsonl changed after its verdicts were "
                        "written")
    if cdir.score_done.exists() and not cdir.generate_done.exists():
        problems.append(f"{cdir.score_done}: present without generate.done")
    problems.extend(window_problems(cdir))
    provenance = _json(cdir.provenance, problems)
    if provenance is not None:
        dataset = provenance.get("dataset", {})
        path = Path(dataset.get("path", ""))
        if path.is_file() and sha256_file(path) != dataset.get("sha256"):
            problems.append(f"{path}: dataset file differs from the sha256 in provenance.json")
        recorded = provenance.get("config_sha256")
        if recorded and cdir.config.exists() and sha256_file(cdir.config) != recorded:
            problems.append(f"{cdir.config}: changed after the cell was planned (sha256 differs "
                            "from provenance.json config_sha256)")
        if results is not None and (mismatch := sandbox_mismatch(results.values(), provenance)):
            problems.append(f"{cdir.provenance}: {mismatch}")
        if results and "filesystem" not in (provenance.get("sandbox_guarantees") or []):
            log.warning("verify: %s was scored without filesystem isolation (sandbox_mode=%s, "
                        "guarantees: %s)", cdir.path, provenance.get("sandbox_mode"),
                        ", ".join(provenance.get("sandbox_guarantees") or []) or "none")
        if provenance.get("cell_id") not in (None, cell.get("cell_id")):
            problems.append(f"{cdir.provenance}: cell id {provenance.get('cell_id')} is not the "
                            f"manifest's {cell.get('cell_id')}")
    elif not cdir.provenance.exists():
        problems.append(f"{cdir.provenance}: missing")
    if cdir.config.exists() is False:
        problems.append(f"{cdir.config}: missing")
    stored = _json(cdir.metrics, problems)
    if stored is not None:
        if not cdir.score_done.exists():
            problems.append(f"{cdir.metrics}: present without score.done")
        elif not cdir.results.exists() or stored.get("results_sha256") != sha256_file(
                cdir.results):
            problems.append(f"{cdir.metrics}: computed from other results; rerun aggregate")
        elif provenance is not None and results is not None:
            fresh = compute_metrics(cdir, cfg_aggregate)
            if fresh["pass@1"]["value"] != stored.get("pass@1", {}).get("value"):
                problems.append(f"{cdir.metrics}: pass@1 differs from results.jsonl")
