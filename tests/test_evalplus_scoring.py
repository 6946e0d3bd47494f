"""EvalPlus scoring mechanics on a tiny dataset: dependent suites, the narrow timeout audit,
largest-first order and the once-per-host expected outputs."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from _support import run_cli

from benchforge.rundir import read_rows

PROMPT = "def {name}(x):\n    \"\"\"doc\"\"\"\n"
TASKS = [  # (name, canonical body, base inputs, plus inputs)
    ("add_one", "    return x + 1\n", [[1], [2]], [[3], [4], [5]]),
    ("double", "    return 2 * x\n", [[1]], [[2], [7], [9]]),
    ("square", "    return x * x\n", [[2]], [[3]]),
    ("slow_ref", "    import time\n    time.sleep(0.05)\n    return x\n", [[1]], [[2]]),
]
SAMPLES = {
    # base fails: plus cannot change base or base AND plus
    "add_one": "def add_one(x):\n    return x + 2\n",
    # passes base; plus inputs #1 (7) and #2 (9) take 1.5 s each > their 1 s limit, but < 2 s:
    # the first timeout ends the suite, so only #1 is rerun by the audit (1.5 s, not 3 s)
    "double": ("import time\ndef double(x):\n    if x in (7, 9):\n        time.sleep(1.5)\n"
               "    return 2 * x\n"),
    # a module-level loop that never ends: the base suite's wall clock kills it
    "square": "while True:\n    pass\ndef square(x):\n    return x * x\n",
    "slow_ref": "def slow_ref(x):\n    return x\n",
}


def write_dataset(path: Path, tasks: list[tuple[str, str, list, list]] = TASKS,
                  broken: str | None = None) -> None:
    rows = []
    for i, (name, body, base, plus) in enumerate(tasks):
        rows.append({"task_id": f"HumanEval/{i}", "prompt": PROMPT.format(name=name),
                     "entry_point": name, "canonical_solution": body,
                     "base_input": base, "plus_input": plus, "atol": 0})
    if broken:
        rows[0]["canonical_solution"] = broken
    path.write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in rows).encode()))


@pytest.fixture
def tiny(tmp_path: Path) -> tuple[Path, Path, dict[str, str]]:
    data = tmp_path / "tiny.jsonl.gz"
    write_dataset(data)
    samples = tmp_path / "samples.jsonl"
    samples.write_text("".join(json.dumps({"task_id": f"HumanEval/{i}",
                                           "solution": SAMPLES[t[0]]}) + "\n"
                               for i, t in enumerate(TASKS)))
    env = {"BENCHFORGE_CACHE": str(tmp_path / "cache")}
    return data, samples, env


def score(tmp_path: Path, tiny, out: str, *extra: str):
    data, samples, env = tiny
    return run_cli("score", "benchmark=humanevalplus", f"benchmark.path={data}",
                   f"score.samples={samples}", f"run.dir={tmp_path / out}",
                   "generate.progress=false", "sandbox=rlimit-only", *extra,
                   cwd=tmp_path, env=env)


def by_task(path: Path) -> dict[str, dict]:
    return {r["task_id"]: r for r in read_rows(path)}


def test_plus_is_not_run_after_base_failed_and_the_audit_reruns_only_what_timed_out(
        tmp_path: Path, tiny) -> None:
    proc = score(tmp_path, tiny, "a")
    assert proc.returncode == 0, proc.stderr
    rows = by_task(tmp_path / "a/results.jsonl")
    first = rows["HumanEval/0"]
    assert (first["base_status"], first["plus_status"]) == ("fail", "not_run")
    assert first["passed"] is False and first["failure_mode"] == "wrong_answer"
    assert first["plus_fail_input"] is None
    second = rows["HumanEval/1"]
    assert (second["base_status"], second["plus_status"]) == ("pass", "fail")
    assert second["failure_mode"] == "timeout" and second["plus_fail_index"] == 1
    third = rows["HumanEval/2"]
    assert (third["base_status"], third["plus_status"]) == ("fail", "not_run")
    assert third["failure_mode"] == "timeout" and third["base_fail_index"] is None
    assert rows["HumanEval/3"]["passed"] is True
    # the audit: HumanEval/1 reruns plus input #1 alone at 2 s (passes: a flip, reported);
    # HumanEval/2 reruns the base suite alone with twice its wall clock (still a timeout)
    audit = by_task(tmp_path / "a/logs/timeout_audit.jsonl")
    assert set(audit) == {"HumanEval/1", "HumanEval/2"}
    one, two = audit["HumanEval/1"], audit["HumanEval/2"]
    assert (one["audit_suite"], one["audit_input_index"], one["passed"]) == ("plus", 1, True)
    assert one["base_status"] is None and one["duration_s"] < 2.9  # input #2 not rerun
    assert (two["audit_suite"], two["audit_input_index"]) == ("base", None)
    assert two["failure_mode"] == "timeout" and two["plus_status"] is None
    assert two["time_limit_s"] == pytest.approx(2 * (1.0 + 2.0))  # 2 x base wall
    agg = run_cli("aggregate", "benchmark=humanevalplus", f"run.dir={tmp_path / 'a'}",
                  cwd=tmp_path, env=tiny[2])
    assert agg.returncode == 0, agg.stderr
    metrics = json.loads((tmp_path / "a/metrics.json").read_text())
    assert metrics["timeout_audit"] == {"rerun": 2, "flipped_to_pass": 1, "still_timeout": 1}
    # verdicts are the same with every suite run; only the per-suite statuses differ
    full = score(tmp_path, tiny, "full", "score.full_suites=true",
                 "score.audit_timeouts=false")
    assert full.returncode == 0, full.stderr
    full_rows = by_task(tmp_path / "full/results.jsonl")
    assert {t: r["passed"] for t, r in full_rows.items()} == \
        {t: r["passed"] for t, r in rows.items()}
    assert full_rows["HumanEval/0"]["plus_status"] == "fail"  # x + 2 is wrong on plus too
    assert full_rows["HumanEval/2"]["plus_status"] == "fail"
    # inspect says why plus has no verdict
    shown = run_cli("inspect", str(tmp_path / "a"), "--failed", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "plus: not run (an earlier suite failed" in shown.stdout


def test_a_plus_suite_that_runs_out_of_cpu_time_is_not_audited(tmp_path: Path, tiny) -> None:
    """A timeout the CPU limit ended is not rerun by the audit (CPU time does not grow with
    load), also behind the ``[plus]`` prefix the worker writes for a suite. Before, the prefix
    hid it and MBPP+'s Mbpp/599 was rerun for another 60 s of CPU."""
    data, samples, _ = tiny
    write_dataset(data, [TASKS[1]])  # double: base input 1, plus inputs 2, 7, 9
    spin = "def double(x):\n    while x == 7:\n        pass\n    return 2 * x\n"
    samples.write_text(json.dumps({"task_id": "HumanEval/0", "solution": spin}) + "\n")
    # each input's wall-clock limit (5 s) well above the CPU limit, so the CPU limit ends it
    proc = score(tmp_path, tiny, "cpu", "sandbox.cpu_s=1", "benchmark.min_time_limit_s=5")
    assert proc.returncode == 0, proc.stderr
    row = by_task(tmp_path / "cpu/results.jsonl")["HumanEval/0"]
    assert (row["base_status"], row["plus_status"]) == ("pass", "fail")
    assert row["failure_mode"] == "timeout", row
    assert row["detail"].startswith("[plus] CPU time limit of 1 s reached"), row
    assert not (tmp_path / "cpu/logs/timeout_audit.jsonl").exists()


