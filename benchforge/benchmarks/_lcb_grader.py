"""LiveCodeBench grading, run inside the sandbox child as trusted test code (stdlib only).

Follows lcb_runner @28fef95 ``lcb_runner/evaluation/testing_util.py`` (``run_test``,
``grade_call_based``, ``grade_stdio``, ``call_method``), re-stated here:

- call-based problems (``fn_name`` not None): the harness imports + the code are exec'd as a
  module; ``Solution()`` is used when the text holds ``class Solution``; each test's input is one
  JSON value per line, the output one JSON value; a tuple counts as a list; ``==`` decides.
- stdin problems: a trailing ``if __name__ == '__main__':`` is inlined, every non-import
  statement is moved into ``wrapped_function()`` (imports stay at module level, so a
  ``from sys import stdin`` binds the process's own stdin at compile time), and each test calls
  it with stdin patched (``_OfficialStdin``) and stdout captured; ``SystemExit`` is a normal end.
  Outputs are compared line by line after ``strip()`` of the whole text and of every line: equal
  strings, or else equal lists of ``Decimal`` tokens (no float tolerance).
- limits: ``signal.alarm(timeout)`` (whole seconds) around compilation and around each test; a
  time-out is an exception whose repr contains ``timeoutexception``; the first failing test ends
  the grading. Error codes: -2 wrong answer, -3 time limit, -4 runtime error (also any error
  while compiling or comparing: "Error during testing"); -1 (the global time limit) is the
  sandbox's wall limit.

With ``fixed=True`` (``benchmark.lcb_fixes=true``) stdin is a real file holding the test's input
(also on fd 0 and behind compile-time ``from sys import stdin`` bindings; stdout likewise),
``fileinput`` reads it once, ``quit()`` is ``exit()``, the stack is the sandbox's,
``sys.stdout.close()`` is harmless, a time-out prints nothing and stays one when the program
catches it, and a stdin program may define ``class Solution``. README ("How answers are
graded" / "LiveCodeBench") lists each difference.
"""

import ast
import contextlib
import io
import json
import os
import signal
import sys
from decimal import Decimal
from types import ModuleType
from unittest import mock

IMPORTS = (
    "from string import *\nfrom re import *\nfrom datetime import *\nfrom collections import *\n"
    "from heapq import *\nfrom bisect import *\nfrom copy import *\nfrom math import *\n"
    "from random import *\nfrom statistics import *\nfrom itertools import *\n"
    "from functools import *\nfrom operator import *\nfrom io import *\nfrom sys import *\n"
    "from json import *\nfrom builtins import *\nfrom typing import *\nimport string\nimport re\n"
    "import datetime\nimport collections\nimport heapq\nimport bisect\nimport copy\nimport math\n"
    "import random\nimport statistics\nimport itertools\nimport functools\nimport operator\n"
    "import io\nimport sys\nimport json\nsys.setrecursionlimit(50000)\n"
)
# sys.argv of the documented lcb_runner command (`python -m lcb_runner.runner.main --model M
# --scenario codegeneration --evaluate --release_version V`): fileinput.input() opens each
# argument, and lcb_runner's patched open() returns the test input for every one of them.
OFFICIAL_ARGV = ("lcb_runner/runner/main.py", "--model", "M", "--scenario", "codegeneration",
                 "--evaluate", "--release_version", "release_v6")
WRONG, TIMEOUT, RUNTIME = -2, -3, -4


class WrongAnswer(AssertionError):
    """A test's output differs (lcb_runner error code -2); the sandbox worker maps it to
    the ``wrong_answer`` failure mode by name.
    """
    pass


class TimeLimitExceeded(Exception):
    """A test ran past ``signal.alarm(timeout)`` (lcb_runner -3); the worker maps it
    to ``timeout``.
    """
    pass


class CompileError(Exception):
    """The program does not compile (lcb_runner -4, "Error during testing"); the worker
    maps it to ``syntax_error``.
    """
    pass


