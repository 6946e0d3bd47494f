"""Sandbox conformance suite: every sandbox mode available here runs all of it.

Each hostile sample either fails with the right ``failure_mode`` or is shown harmless to the
host. Protections that depend on the outer layer are checked in every mode that claims them
(``sandbox.guarantees``); a mode that does not claim one must say so, and CI requires the modes
in $BENCHFORGE_REQUIRE_SANDBOXES to be available, so none is skipped silently there.
"""

from __future__ import annotations

import contextlib
import os
import sys
import textwrap
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from benchforge.errors import BenchforgeError
from benchforge.sandbox import MODES, SandboxPool, conformance, make_sandbox, resolve_mode
from benchforge.sandbox.outer import mode_available

# The real apptainer modes join the suite where apptainer is installed and a scorer image is
# given (BENCHFORGE_SCORER_IMAGE=/path/scorer.sif); a fake checks their flags everywhere.
IMAGE = os.environ.get("BENCHFORGE_SCORER_IMAGE") or None
AVAILABLE = [m for m in MODES if mode_available(m, IMAGE if m.startswith("apptainer") else None)]


def test_required_modes_are_available() -> None:
    required = [m for m in os.environ.get("BENCHFORGE_REQUIRE_SANDBOXES", "rlimit-only")
                .split(",") if m]
    assert set(required) <= set(AVAILABLE), f"available here: {AVAILABLE}"


def test_auto_picks_the_strongest_available() -> None:
    if "bwrap" not in AVAILABLE and "userns" not in AVAILABLE:
        with pytest.raises(BenchforgeError, match="no mode that isolates the filesystem"):
            resolve_mode("auto")  # never rlimit-only silently (see test_sandbox_fs.py)
        return
    assert resolve_mode("auto") == ("bwrap" if "bwrap" in AVAILABLE else "userns")


@pytest.fixture(params=AVAILABLE)
def sandbox(request: pytest.FixtureRequest, base_cfg):
    cfg = OmegaConf.merge(base_cfg.sandbox, {"name": request.param, "image": IMAGE,
                                             **conformance.SUITE_LIMITS})
    with make_sandbox(cfg, workers=2) as pool:
        yield pool


CHECK = conformance.CHECK


def run(sandbox: SandboxPool, code: str, test: str | None = None, **kw: object):
    return conformance.run(sandbox, code, test, **kw)


@pytest.mark.parametrize("check", list(conformance.CHECKS))
def test_conformance(sandbox: SandboxPool, check: str) -> None:
    """The suite shipped in benchforge.sandbox.conformance (``benchforge sandbox-check``):
    guarantees, pass and fail, every failure mode, exits before the checks, tampering, fake
    verdicts, timeouts, fork bombs, stdout floods, the scrubbed environment, setsid escapees,
    no network, the filesystem outside the workdir, workers killed by their sample, and
    sample code never in benchforge's process."""
    conformance.CHECKS[check](sandbox)


def test_the_suite_catches_a_broken_sandbox() -> None:
    """A sandbox that believes every sample fails the suite, each check naming the problem."""
    from benchforge.sandbox.types import ExecResult

    class Credulous:
        mode = "bwrap"
        guarantees = frozenset(conformance.FULL)
        restarts = 0

        def __init__(self) -> None:
            self.info = {"pidns": True}

        def run(self, program, timeout_s=None, time_scale=1.0):
            return ExecResult(True, None, "", 0.0)

        def close(self) -> None:
            pass

    outcomes = conformance.run_suite(lambda: contextlib.nullcontext(Credulous()))
    failed = {o.check for o in outcomes if not o.passed}
    assert failed >= {"pass and fail", "failure modes", "tampering", "fake verdicts",
                      "timeouts", "fork bomb", "no network", "filesystem"}, outcomes
    assert all(o.problem for o in outcomes if not o.passed)


@pytest.mark.parametrize("mode", [m for m in ("bwrap", "rlimit-only") if m in AVAILABLE])
def test_the_cpu_limit_is_a_timeout(mode: str) -> None:
    """A sample that runs out of CPU seconds (sandbox.cpu_s) times out, also when it ignores
    SIGXCPU (the hard limit one second later), and says it was the CPU limit; a wall-clock
    timeout does not. With soft = hard the kernel sends SIGKILL at once: that read `killed`."""
    import time

    from benchforge.sandbox.types import CPU_LIMIT_DETAIL, CheckProgram, Limits

    limits = Limits(timeout_s=30.0, memory_mb=512, stack_mb=64, cpu_s=1, nofile=256, nproc=64,
                    fsize_mb=16, max_output_bytes=100_000)
    spin = "while True:\n    pass\n"
    deaf = "import signal\nsignal.signal(signal.SIGXCPU, signal.SIG_IGN)\n" + spin
    with SandboxPool(mode, limits, 1) as pool:
        for code in (spin, deaf):
            started = time.monotonic()
            result = pool.run(CheckProgram(code), timeout_s=30.0)
            assert result.failure_mode == "timeout", result
            assert result.detail.startswith(f"{CPU_LIMIT_DETAIL} of 1 s reached"), result
            assert time.monotonic() - started < 15
        sleeper = pool.run(CheckProgram("import time\ntime.sleep(60)\n"), timeout_s=1.0)
    assert sleeper.failure_mode == "timeout" and "wall clock" in sleeper.detail, sleeper


