"""LiveCodeBench on a fixture in the official row format: decoding, grading, contamination."""

from __future__ import annotations

import base64
import json
import os
import pickle
import zlib
from pathlib import Path

import pytest
from _support import REPO, run_cli

from benchforge.benchmarks import load_benchmark
from benchforge.benchmarks.livecodebench import (
    decode_private_tests,
    extract_last_block,
    version_files,
)
from benchforge.config import compose
from benchforge.errors import BenchforgeError
from benchforge.rundir import read_rows

FIXTURE_ROOT = REPO / "tests" / "fixtures"
SOLUTIONS = {
    "abc900_a": "a, b = map(int, input().split())\nprint(a + b)\n",
    "9001": "class Solution:\n    def addTwo(self, x: int, y: int) -> int:\n        return x + y\n",
    "1900A": "n = int(input())\nprint(n / 2)\n",  # "0.5" vs "0.50": equal as decimals
    "abc901_b": "n = int(input())\nfor _ in range(n):\n    print(0)\n",  # wrong answer
}


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_private_tests_decode_with_a_restricted_unpickler() -> None:
    tests = [{"input": "1\n", "output": "2\n", "testtype": "stdin"}]
    blob = base64.b64encode(zlib.compress(pickle.dumps(json.dumps(tests)))).decode()
    assert decode_private_tests(blob) == tests
    assert decode_private_tests(json.dumps(tests)) == tests
    evil = base64.b64encode(zlib.compress(pickle.dumps(Evil()))).decode()
    with pytest.raises(pickle.UnpicklingError, match=r"refused to load posix\.system"):
        decode_private_tests(evil)


def test_versions_and_missing_data(tmp_path: Path) -> None:
    assert version_files("release_v2") == ["test.jsonl", "test2.jsonl"]
    assert version_files("v6") == ["test6.jsonl"]
    assert version_files("v4_v5") == ["test4.jsonl", "test5.jsonl"]
    with pytest.raises(BenchforgeError, match="expected release_vN"):
        version_files("latest")
    cfg = compose(["benchmark=livecodebench", f"data.root={FIXTURE_ROOT}"])  # release_v6
    with pytest.raises(BenchforgeError, match=r"code_generation_lite/test\.jsonl: .* not found"):
        load_benchmark(cfg).load()


def test_extraction_takes_the_last_code_block() -> None:
    text = "Plan:\n```python\nprint(1)\n```\nFinal:\n```python\nprint(2)\n```\n"
    assert extract_last_block(text) == "print(2)"
    assert extract_last_block("no code") == ""


def test_contamination_flags_from_the_model_release_date() -> None:
    cfg = compose(["benchmark=livecodebench", "benchmark.version=v6", f"data.root={FIXTURE_ROOT}",
                   "model.release_date=2024-06-01"])
    bench = load_benchmark(cfg)
    dataset = bench.load()
    assert [t.task_id for t in dataset.tasks] == list(SOLUTIONS)
    assert {t.task_id for t in dataset.tasks if bench.contaminated(t)} == {"1900A"}
    assert dataset.tasks[0].data["tests"]["inputs"] == ["1 2\n", "10 20\n", "-5 5\n"]


@pytest.mark.slow
def test_graded_end_to_end_with_both_numbers(workdir: Path, mock_server) -> None:
    cfg = compose(["benchmark=livecodebench", "benchmark.version=v6",
                   f"data.root={FIXTURE_ROOT}"])
    bench = load_benchmark(cfg)
    answers = [{"prompt_sha256": bench.prompt(t, "chat").sha256,
                "completion": f"Here:\n```python\n{SOLUTIONS[t.task_id]}```\n"}
               for t in bench.load().tasks]
    url = mock_server(answers=answers)
    args = ["model=endpoint", f"model.base_url={url}", "model.served_name=mock-model",
            "model.release_date=2024-06-01", "benchmark=livecodebench", "benchmark.version=v6",
            f"data.root={FIXTURE_ROOT}", "generate.progress=false"]
    proc = run_cli("run", *args, cwd=workdir)
    assert proc.returncode == 0, proc.stderr
    cell = workdir / "runs/default/mock-model/livecodebench"
    rows = {r["task_id"]: r for r in read_rows(cell / "results.jsonl")}
    assert {t: r["passed"] for t, r in rows.items()} == {
        "abc900_a": True, "9001": True, "1900A": True, "abc901_b": False}
    assert rows["abc901_b"]["failure_mode"] == "wrong_answer"
    # the failing test, as inspect shows it
    failing = bench.load().tasks
    tests = next(t for t in failing if t.task_id == "abc901_b").data["tests"]
    index = int(rows["abc901_b"]["detail"].split("test ")[1].split(":")[0])
    assert rows["abc901_b"]["fail_input"] == tests["inputs"][index]
    assert rows["abc901_b"]["fail_expected"] == tests["outputs"][index]
    assert rows["1900A"]["contaminated"] and not rows["abc900_a"]["contaminated"]
    metrics = json.loads((cell / "metrics.json").read_text())
    assert metrics["n_tasks"] == 3 and metrics["pass@1"]["value"] == pytest.approx(2 / 3)
    windows = metrics["windows"]
    assert windows["all"]["pass@1"]["value"] == pytest.approx(3 / 4)
    assert windows["contaminated"]["pass@1"]["value"] == 1.0
    assert "(contaminated)" in proc.stdout
    proc = run_cli("aggregate", *args, "aggregate.exclude_contaminated=false", cwd=workdir)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((cell / "metrics.json").read_text())["pass@1"]["value"] == pytest.approx(
        3 / 4)
    # No reference solutions: the self-check says so and does not fail.
    proc = run_cli("score", *args[3:], "score.reference=true", cwd=workdir)
    assert proc.returncode == 0 and "no reference solutions" in proc.stderr
