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

# A registry-style model served by the engine (tests/test_engine.py, test_stage.py).
QWEN = {"model.name": "qwen-coder-7b", "model.provider": "hf",
        "model.hf_repo": "Qwen/Qwen2.5-Coder-7B-Instruct", "model.served_name": "qwen-coder",
        "model.revision": "0123abcd", "model.seed": 7, "model.concurrency": None}