def test_expected_outputs_are_built_once_per_host_in_one_place(tmp_path: Path, tiny) -> None:
    proc = score(tmp_path, tiny, "a", "score.audit_timeouts=false")
    assert proc.returncode == 0, proc.stderr
    cache = tmp_path / "cache"
    built = sorted(p.name for p in cache.iterdir())
    assert len(built) == 1 and built[0].endswith("-truth")  # one folder, no temp left over
    folder = cache / built[0]
    index = json.loads((folder / "index.json").read_text())
    assert sorted(index) == [f"HumanEval/{i}" for i in range(4)]
    assert {p.name for p in folder.iterdir()} == \
        {"index.json"} | {v["file"] for v in index.values()}
    assert sum(index["HumanEval/3"]["times"]["base"]) >= 0.05  # the reference's own time
    stamp = (folder / "index.json").stat().st_mtime_ns
    again = score(tmp_path, tiny, "b", "score.audit_timeouts=false")
    assert again.returncode == 0, again.stderr
    assert (folder / "index.json").stat().st_mtime_ns == stamp  # reused, not rebuilt
    # a damaged file is one error naming the store, never samples failing against it
    damaged = folder / index["HumanEval/1"]["file"]
    damaged.write_bytes(damaged.read_bytes()[:100])
    refused = score(tmp_path, tiny, "c", "score.audit_timeouts=false")
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines()[-1].endswith(
        "the expected-output store is damaged: HumanEval_1.pkl has 100 bytes, not "
        f"{index['HumanEval/1']['bytes']}; delete that folder and rerun to rebuild it")
    assert not (tmp_path / "c" / "results.jsonl").exists() or \
        not (tmp_path / "c" / "results.jsonl").read_text()
    # without its index.json the store is rebuilt in place
    (folder / "index.json").unlink()
    rebuilt = score(tmp_path, tiny, "d", "score.audit_timeouts=false")
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert json.loads((folder / "index.json").read_text())["HumanEval/1"]["bytes"] == \
        index["HumanEval/1"]["bytes"]


