"""Tamper-evident markers: rows are trusted only while they still match the marker over them.

``generate.done`` holds the sha256 of ``samples.jsonl`` and ``score.done`` that of
``results.jsonl`` (and of the samples it scored). A rerun checks them before building on the
rows; rows that no longer match are never re-signed: the stage refuses, pointing at
``benchforge verify`` and at the repair (``benchforge repair``, or ``score.force=true`` when
only verdicts changed). ``repair`` archives what no longer matches under
``logs/repair-<time>/`` (nothing is deleted) and re-derives it: rescoring, or regenerating the
samples when they were edited.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from benchforge.cellwindows import repair_parts
from benchforge.errors import BenchforgeError
from benchforge.rundir import CellDir, read_json, read_rows, sha256_file

log = logging.getLogger("benchforge")


class MarkerMismatch(BenchforgeError):
    """Rows on disk differ from what their marker was written over."""


def _marker(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    data = read_json(path)
    return data if isinstance(data, dict) else {}


def samples_mismatch(cell: CellDir) -> str | None:
    """Why ``samples.jsonl`` no longer matches ``generate.done`` (None: it matches or no marker)."""
    info = _marker(cell.generate_done)
    if info is None or "samples_sha256" not in info:
        return None
    if not cell.samples.exists():
        return f"{cell.samples}: missing although generate.done is present"
    if sha256_file(cell.samples) != info["samples_sha256"]:
        return f"{cell.samples}: changed after generate.done was written"
    return None


def results_mismatch(cell: CellDir) -> str | None:
    """Why ``results.jsonl`` (or the samples it scored) no longer matches ``score.done``."""
    info = _marker(cell.score_done)
    if info is None:
        return None
    if not cell.results.exists():
        return f"{cell.results}: missing although score.done is present"
    if "results_sha256" in info and sha256_file(cell.results) != info["results_sha256"]:
        return f"{cell.results}: changed after score.done was written"
    if (info.get("samples_sha256") and cell.samples.exists()
            and sha256_file(cell.samples) != info["samples_sha256"]):
        return f"{cell.samples}: changed after score.done was written over its verdicts"
    return None


def _refuse(problem: str, repair: str) -> MarkerMismatch:
    return MarkerMismatch(f"{problem}; its rows are not trusted or re-signed. Run `benchforge "
                          f"verify` to see what changed, then {repair}")


def require_samples_intact(cell: CellDir) -> None:
    """Raises MarkerMismatch when the samples no longer match ``generate.done``."""
    problem = samples_mismatch(cell)
    if problem:
        read_rows(cell.samples)  # a corrupt line is named first (file:line)
        raise _refuse(problem, "`benchforge repair` with this cell's overrides (archives them "
                               "and generates them again)")


def require_results_intact(cell: CellDir) -> None:
    """Raises MarkerMismatch when the verdicts no longer match ``score.done``."""
    require_samples_intact(cell)
    problem = results_mismatch(cell)
    if problem:
        read_rows(cell.results)
        raise _refuse(problem, "rescore with score.force=true or `benchforge repair` (the "
                               "edited file is kept under logs/)")


def archive(cell: CellDir, names: list[str], stamp: str) -> Path:
    """Move the named cell files to ``logs/repair-<stamp>/`` (kept, never deleted)."""
    target = cell.logs / f"repair-{stamp}"
    target.mkdir(parents=True, exist_ok=True)
    for name in names:
        source = cell.path / name
        if source.exists():
            os.replace(source, target / name)
    return target


def repair_plan(cell: CellDir) -> tuple[list[str], list[str]]:
    """(problems found, cell files to archive so that a rerun re-derives them)."""
    problems, move = repair_parts(cell)  # a cell with sample windows: its parts first
    derived = ["score.done", "metrics.json"]
    if problem := samples_mismatch(cell):
        problems.append(problem)
        move += ["samples.jsonl", "generate.done", "results.jsonl", *derived]
    elif problem := results_mismatch(cell):
        problems.append(problem)
        move += ["results.jsonl", *derived]
    elif cell.score_done.exists() and not cell.generate_done.exists():
        problems.append(f"{cell.score_done}: present without generate.done")
        move += ["results.jsonl", *derived]
    elif cell.metrics.exists():
        stored = read_json(cell.metrics)
        if not cell.score_done.exists() or (
                cell.results.exists()
                and stored.get("results_sha256") != sha256_file(cell.results)):
            problems.append(f"{cell.metrics}: computed from other results")
            move.append("metrics.json")
    return problems, move
