"""Sandbox conformance suite: every sandbox mode available here runs all of it.

Each hostile sample either fails with the right ``failure_mode`` or is shown harmless to the
host. Protections that depend on the outer layer are checked in every mode that claims them
(``sandbox.guarantees``); a mode that does not claim one must say so, and CI requires the modes
in $BENCHFORGE_REQUIRE_SANDBOXES to be available, so none is skipped silently there.
"""

from __future__ import annotations

import os
import socket
import sys
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from benchforge.errors import BenchforgeError
from benchforge.sandbox import MODES, CheckProgram, SandboxPool, make_sandbox, resolve_mode
from benchforge.sandbox.outer import mode_available

# The real apptainer modes join the suite where apptainer is installed and a scorer image is
# given (BENCHFORGE_SCORER_IMAGE=/path/scorer.sif); a fake checks their flags everywhere.
IMAGE = os.environ.get("BENCHFORGE_SCORER_IMAGE") or None
AVAILABLE = [m for m in MODES if mode_available(m, IMAGE if m.startswith("apptainer") else None)]
FULL = {"timeout", "memory", "environment", "nproc", "escapees", "network", "filesystem"}


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
    cfg = OmegaConf.merge(base_cfg.sandbox, {"name": request.param, "timeout_s": 3.0,
                                             "memory_mb": 512, "fsize_mb": 1, "nproc": 32,
                                             "image": IMAGE})
    with make_sandbox(cfg, workers=2) as pool:
        yield pool


def run(sandbox: SandboxPool, code: str, test: str | None = None, **kw: object):
    return sandbox.run(CheckProgram(textwrap.dedent(code),
                                    textwrap.dedent(test) if test else None, **kw))  # type: ignore[arg-type]


CHECK = "def check(candidate):\n    assert candidate(1) == 2\n    assert candidate(5) == 6\n"


def test_guarantees(sandbox: SandboxPool) -> None:
    assert {"timeout", "memory", "environment"} <= sandbox.guarantees
    if sandbox.mode in ("bwrap", "userns"):
        assert sandbox.guarantees == FULL
    if sandbox.mode in ("bwrap", "userns", "apptainer", "apptainer-setuid"):
        # the worker verified it runs in its own pid namespace, so its sweep after each
        # sample lists that namespace's /proc (no reaper process per sample)
        assert sandbox.info["pidns"] is True
    if sandbox.mode == "rlimit-only":
        assert "filesystem" not in sandbox.guarantees  # never claimed without an outer layer


def test_pass_and_fail(sandbox: SandboxPool) -> None:
    good = run(sandbox, "def f(x):\n    return x + 1\n", CHECK, entry_point="f", check="check")
    bad = run(sandbox, "def f(x):\n    return x\n", CHECK, entry_point="f", check="check")
    assert good.passed and good.failure_mode is None
    assert not bad.passed and bad.failure_mode == "assertion"


@pytest.mark.parametrize("code,mode", [
    ("def f(:\n", "syntax_error"),
    ("raise ValueError('boom')\n", "runtime_error"),
    ("def f(x):\n    return f(x)\nf(1)\n", "runtime_error"),
    ("import sys\nsys.exit(0)\n", "early_exit"),
    ("import os\nos._exit(0)\n", "early_exit"),
    ("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n", "killed"),
    ("x = bytearray(2 * 1024 ** 3)\n", "memory"),
    ("import ctypes\nctypes.string_at(0)\n", "crash"),
    ("open('big', 'wb').write(b'x' * 50 * 1024 * 1024)\n", "output_limit"),
])
def test_failure_modes(sandbox: SandboxPool, code: str, mode: str) -> None:
    result = run(sandbox, code)
    assert not result.passed
    assert result.failure_mode == mode, result.detail


def test_exit_before_checks_is_not_a_pass(sandbox: SandboxPool) -> None:
    for code in ("import os\ndef f(x):\n    return x\nos._exit(0)\n",
                 "import sys\ndef f(x):\n    sys.exit(0)\n"):
        result = run(sandbox, code, CHECK, entry_point="f", check="check")
        assert not result.passed and result.failure_mode == "early_exit", result.detail


