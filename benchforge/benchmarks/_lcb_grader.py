"""LiveCodeBench grading, run inside the sandbox child as trusted test code (stdlib only).

Follows lcb_runner's testing_util (code_generation_lite): call-based problems call
``Solution().<fn_name>(*args)`` (args: one JSON value per input line; tuples count as lists);
stdin problems run the program wrapped in a function with stdin patched and stdout captured,
and compare stripped lines exactly or, failing that, token-wise as Decimals. Each test has its
own time limit; the first failing test ends the grading.
"""

import ast
import contextlib
import io
import json
import signal
import sys
from decimal import Decimal, InvalidOperation
from types import ModuleType

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


class WrongAnswer(AssertionError):
    pass


class TimeLimitExceeded(Exception):
    pass


def _alarm(signum, frame):
    raise TimeLimitExceeded("time limit exceeded")


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


def _compile(code, timeout):
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        module = ModuleType("tmp_sol", "")
        exec(code, module.__dict__)
        return module.Solution() if "class Solution" in code else module
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


class _Stdin(io.StringIO):
    """stdin as lcb_runner patches it: readline() yields lines without their newline."""

    def __init__(self, text):
        super().__init__(text)
        self._text = text
        self._lines = iter(text.split("\n"))

    def readline(self, *args):
        return next(self._lines)

    def readlines(self, *args):
        return self._text.split("\n")

    def read(self, *args):
        return self._text


def _lines(text):
    return [line.strip() for line in text.strip().split("\n")]


def _decimals(line):
    try:
        return [Decimal(token) for token in line.split()]
    except (InvalidOperation, ValueError):
        return None


def _check_stdio(method, given, expected, timeout, index):
    stdin, stdout = sys.stdin, sys.stdout
    sys.stdin, sys.stdout = _Stdin(given), io.StringIO()
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        with contextlib.suppress(SystemExit):
            method()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        captured = sys.stdout.getvalue()
        sys.stdin, sys.stdout = stdin, stdout
    got, want = _lines(captured), _lines(expected)
    if len(got) != len(want):
        raise WrongAnswer(f"test {index}: {len(got)} output lines, expected {len(want)}")
    for g, w in zip(got, want, strict=True):
        if g == w:
            continue
        gd, wd = _decimals(g), _decimals(w)
        if gd is None or wd is None or gd != wd:
            raise WrongAnswer(f"test {index}: {g[:100]!r} != {w[:100]!r}")


def grade(code, inputs, outputs, fn_name, timeout):
    """Raise WrongAnswer / TimeLimitExceeded / the program's own error on the first failing
    test; return normally when every test passes."""
    signal.signal(signal.SIGALRM, _alarm)
    if fn_name:
        solution = _compile(IMPORTS + "\n\n" + code, timeout)
        method = getattr(solution, fn_name, None)
        if method is None:
            raise WrongAnswer(f"the program defines no {fn_name}")
        for index, (given, expected) in enumerate(zip(inputs, outputs, strict=True)):
            args = [json.loads(line) for line in given.split("\n")]
            signal.setitimer(signal.ITIMER_REAL, timeout)
            try:
                prediction = method(*args)
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
            if isinstance(prediction, tuple):
                prediction = list(prediction)
            if prediction != json.loads(expected):
                raise WrongAnswer(f"test {index}: wrong answer")
        return
    module = _compile(_make_function(_clean_if_name(code)), timeout)
    method = getattr(module, "wrapped_function", None)
    if method is None:
        raise WrongAnswer("the program could not be wrapped")
    for index, (given, expected) in enumerate(zip(inputs, outputs, strict=True)):
        _check_stdio(method, given, expected, timeout, index)
