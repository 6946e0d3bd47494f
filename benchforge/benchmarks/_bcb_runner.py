"""BigCodeBench's execution of one sample, run as trusted test code inside benchforge's sandbox.

Stdlib only (matplotlib is imported lazily, as the official guard does): this module's source is
sent to the sandbox worker and executed after the sample's ``__bcb_code__`` and the task's
``__bcb_test__`` (strings) are defined; :func:`evaluate` then does what bigcodebench 0.2.5's
``bigcodebench/eval/__init__.py:unsafe_execute`` does in its child process:

- its environment (``eval/utils.py``): ``safe_environment`` (``os.kill``/``killpg`` only for
  the process itself and children it started, ``os.system``/``subprocess.*``/``os.popen``
  commands naming ``kill``/``killall`` (``ps`` for ``check_output``) answered with fake success,
  ``Popen`` in a new session, ``os.exec*`` turned into no-ops, its children terminated at the
  end), a fresh temporary working directory, and ``reliability_guard``: ``TZ=UTC`` (+ tzset),
  ``OMP_NUM_THREADS=1``, the TensorFlow log/oneDNN variables, ``RLIMIT_AS``/``RLIMIT_DATA``
  ``max_as_limit``/``max_data_limit`` MiB and ``RLIMIT_STACK`` ``max_stack_limit`` MiB (only
  lowered here: the sandbox's own limits are the ceiling), ``faulthandler`` off,
  ``builtins.exit``/``quit`` = None, ``matplotlib.pyplot.close('all')``;
- the program: module ``__test__`` (``__file__``, ``sys``, ``os``, ``environ`` set), code =
  ``solution + "\\n" + test``, compiled as ``__test__.py`` and executed with stdout/stderr/stdin
  swallowed (``swallow_io``, subprocess output piped), then ``TestCases`` loaded with
  ``unittest.TestLoader`` and run into a ``unittest.TestResult`` under ``time_limit(timeout)``
  (``ITIMER_REAL``; the alarm's ``TimeoutException`` inside a test is that test's error);
- the verdict (``untrusted_check``): ``pass`` iff everything ran and no test failed or
  errored; ``fail`` when a test failed/errored (``details[test name] = traceback``) or the
  program raised (``details["ALL"] = str(exc)``); a process that never reports (killed by the
  wall limit ``timeout + 1``, or dead) is ``timeout`` (the sandbox's verdict).

The official per-test details become the ``detail`` text (``status=fail failed=[...]``).
"""

import builtins
import contextlib
import faulthandler
import io
import os
import signal
import subprocess
import sys
import tempfile
import types
import unittest

MB = 1024 * 1024


class CompileError(Exception):
    """The program does not compile (official status ``fail``, ``details["ALL"]``)."""


class TimeLimitExceeded(Exception):
    """A test hit the suite's time limit (official status ``fail``: a test error)."""


class ProgramFailed(Exception):
    """The program raised, or a test errored (official status ``fail``)."""


class TimeoutException(Exception):
    """bigcodebench's ``time_limit`` alarm (its message is ``Timed out!``)."""


class WriteOnlyStringIO(io.StringIO):
    """bigcodebench's swallow stream: reading it raises ``OSError``."""

    def read(self, *args, **kwargs):
        """Raise OSError: the swallowed stdin cannot be read (bigcodebench's)."""
        raise OSError

    def readline(self, *args, **kwargs):
        """Raise OSError, as :meth:`read`."""
        raise OSError

    def readlines(self, *args, **kwargs):
        """Raise OSError, as :meth:`read`."""
        raise OSError

    def readable(self, *args, **kwargs):
        """False: the stream is write-only."""
        return False


class _RedirectStdin(contextlib._RedirectStream):  # type: ignore[name-defined]
    _stream = "stdin"


@contextlib.contextmanager
def swallow_io():
    """stdout/stderr/stdin to a write-only buffer; subprocess output piped unless captured."""
    stream = WriteOnlyStringIO()
    popen, run = subprocess.Popen, subprocess.run

    def piped(kwargs):
        if kwargs.get("capture_output"):
            kwargs.pop("stdout", None)
            kwargs.pop("stderr", None)
        else:
            kwargs.setdefault("stdout", subprocess.PIPE)
            kwargs.setdefault("stderr", subprocess.PIPE)
        return kwargs

    subprocess.Popen = lambda *a, **k: popen(*a, **piped(k))
    subprocess.run = lambda *a, **k: run(*a, **piped(k))
    try:
        with contextlib.redirect_stdout(stream), contextlib.redirect_stderr(stream), \
                _RedirectStdin(stream):
            yield
    finally:
        subprocess.Popen, subprocess.run = popen, run


@contextlib.contextmanager
def time_limit(seconds):
    """bigcodebench's ``time_limit``: raise :class:`TimeoutException` after ``seconds``
    (float, ``ITIMER_REAL``) inside the block; the timer is cleared on exit.
    """
    def on_alarm(signum, frame):
        raise TimeoutException("Timed out!")

    signal.setitimer(signal.ITIMER_REAL, seconds)
    signal.signal(signal.SIGALRM, on_alarm)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


