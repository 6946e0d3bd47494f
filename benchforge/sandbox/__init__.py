"""Running untrusted sample code: two layers, one interface.

Outer layer (``sandbox.name``): ``bwrap``, ``apptainer``, ``apptainer-setuid``, ``userns`` or
``rlimit-only``; ``auto`` picks the strongest that works on this host. Inner layer, in every
mode: a fresh process per sample with its own session, temp dir, scrubbed environment,
rlimits, an unprivileged uid when running as root, and a hard wall-clock kill (see _worker.py).

    with make_sandbox(cfg.sandbox, workers=4) as sandbox:
        result = sandbox.run(CheckProgram(code, test, entry_point="f", check="check"))
"""

from __future__ import annotations

import logging

from omegaconf import DictConfig

from benchforge.errors import BenchforgeError
from benchforge.sandbox.outer import MODE_TABLE, MODES, detect_mode, mode_problem, sandbox_mode
from benchforge.sandbox.pool import SandboxPool
from benchforge.sandbox.types import (
    FAILURE_MODES,
    CheckProgram,
    ExecResult,
    FailureMode,
    Limits,
    Sandbox,
)

__all__ = ["FAILURE_MODES", "MODES", "MODE_TABLE", "CheckProgram", "ExecResult", "FailureMode",
           "Limits", "Sandbox", "SandboxPool", "make_sandbox", "resolve_mode"]

log = logging.getLogger("benchforge")

RLIMIT_ONLY_WARNING = (
    "sandbox=rlimit-only: samples run with rlimits in a separate process but WITHOUT an outer "
    "isolation layer — this is not a sandbox. Use sandbox=bwrap (apt install bubblewrap) or "
    "sandbox=apptainer on machines that hold credentials or data worth protecting.")


def resolve_mode(name: str, image: str | None = None) -> str:
    """``auto`` -> the strongest available mode that isolates the filesystem (else a one-line
    BenchforgeError naming every mode tried); an explicit mode must work on this host."""
    if name == "auto":
        mode = detect_mode(image)
        log.info("sandbox=auto: using %s on this host", mode)
        return mode
    mode = sandbox_mode(name)
    problem = mode_problem(name, image)
    if problem is not None:
        raise BenchforgeError(f"sandbox={name} does not work on this host ({problem}): "
                              f"{mode.hint}; or use sandbox=auto")
    return name


def make_sandbox(cfg: DictConfig, workers: int = 1,
                 read_only: tuple[str, ...] = (), warn: bool = True) -> SandboxPool:
    """The sandbox the ``sandbox`` config group selects, with ``workers`` parallel workers;
    ``read_only`` dirs (benchmark fixtures) stay readable inside it. ``warn=False`` leaves
    out :data:`RLIMIT_ONLY_WARNING` (a caller that already gave it)."""
    image = str(cfg.image) if cfg.get("image") else None
    mode = resolve_mode(str(cfg.name), image)
    if warn and not MODE_TABLE[mode].isolates_files:
        log.warning(RLIMIT_ONLY_WARNING)
    return SandboxPool(mode, Limits.from_config(cfg), workers, image, read_only)