def test_failure_modes_are_one_vocabulary() -> None:
    """Every failure mode the stdlib-only worker writes is one of sandbox.types.FailureMode."""
    import ast

    from benchforge.sandbox.outer import WORKER
    from benchforge.sandbox.types import FAILURE_MODES

    written = set()
    for node in ast.walk(ast.parse(Path(WORKER).read_text())):
        if isinstance(node, ast.Return) and isinstance(node.value, ast.Tuple) and \
                node.value.elts and isinstance(node.value.elts[0], ast.Constant) and \
                isinstance(node.value.elts[0].value, str) and len(node.value.elts) == 2:
            written.add(node.value.elts[0].value)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and \
                node.func.id in ("fail", "report") and node.args and \
                isinstance(node.args[0], ast.Constant):
            written.add(node.args[0].value)
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "SIGNAL_MODES"
                                                for t in node.targets):
            written |= {v.value for v in node.value.values}  # type: ignore[attr-defined]
    written.discard("passed")
    assert written and written <= FAILURE_MODES, written - FAILURE_MODES


@pytest.mark.slow
def test_sandbox_check_command(tmp_path: Path) -> None:
    """``benchforge sandbox-check sandbox=rlimit-only``: the suite on this host, as a table;
    an unknown mode is one line, exit 2."""
    from _support import run_cli

    proc = run_cli("sandbox-check", "sandbox=rlimit-only", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "sandbox=rlimit-only conformance" in proc.stdout
    assert proc.stdout.count("pass") >= len(conformance.CHECKS)
    assert (proc.stdout + proc.stderr).count("this is not a sandbox") == 1  # once, not per check
    bad = run_cli("sandbox-check", "sandbox=nosuchmode", cwd=tmp_path)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1, bad.stderr


def test_fake_apptainer_gets_the_isolating_flags(tmp_path: Path, base_cfg,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """`apptainer` is not installable here: a stand-in checks its flags and runs the worker."""
    from benchforge.sandbox import outer

    image = tmp_path / "scorer.sif"
    image.write_bytes(b"not really a SIF")
    log = tmp_path / "argv.log"
    fake = tmp_path / "bin" / "apptainer"
    fake.parent.mkdir()
    fake.write_text(textwrap.dedent(f"""\
        #!{sys.executable}
        import os, sys
        argv = sys.argv[1:]
        open({str(log)!r}, "a").write(" ".join(argv) + "\\n")
        assert argv[0] == "exec", argv
        for flag in ("--containall", "--no-home", "--cleanenv", "--net"):
            assert flag in argv, flag
        assert argv[argv.index("--network") + 1] == "none"
        bind = argv[argv.index("--bind") + 1]
        src, dst, ro = bind.split(":")
        assert ro == "ro" and dst == {outer.CONTAINER_WORKER_DIR!r}
        image = argv.index({str(image)!r})
        cmd = argv[image + 1:]
        if cmd == ["true"]:
            sys.exit(0)
        assert cmd[:3] == ["python3", "-I", "-B"], cmd
        cmd[3] = cmd[3].replace(dst, src)
        os.execv({sys.executable!r}, [{sys.executable!r}, *cmd[1:]])
        """))
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:{os.environ['PATH']}")
    outer.mode_problem.cache_clear()
    try:
        for mode, userns in (("apptainer", True), ("apptainer-setuid", False)):
            cfg = OmegaConf.merge(base_cfg.sandbox, {"name": mode, "image": str(image)})
            with make_sandbox(cfg, workers=1) as pool:
                assert pool.mode == mode
                assert run(pool, "def f(x):\n    return x + 1\n", CHECK, entry_point="f",
                           check="check").passed
                assert not run(pool, "assert False\n").passed
            last = log.read_text().splitlines()[-1]
            assert ("--userns" in last.split()) == userns
            assert str(image) in last
    finally:
        outer.mode_problem.cache_clear()


def test_bwrap_binds_the_interpreter_over_tmp() -> None:
    """A venv under /tmp (as in CI) must stay visible: the tmpfs goes first, binds after."""
    from benchforge.sandbox.outer import bwrap_argv, python_paths

    argv = bwrap_argv()
    tmpfs = argv.index("--tmpfs")
    assert argv[tmpfs + 1] == "/tmp"
    for path in python_paths():
        if not str(path).startswith("/usr/"):
            binds = [i for i, a in enumerate(argv) if a == "--ro-bind"
                     and (argv[i + 1] == str(path) or str(path).startswith(argv[i + 1] + "/"))
                     and argv[i + 1] != "/usr"]
            assert binds and all(i > tmpfs for i in binds), path


def test_failing_values_are_shown_without_running_sample_code() -> None:
    """`inspect` shows a wrong answer's actual value; printing it must not call a __repr__
    the sample defined (it could hang or lie), and must stay short."""
    import importlib.util

    from benchforge.sandbox.outer import WORKER

    spec = importlib.util.spec_from_file_location("benchforge_worker_copy", WORKER)
    worker = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(worker)  # type: ignore[union-attr]

    class Sneaky(list):
        def __repr__(self) -> str:
            raise AssertionError("sample code ran")

    assert worker.bounded_repr([1, "a", {"k": (2.5, None)}, Sneaky([1])]) == \
        "[1, 'a', {'k': (2.5, None)}, <Sneaky object>]"
    assert len(worker.bounded_repr(list(range(100_000)))) < 400
    long_text = worker.bounded_repr("x" * 10_000)
    assert len(long_text) < 500 and "..." in long_text
    assert worker.bounded_repr(10 ** 5000) == "<int>"  # too long for repr: named, no error