@contextlib.contextmanager
def safe_environment():
    """Kills limited to this process and its own children; kill commands faked; exec off."""
    saved = {(os, n): getattr(os, n) for n in ("kill", "killpg", "system", "popen", "execv",
                                                "execvp", "execvpe")}
    saved.update({(subprocess, n): getattr(subprocess, n)
                  for n in ("call", "check_output", "run", "Popen")})
    me, my_group, children = os.getpid(), os.getpgid(0), []
    kill, killpg, system, popen = os.kill, os.killpg, os.system, os.popen
    call, check_output, run, Popen = (subprocess.call, subprocess.check_output, subprocess.run,
                                      subprocess.Popen)

    def safe_kill(pid, sig):
        with contextlib.suppress(ProcessLookupError):
            os.getpgid(pid)
            if pid == me or pid in children:
                kill(pid, sig)

    def safe_killpg(pgid, sig):
        if pgid == my_group or pgid in {os.getpgid(p) for p in children}:
            killpg(pgid, sig)

    def fake_kill(command, answer, real, *args, **kwargs):
        return answer if "kill" in command or "killall" in command else real(command, *args,
                                                                             **kwargs)

    class SafePopen(Popen):
        def __init__(self, *args, **kwargs):
            kwargs["preexec_fn"] = os.setsid
            super().__init__(*args, **kwargs)
            children.append(self.pid)

        def communicate(self, *args, **kwargs):
            try:
                return super().communicate(*args, **kwargs)
            except subprocess.TimeoutExpired:
                return None, None

        def kill(self):
            safe_kill(self.pid, signal.SIGTERM)

        def terminate(self):
            safe_kill(self.pid, signal.SIGTERM)

    def safe_run(*args, **kwargs):
        if "kill" in args[0] or "killall" in args[0]:
            return subprocess.CompletedProcess(args, 0, b"", b"")
        return run(*args, **kwargs)

    os.kill, os.killpg = safe_kill, safe_killpg
    os.system = lambda command: fake_kill(command, 0, system)
    os.popen = lambda command: (popen("echo Intercepted") if "kill" in command
                                or "killall" in command else popen(command))
    os.execv = os.execvp = os.execvpe = lambda *args, **kwargs: None
    subprocess.call = lambda command, *a, **k: fake_kill(command, 0, call, *a, **k)
    subprocess.check_output = lambda command, *a, **k: (b"" if "ps" in command
                                                        else check_output(command, *a, **k))
    subprocess.run, subprocess.Popen = safe_run, SafePopen
    try:
        yield
    finally:
        for pid in children:
            with contextlib.suppress(Exception):
                kill(pid, signal.SIGTERM)
        for (owner, name), value in saved.items():
            setattr(owner, name, value)


def lower_limit(name, mib):
    """Set an rlimit to ``mib`` MiB, or keep the sandbox's where that is lower."""
    import resource

    which = getattr(resource, name)
    hard = resource.getrlimit(which)[1]
    value = mib * MB
    if hard != resource.RLIM_INFINITY:
        value = min(value, hard)
    resource.setrlimit(which, (value, value if hard == resource.RLIM_INFINITY else hard))


def reliability_guard(max_as_limit, max_data_limit, max_stack_limit):
    """bigcodebench's ``reliability_guard`` (``eval/utils.py``, 0.2.5): UTC timezone,
    one OpenMP thread, TensorFlow quiet, ``RLIMIT_AS``/``RLIMIT_DATA``/``RLIMIT_STACK`` lowered to
    the given MiB (only when all three are set; never raised above the sandbox's), faulthandler
    off, ``exit``/``quit`` removed, and every matplotlib figure closed.
    """
    os.environ["TZ"] = "UTC"
    import time

    time.tzset()
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    os.environ["TF_ENABLE_ONEDNN_OPTS"] = "0"
    if max_as_limit and max_data_limit and max_stack_limit:
        lower_limit("RLIMIT_AS", max_as_limit)
        lower_limit("RLIMIT_DATA", max_data_limit)
        lower_limit("RLIMIT_STACK", max_stack_limit)
    faulthandler.disable()
    builtins.exit = None
    builtins.quit = None
    import matplotlib.pyplot as plt

    plt.close("all")


def run_suite(code, test, timeout, limits):
    """The official ``unsafe_execute``: returns ``details`` (test name -> traceback; "ALL")."""
    details = {}
    workdir = tempfile.mkdtemp(prefix="bcb-")
    exit_, quit_ = builtins.exit, builtins.quit
    with safe_environment():
        os.chdir(workdir)
        reliability_guard(*limits)
        module = types.ModuleType("__test__")
        module.__dict__.update({"__builtins__": builtins, "__file__": "__test__.py",
                                "__package__": None, "__doc__": None, "sys": sys, "os": os,
                                "environ": os.environ})
        try:
            with swallow_io():
                exec(compile(code + "\n" + test, "__test__.py", "exec"), module.__dict__)
                sys.modules["__test__"] = module
                suite = unittest.TestLoader().loadTestsFromTestCase(module.TestCases)
                result = unittest.TestResult()
                with time_limit(timeout):
                    suite.run(result)
            for case, trace in result.failures + result.errors:
                details[case.id().split(".")[-1]] = ("failure" if (case, trace) in
                                                     result.failures else "error", trace)
        except BaseException as exc:  # the official catches everything here
            details["ALL"] = ("syntax" if isinstance(exc, SyntaxError) else "error", str(exc))
    builtins.exit, builtins.quit = exit_, quit_  # the guard's own change, not the sample's
    return details


def evaluate(code, test, timeout, limits):
    """Run one BigCodeBench sample; return if it passes, else raise (official status fail)."""
    details = run_suite(code, test, timeout, limits)
    if not details:
        return
    names = sorted(details)
    # the verdict's detail keeps its last 4000 characters: the traces are cut to fit
    text = f"status=fail failed={names}\n" + "\n".join(
        f"--- {name}: {details[name][1][-600:]}" for name in names[:3])
    kinds = {kind for kind, _ in details.values()}
    if kinds == {"syntax"}:
        raise CompileError(text)
    if any("TimeoutException: Timed out!" in trace for _, trace in details.values()):
        raise TimeLimitExceeded(text)
    if kinds == {"failure"}:
        raise AssertionError(text)
    raise ProgramFailed(text)
