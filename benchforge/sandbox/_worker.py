"""Trusted sandbox worker: the inner layer, run inside the outer layer (bwrap, apptainer, ...).

Standard library only, started by path: ``python -I -B _worker.py '<config json>'``. It serves
length-prefixed JSON requests on stdin/stdout, one sample at a time, and forks a fresh child
per sample. The child isolates itself (new session, fresh temp dir, scrubbed environment,
stdin closed, output to a capped file, optional network namespace, unprivileged uid, rlimits)
and only then runs the untrusted code, followed by the benchmark's checks. The verdict is one
message carrying a per-sample nonce on a pipe opened before the code runs; a child that leaves
no such message (exit, os._exit, signal, kill) failed. After every sample the worker kills
everything the sample started, including processes that escaped its session with setsid.
"""

import builtins
import contextlib
import errno
import json
import os
import reprlib
import select
import shutil
import signal
import struct
import sys
import tempfile
import time
import traceback
import types

MB = 1024 * 1024
RESULT_FD = 3
CLONE_NEWNET = 0x40000000
# Dunders through which a returned object could make a failed comparison look passed.
TAMPER_DUNDERS = ("__eq__", "__ne__", "__lt__", "__le__", "__gt__", "__ge__", "__bool__",
                  "__len__", "__hash__", "__sub__", "__rsub__", "__abs__", "__float__",
                  "__int__", "__index__", "__contains__", "__round__")
SAFE_TYPES = (int, float, complex, str, bytes, bool, type(None))
CONTAINERS = (list, tuple, set, frozenset)


# Trusted support code (an official evaluator's guard, EvalPlus's oracles), exec'd once in the
# worker and inherited by every forked child instead of being re-run per sample.
SUPPORT = {}


def support_namespace(ref):
    """``ref`` is {"key", "source"}: the source comes once, later requests only name it."""
    key = ref["key"]
    if key not in SUPPORT:
        if ref.get("source") is None:
            raise RuntimeError(f"unknown support source {key}")
        namespace = {}
        exec(ref["source"], namespace)
        SUPPORT[key] = namespace
    return SUPPORT[key]


# The current task's inputs, reference times and expected-output offsets (a benchforge-written
# pickle: trusted), loaded by the worker before the fork so reading it never counts against a
# sample's time limit; and the task file itself, open ("fd"): the expected outputs stay on disk
# and a sample's process reads them through that descriptor (see ExpectedOutputs), which it
# inherits as STORE_FD, so the store's folder need not be readable by the sample's uid.
FIXTURE = {}
STORE_FD = RESULT_FD + 1


class ExpectedOutputs:
    """One suite's expected outputs, unpickled one input at a time from the task's file in
    the store (benchforge.benchmarks._groundtruth writes it), read through the open
    descriptor ``fd``: a sample's process holds at most the one output it is comparing, never
    the whole suite.

    The readers are bound here, before any sample code runs, so that a sample which rebinds
    ``os``/``pickle`` attributes cannot change what is read (they are C functions).
    """

    def __init__(self, fd, offsets, name="the store file"):
        import pickle
        import zlib

        self.fd, self.offsets, self.name, self.current = fd, offsets, name, (None, None)
        self._io = (os.pread, pickle.loads, zlib.decompress)

    def __len__(self):
        return len(self.offsets)

    def __getitem__(self, index):
        if self.current[0] != index:
            self.current = (None, None)  # drop the previous output before reading the next
            _pread, _loads, _decompress = self._io
            start, length, codec = self.offsets[index]
            chunks, done = [], 0
            while done < length:
                chunk = _pread(self.fd, length - done, start + done)
                if not chunk:
                    raise OSError(f"{self.name}: truncated at byte {start + done}")
                chunks.append(chunk)
                done += len(chunk)
            blob = chunks[0] if len(chunks) == 1 else b"".join(chunks)
            del chunks
            if codec == 1:
                blob = _decompress(blob)
            self.current = (index, _loads(blob))
        return self.current[1]


def load_fixture(path):
    """Load the task fixture pickled at ``path`` (EvalPlus inputs and expected outputs,
    written by benchforge: trusted) into :data:`FIXTURE`, once per task; the forked children
    inherit it, so reading it never counts against a sample's limits.
    """
    if FIXTURE.get("path") != path:
        import pickle

        if FIXTURE.get("fd") is not None:
            os.close(FIXTURE["fd"])
        FIXTURE.clear()  # one task at a time keeps the children's address space small
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            with os.fdopen(os.dup(fd), "rb") as fh:  # the header, where its last 8 bytes say
                fh.seek(-8, os.SEEK_END)
                fh.seek(int.from_bytes(fh.read(8), "big"))
                data = pickle.load(fh)
        except BaseException:
            os.close(fd)
            raise
        FIXTURE.update(path=path, data=data, fd=fd)


# ------------------------------------------------------------------------------ framing
def read_exact(fd, size):
    """Read exactly ``size`` bytes from ``fd``; None when the pipe closes first (the host
    went away).
    """
    chunks = []
    while size:
        chunk = os.read(fd, size)
        if not chunk:
            return None
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def read_message(fd):
    """One length-prefixed JSON message from ``fd`` (4-byte big-endian length, then the
    UTF-8 body); None at end of input, which ends the worker.
    """
    header = read_exact(fd, 4)
    if header is None:
        return None
    body = read_exact(fd, struct.unpack(">I", header)[0])
    return None if body is None else json.loads(body)


