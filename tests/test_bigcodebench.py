"""BigCodeBench (tier 2) on committed fixtures in the official row format.

``tests/fixtures/bigcodebench/bigcodebench-fixtures.jsonl`` (written by ``make_fixtures.py`` in
the same folder) holds nine tasks shaped like the Hub rows: a pass, a wrong answer, a test that
hits the suite's alarm, endless tests, an endless import, a process that dies, a program that
raises before the tests, bigcodebench's environment (TZ, exit, kill commands) and a numpy task.
Each row's ``fixture_status`` is what bigcodebench 0.2.5's ``untrusted_check`` gives the program
the oracle's answer becomes (TIMEOUT_LIMIT = 2 s); :func:`test_verdicts_match_untrusted_check`
recomputes it with the installed package (CI installs it: ``.ci/run``).
"""

from __future__ import annotations

import ast
import contextlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from _support import REPO, run_cli
from fakes.fake_hub import FakeHub

from benchforge.answers import bigcodebench as answers
from benchforge.benchmarks import bigcodebench, load_benchmark
from benchforge.config import compose
from benchforge.errors import BenchforgeError
from benchforge.readiness import check_readiness
from benchforge.rundir import read_json, read_rows
from benchforge.sandbox import Limits, SandboxPool

FIXTURE = REPO / "tests" / "fixtures" / "bigcodebench" / "bigcodebench-fixtures.jsonl"
# The fixtures' libraries at whatever version this venv has (the pins are the container's).
ANY_VERSION = ["benchmark.pins.numpy=null", "benchmark.pins.matplotlib=null"]
LIMITS = Limits(timeout_s=10.0, memory_mb=4096, stack_mb=64, cpu_s=60, nofile=256, nproc=64,
                fsize_mb=16, max_output_bytes=100_000)
OFFICIAL = importlib.util.find_spec("bigcodebench") is not None
# Runs in its own session (killed as a group afterwards: untrusted_check leaves its Manager
# processes behind when it kills a child): programs in argv[1], statuses to argv[2].
OFFICIAL_CHECK = r"""
import json, sys
import matplotlib.pyplot  # the official guard imports it in the child; import it once here
import bigcodebench.eval as official
official.TIMEOUT_LIMIT = 2.0
out = []
for program, test in json.load(open(sys.argv[1])):
    status, details = official.untrusted_check(program, test, "task_func", 30 * 1024,
                                               30 * 1024, 10, 1, 1)
    out.append([status, sorted(details)])
open(sys.argv[2], "w").write(json.dumps(out))
"""


@pytest.fixture
def official() -> None:
    """The official package: skipped only where it is absent and not required (CI requires
    it: BENCHFORGE_REQUIRE_BIGCODEBENCH=1 in .ci/run)."""
    if OFFICIAL:
        return
    if os.environ.get("BENCHFORGE_REQUIRE_BIGCODEBENCH"):
        pytest.fail("bigcodebench is not installed but BENCHFORGE_REQUIRE_BIGCODEBENCH is set")
    pytest.skip("bigcodebench is not installed (.ci/run installs it)")


def rows() -> list[dict]:
    return [json.loads(line) for line in FIXTURE.read_text().splitlines()]


def bench(*extra: str):
    return load_benchmark(compose(["benchmark=bigcodebench", f"benchmark.path={FIXTURE}",
                                   "benchmark.timeout_s=2", *ANY_VERSION, *extra]))


def oracle_programs(b) -> list[tuple[str, str]]:
    """(program, test) the oracle's chat answer to each task becomes."""
    out = []
    for task in b.load().tasks:
        code = b.extract_code(task, b.reference_completion(task, "chat"), "chat")
        out.append((answers.program(task.data["code_prompt"], code), task.data["test"]))
    return out


def test_fixtures_are_in_the_official_row_format() -> None:
    statuses = set()
    for row in rows():
        assert set(bigcodebench.ROW_FIELDS) <= set(row)
        assert row["complete_prompt"].startswith(row["code_prompt"])
        statuses.add(row["fixture_status"])
    assert statuses == {"pass", "fail", "timeout"}


def test_prompts_stops_and_extraction() -> None:
    b = bench()
    task = b.load().tasks[0]
    [(role, text)] = b.prompt(task, "chat").messages
    assert role == "user" and text == (
        answers.INSTRUCTION_PREFIX + "\n```\n" + task.data["complete_prompt"].strip() + "\n```\n")
    instruct = bench("benchmark.variant=instruct")
    [(_, text)] = instruct.prompt(task, "chat").messages
    assert text == answers.INSTRUCTION_PREFIX + "\n" + task.data["instruct_prompt"].strip() + "\n"
    with pytest.raises(BenchforgeError, match="cannot do the instruct split"):
        instruct.prompt(task, "completion")
    assert b.prompt(task, "completion").text == task.data["complete_prompt"]
    assert b.stop_sequences("completion")[:4] == ["\ndef ", "\nclass ", "\nimport ", "\nfrom "]
    assert b.stop_sequences("chat") == [] and b.max_tokens("chat") == 1280
    completion = "    return 1\n\ndef helper():\n    pass\n"
    assert b.extract_code(task, completion, "completion") == (
        task.data["complete_prompt"] + "    return 1").strip()
    thinking = "<think>```python\nimport os\n```</think>" + b.reference_completion(task, "chat")
    assert b.extract_code(task, thinking, "chat") == b.reference_code(task).strip()
    assert b.rescoring_code(task, {"completion": "    return 2\n"}) == (
        task.data["complete_prompt"] + "    return 2\n")
    assert b.check_program(task, "x = 1").wall_limit_s() == 2 + 1 + 1 + 2


