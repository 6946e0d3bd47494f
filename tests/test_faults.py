"""Faults a user or the environment causes: each is one clear line (no traceback), naming the
file/field/key and what to do; the expensive ones happen once."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from _support import run_cli

from benchforge.client import ClientSettings, Request, generate
from benchforge.engine import free_port
from benchforge.errors import BenchforgeError


@contextmanager
def bad_server(mode: str) -> Iterator[str]:
    """A stdlib OpenAI-compatible server whose /v1/models is fine and whose completions are
    ``malformed`` (HTTP 200, JSON type, cut-off body) or ``hang`` (never answer)."""
    stop = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _send(self, code: int, body: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            self._send(200, json.dumps({"object": "list", "data": [
                {"id": "m", "object": "model"}]}).encode())

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if mode == "hang":
                stop.wait(30)
                return
            self._send(200, b'{"choices": [ {"message": ')

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        stop.set()
        server.shutdown()
        server.server_close()


def one_request(humaneval) -> list[Request]:
    bench, dataset = humaneval
    return [Request(dataset.tasks[0].task_id, 0, bench.prompt(dataset.tasks[0], "chat"))]


def test_malformed_json_reply_names_status_and_first_bytes(humaneval) -> None:
    with bad_server("malformed") as url, pytest.raises(
            BenchforgeError, match=r"malformed reply for HumanEval/0#0: HTTP 200 with a body "
                                   r"that is not JSON .*first bytes: '\{\"choices\": \[ "):
        generate(one_request(humaneval), ClientSettings(url, "m", max_retries=0),
                 lambda r, c: None)


def test_timeout_is_named_as_such_with_its_key_and_a_warning_per_retry(humaneval,
                                                                      caplog) -> None:
    caplog.set_level(logging.WARNING, logger="benchforge")
    with bad_server("hang") as url, pytest.raises(BenchforgeError) as caught:
        generate(one_request(humaneval), ClientSettings(url, "m", timeout_s=1, max_retries=2),
                 lambda r, c: None)
    message = str(caught.value)
    assert "no answer within model.request_timeout_s=1 s (3 attempts)" in message
    assert "unreachable" not in message and "is the server up" not in message
    retries = [r for r in caplog.records if "retry" in r.getMessage()]
    assert [r.levelname for r in retries] == ["WARNING", "WARNING"]
    assert "retry 1 of 2 (model.max_retries)" in retries[0].getMessage()


def test_refused_connection_is_not_called_a_timeout(humaneval) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(BenchforgeError, match="connection refused") as caught:
        generate(one_request(humaneval), ClientSettings(url, "m", max_retries=0),
                 lambda r, c: None)
    assert "request_timeout_s" not in str(caught.value)


def test_non_utf8_samples_file_names_file_line_and_byte(tmp_path: Path) -> None:
    from benchforge.stages.score import read_samples_file

    good = json.dumps({"task_id": "HumanEval/0", "solution": "x"}).encode()
    bad = b'{"task_id": "HumanEval/1", "solution": "\xff\xfe\xc3("}'
    source = tmp_path / "samples.jsonl"
    source.write_bytes(good + b"\n" + good + b"\n" + bad + b"\n")
    offset = 2 * (len(good) + 1) + bad.index(b"\xff")
    with pytest.raises(BenchforgeError, match=rf"samples.jsonl:3: not UTF-8 \(byte 0xff at "
                                              rf"byte offset {offset} of the file"):
        read_samples_file(source)
    from benchforge.rundir import read_rows

    cell_file = tmp_path / "results.jsonl"  # the same in a cell's own files, mid-file
    cell_file.write_bytes(bad + b"\n" + good + b"\n")
    with pytest.raises(BenchforgeError, match=r"results.jsonl:1: not UTF-8 \(byte 0xff"):
        read_rows(cell_file)


def test_excluded_tasks_name_limit_or_version(tmp_path: Path, shared_data: Path,
                                              humaneval) -> None:
    _, dataset = humaneval
    source = tmp_path / "he.jsonl"
    source.write_text("".join(json.dumps({"task_id": t.task_id, "solution": "pass"}) + "\n"
                              for t in dataset.tasks[:5]))
    proc = run_cli("score", "benchmark=humaneval", "benchmark.limit=3",
                   f"score.samples={source}", f"run.dir={tmp_path / 'cell'}",
                   f"run.root={tmp_path / 'runs'}", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].endswith(
        "row 4: HumanEval/3 is outside benchmark.limit=3 (the first 3 tasks of "
        "benchmark=humaneval); drop the limit or pass a file with only those tasks")
    mbpp = tmp_path / "mbpp.jsonl"
    mbpp.write_text(json.dumps({"task_id": "Mbpp/83", "solution": "pass"}) + "\n")
    proc = run_cli("score", "benchmark=mbppplus", f"data.root={shared_data}",
                   f"score.samples={mbpp}", f"run.dir={tmp_path / 'cell2'}",
                   f"run.root={tmp_path / 'runs'}", cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "Mbpp/83 is a task of benchmark=mbppplus at benchmark.version=v0.1.0, not at " \
           "v0.2.0" in proc.stderr


def test_failed_expected_output_build_runs_once_and_leaves_no_temp(tmp_path: Path,
                                                                   shared_data: Path,
                                                                   monkeypatch) -> None:
    """Scoring threads all ask for the expected outputs at once: one build, one error."""
    import io

    from benchforge.benchmarks import _evalplus, load_benchmark
    from benchforge.config import compose

    cfg = compose(["benchmark=humanevalplus", "benchmark.version=v0.1.9",
                   f"data.root={shared_data}", f"data.cache={tmp_path / 'cache'}"])
    bench = load_benchmark(cfg)
    bench.load()
    calls = []

    class FailingBuild:
        def __init__(self, cmd, **kwargs) -> None:
            calls.append(cmd)
            self.stdout = io.StringIO("done 1 164\n")
            self.stderr = io.StringIO("OSError: [Errno 28] No space left on device\n")
            self.returncode = 1

        def wait(self) -> int:
            return 1

    monkeypatch.setattr(_evalplus.subprocess, "Popen", FailingBuild)
    errors: list[str] = []

    def ask() -> None:
        try:
            bench.prepare_scoring(2, False)
        except BenchforgeError as exc:
            errors.append(str(exc))

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len(errors) == 8 and len(set(errors)) == 1
    assert errors[0].startswith(f"data.cache={tmp_path / 'cache'}: computing the humanevalplus "
                                "expected outputs into evalplus-humaneval-")
    assert "(~110 MB) from " in errors[0]
    assert errors[0].endswith("failed: OSError: [Errno 28] No space left on device; free space "
                              "there or set data.cache to another disk, then rerun")


def test_groundtruth_writer_removes_its_build_folder_on_failure(tmp_path: Path, monkeypatch,
                                                                capsys) -> None:
    from benchforge.benchmarks import _evalplus, _groundtruth

    target = tmp_path / "cache" / "truth"
    target.parent.mkdir()
    leftover = target.parent / f".{target.name}.build-999999999"  # from a killed run
    leftover.mkdir()
    (leftover / "HumanEval_0.pkl").write_bytes(b"x")
    _evalplus._remove_stale_builds(target)
    assert not leftover.exists()
    monkeypatch.setattr(_groundtruth.json, "dumps", lambda *a: (_ for _ in ()).throw(
        OSError(28, "No space left on device")))
    monkeypatch.setattr("sys.argv", ["x", "humaneval", "unused", str(target), "1"])
    monkeypatch.setattr("benchforge.benchmarks._evalplus.read_tasks", lambda *a: ([], "m"))
    with pytest.raises(SystemExit):
        _groundtruth.main()
    assert capsys.readouterr().err.strip() == "OSError: [Errno 28] No space left on device"
    assert list(target.parent.iterdir()) == []


@contextmanager
def small_disk(path: Path, free_kb: int) -> Iterator[Path]:
    """A 2 MB tmpfs at ``path`` with about ``free_kb`` KB left (CI runs as root)."""
    import os
    import shutil
    import subprocess

    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(path)], check=True)
    try:
        avail = shutil.disk_usage(path).free
        (path / "filler").write_bytes(b"\0" * max(avail - free_kb * 1024, 0))
        yield path
    finally:
        os.sync()
        subprocess.run(["umount", "-l", str(path)], check=False)


def one_error_line(proc) -> str:
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if ": error: " in line]
    assert len(errors) == 1, proc.stderr
    return errors[0]


@pytest.mark.skipif(__import__("os").geteuid() != 0, reason="mounts a tmpfs: needs root "
                                                           "(CI runs as root)")
def test_full_disk_is_one_line_and_status_verify_still_answer(tmp_path: Path) -> None:
    with small_disk(tmp_path / "disk", 150) as disk:
        root = disk / "runs"
        proc = run_cli("run", f"run.root={root}", "generate.progress=false", cwd=tmp_path)
        assert proc.returncode == 2
        line = one_error_line(proc)
        assert "samples.jsonl: no space left on device" in line and f"run.root={root}" in line
        assert "complete rows in the file are kept" in line
        (disk / "filler").write_bytes(b"")  # refill whatever the run had left
        (disk / "more").write_bytes(b"\0" * __import__("shutil").disk_usage(disk).free)
        for stage in ("status", "verify"):
            answer = run_cli(stage, f"run.root={root}", cwd=tmp_path)
            assert "Traceback" not in answer.stderr and answer.returncode in (0, 1), answer.stderr
        assert "oracle" in run_cli("status", f"run.root={root}", cwd=tmp_path).stdout
    with small_disk(tmp_path / "cache", 0) as cache:
        proc = run_cli("run", "score.reference=true", f"data.cache={cache}",
                       f"run.root={tmp_path / 'runs'}", "generate.progress=false", cwd=tmp_path)
        assert proc.returncode == 2
        line = one_error_line(proc)
        assert f"{cache}/reference-humaneval-" in line and f"data.cache={cache}" in line


# ------------------------------------------------------------------ every raise, every entry
# Raises that are not a BenchforgeError, and why that is right: code run inside the sandbox
# child (its exceptions become verdicts), Python protocols, signal handling, and a restricted
# unpickler whose refusal is caught and reported by its caller.
INTERNAL_RAISES = {
    ("sandbox/_worker.py", "*"): "inside the sandbox child: exceptions are the sample's verdict",
    ("benchmarks/_lcb_grader.py", "*"): "inside the sandbox child (LiveCodeBench checks)",
    ("benchmarks/_multiple_runner.py", "*"): "inside the sandbox child (MultiPL-E runs)",
    ("benchmarks/_bcb_runner.py", "*"): "inside the sandbox child (BigCodeBench's checks)",
    ("benchmarks/_groundtruth.py", "*"): "expected-output subprocess: main prints any "
                                         "exception as one line, the host raises "
                                         "BenchforgeError",
    ("__init__.py", "AttributeError"): "module __getattr__ protocol",
    ("stages/__init__.py", "AttributeError"): "module __getattr__ protocol (lazy run_*)",
    ("sandbox/conformance.py", "ConformanceError"): "a failed check: run_suite reports it",
    ("benchmarks/__init__.py", "KeyError"): "Dataset.task lookup (mapping protocol)",
    ("benchmarks/livecodebench.py", "UnpicklingError"): "refusal caught by its caller",
    ("procutil.py", "SystemExit"): "signal handler: leave after stopping the server",
    ("shard.py", "ShardTerminated"): "SLURM SIGTERM: exit for the requeue",
    ("cli.py", "VerifyFailed"): "printed by run_command as the list of problems",
    ("cli.py", "Terminated"): "signal handler: SIGTERM unwinds like Ctrl-C, main prints one line",
    ("cli.py", "KeyboardInterrupt"): "signal handler: SIGINT after the sandbox workers are killed",
}


def _raised_name(node) -> str | None:
    import ast

    exc = node.exc
    if isinstance(exc, ast.Call):
        exc = exc.func
    if isinstance(exc, ast.Attribute):
        return exc.attr
    if isinstance(exc, ast.Name):
        return exc.id
    return None


def test_every_raise_is_a_user_facing_error_or_a_documented_internal() -> None:
    """Each `raise` in benchforge builds a BenchforgeError (one line at the CLI), re-raises,
    or is listed in INTERNAL_RAISES with the reason."""
    import ast
    import importlib
    import inspect
    import pkgutil

    import benchforge

    for info in pkgutil.walk_packages(benchforge.__path__, "benchforge."):
        if not info.name.endswith(("_worker", "__main__")):
            importlib.import_module(info.name)
    user_facing = {BenchforgeError.__name__}
    stack = [BenchforgeError]
    while stack:
        for sub in stack.pop().__subclasses__():
            user_facing.add(sub.__name__)
            stack.append(sub)
    root = Path(benchforge.__file__).parent
    builders = set()  # functions that return a BenchforgeError to raise
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and node.returns is not None and \
                    ast.unparse(node.returns) in user_facing:
                builders.add(node.name)
    unexplained = []
    for path in sorted(root.rglob("*.py")):
        rel = str(path.relative_to(root))
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Raise) or node.exc is None:
                continue
            name = _raised_name(node)
            is_call = isinstance(node.exc, ast.Call)
            if not is_call and isinstance(node.exc, ast.Name | ast.Attribute) and \
                    name not in user_facing:
                continue  # re-raise of a caught exception object
            if name in user_facing or name in builders:
                continue
            if (rel, "*") in INTERNAL_RAISES or (rel, name) in INTERNAL_RAISES:
                continue
            unexplained.append(f"{rel}:{node.lineno}: raise {name}")
    assert not unexplained, unexplained
    assert {"DiskFull", "CellLocked", "MarkerMismatch"} <= user_facing
    assert inspect.isclass(BenchforgeError)


def test_every_entry_point_prints_user_errors_as_one_line(tmp_path: Path, monkeypatch,
                                                          capsys) -> None:
    """Every stage of the CLI, and every user-facing error class (and a full disk anywhere):
    one line on stderr, exit 2, no traceback."""
    import errno

    import benchforge.stages as stages
    from benchforge import cli
    from benchforge.rundir import DiskFull

    classes = [BenchforgeError]
    stack = [BenchforgeError]
    while stack:
        for sub in stack.pop().__subclasses__():
            classes.append(sub)
            stack.append(sub)
    raised: list[BaseException] = []

    def failing(cfg):
        raise raised[-1]

    monkeypatch.setattr(stages, "runner", lambda name: failing)
    monkeypatch.chdir(tmp_path)
    cases = [(stage, BenchforgeError(f"{stage} failed")) for stage in stages.COMMANDS]
    for cls in classes:
        exc = cls.__new__(cls)
        Exception.__init__(exc, f"{cls.__name__} happened")
        if cls is DiskFull:
            exc.path = tmp_path / "runs" / "x"
        cases.append(("score", exc))
    cases.append(("run", OSError(errno.ENOSPC, "No space left on device", "/x/samples.jsonl")))
    for stage, exc in cases:
        raised.append(exc)
        code = cli.main([stage, f"run.root={tmp_path / 'runs'}"])
        err = capsys.readouterr().err.strip().splitlines()
        assert "Traceback" not in "\n".join(err)
        assert len(err) == 1 and err[0].startswith(f"benchforge {stage}: "), (stage, exc, err)
        assert code in (2, 3), (stage, exc, code)


def test_a_damaged_expected_output_store_is_one_error_not_failed_samples(tmp_path: Path) -> None:
    """HumanEval+ scoring refuses a store whose index.json is unreadable or whose file does
    not match the index, naming the folder and how to rebuild it."""
    import json

    from benchforge.benchmarks import _evalplus
    from benchforge.errors import BenchforgeError

    store = tmp_path / "store"
    store.mkdir()
    (store / "T_0.pkl").write_bytes(b"abc")
    bench = object.__new__(_evalplus.EvalPlusBenchmark)
    bench._truth_error = None
    bench._dataset = type("D", (), {"tasks": [type("T", (), {"task_id": "T/0"})()]})()
    (store / "index.json").write_text('{"T/0": ')
    with pytest.raises(BenchforgeError, match=r"store is damaged: index.json cannot be read"):
        bench._checked_index(store)
    bench._truth_error = None
    (store / "index.json").write_text(json.dumps(
        {"T/0": {"file": "T_0.pkl", "times": {}, "bytes": 4, "sha256": "0"}}))
    with pytest.raises(BenchforgeError) as refused:
        bench._checked_index(store)
    assert str(refused.value) == (f"{store}: the expected-output store is damaged: T_0.pkl has "
                                  "3 bytes, not 4; delete that folder and rerun to rebuild it")
    assert bench._truth_error is refused.value  # later samples get the same error