def write_message(fd, message):
    """Write ``message`` to ``fd`` as one length-prefixed JSON frame (the format
    :func:`read_message` and the host's pool read), retrying short writes.
    """
    body = json.dumps(message).encode()
    data = struct.pack(">I", len(body)) + body
    while data:
        data = data[os.write(fd, data):]


# ------------------------------------------------------------------------ the child side
class Tampered(Exception):
    """A returned object or the process state was manipulated to fool the checker."""


def sample_defined(klass):
    """A class made by exec'd sample code, not by an imported module (stdlib, numpy, ...)."""
    if klass is object or getattr(builtins, klass.__name__, None) is klass:
        return False
    module = sys.modules.get(klass.__module__)
    return module is None or klass.__module__ in ("__main__", "builtins")


def overriding_dunder(cls):
    """``"Class.__eq__"``-style name of the first comparison/conversion dunder
    (:data:`TAMPER_DUNDERS`) a sample-defined class in ``cls``'s MRO defines in Python; None
    when there is none (builtin and imported classes are trusted).
    """
    for klass in cls.__mro__:
        if not sample_defined(klass):
            continue
        for name in TAMPER_DUNDERS:
            if isinstance(klass.__dict__.get(name), (types.FunctionType, staticmethod,
                                                     classmethod, property)):
                return f"{cls.__name__}.{name}"
    return None


def inspect_value(value, limit=200000):
    """Raise Tampered if a returned value holds an object with Python-level comparison hooks."""
    stack, seen = [value], set()
    while stack and limit:
        limit -= 1
        item = stack.pop()
        kind = type(item)
        if kind in SAFE_TYPES:
            continue
        if id(item) in seen:
            continue
        seen.add(id(item))
        if kind in CONTAINERS:
            stack.extend(item)
            continue
        if kind is dict:
            stack.extend(item.keys())
            stack.extend(item.values())
            continue
        hook = overriding_dunder(kind)
        if hook:
            raise Tampered(f"returned an object overriding {hook}")


def guard(function):
    """Wrap the sample's entry point so every value it returns is checked by
    :func:`inspect_value` (Tampered on a value with Python-level comparison hooks).
    """
    def guarded(*args, **kwargs):
        result = function(*args, **kwargs)
        inspect_value(result)
        return result

    return guarded


def process_tampering(builtins_snapshot):
    """What the sample changed in the checking process, as a one-line reason, or
    None: a builtin replaced or added (against ``builtins_snapshot``, taken before the sample
    ran), or a trace/profile hook installed.
    """
    changed = sorted(k for k in set(builtins_snapshot) | set(vars(builtins))
                     if vars(builtins).get(k, builtins_snapshot) is not builtins_snapshot.get(k))
    if changed:
        return f"builtins modified: {', '.join(changed[:5])}"
    if sys.gettrace() is not None or sys.getprofile() is not None:
        return "a trace/profile hook was installed"
    return None


def classify_exception(exc, limits):
    """``(failure mode, detail)`` of an exception the sample or its checks raised:
    Tampered -> tampering; a trusted grader's WrongAnswer / TimeLimitExceeded / CompileError
    (LiveCodeBench) -> wrong_answer / timeout / syntax_error; AssertionError -> assertion;
    MemoryError -> memory; SystemExit -> early_exit; EFBIG -> output_limit (``limits`` names
    the cap); anything else runtime_error with its traceback. The modes are
    ``sandbox.types.FailureMode`` values.
    """
    if isinstance(exc, Tampered):
        return "tampering", str(exc)
    # Named outcomes raised by trusted graders run as test code (e.g. LiveCodeBench's).
    if type(exc).__name__ == "WrongAnswer":
        return "wrong_answer", str(exc)
    if type(exc).__name__ == "TimeLimitExceeded":
        return "timeout", str(exc)
    if type(exc).__name__ == "CompileError":
        return "syntax_error", str(exc)
    if isinstance(exc, AssertionError):
        return "assertion", traceback.format_exc()
    if isinstance(exc, MemoryError):
        return "memory", "MemoryError"
    if isinstance(exc, RecursionError):
        return "runtime_error", "RecursionError: maximum recursion depth exceeded"
    if isinstance(exc, SystemExit):
        return "early_exit", f"SystemExit({exc.code!r}) before the checks finished"
    if isinstance(exc, OSError) and exc.errno == errno.EFBIG:  # Python ignores SIGXFSZ
        return "output_limit", f"output or files beyond {limits['fsize_mb']} MB"
    return "runtime_error", traceback.format_exc()


def make_reporter(nonce):
    """The only way to a verdict; the nonce lives in this closure, not in any frame's locals."""
    sent = []

    def report(status, detail="", extra=None):
        if not sent:
            sent.append(True)
            message = json.dumps({"nonce": nonce, "status": status, "detail": detail[-4000:],
                                  "extra": extra or {}})
            os.write(RESULT_FD, message.encode())
        os._exit(0)  # skip atexit hooks and finalizers the sample may have registered

    return report