class TimeoutException(Exception):  # the name is the contract: lcb_runner matches its repr
    """What the alarm handler raises inside the program, as lcb_runner's does:
    lcb_runner recognises a time-out by ``timeoutexception`` in the exception's repr, so the
    class name is part of the contract.
    """
    pass


def _alarm_official(signum, frame):
    print("timeout occured: alarm went off")  # into the captured output, as lcb_runner does
    raise TimeoutException


_FIRED = []  # fixed harness: the alarm went off during this test (even if the program caught it)


def _alarm_fixed(signum, frame):
    _FIRED.append(True)
    raise TimeoutException


class _OfficialBuffer:
    """``sys.stdin.buffer`` under lcb_runner: read() gives all bytes on every call, readline()
    the first line, nothing else exists."""

    def __init__(self, text):
        self.inputs = text.encode("utf-8")

    def read(self, *args):
        return self.inputs

    def readline(self, *args):
        return self.inputs.split(b"\n")[0] + b"\n"


class _OfficialStdin:
    """``sys.stdin`` under lcb_runner: read() gives the whole input on every call, readline()
    the next line with its newline ('' at the end), readlines() ``text.split("\\n")``; other
    attributes come from a StringIO, and it is not iterable (no ``__iter__``)."""

    def __init__(self, text):
        self.inputs = text
        self._stringio = io.StringIO(text)
        self.buffer = _OfficialBuffer(text)

    def read(self, *args):
        return self.inputs

    def readline(self, *args):
        return self._stringio.readline(*args)

    def readlines(self, *args):
        return self.inputs.split("\n")

    def __getattr__(self, name):
        return getattr(self._stringio, name)


class _StreamProxy:
    """Fixed harness: one object stands for stdin (stdout) from compile time on, so that even a
    compile-time ``from sys import stdin, stdout`` reads the current test's input like a real
    file (iteration, buffer, readline at EOF, fileno 0) and writes into its captured output."""

    def __init__(self):
        self.target = io.StringIO("")

    def __getattr__(self, name):
        return getattr(self.target, name)

    def __iter__(self):
        return iter(self.target)

    def __next__(self):
        return next(self.target)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None


_STDIN = _StreamProxy()
_STDOUT = _StreamProxy()


class _Capture:
    """stdout captured as lcb_runner's ``Capturing`` does (a StringIO: no ``.buffer``, and its
    close() takes one argument, so ``sys.stdout.close()`` raises TypeError), or, fixed, a real
    text stream with a ``.buffer`` and a harmless close()."""

    def __init__(self, fixed):
        self.fixed = fixed
        self.text = ""

    def __enter__(self):
        self._saved = sys.stdout
        if self.fixed:  # a real text stream with a binary .buffer, neither of them closable
            self._bytes = io.BytesIO()
            self._bytes.close = lambda: None
            self._stream = io.TextIOWrapper(self._bytes, encoding="utf-8", newline="\n",
                                            write_through=True)
            self._stream.close = lambda: None
            _STDOUT.target = self._stream
        else:
            self._stream = io.StringIO()
            self._stream.close = lambda x: 1
        sys.stdout = _STDOUT if self.fixed else self._stream
        return self

    def __exit__(self, *exc):
        if self.fixed:
            self._stream.flush()
            self.text = self._bytes.getvalue().decode("utf-8", "replace")
            _STDOUT.target = io.StringIO()
        else:
            self.text = self._stream.getvalue()
        sys.stdout = self._saved


def _clean_if_name(code):
    try:
        tree = ast.parse(code)
        last = tree.body[-1]
        if isinstance(last, ast.If) and ast.unparse(last.test).strip() == "__name__ == '__main__'":
            code = ast.unparse(tree.body[:-1]) + "\n" + ast.unparse(last.body)
    except Exception:
        pass
    return code


