"""MultiPL-E's per-language execution and verdict rules, run as trusted test code in the sandbox.

Stdlib only: this module's source is sent to the sandbox worker and executed after the sample's
``__program__`` (a string) is defined; :func:`evaluate` then writes the program to the sample's
private working directory, compiles and runs it with each language's toolchain and turns the
outcome into MultiPL-E's status string exactly as its evaluation scripts do:

- ``cpp``  (``eval_cpp.py``): ``g++ <f>.cpp -o <f> -std=c++17`` (15 s; non-zero exit or timeout:
  ``SyntaxError``), then ``<f>`` (15 s): timeout ``Timeout``, exit != 0 ``Exception``, else ``OK``.
- ``java`` (``eval_java.py``): ``javac -encoding UTF8 -d <out> <f>.java`` with CLASSPATH the
  javatuples 1.2 jar (15 s; non-zero or timeout: ``SyntaxError``), then
  ``java -ea -cp <out>:<jar> Problem`` (15 s): ``Timeout`` / ``OK`` (exit 0) / ``Exception``.
- ``js``   (``eval_javascript.py``): ``node <f>.js`` (5 s): ``Timeout``; exit 0 ``OK``; else
  ``AssertionError`` (``ERR_ASSERTION`` in the output), ``SyntaxError``, ``ReferenceError``,
  else ``Exception``.
- ``go_test.go`` (``eval_go.py``): ``go test <f>_test.go`` (30 s for build and run): timeout
  ``Timeout``; ``[setup failed]`` or ``[build failed]`` in stdout ``SyntaxError``; ``FAIL`` in
  stdout ``Exception``; else ``OK``.
- ``rs``   (``eval_rust.py``): ``rustc <f>.rs -o <f>`` (15 s; timeout ``Timeout``, non-zero
  ``SyntaxError``), then ``<f>`` (5 s): ``Timeout`` / ``OK`` (exit 0) / ``Exception``.
- ``py``   (``eval_python.py``): ``python3 <f>.py`` (15 s): ``Timeout``; exit 0 ``OK``;
  ``SyntaxError`` in stderr ``SyntaxError``; else ``Exception``.

A sample passes iff status is ``OK`` and the exit code is 0 (MultiPL-E ``pass_k.py``). Every
process runs in its own session and the whole group is killed afterwards (``safe_subprocess``).
Source: github.com/nuprl/MultiPL-E, ``evaluation/src/`` (``safe_subprocess``, ``eval_java``,
``eval_go``, ``eval_python``; ``eval_cpp``, ``eval_rust``, ``eval_javascript`` as in ``src/``
at 73dd78b3 / 44ca8bbd).
"""

import contextlib
import os
import signal
import subprocess
import tempfile
import time

# Where MultiPL-E's container keeps javatuples (first), then Debian's libjavatuples-java.
JAVATUPLES = ("/usr/multiple/javatuples-1.2.jar", "/usr/share/java/javatuples-1.2.jar",
              "/usr/share/java/javatuples.jar")
SUFFIX = {"cpp": ".cpp", "java": ".java", "js": ".js", "go_test.go": "_test.go", "rs": ".rs",
          "py": ".py"}
SAVED_BYTES = 2048  # safe_subprocess keeps at most this much of each stream


class CompileError(Exception):
    """MultiPL-E status ``SyntaxError``."""


class TimeLimitExceeded(Exception):
    """MultiPL-E status ``Timeout``."""


class ProgramFailed(Exception):
    """MultiPL-E status ``Exception``, ``ReferenceError`` (or OK with a non-zero exit code)."""