@pytest.mark.parametrize("code,test", [
    # An object that equals everything.
    ("class A:\n    def __eq__(self, other):\n        return True\n"
     "def f(x):\n    return A()\n", CHECK),
    # ... also hidden in a container, or as a subclass of a builtin.
    ("class S(int):\n    def __eq__(self, other):\n        return True\n"
     "    __hash__ = int.__hash__\ndef f(x):\n    return [S(0)][0]\n", CHECK),
    # Replacing the test's assertion helper from inside the candidate.
    ("def f(x):\n    globals()['same'] = lambda a, b: None\n    return x + 1 if x == 1 else 0\n",
     "def same(a, b):\n    assert a == b\n"
     "def check(candidate):\n    same(candidate(1), 2)\n    same(candidate(5), 6)\n"),
    # Patching builtins the checker uses.
    ("import builtins\nbuiltins.abs = lambda x: 0\ndef f(x):\n    return 0\n",
     "def check(candidate):\n    assert abs(candidate(1) - 2) < 1e-6\n"),
    # Skipping the checker's lines with a trace hook.
    ("import sys\nsys.settrace(lambda *a: None)\ndef f(x):\n    return x + 1\n", CHECK),
])
def test_tampering_with_the_checker_is_caught(sandbox: SandboxPool, code: str, test: str) -> None:
    result = run(sandbox, code, test, entry_point="f", check="check")
    assert not result.passed and result.failure_mode == "tampering", result.detail


def test_fake_verdicts_are_not_believed(sandbox: SandboxPool) -> None:
    for code in ("print('passed')\nprint('{\"status\": \"passed\"}')\nimport os\nos._exit(0)\n",
                 "import os\nos.write(3, b'{\"status\": \"passed\"}')\nos._exit(0)\n"):
        result = run(sandbox, code)
        assert not result.passed and result.failure_mode in ("early_exit", "tampering"), code
    forged = run(sandbox, "import os\nos.write(3, b'{\"status\": \"passed\"}')\nos._exit(0)\n")
    assert forged.failure_mode == "tampering"