def test_sanitize_matches_bigcodebench(official: None) -> None:
    from bigcodebench.sanitize import sanitize as official

    answers_corpus = [b"```python\n" + r.encode() + b"\n```" for r in
                      (row.get("fixture_solution") or row["complete_prompt"] +
                       row["canonical_solution"] for row in rows())]
    answers_corpus = [a.decode() for a in answers_corpus] + [
        "Here:\n```python\nimport os\ndef task_func(x):\n    return helper(x)\n"
        "def helper(y):\n    return y\nprint(task_func(1))\n```\nDone.",
        "def task_func():\n    return 1\n\ntask_func()\n", "no code at all",
        "import math\nclass A:\n    pass\nX = A()\ndef task_func():\n    return X\n",
        "def task_func(:\n    pass\nimport os\n",
        "```python\nimport numpy as np\n\ndef helper(a):\n    return a\n\ndef task_func(a):\n"
        "    return helper(a)\n\nif __name__ == '__main__':\n    print(task_func(1))\n```",
        "First:\n```python\ndef task_func():\n    return 1\n```\nBetter:\n```python\n"
        "import os\ndef task_func():\n    return os.sep\n```",
        "def task_func(x):\n    return x\n\ndef task_func(x):\n    return 2 * x\n",
        "import re\nPATTERN = re.compile('a')\nUNUSED = 3\n@staticmethod\ndef task_func(s):\n"
        "    return PATTERN.findall(s)\nresult = task_func('aa')\n"]
    for answer in answers_corpus:
        assert answers.sanitize(answer, "task_func") == official(answer, "task_func"), answer


@pytest.mark.slow
def test_verdicts_match_untrusted_check(official: None, tmp_path: Path) -> None:
    """Differential: every fixture program through benchforge's sandbox and through
    ``bigcodebench.eval.untrusted_check`` (TIMEOUT_LIMIT = 2 s): the same status."""
    b = bench()
    programs = oracle_programs(b)
    (tmp_path / "in.json").write_text(json.dumps(programs))
    proc = subprocess.Popen([sys.executable, "-c", OFFICIAL_CHECK, str(tmp_path / "in.json"),
                             str(tmp_path / "out.json")], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True, cwd=tmp_path)
    try:
        assert proc.wait(timeout=240) == 0
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    out = (tmp_path / "out.json").read_text()
    official = [tuple(x) for x in json.loads(out)]
    with SandboxPool("bwrap", LIMITS, 1) as pool:
        results = [pool.run(b.runner_program(p, t)) for p, t in programs]
    ours = [(bigcodebench.official_status(r.passed, r.detail),
             ast.literal_eval(r.detail.split("failed=", 1)[1].split("\n", 1)[0])
             if "status=fail failed=" in r.detail else []) for r in results]
    assert [status for status, _ in official] == [row["fixture_status"] for row in rows()]
    assert ours == official  # the status and the failing tests' names


def test_loading_errors_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(BenchforgeError, match=r"v0\.1\.4-00000-of-00001\.parquet: BigCodeBench "
                       r"data not found; run `benchforge stage benchmark=bigcodebench_hard`"):
        load_benchmark(compose(["benchmark=bigcodebench_hard", f"data.root={tmp_path}"])).load()
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"task_id": "x", "complete_prompt": ""}) + "\n")
    with pytest.raises(BenchforgeError, match=r"row 1 lacks BigCodeBench field.*instruct_prompt"):
        load_benchmark(compose(["benchmark=bigcodebench", f"benchmark.path={bad}"])).load()
    with pytest.raises(BenchforgeError, match=r"benchmark\.variant=chat: expected complete"):
        bench("benchmark.variant=chat").prompt(bench().load().tasks[0], "chat")