def run_checks(program, limits, report):
    """Untrusted code, then the trusted test and its check call; report exactly once."""
    if program.get("guard_source"):  # an official evaluator's guard: same effects on samples
        support = support_namespace(program["guard_source"])
        sys.stdout = sys.stderr = NullIO()
        sys.stdin = NullIO()
        support["reliability_guard"]()
    else:
        sys.setrecursionlimit(program.get("recursion_limit", 5000))
    snapshot = dict(vars(builtins))
    namespace = {} if program.get("bare_globals") else {"__name__": "__main__",
                                                         "__builtins__": builtins}
    try:
        code = compile(program["code"], "solution.py", "exec")
    except (SyntaxError, ValueError) as exc:
        report("syntax_error", f"{type(exc).__name__}: {exc}")
    stage = "solution"
    try:
        exec(code, namespace)
        stage = "test"
        tampering = process_tampering(snapshot)
        if tampering:
            raise Tampered(tampering)
        test_defined = {}
        if program.get("test"):
            before = dict(namespace)
            exec(compile(program["test"], "test.py", "exec"), namespace)
            test_defined = {k: v for k, v in namespace.items() if before.get(k, before) is not v}
        if program.get("check"):
            entry = program.get("entry_point")
            if entry not in namespace:
                raise NameError(f"the solution defines no {entry!r}")
            namespace[program["check"]](guard(namespace[entry]))
        replaced = [k for k, v in test_defined.items() if namespace.get(k) is not v]
        if replaced:
            raise Tampered(f"test helper(s) replaced: {', '.join(sorted(replaced))}")
        tampering = process_tampering(snapshot)
        if tampering:
            raise Tampered(tampering)
    except BaseException as exc:
        mode, detail = classify_exception(exc, limits)
        report(mode, f"[{stage}] {detail}")
    report("passed")


class NullIO:
    """Swallows the sample's prints (EvalPlus's swallow_io); reading raises like a closed file."""

    def write(self, text):
        """Discard ``text``; returns its length as a file would."""
        return len(text)

    def writelines(self, lines):
        """Discard ``lines``."""
        pass

    def flush(self):
        """Nothing to flush."""
        pass

    def read(self, *args):
        """Raise OSError: the sample has no stdin (also ``readline``/``readlines``)."""
        raise OSError("stdin is not available")

    readline = readlines = read

    def isatty(self):
        """Never a terminal."""
        return False


def is_floats(value):
    """Whether EvalPlus compares ``value`` with a tolerance: a float, a non-empty
    list/tuple of floats, or a float32/float64 numpy array (``evalplus.eval.is_floats``, 0.3.1).
    """
    if isinstance(value, float):
        return True
    if isinstance(value, (list, tuple)) and value:
        return all(isinstance(i, float) for i in value)
    numpy = sys.modules.get("numpy")
    if numpy is not None and isinstance(value, numpy.ndarray):
        return value.dtype == numpy.float64 or value.dtype == numpy.float32
    return False


class _BoundedRepr(reprlib.Repr):
    """repr that never runs sample-defined __repr__ code and stays short."""

    def __init__(self):
        super().__init__()
        self.maxlevel, self.maxstring, self.maxother, self.maxlong = 4, 400, 200, 400
        self.maxlist = self.maxtuple = self.maxset = self.maxfrozenset = self.maxdict = 30

    def repr1(self, x, level):
        kind = type(x)
        if kind in SAFE_TYPES or kind in CONTAINERS or kind is dict:
            return super().repr1(x, level)
        numpy = sys.modules.get("numpy")
        if numpy is not None and (
                kind in (numpy.float64, numpy.float32, numpy.int64, numpy.int32, numpy.bool_)
                or (kind is numpy.ndarray and x.dtype.kind in "biufc")):
            return builtins.repr(x)[:self.maxother * 2]  # numpy's own repr, no sample code
        return f"<{kind.__name__} object>"


def bounded_repr(value, limit=1000):
    """A repr of ``value`` for failure details that never runs sample-defined
    ``__repr__`` code, cut to ``limit`` characters.
    """
    try:
        text = _BoundedRepr().repr(value)
    except Exception:  # e.g. an int too long to print
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[:limit] + "..."


class InputTimeout(Exception):
    """One EvalPlus input ran past its per-input limit (raised by the SIGALRM handler)."""
    pass


