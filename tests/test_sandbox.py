"""Sandbox conformance suite: every sandbox mode must give these verdicts.

Add a mode to ``SANDBOXES`` and it runs the whole suite; a mode that cannot run on this host
must fail here rather than be skipped silently.
"""

from __future__ import annotations

import os
import textwrap
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from benchforge.sandbox import Sandbox, make_sandbox

SANDBOXES = ["rlimit"]


@pytest.fixture(params=SANDBOXES)
def sandbox(request: pytest.FixtureRequest, base_cfg) -> Sandbox:
    cfg = OmegaConf.merge(base_cfg.sandbox, {"name": request.param, "timeout_s": 3.0,
                                             "memory_mb": 512, "fsize_mb": 1})
    return make_sandbox(cfg)


def run(sandbox: Sandbox, program: str):
    return sandbox.run(textwrap.dedent(program))


def test_passing_program(sandbox: Sandbox) -> None:
    result = run(sandbox, "def f(x):\n    return x + 1\nassert f(1) == 2\n")
    assert result.passed and result.failure_mode is None


@pytest.mark.parametrize("program,mode", [
    ("assert 1 == 2\n", "assertion"),
    ("def f(:\n", "syntax_error"),
    ("x = 'a\\0b'\nraise ValueError('boom')\n", "runtime_error"),
    ("import sys\nsys.exit(0)\nassert False\n", "early_exit"),
    ("raise SystemExit\n", "early_exit"),
    ("import os\nos._exit(0)\n", "early_exit"),
    ("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n", "killed"),
    ("x = bytearray(2 * 1024 ** 3)\n", "memory"),
])
def test_failure_modes(sandbox: Sandbox, program: str, mode: str) -> None:
    result = run(sandbox, program)
    assert not result.passed
    assert result.failure_mode == mode, result.detail


def test_wall_clock_timeout_kills(sandbox: Sandbox) -> None:
    started = time.monotonic()
    result = run(sandbox, "import time\nwhile True:\n    time.sleep(0.01)\n")
    assert not result.passed and result.failure_mode == "timeout"
    assert time.monotonic() - started < 3.0 + 2.0


def test_output_flood_is_capped(sandbox: Sandbox) -> None:
    result = run(sandbox, "while True:\n    print('x' * 10000)\n")
    assert not result.passed
    assert result.failure_mode in ("output_limit", "timeout")


def test_environment_is_scrubbed(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    monkeypatch.setenv("https_proxy", "http://proxy:3128")
    result = run(sandbox, """
        import os, sys
        assert "HF_TOKEN" not in os.environ, "token leaked"
        assert not any("proxy" in k.lower() for k in os.environ), "proxy leaked"
        assert os.environ["HOME"] == os.getcwd(), "HOME is not the sample's temp dir"
        assert sys.stdin is None or sys.stdin.closed
        """)
    assert result.passed, result.detail


def test_workdir_is_fresh_and_removed(sandbox: Sandbox, tmp_path: Path) -> None:
    record = tmp_path / "cwd.txt"
    program = f"""
        import os
        assert os.listdir('.') == ['program.py'] or sorted(os.listdir('.')) == ['.output',
               'program.py'], os.listdir('.')
        open({str(record)!r}, 'w').write(os.getcwd())
        open('leftover', 'w').write('x')
        """
    assert run(sandbox, program).passed
    workdir = Path(record.read_text())
    assert workdir != Path.cwd() and not workdir.exists()
    assert run(sandbox, program).passed  # the second sample sees none of the first's files


def test_background_children_are_killed(sandbox: Sandbox, tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    result = run(sandbox, f"""
        import subprocess
        child = subprocess.Popen(["sleep", "60"])
        open({str(pid_file)!r}, "w").write(str(child.pid))
        """)
    assert result.passed, result.detail
    pid = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        # A killed child of an exited parent is reaped by init; wait briefly for that.
        time.sleep(0.05)
    else:
        pytest.fail(f"background child {pid} survived the sample")


def test_sample_code_never_runs_in_the_parent(sandbox: Sandbox, tmp_path: Path) -> None:
    marker = tmp_path / "pid"
    assert run(sandbox, f"import os\nopen({str(marker)!r}, 'w').write(str(os.getpid()))\n").passed
    assert int(marker.read_text()) != os.getpid()
