"""LiveCodeBench execution against lcb_runner's own verdicts.

tests/fixtures/lcb_corpus.json holds stdin and call-based programs covering every sys.stdin
idiom, output comparison, huge ints, recursion, exits and limits, each with the verdict that
lcb_runner @28fef95 gives (computed by running its testing_util / compute_code_generation_metrics
on the corpus; see the file's "about") and, for ``benchmark.lcb_fixes=true``, the verdict of the
same program run as a real CPython process. Each mode grades the whole corpus in one
``benchforge score`` call.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from _support import REPO, run_cli

from benchforge.rundir import read_rows

CORPUS: dict[str, dict[str, Any]] = json.loads(
    (REPO / "tests" / "fixtures" / "lcb_corpus.json").read_text())["programs"]
STDIN = {name: p for name, p in CORPUS.items() if p["fn_name"] is None}
# lcb_runner's error codes -> the failure modes benchforge may record for them.
MODES = {-2: {"wrong_answer"}, -3: {"timeout"}, -4: {"runtime_error", "syntax_error", "memory"},
         -5: {"crash", "early_exit", "timeout"}, -1: {"crash", "early_exit", "timeout"}}
CASES = {"lcb-stdin-buffer": ("case_lcb_stdin_buffer", True),
         "lcb-stdin-iteration-lenient": ("case_lcb_stdin_iteration_lenient", False),
         "lcb-int-str-digits": ("case_lcb_int_str_digits", True)}


def _row(name: str, program: dict[str, Any]) -> dict[str, Any]:
    tests = [{"input": i, "output": o, "testtype": "functional" if program["fn_name"] else "stdin"}
             for i, o in zip(program["inputs"], program["outputs"], strict=True)]
    metadata = {"func_name": program["fn_name"]} if program["fn_name"] else {}
    return {"question_title": name, "question_content": name, "platform": "atcoder",
            "question_id": name, "contest_id": "c1", "contest_date": "2024-10-01T00:00:00",
            "starter_code": "", "difficulty": "easy", "public_test_cases": json.dumps(tests[:1]),
            "private_test_cases": json.dumps(tests[1:]), "metadata": json.dumps(metadata)}


def _score(root: Path, programs: dict[str, dict[str, Any]], *overrides: str
           ) -> dict[str, dict[str, Any]]:
    folder = root / "data" / "livecodebench" / "code_generation_lite"
    folder.mkdir(parents=True)
    with open(folder / "test.jsonl", "w") as fh:
        for name, program in programs.items():
            fh.write(json.dumps(_row(name, program)) + "\n")
    samples = root / "samples.jsonl"
    samples.write_text("".join(json.dumps({"task_id": n, "solution": p["code"]}) + "\n"
                               for n, p in programs.items()))
    proc = run_cli("score", "benchmark=livecodebench", "benchmark.version=release_v1",
                   f"score.samples={samples}", f"run.dir={root / 'cell'}",
                   f"run.root={root / 'runs'}", f"data.root={root / 'data'}", *overrides,
                   cwd=root)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return {r["task_id"]: r for r in read_rows(root / "cell" / "results.jsonl")}


@pytest.fixture(scope="module")
def official(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    return _score(tmp_path_factory.mktemp("lcb-official"), CORPUS)


@pytest.fixture(scope="module")
def fixed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    # call-based grading is the same in both modes: the stdin programs only
    return _score(tmp_path_factory.mktemp("lcb-fixed"), STDIN, "benchmark.lcb_fixes=true")


def test_corpus_covers_the_stdin_idioms() -> None:
    stdin = [p["code"] for p in STDIN.values()]
    assert len(stdin) >= 30 and len(CORPUS) - len(stdin) >= 8
    for idiom in ("input()", "sys.stdin.readline()", "sys.stdin.readlines()", "sys.stdin.read()",
                  "sys.stdin.buffer.read()", "for line in sys.stdin:", "fileinput.input()",
                  "open(0)", "from sys import stdin", "sys.stdin.buffer.readline()"):
        assert any(idiom in code for code in stdin), idiom


@pytest.mark.slow
def test_every_verdict_equals_lcb_runners(official: dict[str, dict[str, Any]]) -> None:
    got = {name: official[name]["passed"] for name in CORPUS}
    want = {name: p["lcb_runner"]["passed"] for name, p in CORPUS.items()}
    assert got == want
    for name, program in CORPUS.items():
        code = program["lcb_runner"]["error_code"]
        if not program["lcb_runner"]["passed"]:
            assert official[name]["failure_mode"] in MODES[code], (name, official[name])


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(CASES))
def test_shared_case_verdicts(official: dict[str, dict[str, Any]], case: str) -> None:
    name, passed = CASES[case]
    assert CORPUS[name]["lcb_runner"]["passed"] is passed
    assert official[name]["passed"] is passed, official[name]


@pytest.mark.slow
def test_failure_details_name_the_test(official: dict[str, dict[str, Any]]) -> None:
    row = official["runtime_error_second_test"]  # passes test 0, divides by zero on test 1
    assert row["failure_mode"] == "runtime_error" and "test 1: ZeroDivisionError" in row["detail"]
    assert row["fail_input"] == "0\n"
    row = official["float_not_tolerant"]
    assert row["fail_actual"] == "'0.3333333333333333'"
    assert official["syntax_error"]["failure_mode"] == "syntax_error"
    assert official["time_limit"]["failure_mode"] == "timeout"


@pytest.mark.slow
def test_fixed_harness_grades_like_a_real_process(fixed: dict[str, dict[str, Any]]) -> None:
    got = {name: fixed[name]["passed"] for name in STDIN}
    assert got == {name: p["fixed_passed"] for name, p in STDIN.items()}
    differs = {n for n, p in STDIN.items() if p["fixed_passed"] != p["lcb_runner"]["passed"]}
    assert {"iterate_stdin", "open_fd0", "quit_after_print", "lru_cache_recursion_c_stack",
            "fileinput_input", "buffer_readlines", "stdin_class_solution",
            "stdout_buffer_write"} <= differs
    assert fixed["swallowed_timeout"]["failure_mode"] == "timeout"


def test_the_switch_is_one_config_key_and_its_default_keeps_cell_ids() -> None:
    from benchforge.benchmarks import load_benchmark
    from benchforge.cell import cell_id, cell_identity
    from benchforge.config import compose

    default = compose(["benchmark=livecodebench"])
    fixed = compose(["benchmark=livecodebench", "benchmark.lcb_fixes=true"])
    assert default.benchmark.lcb_fixes is False
    assert "lcb_fixes" not in cell_identity(default)["benchmark"]  # existing cells keep their id
    assert cell_id(fixed) != cell_id(default)
    assert not load_benchmark(default).fixed_harness and load_benchmark(fixed).fixed_harness
