"""lcb_runner's process set-up for graded code, run in the sandbox child before the sample.

Standard library only: this source is exec'd once in the sandbox worker (so ``unittest.mock``,
which the grader patches stdin with, is imported once and inherited by every forked child) and
``reliability_guard()`` is called in each child before the sample runs.

Re-states, in benchforge's words, what lcb_runner @28fef95 does to the process that runs a
generation (``lcb_runner/evaluation/testing_util.py: reliability_guard`` called with no memory
limit, and ``compute_code_generation_metrics.py`` at import):

- ``builtins.quit`` is set to None (``exit`` is left alone: ``exit()`` is a clean stop, ``quit()``
  a TypeError, i.e. a Runtime Error);
- destructive ``os`` / ``shutil`` / ``subprocess`` functions are set to None, ``help`` too, and
  ``ipdb joblib resource psutil tkinter`` cannot be imported; ``OMP_NUM_THREADS=1``;
- ``sys.set_int_max_str_digits(50000)`` (ints up to 50000 digits print and parse);
- the C stack is the host's: lcb_runner sets no limit, so a typical Linux host's default
  ``ulimit -s`` of 8 MiB applies (``STACK_BYTES``; deep recursion through C code such as
  ``functools.lru_cache`` overflows it and the process dies).

With ``FIXED`` (``benchmark.lcb_fixes=true``) ``quit()`` behaves as ``exit()`` and the stack
keeps the sandbox's ``sandbox.stack_mb``.
"""

import builtins
import os
import resource
import shutil
import subprocess
import sys
import unittest.mock  # noqa: F401  (imported before the fork; the grader patches with it)

FIXED = False  # set by the benchmark: the corrected harness (benchmark.lcb_fixes)
STACK_BYTES = 8 * 1024 * 1024  # a typical host's default RLIMIT_STACK (ulimit -s 8192)
INT_MAX_STR_DIGITS = 50000  # compute_code_generation_metrics.py: sys.set_int_max_str_digits

OS_DISABLED = ("kill", "system", "putenv", "remove", "removedirs", "rmdir", "fchdir", "setuid",
               "fork", "forkpty", "killpg", "rename", "renames", "truncate", "replace", "unlink",
               "fchmod", "fchown", "chmod", "chown", "chroot", "lchflags", "lchmod", "lchown",
               "getcwd", "chdir")
MODULES_DISABLED = ("ipdb", "joblib", "resource", "psutil", "tkinter")


def reliability_guard() -> None:
    """Apply lcb_runner's guard (no memory limit of its own: the sandbox's rlimits stand)."""
    if hasattr(sys, "set_int_max_str_digits"):
        sys.set_int_max_str_digits(INT_MAX_STR_DIGITS)
    if not FIXED:
        soft, hard = resource.getrlimit(resource.RLIMIT_STACK)
        if soft == resource.RLIM_INFINITY or soft > STACK_BYTES:
            resource.setrlimit(resource.RLIMIT_STACK, (STACK_BYTES, hard))
    builtins.quit = getattr(builtins, "exit", None) if FIXED else None
    os.environ["OMP_NUM_THREADS"] = "1"
    for name in OS_DISABLED:
        setattr(os, name, None)
    shutil.rmtree = shutil.move = shutil.chown = None
    subprocess.Popen = None
    builtins.help = None
    for name in MODULES_DISABLED:
        sys.modules[name] = None