def test_a_failing_expected_output_build_is_one_line_and_leaves_nothing(tmp_path: Path,
                                                                        tiny) -> None:
    data, _, _ = tiny
    write_dataset(data, broken="    raise ValueError('broken canonical solution')\n")
    proc = score(tmp_path, tiny, "a")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert "Traceback" not in proc.stderr
    assert "HumanEval/0 base: the canonical solution raised ValueError" in lines[-1]
    assert lines[-1].count("computing the humanevalplus expected outputs") == 1
    cache = tmp_path / "cache"
    assert not cache.exists() or list(cache.iterdir()) == []  # no partial build left


def test_samples_start_largest_reference_first() -> None:
    from benchforge.benchmarks import Task
    from benchforge.scoring import largest_first

    class Bench:
        def reference_seconds(self, task: Task) -> float | None:
            return {"a": 0.1, "b": 30.0, "c": None}[task.task_id]

    tasks = {t: Task(t, {}) for t in "abcd"}
    samples = [{"task_id": t, "sample_idx": i} for i, t in enumerate("abcabc")]
    order = largest_first(Bench(), tasks, samples, {"a": None, "b": None, "c": 5.0})
    assert [s["task_id"] for s in order] == ["b", "b", "c", "c", "a", "a"]
    assert [s["sample_idx"] for s in order][:2] == [1, 4]  # stable among equals


def test_a_damaged_store_is_one_line_never_wrong_verdicts(tmp_path: Path, tiny) -> None:
    first = score(tmp_path, tiny, "a", "score.audit_timeouts=false")
    assert first.returncode == 0, first.stderr
    folder = next((tmp_path / "cache").iterdir())
    task_file = folder / json.loads((folder / "index.json").read_text())["HumanEval/1"]["file"]
    task_file.write_bytes(task_file.read_bytes()[:-20])  # truncated
    proc = score(tmp_path, tiny, "b", "score.audit_timeouts=false")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert f"the expected-output store is damaged: {task_file.name} has" in last, last
    assert "delete that folder and rerun" in last
    assert not (tmp_path / "b/results.jsonl").exists() or \
        read_rows(tmp_path / "b/results.jsonl") == []  # no verdict from a damaged store
    # damage the host's size check cannot see: the worker finds it, and scoring stops (the
    # sandbox could not score it) instead of failing the sample
    from benchforge.benchmarks._store import file_stamp

    index = json.loads((folder / "index.json").read_text())
    index["HumanEval/1"].update(file_stamp(task_file))
    (folder / "index.json").write_text(json.dumps(index))
    proc = score(tmp_path, tiny, "c", "score.audit_timeouts=false")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert "HumanEval/1: the sandbox could not score this sample" in last, last
    assert "expected-output store file" in last and "cannot be read" in last
    rows = read_rows(tmp_path / "c/results.jsonl") if (tmp_path / "c/results.jsonl").exists() \
        else []
    assert "HumanEval/1" not in {r["task_id"] for r in rows}
    (folder / "index.json").unlink()  # a folder without its index is rebuilt
    proc = score(tmp_path, tiny, "d", "score.audit_timeouts=false")
    assert proc.returncode == 0, proc.stderr
    assert by_task(tmp_path / "d/results.jsonl")["HumanEval/3"]["passed"] is True