def run(args, timeout_s, env=None):
    """``args`` in a new session; its process group is killed when it ends or times out.

    Returns (timed_out, exit_code, stdout, stderr); exit_code is -1 on timeout, the negative
    signal number when killed by a signal (like ``Popen.returncode``).
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                start_new_session=True, env=env)
        try:
            code = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            code = None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        if code is None:
            proc.wait()
        texts = []
        for stream in (out, err):
            stream.seek(0)
            texts.append(stream.read(SAVED_BYTES).decode("utf-8", errors="ignore"))
    return code is None, -1 if code is None else code, texts[0], texts[1]


def javatuples():
    """The javatuples jar Java programs are compiled against: the first of
    :data:`JAVATUPLES` that exists (MultiPL-E's Java image puts it in ``/usr/multiple``),
    else the first path (the compile error then names it).
    """
    for path in JAVATUPLES:
        if os.path.isfile(path):
            return path
    return JAVATUPLES[0]


def status_of(language, path):
    """Compile and run ``path``; MultiPL-E's (status, exit_code, stdout, stderr)."""
    base = path[: -len(SUFFIX[language])] if language != "go_test.go" else path[:-3]
    if language == "cpp":
        timed_out, code, out, err = run(["g++", path, "-o", base, "-std=c++17"], 15)
        if code != 0:
            return "SyntaxError", code, out, err
        timed_out, code, out, err = run([base], 15)
        return ("Timeout" if timed_out else "Exception" if code != 0 else "OK"), code, out, err
    if language == "java":
        jar = javatuples()
        env = dict(os.environ, CLASSPATH=jar)
        outdir = tempfile.mkdtemp(dir=os.path.dirname(path))
        timed_out, code, out, err = run(["javac", "-encoding", "UTF8", "-d", outdir, path], 15,
                                        env)
        if code != 0:
            return "SyntaxError", code, out, err
        timed_out, code, out, err = run(["java", "-ea", "-cp", f"{outdir}:{jar}", "Problem"],
                                        15, env)
        return ("Timeout" if timed_out else "OK" if code == 0 else "Exception"), code, out, err
    if language == "js":
        timed_out, code, out, err = run(["node", path], 5)
        if timed_out:
            return "Timeout", -1, out, err
        text = out + err
        status = ("OK" if code == 0 else "AssertionError" if "ERR_ASSERTION" in text
                  else "SyntaxError" if "SyntaxError" in text
                  else "ReferenceError" if "ReferenceError" in text else "Exception")
        return status, code, out, err
    if language == "go_test.go":
        timed_out, code, out, err = run(["go", "test", path], 30)
        if timed_out:
            return "Timeout", None, out, err
        status = ("SyntaxError" if "[setup failed]" in out or "[build failed]" in out
                  else "Exception" if "FAIL" in out else "OK")
        return status, code, out, err
    if language == "rs":
        timed_out, code, out, err = run(["rustc", path, "-o", base], 15)
        if timed_out:
            return "Timeout", -1, out, err
        if code != 0:
            return "SyntaxError", code, out, err
        timed_out, code, out, err = run([base], 5)
        return ("Timeout" if timed_out else "OK" if code == 0 else "Exception"), code, out, err
    if language == "py":
        timed_out, code, out, err = run(["python3", path], 15)
        status = ("Timeout" if timed_out else "OK" if code == 0
                  else "SyntaxError" if "SyntaxError" in err else "Exception")
        return status, code, out, err
    raise ValueError(f"MultiPL-E language {language!r} is not supported")


def link_tools(folder, tools):
    """Put ``tools`` (name -> the host's resolved path) first on PATH, as symlinks in
    ``folder``: the official command lines stay the same, but no lookup goes through
    ``/etc/alternatives`` (not visible in every sandbox view). Missing targets are skipped."""
    bin_dir = os.path.join(folder, "bin")
    os.mkdir(bin_dir)
    for name, target in (tools or {}).items():
        if target and os.path.isfile(target):
            os.symlink(target, os.path.join(bin_dir, name))
    os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "/usr/bin:/bin")
    # node reads /etc/ssl/openssl.cnf at start-up and exits 13 where /etc is not readable.
    os.environ.setdefault("OPENSSL_CONF", os.devnull)


def evaluate(program, language, tools=None):
    """Write ``program``, run it, raise unless MultiPL-E counts it as passed; ``tools`` maps
    executable names to resolved paths (see :func:`link_tools`)."""
    folder = tempfile.mkdtemp(prefix="multiple-")
    link_tools(folder, tools)
    path = os.path.join(folder, "program" + SUFFIX[language])
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(program)
    started = time.monotonic()
    status, code, out, err = status_of(language, path)
    detail = (f"status={status} exit_code={code} ({time.monotonic() - started:.2f}s)\n"
              f"stdout: {out[-600:]}\nstderr: {err[:1200]}")
    if status == "OK" and code == 0:
        return
    if status == "SyntaxError":
        raise CompileError(detail)
    if status == "Timeout":
        raise TimeLimitExceeded(detail)
    if status == "AssertionError":
        raise AssertionError(detail)
    raise ProgramFailed(detail)