def test_stage_fetches_the_split_from_the_hub(tmp_path: Path) -> None:
    blob = tmp_path / "blob.parquet"
    pq.write_table(pa.Table.from_pylist(rows()), blob)
    files = {"data/v0.1.4-00000-of-00001.parquet": blob.read_bytes()}
    commit = "a" * 40
    repos = {"datasets/bigcode/bigcodebench-hard": {"sha": commit, "files": files}}
    args = ["benchmark=bigcodebench_hard", f"data.root={tmp_path / 'data'}",
            f"run.root={tmp_path / 'runs'}", f"benchmark.version=v0.1.4@{commit}"]
    with FakeHub(repos) as server:
        env = {"HF_ENDPOINT": server.url, "HF_HUB_DISABLE_TELEMETRY": "1"}
        proc = run_cli("stage", *args, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    staged = tmp_path / "data" / "bigcodebench" / "hard" / "data" / \
        "v0.1.4-00000-of-00001.parquet"
    assert staged.read_bytes() == blob.read_bytes()
    dataset = load_benchmark(compose(args)).load()
    assert [t.task_id for t in dataset.tasks] == [r["task_id"] for r in rows()]
    assert dataset.extra["hf_dataset"] == "bigcode/bigcodebench-hard"


def test_gate_lists_missing_pinned_libraries(tmp_path: Path) -> None:
    """Refuses with each missing piece (a pin that does not match, a module that is absent),
    passes once the pins match this venv."""
    extra = tmp_path / "extra.jsonl"
    row = dict(rows()[-1], task_id="BigCodeBench/999", libs="['numpy', 'no_such_lib_bf']")
    extra.write_text(FIXTURE.read_text() + json.dumps(row) + "\n")
    strict = load_benchmark(compose(["benchmark=bigcodebench", f"benchmark.path={extra}",
                                     "benchmark.pins.numpy=0.0.1"]))
    with SandboxPool("bwrap", LIMITS, 1) as pool:
        record = check_readiness(strict, pool, "bigcodebench")
        assert not record["ok"] and record["smoke"] == {"run": False}
        import matplotlib
        import numpy

        assert record["missing"] == [
            f"matplotlib: version {matplotlib.__version__}, pinned 3.7.0 (install: pip "
            "install 'matplotlib==3.7.0')",
            "no_such_lib_bf: not importable (install: a distribution providing the module "
            "no_such_lib_bf (not pinned: add it to benchmark.pins))",
            f"numpy: version {numpy.__version__}, pinned 0.0.1 (install: pip install "
            "'numpy==0.0.1')"]
        ready = check_readiness(bench(), pool, "bigcodebench")
    assert ready["ok"] and ready["smoke"]["passed"], ready
    assert [r["name"] for r in ready["requirements"]] == ["matplotlib", "numpy"]


@pytest.mark.slow
def test_scored_end_to_end_through_the_oracle(workdir: Path) -> None:
    """Every fixture task gets bigcodebench's status; the gate ran first and is in provenance;
    the reference self-check passes every canonical solution."""
    args = ["benchmark=bigcodebench", f"benchmark.path={FIXTURE}", "benchmark.timeout_s=2",
            *ANY_VERSION, "score.audit_timeouts=false", "generate.progress=false",
            "score.workers=2"]
    proc = run_cli("run", *args, cwd=workdir, timeout=400)
    assert proc.returncode == 0, proc.stderr
    cell = workdir / "runs" / "default" / "oracle" / "bigcodebench"
    results = {r["task_id"]: r for r in read_rows(cell / "results.jsonl")}
    assert {t: bigcodebench.official_status(r["passed"], r["detail"])
            for t, r in results.items()} == {r["task_id"]: r["fixture_status"] for r in rows()}
    assert results["BigCodeBench/902"]["failure_mode"] == "timeout"  # the alarm, in a test
    assert results["BigCodeBench/901"]["failure_mode"] == "assertion"
    assert read_json(cell / "metrics.json")["pass@1"]["value"] == pytest.approx(3 / 9)
    provenance = read_json(cell / "provenance.json")
    assert provenance["readiness"]["ok"] and provenance["dataset"]["version"] == "v0.1.4"
    assert provenance["dataset"]["sha256"] and provenance["dataset"]["semantics"].startswith(
        "bigcodebench 0.2.5")
    assert {r["name"] for r in provenance["readiness"]["requirements"]} == {"matplotlib",
                                                                          "numpy"}
    reference = run_cli("run", *args, "score.reference=true", cwd=workdir, timeout=400)
    assert reference.returncode == 0, reference.stderr
    ref = workdir / "runs" / "default" / "reference" / "bigcodebench" / "results.jsonl"
    assert all(r["passed"] for r in read_rows(ref)) and len(read_rows(ref)) == 9


def test_container_pins_are_the_gates() -> None:
    import re

    text = (REPO / "containers" / "bigcodebench.def").read_text()
    pinned = dict(re.findall(r"'([A-Za-z0-9_.-]+)==([^']+)'", text))
    for name in ("bigcodebench", "bigcodebench_hard"):
        assert pinned == dict(compose([f"benchmark={name}"]).benchmark.pins)


def test_long_failures_keep_the_status() -> None:
    """Five tests failing with long tracebacks: the detail still starts with the status and
    names every failing test (the sandbox keeps only the detail's last 4000 characters)."""
    code = "def task_func():\n    raise ValueError('x' * 5000)\n"
    test = "import unittest\nclass TestCases(unittest.TestCase):\n" + "".join(
        f"    def test_case_{i}(self):\n        task_func()\n" for i in range(5))
    with SandboxPool("bwrap", LIMITS, 1) as pool:
        result = pool.run(bench().runner_program(code, test))
    assert bigcodebench.official_status(result.passed, result.detail) == "fail"
    assert result.failure_mode == "runtime_error"
    assert f"failed={[f'test_case_{i}' for i in range(5)]}" in result.detail