def run_suite(program, fixture, limits, report):
    """EvalPlus's differential test of one input suite (base or plus), in this child.

    Mirrors evalplus.eval.unsafe_execute (0.3.1): its reliability_guard and special oracles
    (sent as source by the host), exec in empty globals, per-input SIGALRM limits, exact
    comparison or np.allclose with atol, fast check (stop at the first failing input).
    """
    import signal as signals

    spec = program["differential"]
    data = fixture[spec["suite"]["name"]]
    inputs = data["inputs"]
    expected = ExpectedOutputs(STORE_FD, data["offsets"], FIXTURE.get("path"))
    floor, factor = float(spec["min_time_limit_s"]), float(spec["time_factor"])
    scale = float(program.get("time_scale", 1.0))
    time_limits = [max(floor, factor * t) * scale for t in data["times"]]
    support = support_namespace(spec["support_source"])
    sys.stdout = sys.stderr = NullIO()
    sys.stdin = NullIO()
    support["reliability_guard"](None)  # our rlimits are already set
    snapshot = dict(vars(builtins))
    dataset, entry_point = spec["dataset"], program["entry_point"]
    atol = spec["atol"]
    only = spec.get("only_index")  # the audit: just the input that timed out
    first_float = data["first_float"]
    if only is not None and atol == 0 and entry_point != "find_zero" and (
            first_float is not None and first_float < only):
        atol = 1e-6  # as the full loop would have set it before reaching that input
    state = {"index": -1}

    def stored_output(index):
        """Input ``index``'s expected output; a store that cannot be read is the host's
        fault, never the sample's: an ``environment`` verdict, which stops the scoring."""
        try:
            return expected[index]
        except Exception as exc:  # any damage to the benchforge-written store
            report("environment", f"input #{index}: the expected-output store "
                   f"{FIXTURE.get('path')} cannot be read ({type(exc).__name__}: {exc}); "
                   "delete that folder and rerun")

    def fail(mode, detail, values=True):
        index = state["index"]
        extra = {"status": "fail", "fail_index": index}
        if values and 0 <= index < len(expected):  # for `benchforge inspect`
            extra["expected"] = bounded_repr(stored_output(index))
            if "out" in state:
                extra["actual"] = bounded_repr(state["out"])
        report(mode, detail, extra)

    def on_alarm(signum, frame):
        raise InputTimeout("input timed out")

    try:
        namespace = {}
        exec(compile(program["code"], "solution.py", "exec"), namespace)
        function = namespace[entry_point]
    except BaseException as exc:
        mode, detail = classify_exception(exc, limits)
        fail("syntax_error" if isinstance(exc, SyntaxError) else mode, detail)
    numpy = sys.modules.get("numpy")
    for index, args in enumerate(inputs):
        if only is not None and index != only:
            continue
        state["index"] = index
        state.pop("out", None)
        try:
            signals.signal(signals.SIGALRM, on_alarm)
            signals.setitimer(signals.ITIMER_REAL, time_limits[index])
            try:
                out = function(*args)
            finally:
                signals.setitimer(signals.ITIMER_REAL, 0)
            inspect_value(out)
            state["out"] = out
            exp = stored_output(index)
            exact = out == exp
            if dataset == "mbpp":
                if entry_point == "are_equivalent":  # Mbpp/164
                    exact = exact or True
                elif entry_point == "sum_div":  # Mbpp/295
                    exact = exact or out == 0
                elif entry_point == "surface_Area":  # Mbpp/581
                    exact = exact or abs(out - support["_surface_Area"](*args)) <= atol
                elif entry_point == "digit_distance_nums":  # Mbpp/558
                    exact = exact or out == support["_digit_distance_nums"](*args)
                elif entry_point in support["MBPP_OUTPUT_SET_EQ_TASKS"]:
                    exact = set(out) == set(exp)
                elif entry_point in support["MBPP_OUTPUT_NOT_NONE_TASKS"]:
                    exact = out == exp if isinstance(out, bool) else exp == (out is not None)
            if dataset == "humaneval" and entry_point == "find_zero":
                assert abs(support["_poly"](*args, out)) <= atol, "wrong answer"
                continue
            if atol == 0 and is_floats(exp):
                atol = 1e-6  # evalplus keeps this for the inputs that follow
            if not exact and atol != 0:
                assert type(out) == type(exp), "wrong answer"  # noqa: E721 - evalplus's check
                if isinstance(exp, (list, tuple)):
                    assert len(out) == len(exp), "wrong answer"
                assert numpy.allclose(out, exp, rtol=1e-07, atol=atol), "wrong answer"
            else:
                assert exact, "wrong answer"
        except InputTimeout:
            fail("timeout", f"input #{index} exceeded {time_limits[index]:.3f}s")
        except AssertionError as exc:
            fail("wrong_answer", f"input #{index}: {exc}")
        except BaseException as exc:
            mode, detail = classify_exception(exc, limits)
            fail(mode, f"input #{index}: {detail}")
    tampering = process_tampering(snapshot)
    if tampering:
        fail("tampering", tampering, values=False)
    report("passed", "", {"status": "pass", "fail_index": None})


def apply_limits(limits):
    """Set the sample's rlimits from ``limits`` (``memory_mb`` as AS and DATA,
    ``stack_mb``, ``cpu_s``, ``nofile``, ``nproc``, ``fsize_mb``; no core files); hard and soft
    alike, so the sample cannot raise them, except RLIMIT_CPU: soft ``cpu_s`` (SIGXCPU, a
    ``timeout``), hard one second later (SIGKILL, for a sample that ignores SIGXCPU). With soft
    equal to hard the kernel sends SIGKILL at once, which reads as ``killed``.
    """
    import resource

    pairs = (("RLIMIT_AS", limits["memory_mb"] * MB), ("RLIMIT_DATA", limits["memory_mb"] * MB),
             ("RLIMIT_STACK", limits["stack_mb"] * MB), ("RLIMIT_CPU", limits["cpu_s"]),
             ("RLIMIT_NOFILE", limits["nofile"]), ("RLIMIT_NPROC", limits["nproc"]),
             ("RLIMIT_FSIZE", limits["fsize_mb"] * MB), ("RLIMIT_CORE", 0))
    for name, value in pairs:
        if hasattr(resource, name):
            hard = value + 1 if name == "RLIMIT_CPU" else value
            resource.setrlimit(getattr(resource, name), (value, hard))


def unshare_network():
    """Move this process into a new network namespace (only loopback, and down).

    Raises:
        OSError: the kernel refused ``unshare(CLONE_NEWNET)``.
    """
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNET)")


# ------------------------------------------------------------- the userns filesystem view
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
MNT_DETACH = 2
SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "riscv64": 41, "ppc64le": 203, "s390x": 217}
SYS_MOUNT_SETATTR = 442  # the same number on every architecture (Linux >= 5.12)
MOUNT_ATTR_RDONLY, MOUNT_ATTR_NOSUID, MOUNT_ATTR_NODEV = 1, 2, 4
AT_FDCWD, AT_RECURSIVE = -100, 0x8000
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")


