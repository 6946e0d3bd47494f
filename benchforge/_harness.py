"""Trusted runner executed in each sample's child process (stdlib only, run by path).

    python -I -B _harness.py <result_fd> <limits_json> <program.py>

It applies the rlimits, runs the program, and writes one JSON verdict to ``result_fd``. No
verdict at all means the program ended the process itself (exit, signal, kill).
"""

import errno
import json
import os
import resource
import sys
import traceback

MB = 1024 * 1024


def apply_limits(limits):
    for name, value in (
        ("RLIMIT_AS", limits["memory_mb"] * MB),
        ("RLIMIT_DATA", limits["memory_mb"] * MB),
        ("RLIMIT_CPU", limits["cpu_s"]),
        ("RLIMIT_NOFILE", limits["nofile"]),
        ("RLIMIT_FSIZE", limits["fsize_mb"] * MB),
        ("RLIMIT_CORE", 0),
    ):
        if hasattr(resource, name):
            resource.setrlimit(getattr(resource, name), (value, value))


def main():
    result_fd = int(sys.argv[1])
    limits = json.loads(sys.argv[2])
    with open(sys.argv[3], encoding="utf-8") as fh:
        source = fh.read()
    sys.stdin.close()

    def report(status, detail=""):
        os.write(result_fd, json.dumps({"status": status, "detail": detail[-2000:]}).encode())
        os.close(result_fd)
        os._exit(0)  # skip atexit hooks and finalizers the program may have registered

    apply_limits(limits)
    try:
        code = compile(source, "program.py", "exec")
    except (SyntaxError, ValueError) as exc:
        report("syntax_error", f"{type(exc).__name__}: {exc}")
    namespace = {"__name__": "__main__", "__builtins__": __builtins__}
    sys.setrecursionlimit(5000)
    try:
        exec(code, namespace)
    except AssertionError:
        report("assertion", traceback.format_exc())
    except MemoryError:
        report("memory", "MemoryError")
    except OSError as exc:
        if exc.errno == errno.EFBIG:  # RLIMIT_FSIZE hit (Python ignores SIGXFSZ)
            report("output_limit", f"output or files beyond {limits['fsize_mb']} MB")
        report("runtime_error", traceback.format_exc())
    except SystemExit as exc:
        report("early_exit", f"SystemExit({exc.code!r}) before the checks finished")
    except BaseException:
        report("runtime_error", traceback.format_exc())
    report("passed")


main()