def test_an_unreadable_expected_output_stops_scoring_instead_of_failing_the_sample() -> None:
    from benchforge.benchmarks import Task
    from benchforge.errors import BenchforgeError
    from benchforge.sandbox.types import CheckProgram, ExecResult
    from benchforge.scoring import score_samples

    class Bench:
        def prejudge(self, task, code):
            return None

        def check_program(self, task, code):
            return CheckProgram(code)

        def reference_seconds(self, task):
            return {"a": 2.0, "b": 1.0}[task.task_id]

    class Box:
        mode = "bwrap"

        def run(self, program, limit):
            return ExecResult(False, "environment", "input #0: the expected-output store x "
                              "cannot be read (OSError: truncated)", 0.1)

    appended = []

    class Sink:
        def append(self, row):
            appended.append(row)

    tasks = {t: Task(t, {}) for t in "ab"}
    samples = [{"task_id": t, "sample_idx": 0, "code": ""} for t in "ab"]
    with pytest.raises(BenchforgeError, match=r"^a: the sandbox could not score this sample: "
                                              r"input #0: the expected-output store"):
        score_samples(Bench(), tasks, samples, Box(), {"a": None, "b": None}, Sink(),
                      lambda: None, 1)
    assert appended == []  # no row says the sample failed


def test_audit_reruns_after_every_sample_started_and_identical_code_once(
        tmp_path: Path) -> None:
    """The audit's reruns queue behind every sample (they take the workers the last samples
    leave idle) and identical timed-out code of a task is rerun once, its duplicates getting
    a copy of that row naming it (``audit_same_as``)."""
    import threading

    from benchforge.benchmarks import Task
    from benchforge.sandbox.types import CheckProgram, ExecResult
    from benchforge.scoring import TimeoutAudit, score_samples

    class Bench:
        per_test_time_limits = False

        def prejudge(self, task, code):
            return None

        def check_program(self, task, code):
            return CheckProgram(code)

        def audit_program(self, task, code, row):
            return CheckProgram(code), {"audit_suite": "all"}

        def reference_seconds(self, task):
            return {"a": 3.0, "b": 2.0, "c": 1.0, "d": 0.5}[task.task_id]

        def result_fields(self, task, extra):
            return {}

        def failure_fields(self, task, code, detail):
            return {}

    calls: list[tuple[str, float]] = []
    lock = threading.Lock()

    class Box:
        mode = "bwrap"

        def run(self, program, limit, time_scale=1.0):
            with lock:
                calls.append((program.code, time_scale))
            if program.code == "loop":
                return ExecResult(False, "timeout", "killed after 1.00s wall clock", 0.01)
            if program.code == "spin":  # CPU time does not grow with load: never rerun
                return ExecResult(False, "timeout", "CPU time limit of 60 s reached "
                                  "(sandbox.cpu_s; SIGXCPU); output: ", 0.01)
            if program.code == "spin plus":  # the same behind a suite's name (EvalPlus)
                return ExecResult(False, "timeout", "[plus] CPU time limit of 60 s reached "
                                  "(sandbox.cpu_s; SIGXCPU); output: ", 0.01)
            return ExecResult(True, None, "", 0.01)

    tasks = {t: Task(t, {}) for t in "abcd"}
    samples = [{"task_id": "a", "sample_idx": i, "code": "loop"} for i in range(3)]
    samples += [{"task_id": "b", "sample_idx": 0, "code": "loop"},  # same code, other task
                {"task_id": "c", "sample_idx": 0, "code": "fine"},
                {"task_id": "d", "sample_idx": 0, "code": "spin"},
                {"task_id": "d", "sample_idx": 1, "code": "spin plus"}]
    for sample in samples:
        sample.update(completion=sample["code"], finish_reason="stop")
    rows = []

    class Sink:
        def append(self, row):
            rows.append(row)

    path = tmp_path / "timeout_audit.jsonl"
    audit = TimeoutAudit(Bench(), tasks, Box(), path, workers=2)
    score_samples(Bench(), tasks, samples, Box(), {t: 1.0 for t in tasks}, Sink(),
                  lambda: None, 2, audit)
    audit.close()
    assert len(rows) == 7 and sum(r["failure_mode"] == "timeout" for r in rows) == 6
    reruns = [i for i, (_, scale) in enumerate(calls) if scale == 2.0]
    assert len(reruns) == 2  # task a once (3 samples), task b once
    assert all(scale == 1.0 for _, scale in calls[:7])  # every sample started first
    audited = {(r["task_id"], r["sample_idx"]): r for r in read_rows(path)}
    assert set(audited) == {("a", 0), ("a", 1), ("a", 2), ("b", 0)}
    copies = [r for r in audited.values() if "audit_same_as" in r]
    assert len(copies) == 2 and all(r["audit_same_as"][0] == "a" for r in copies)
    assert all(r["failure_mode"] == "timeout" and r["time_limit_s"] == 2.0
               for r in audited.values())
    assert audit.reran == 2 and audit.written == 4