LIBC = []


def libc():
    """The C library through ctypes, loaded once per worker (children inherit it)."""
    if LIBC:
        return LIBC[0]
    import ctypes

    lib = ctypes.CDLL(None, use_errno=True)
    lib.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                          ctypes.c_char_p]
    lib.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
    LIBC.append(lib)
    return lib


def check_call(result, what):
    """Raise OSError (errno and ``what``) when a libc call returned non-zero."""
    if result != 0:
        import ctypes

        code = ctypes.get_errno()
        raise OSError(code, f"{what}: {os.strerror(code)}")


def encoded(value):
    """``value`` as bytes for ctypes (None stays None)."""
    return None if value is None else value.encode()


def mount(src, dst, fstype, flags, data=None):
    """``mount(2)`` through libc; OSError naming what was mounted where on failure."""
    check_call(libc().mount(encoded(src), encoded(dst), encoded(fstype), flags, encoded(data)),
               f"mount {src or fstype} on {dst}")


def pivot_root(new_root, put_old):
    """``pivot_root(2)`` (no libc wrapper: the raw syscall of this architecture).

    Raises:
        OSError: ENOSYS on an architecture not in :data:`SYS_PIVOT_ROOT`, or the syscall's error.
    """
    import ctypes
    import platform

    number = SYS_PIVOT_ROOT.get(platform.machine())
    if number is None:
        raise OSError(errno.ENOSYS, f"pivot_root: unknown architecture {platform.machine()}")
    check_call(libc().syscall(ctypes.c_long(number), new_root.encode(), put_old.encode()),
               f"pivot_root {new_root}")


def make_read_only(path):
    """Read-only, nosuid, nodev for the mount at ``path`` and every mount below it."""
    import ctypes

    attr = ctypes.create_string_buffer(struct.pack(
        "QQQQ", MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV, 0, 0, 0), 32)
    lib = libc()
    if lib.syscall(ctypes.c_long(SYS_MOUNT_SETATTR), ctypes.c_int(AT_FDCWD), path.encode(),
                   ctypes.c_uint(AT_RECURSIVE), attr, ctypes.c_size_t(32)) == 0:
        return
    # Older kernels: a bind remount of the top mount, keeping the flags a user namespace may
    # not clear (statvfs's ST_* bits equal MS_* for these; relatime differs).
    got = os.statvfs(path).f_flag
    keep = got & (MS_NOSUID | MS_NODEV | MS_NOEXEC | 1024 | 2048)
    keep |= (1 << 21) if got & 4096 else 0
    mount(None, path, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | keep)


def build_view(steps):
    """Replace this mount namespace's root by a tmpfs holding only ``steps`` (see
    outer.view_spec), bind sources read-only, a fresh read-only /proc, a minimal /dev.

    Runs as root of a fresh user + mount + pid namespace (``unshare``); the host's tree is
    detached afterwards, so nothing else of it can be reached, not even by path.
    """
    os.umask(0o022)
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755")
    os.chdir("/tmp")
    for name in ("newroot", "oldroot"):
        os.mkdir(name)
    mount("newroot", "newroot", None, MS_BIND | MS_REC)
    pivot_root(".", "oldroot")  # the host's tree is now /oldroot, sources are read from there
    os.chdir("/")
    new = "/newroot"

    def place(dst, is_dir):
        target = new + dst
        os.makedirs(target if is_dir else os.path.dirname(target), 0o755, exist_ok=True)
        if not is_dir and not os.path.lexists(target):
            os.close(os.open(target, os.O_WRONLY | os.O_CREAT, 0o644))
        return target

    for op, *args in steps:
        if op == "symlink":
            os.makedirs(os.path.dirname(new + args[1]), 0o755, exist_ok=True)
            os.symlink(args[0], new + args[1])
        elif op in ("ro", "ro-try"):
            src = "/oldroot" + args[0]
            if op == "ro-try" and not os.path.exists(src):
                continue
            target = place(args[1], os.path.isdir(src))
            mount(src, target, None, MS_BIND | MS_REC)
            make_read_only(target)
        elif op == "tmpfs":
            mount("tmpfs", place(args[0], True), "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777")
        elif op == "dir":
            os.chmod(place(args[0], True), 0o755)
    # A fresh /proc of our pid namespace (read-only: /proc/sys, sysrq-trigger, ... unwritable)
    mount("proc", place("/proc", True), "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RDONLY)
    dev = place("/dev", True)
    mount("tmpfs", dev, "tmpfs", MS_NOSUID, "mode=0755")
    for name in DEVICES:
        if os.path.exists(f"/oldroot/dev/{name}"):
            mount(f"/oldroot/dev/{name}", place(f"/dev/{name}", False), None, MS_BIND)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                         ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):
        os.symlink(target, f"{dev}/{name}")
    mount("tmpfs", place("/dev/shm", True), "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777")
    mount(None, dev, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID)
    # Detach the host's tree, then make /newroot the root (bubblewrap's sequence).
    mount(None, "/oldroot", None, MS_REC | MS_PRIVATE)
    check_call(libc().umount2(b"/oldroot", MNT_DETACH), "umount /oldroot")
    old = os.open("/", os.O_DIRECTORY | os.O_RDONLY)
    os.chdir(new)
    pivot_root(".", ".")
    os.fchdir(old)
    os.close(old)
    check_call(libc().umount2(b".", MNT_DETACH), "umount the old root")
    os.chdir("/")
    mount(None, "/", None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)