def _make_function(code):
    try:
        tree = ast.parse(code)
        imports = [s for s in tree.body if isinstance(s, (ast.Import, ast.ImportFrom))]
        others = [s for s in tree.body if not isinstance(s, (ast.Import, ast.ImportFrom))]
        function = ast.FunctionDef(
            name="wrapped_function",
            args=ast.arguments(posonlyargs=[], args=[], kwonlyargs=[], kw_defaults=[],
                               defaults=[]),
            body=others, decorator_list=[], lineno=-1)
        return IMPORTS + "\n" + ast.unparse(imports) + "\n" + ast.unparse(function)
    except Exception:
        return code


def _compile(code, timeout, solution_class=True):
    signal.alarm(timeout)
    try:
        module = ModuleType("tmp_sol", "")
        exec(code, module.__dict__)
        # lcb_runner looks for "class Solution" in the text, stdin programs too (whose classes
        # live inside wrapped_function, so that fails); the fixed harness asks only call-based.
        return module.Solution() if solution_class and "class Solution" in code else module
    finally:
        signal.alarm(0)


def _feed_fd0(text):
    """Fixed harness: fd 0 holds the test input, so open(0) and sys.stdin read it."""
    data = text.encode("utf-8")
    fd = os.open(".lcb_stdin", os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    os.lseek(fd, 0, os.SEEK_SET)
    if fd != 0:  # fd 0 is free again when the program closed an open(0) of the last test
        os.dup2(fd, 0)
        os.close(fd)
    _STDIN.target = open(0, encoding="utf-8", newline="\n", closefd=False)  # noqa: SIM115


def _call(method, text, fixed):
    """One stdin test: lcb_runner's call_method, or the fixed harness's real stdin."""
    if fixed:
        _feed_fd0(text)
        try:
            return method()
        except SystemExit:
            return None
    lines = iter(text.split("\n"))
    with contextlib.ExitStack() as stack:
        # lcb_runner's decorators enter bottom-up: read/readlines/readline are patched on the
        # process's own stdin (what compile-time `from sys import stdin` bound), and only then
        # is sys.stdin replaced by the mock and builtins.open by mock_open.
        real = sys.stdin
        stack.enter_context(mock.patch.object(real, "read", lambda *a: text))
        stack.enter_context(mock.patch.object(real, "readlines", lambda *a: text.split("\n")))
        stack.enter_context(mock.patch.object(real, "readline", lambda *a: next(lines)))
        stack.enter_context(mock.patch.object(sys, "stdin", _OfficialStdin(text)))
        stack.enter_context(mock.patch("builtins.open", mock.mock_open(read_data=text)))
        try:
            return method()
        except SystemExit:
            return None


def _stripped_lines(text):
    return [line.strip() for line in text.strip().split("\n")]


def _decimals(line):
    try:
        return True, [Decimal(token) for token in line.split()]
    except Exception:
        return False, []


def _failure(code, index, **fields):
    return dict(fields, error_code=code, index=index)


def _grade_call_based(code, inputs, outputs, fn_name, timeout):
    solution = _compile(IMPORTS + "\n\n" + code, timeout)
    method = getattr(solution, fn_name, None)
    if method is None:
        return None
    args = [[json.loads(line) for line in given.split("\n")] for given in inputs]
    wanted = [json.loads(output) for output in outputs]
    results = []
    for index, (given, expected) in enumerate(zip(args, wanted, strict=False)):
        signal.alarm(timeout)
        try:
            prediction = method(*given)
            signal.alarm(0)
            if isinstance(prediction, tuple):
                prediction = list(prediction)
            same = prediction == expected
            results.append(same)
            if not same:
                return results, _failure(WRONG, index, message=(
                    f"{repr(prediction)[:100]} != {repr(expected)[:100]}"))
        except Exception as exc:
            signal.alarm(0)
            return _crashed(results, index, exc)
        finally:
            signal.alarm(0)
    return results, {}


def _crashed(results, index, exc):
    """lcb_runner's verdict for an exception in test ``index``: -3 (time-out) when it is the
    alarm's TimeoutException, else -4 (runtime error); appended to ``results``."""
    code = TIMEOUT if "timeoutexception" in repr(exc).lower() else RUNTIME
    results.append(code)
    return results, _failure(code, index, exception=exc)


def _grade_stdio(code, inputs, outputs, timeout, fixed):
    module = _compile(_make_function(_clean_if_name(code)), timeout, solution_class=not fixed)
    method = getattr(module, "wrapped_function", None)
    if method is None:
        return None
    results = []
    for index, (given, expected) in enumerate(zip(inputs, outputs, strict=False)):
        signal.alarm(timeout)
        with _Capture(fixed) as captured:
            try:
                _FIRED.clear()
                _call(method, given, fixed)
                signal.alarm(0)
                if _FIRED:  # fixed harness: a swallowed time-out is still one
                    raise TimeoutException
            except Exception as exc:
                signal.alarm(0)
                return _crashed(results, index, exc)
            finally:
                signal.alarm(0)
        got, want = _stripped_lines(captured.text), _stripped_lines(expected)
        if len(got) != len(want):
            results.append(WRONG)
            return results, _failure(WRONG, index, message=(
                f"{len(got)} output lines, expected {len(want)}"))
        for g, w in zip(got, want, strict=True):
            if g == w:
                continue
            ok_g, dec_g = _decimals(g)
            ok_w, dec_w = _decimals(w) if ok_g else (False, [])
            if ok_g and ok_w and dec_g == dec_w:
                continue
            results.append(WRONG)
            return results, _failure(WRONG, index, message=f"{g[:100]!r} != {w[:100]!r}")
        results.append(True)
    return results, {}


def run_test(code, inputs, outputs, fn_name, timeout, fixed=False):
    """lcb_runner's run_test. Returns ``(results, failure)``: one entry per test graded (True,
    or the error code of the first failing one) and, on failure, a dict with ``error_code``,
    ``index`` (the failing test, None when testing itself failed) and ``message`` or
    ``exception``. ``SystemExit`` outside a stdin test's call propagates (the process ends)."""
    signal.signal(signal.SIGALRM, _alarm_fixed if fixed else _alarm_official)
    if fixed:
        sys.stdin, sys.stdout, sys.argv = _STDIN, _STDOUT, ["solution.py"]
    else:  # a multiprocessing child's stdin (os.devnull), the documented command's argv
        sys.stdin, sys.argv = open(os.devnull), list(OFFICIAL_ARGV)  # noqa: SIM115
    signal.alarm(timeout)
    try:
        if fn_name is None:
            outcome = _grade_stdio(code, inputs, outputs, timeout, fixed)
        else:
            outcome = _grade_call_based(code, inputs, outputs, fn_name, timeout)
        if outcome is None:  # lcb_runner then fails unpacking None: "Error during testing"
            raise TypeError("cannot unpack non-iterable NoneType object")
        return outcome
    except Exception as exc:
        return [RUNTIME], _failure(RUNTIME, None, exception=exc)
    finally:
        signal.alarm(0)


def grade(code, inputs, outputs, fn_name, timeout, fixed=False):
    """Return normally when every test passes; otherwise raise, for the sandbox worker to
    classify: WrongAnswer (-2), TimeLimitExceeded (-3), CompileError (a syntax error, -4), or
    the program's own exception (-4) with a note naming the test."""
    _results, failure = run_test(code, inputs, outputs, fn_name, timeout, fixed)
    if not failure:
        return
    index, code = failure["index"], failure["error_code"]
    where = "while testing" if index is None else f"test {index}"
    if code == WRONG:
        raise WrongAnswer(f"{where}: {failure['message']}")
    if code == TIMEOUT:
        raise TimeLimitExceeded(f"{where}: time limit exceeded ({timeout} s; lcb_runner -3)")
    exc = failure["exception"]
    if isinstance(exc, SyntaxError):
        raise CompileError(f"{type(exc).__name__}: {exc} (lcb_runner -4, Error during testing)")
    note = f"{where}: {type(exc).__name__} (lcb_runner -4, Runtime Error)"
    if hasattr(exc, "add_note"):
        exc.add_note(note)
        raise exc
    raise RuntimeError(f"{note}: {exc!r}") from exc
