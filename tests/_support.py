"""Helpers the test modules import (``from _support import ...``; tests/ is on sys.path).

Not named tests.*: a dependency installs a top-level ``tests`` package into site-packages.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("BENCHFORGE_SHARED", REPO.parent / "shared"))


def run_cli(*args: str, cwd: Path, timeout: float = 300, env: dict[str, str] | None = None
            ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "benchforge", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})