def drop_capabilities():
    """No capability left, none regained by exec (securebits), none gained by setuid files
    (no_new_privs): uid 0 of the user namespace becomes an ordinary, powerless uid."""
    import ctypes

    lib = libc()
    pr_set_securebits, pr_capbset_drop, pr_set_no_new_privs = 28, 24, 38
    # NOROOT, NO_SETUID_FIXUP, KEEP_CAPS locked, NO_CAP_AMBIENT_RAISE, each locked
    check_call(lib.prctl(pr_set_securebits, 0xEF, 0, 0, 0), "prctl(PR_SET_SECUREBITS)")
    for cap in range(64):
        if lib.prctl(pr_capbset_drop, cap, 0, 0, 0) != 0:
            break
    header = ctypes.create_string_buffer(struct.pack("Ii", 0x20080522, 0), 8)
    data = ctypes.create_string_buffer(24)
    check_call(lib.capset(header, data), "capset")
    check_call(lib.prctl(pr_set_no_new_privs, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)")


def child_main(config, request, workdir, result_w, nonce):
    """In the forked child: isolate, drop privileges, limit, then run the sample."""
    os.setsid()
    differential = request["program"].get("differential")
    fixture = FIXTURE.get("data") if differential else None
    store = None
    if differential and FIXTURE.get("fd") is not None:  # kept above every fd moved below
        import fcntl

        store = fcntl.fcntl(FIXTURE["fd"], fcntl.F_DUPFD, 64)
    if config.get("cgroup") and not config.get("fs_view"):  # a view's worker joined it itself
        with open(os.path.join(config["cgroup"], "cgroup.procs"), "w") as fh:
            fh.write(str(os.getpid()))
    if config.get("unshare_net"):
        unshare_network()
    os.chdir(workdir)
    if config.get("uid") is not None:
        os.setgroups([])
        os.setgid(config["gid"])
        os.setuid(config["uid"])
    if config.get("drop_caps"):
        drop_capabilities()
    devnull = os.open(os.devnull, os.O_RDONLY)
    output = os.open(".output", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(devnull, 0)
    os.dup2(output, 1)
    os.dup2(output, 2)
    os.dup2(result_w, RESULT_FD)
    if store is not None:
        os.dup2(store, STORE_FD, inheritable=False)  # the task file, read-only
    os.closerange((STORE_FD if store is not None else RESULT_FD) + 1, 65536)  # everything else
    os.environ.clear()
    os.environ.update({"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": workdir,
                       "TMPDIR": workdir, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"})
    os.environ.update(request["program"].get("env") or {})
    tempfile.tempdir = workdir
    sys.stdin = None
    limits = request["limits"]
    apply_limits(limits)
    report = make_reporter(nonce)
    del nonce
    if differential:
        run_suite(dict(request["program"], time_scale=request.get("time_scale", 1.0)), fixture,
                  limits, report)
    run_checks(request["program"], limits, report)


# ----------------------------------------------------------------------- the worker side
def protected_pids():
    """This worker and its ancestors (bwrap's init, the launcher) inside our pid namespace."""
    pids, pid = set(), os.getpid()
    while pid > 0 and pid not in pids:
        pids.add(pid)
        try:
            with open(f"/proc/{pid}/stat") as fh:
                pid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return pids


def kill_all(pids):
    """SIGKILL every pid in ``pids``, ignoring those already gone or not ours."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def sweep(config, pgid, protected):
    """Kill whatever the sample left behind, also processes that escaped with setsid."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
    for _ in range(3):  # a fork racing the first pass is caught by the next
        victims = []
        if config.get("pidns"):  # we see only the sandbox's processes: kill all but us
            victims = [int(p) for p in os.listdir("/proc") if p.isdigit()
                       and int(p) not in protected]
        elif config.get("cgroup"):
            with contextlib.suppress(OSError), open(
                    os.path.join(config["cgroup"], "cgroup.procs")) as fh:
                victims = [int(p) for p in fh.read().split()]
        kill_all(victims)
        reaper_needed = config.get("uid") is not None and not config.get("pidns")
        if reaper_needed:  # kill(-1) as the sample's uid: all of its processes on the host
            reaper = os.fork()
            if reaper == 0:
                try:
                    os.setgid(config["gid"])
                    os.setuid(config["uid"])
                    os.kill(-1, signal.SIGKILL)
                finally:
                    os._exit(0)
            os.waitpid(reaper, 0)
        reap_children()
        if not victims and not reaper_needed:
            return


def reap_children():
    """Collect every exited child of the worker without blocking (no zombies)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def wait_child(pid, timeout_s):
    """Wait for the sample's child up to the wall-clock limit.

    Returns:
        ``(timed_out, status, cpu_s)``: whether it had to be killed at the limit, its wait
        status, and the CPU seconds (user + system) it used.
    """
    pidfd = os.pidfd_open(pid)
    try:
        ready, _, _ = select.select([pidfd], [], [], timeout_s)
    finally:
        os.close(pidfd)
    timed_out = not ready
    if timed_out:
        for kill in (os.killpg, os.kill):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                kill(pid, signal.SIGKILL)
    _, status, usage = os.wait4(pid, 0)
    return timed_out, status, usage.ru_utime + usage.ru_stime


def read_verdict(fd, nonce):
    """Read the child's verdict from the result pipe ``fd`` (closing it).

    Returns:
        ``(verdict, forged)``: the message dict and False when it carries ``nonce``; ``(None,
        True)`` for bytes without the nonce or not a JSON object (tampering); ``(None, False)``
        when the child wrote nothing (it died before reporting).
    """
    os.set_blocking(fd, False)
    chunks = []
    deadline = time.monotonic() + 1.0
    while True:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            if time.monotonic() > deadline:
                break
            select.select([fd], [], [], 0.05)
            continue
        if not chunk:
            break
        chunks.append(chunk)
    os.close(fd)
    raw = b"".join(chunks)
    try:
        verdict = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None, bool(raw)
    if not isinstance(verdict, dict) or verdict.get("nonce") != nonce:
        return None, True
    return verdict, False


SIGNAL_MODES = {signal.SIGXCPU: "timeout", signal.SIGKILL: "killed", signal.SIGSEGV: "crash",
                signal.SIGBUS: "crash", signal.SIGABRT: "crash", signal.SIGILL: "crash",
                signal.SIGFPE: "crash", signal.SIGXFSZ: "output_limit"}


CPU_LIMIT_DETAIL = "CPU time limit"  # the start of a CPU-limit timeout's detail (types.py)


def classify(verdict, forged, timed_out, status, timeout_s, output, cpu_used=0.0,
             cpu_limit=None):
    """The sample's outcome from what the worker saw of its child.

    Args:
        verdict: the nonce-checked message (:func:`read_verdict`), or None.
        forged: the result channel carried something without the nonce.
        timed_out: the child was killed at the wall-clock limit ``timeout_s`` (seconds).
        status: the child's ``waitpid`` status.
        output: the start of its captured stdout/stderr (the last 500 characters are kept).
        cpu_used: the CPU seconds the child used; cpu_limit: its RLIMIT_CPU (``cpu_s``). A
            child the CPU limit ended (SIGXCPU, or SIGKILL at the hard limit) timed out.

    Returns:
        ``(passed, failure mode or None, detail)``; a child without a verdict failed:
        killed by a signal (:data:`SIGNAL_MODES`) or ``early_exit``.
    """
    if timed_out:
        return False, "timeout", f"killed after {timeout_s:.2f}s wall clock"
    if forged:
        return False, "tampering", "the result channel carried a message without the nonce"
    if verdict is not None:
        passed = verdict["status"] == "passed"
        return passed, None if passed else verdict["status"], verdict.get("detail", "")
    tail = output[-500:]
    if os.WIFSIGNALED(status):
        sig = signal.Signals(os.WTERMSIG(status))
        if cpu_limit is not None and (sig == signal.SIGXCPU or (
                sig == signal.SIGKILL and cpu_used >= cpu_limit)):
            return False, "timeout", (f"{CPU_LIMIT_DETAIL} of {cpu_limit} s reached "
                                      f"(sandbox.cpu_s; {sig.name}); output: {tail}")
        return False, SIGNAL_MODES.get(sig, "killed"), f"terminated by {sig.name}; output: {tail}"
    return False, "early_exit", (f"exited with code {os.WEXITSTATUS(status)} before the checks "
                                 f"finished; output: {tail}")


def remove_tree(path):
    """Delete the sample's work dir, restoring permissions the sample may have
    removed; never raises.
    """
    def unlock(func, target, _exc):
        try:
            os.chmod(os.path.dirname(target), 0o700)
            os.chmod(target, 0o700)
            func(target)
        except OSError:
            pass

    shutil.rmtree(path, onerror=unlock)


def run_sample(config, request, protected):
    """One sample: one child, or one child per input suite for differential programs
    (EvalPlus runs base and plus in separate processes; so do we)."""
    program = request["program"]
    for source in (program.get("guard_source"), (program.get("differential") or {}).get(
            "support_source")):
        if source:
            support_namespace(source)  # before the fork, so children share it
    if program.get("differential"):
        try:
            load_fixture(program["differential"]["fixture"])
        except Exception as exc:  # the benchforge-written store is damaged: not the sample
            FIXTURE.clear()
            return {"passed": False, "failure_mode": "environment", "duration_s": 0.0,
                    "extra": {}, "detail": f"the expected-output store file "
                    f"{program['differential']['fixture']} cannot be read "
                    f"({type(exc).__name__}: {exc}); delete that folder and rerun"}
    differential = program.get("differential")
    if not differential:
        passed, mode, detail, duration, _ = run_child(config, request, protected)
        return {"passed": passed, "failure_mode": mode, "detail": detail,
                "duration_s": round(duration, 4), "extra": {}}
    extra, failures, total = {}, [], 0.0
    for suite in differential["suites"]:
        if failures and differential.get("dependent"):
            # a later suite cannot change a reported verdict once an earlier one failed
            extra[f"{suite['name']}_status"] = "not_run"
            extra[f"{suite['name']}_fail_index"] = None
            continue
        scale = float(request.get("time_scale", 1.0))
        sub = dict(request, timeout_s=suite["wall_s"] * scale,
                   program=dict(program, differential=dict(differential, suite=suite)))
        passed, mode, detail, duration, suite_extra = run_child(config, sub, protected)
        total += duration
        name = suite["name"]
        extra[f"{name}_status"] = "pass" if passed else "fail"
        extra[f"{name}_fail_index"] = suite_extra.get("fail_index") if not passed else None
        if not passed:
            extra[f"{name}_fail_expected"] = suite_extra.get("expected")
            extra[f"{name}_fail_actual"] = suite_extra.get("actual")
        if not passed:
            failures.append((mode, f"[{name}] {detail}"))
    mode, detail = failures[0] if failures else (None, "")
    return {"passed": not failures, "failure_mode": mode, "detail": detail,
            "duration_s": round(total, 4), "extra": extra}


def run_child(config, request, protected):
    """Run one sample request in a freshly forked child and judge it.

    Args:
        config: the worker's config (uid/gid, tmp_root, pidns, cgroup, ...).
        request: ``{"program", "limits", "timeout_s", ...}`` from the host.
        protected: pids the sweep must not kill (:func:`protected_pids`).

    Returns:
        ``(passed, failure mode or None, detail, duration in seconds, extra dict)``.
    """
    workdir = tempfile.mkdtemp(prefix="sample-", dir=config["tmp_root"])
    if config.get("uid") is not None:
        os.chown(workdir, config["uid"], config["gid"])
    os.chmod(workdir, 0o700)
    result_r, result_w = os.pipe()
    nonce = os.urandom(16).hex()
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(result_r)
            child_main(config, request, workdir, result_w, nonce)
        finally:
            os._exit(70)
    os.close(result_w)
    timed_out, status, cpu_used = wait_child(pid, float(request["timeout_s"]))
    duration = time.monotonic() - started
    sweep(config, pid, protected)
    verdict, forged = read_verdict(result_r, nonce)
    try:
        with open(os.path.join(workdir, ".output"), "rb") as fh:
            output = fh.read(int(request["limits"]["max_output_bytes"])).decode("utf-8",
                                                                               "replace")
    except OSError:
        output = ""
    remove_tree(workdir)
    passed, mode, detail = classify(verdict, forged, timed_out, status,
                                    float(request["timeout_s"]), output, cpu_used,
                                    request["limits"]["cpu_s"])
    extra = verdict.get("extra", {}) if verdict and not forged and not timed_out else {}
    return passed, mode, detail, duration, extra


def in_private_pidns(host_pidns):
    """True only in a pid namespace other than the host process's (``host_pidns``: the inode
    of its /proc/self/ns/pid) whose own /proc is mounted: then killing every other pid in
    /proc hits only the sandbox. Never trust the config for this."""
    try:
        own_proc = int(os.readlink("/proc/self")) == os.getpid()
        return (host_pidns is not None and own_proc
                and os.stat("/proc/self/ns/pid").st_ino != host_pidns)
    except (OSError, ValueError):
        return False


def view_holds():
    """The private view is in place: the root is read-only and no host directory is left."""
    try:
        os.close(os.open("/.benchforge-probe", os.O_WRONLY | os.O_CREAT, 0o600))
    except OSError as exc:
        return exc.errno == errno.EROFS and not os.path.exists("/oldroot")
    return False


def only_loopback():
    """Does this process's network namespace have no interface but lo?"""
    try:
        with open("/proc/self/net/dev") as fh:
            names = [line.split(":")[0].strip() for line in fh.readlines()[2:]]
    except OSError:
        return False
    return names == ["lo"]


def probe_unshared_network():
    """Can a sample child get a fresh, loopback-only network namespace on this host?"""
    try:
        pid = os.fork()
    except OSError:
        return False
    if pid == 0:
        try:
            unshare_network()
            os._exit(0 if only_loopback() else 1)
        except BaseException:
            os._exit(1)
    return os.waitpid(pid, 0)[1] == 0


def main():
    """The worker's entry point: ``python -I -B _worker.py '<config json>'``. Checks what the
    outer layer promised (filesystem view, pid namespace, network), answers ``{"ready": ...}``
    with what holds, then serves one sample request per message until stdin closes.
    """
    config = json.loads(sys.argv[1])
    proto_in, proto_out = os.dup(0), os.dup(1)
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)  # nothing but the protocol may reach the host's end of the pipe
    # Verify what the outer layer promised instead of trusting it: the pid-namespace sweep
    # kills every other visible process, so it must only run where that is the sandbox.
    if config.get("fs_view"):
        if config.get("cgroup"):  # join before the view hides /sys; samples inherit it
            with open(os.path.join(config["cgroup"], "cgroup.procs"), "w") as fh:
                fh.write("0")
        build_view(config["fs_view"])
        if config.get("probe"):  # mode_available: can this host build the view?
            sys.exit(0 if view_holds() else "the private filesystem view did not hold")
    config["pidns"] = bool(config.get("pidns")) and in_private_pidns(config.get("host_pidns"))
    if config.get("unshare_net"):
        config["unshare_net"] = probe_unshared_network()
    for name in config.get("preload", ()):  # shared by every forked sample, imported once
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # small address space for RLIMIT_AS
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        with contextlib.suppress(ImportError):
            __import__(name)
    protected = protected_pids()
    write_message(proto_out, {"ready": True, "pid": os.getpid(), "uid": config.get("uid"),
                              "pidns": config["pidns"],
                              "network_isolated": bool(config.get("unshare_net"))
                              or only_loopback(),
                              "cgroup": config.get("cgroup"),
                              # only a worker that built the view itself reports on it
                              **({"filesystem": view_holds()} if config.get("fs_view") else {}),
                              "python": sys.version.split()[0]})
    while True:
        request = read_message(proto_in)
        if request is None:
            return
        write_message(proto_out, run_sample(config, request, protected))


if __name__ == "__main__":
    main()