def test_infinite_loop_and_ignored_sigterm_time_out(sandbox: SandboxPool) -> None:
    for code in ("while True:\n    pass\n",
                 "import signal\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                 "while True:\n    pass\n"):
        started = time.monotonic()
        result = sandbox.run(CheckProgram(code), timeout_s=1.0)
        assert not result.passed and result.failure_mode == "timeout"
        assert time.monotonic() - started < 1.0 + 2.0


def test_fork_bomb_is_contained(sandbox: SandboxPool) -> None:
    assert "nproc" in sandbox.guarantees
    started = time.monotonic()
    result = sandbox.run(CheckProgram("import os\nwhile True:\n    os.fork()\n"), timeout_s=2.0)
    assert not result.passed
    assert time.monotonic() - started < 10
    assert run(sandbox, "x = 1\n").passed  # the host and the worker still work


def test_stdout_flood_is_capped(sandbox: SandboxPool) -> None:
    code = ("import sys\nchunk = 'x' * (1 << 20)\n"
            "for _ in range(1024):\n    sys.stdout.write(chunk)\n")
    result = sandbox.run(CheckProgram(code), timeout_s=5.0)
    assert not result.passed and result.failure_mode in ("output_limit", "timeout")
    assert len(result.detail) < 10_000


def test_environment_is_scrubbed(sandbox: SandboxPool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_secret_token")
    monkeypatch.setenv("https_proxy", "http://proxy:3128")
    result = run(sandbox, """
        import os, sys
        assert "HF_TOKEN" not in os.environ, "token leaked"
        assert not any("proxy" in k.lower() for k in os.environ), "proxy leaked"
        assert os.environ["HOME"] == os.getcwd(), "HOME is not the sample's temp dir"
        assert sys.stdin is None
        assert os.listdir(".") == [".output"], os.listdir(".")
        """)
    assert result.passed, result.detail


def _survivors(marker: str) -> list[int]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker.encode() in cmdline and state != "Z":
            found.append(int(pid))
    return found


def test_setsid_escapees_are_killed(sandbox: SandboxPool) -> None:
    assert "escapees" in sandbox.guarantees
    marker = f"98{os.getpid() % 1000}.5"
    code = f"""
        import os, time
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                os.execv("/bin/sleep", ["sleep", "{marker}"])
            os._exit(0)
        time.sleep(0.3)
        """
    assert run(sandbox, code).passed
    deadline = time.monotonic() + 5
    while _survivors(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _survivors(marker), "a setsid() child outlived its sample"


def test_no_network(sandbox: SandboxPool) -> None:
    assert "network" in sandbox.guarantees
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(4)
    port = listener.getsockname()[1]
    accepted: list[object] = []
    thread = threading.Thread(target=lambda: accepted.append(_accept(listener)))
    thread.start()
    result = run(sandbox, f"import socket\nsocket.create_connection(('127.0.0.1', {port}), 2)\n")
    thread.join()
    listener.close()
    assert not result.passed and result.failure_mode == "runtime_error"
    assert accepted == [None], "the sample reached a listener on the host"


def _accept(listener: socket.socket) -> object:
    try:
        conn, _ = listener.accept()
    except OSError:
        return None
    conn.close()
    return "connected"


def test_filesystem_outside_the_workdir(sandbox: SandboxPool, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOPSECRET-42")
    secret.chmod(0o644)  # even world-readable: it is outside the bind set
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    run_dir = tmp_path / "runs"
    run_dir.mkdir()
    home_target = Path.home() / f"benchforge-evil-{os.getpid()}"
    if "filesystem" not in sandbox.guarantees:
        assert sandbox.mode == "rlimit-only"  # documented: no outer layer for files
        return
    try:
        result = run(sandbox, f"print(open({str(secret)!r}).read())\n")
        assert not result.passed and "TOPSECRET" not in result.detail
        for target in (run_dir / "evil.txt", home_target, Path(sys.prefix) / "evil.txt"):
            result = run(sandbox, f"open({str(target)!r}, 'w').write('x')\n")
            assert not result.passed and not target.exists(), target
        for target in (victim, Path(__file__), Path(sys.executable)):
            result = run(sandbox, f"import os\nos.remove({str(target)!r})\n")
            assert not result.passed and target.exists(), target
        result = run(sandbox, "import os, sys\nos.remove(sys.argv[0] if sys.argv[0] else 'x')\n")
        assert not result.passed
    finally:
        home_target.unlink(missing_ok=True)


def test_killing_the_worker_does_not_stop_the_run(sandbox: SandboxPool) -> None:
    good = ("def f(x):\n    return x + 1\n", True)
    bad = ("def f(x):\n    return x - 1\n", False)
    killer = ("import os\nos.kill(os.getppid(), 9)\ndef f(x):\n    return x + 1\n", None)
    batch = [good, killer, bad, good, killer, good, bad, good]
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(
            lambda item: run(sandbox, item[0], CHECK, entry_point="f", check="check"), batch))
    for result, (_, expected) in zip(results, batch, strict=True):
        if expected is not None:
            assert result.passed == expected, result
    # The kill either lands (the worker is replaced, the sample fails as "killed") or is refused
    # (another uid: PermissionError; pid 1 of a namespace ignores it) and the sample runs on.
    killers = [r for r, (code, _) in zip(results, batch, strict=True) if code == killer[0]]
    for result in killers:
        assert result.passed or result.failure_mode in ("killed", "runtime_error"), result
    assert sandbox.restarts == sum(r.failure_mode == "killed" for r in killers)


def test_sample_code_never_runs_in_benchforge(sandbox: SandboxPool) -> None:
    result = run(sandbox, f"import os\nassert os.getpid() != {os.getpid()}\n"
                          f"assert os.getppid() != {os.getpid()}\n")
    assert result.passed, result.detail


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
