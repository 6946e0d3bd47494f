"""End to end through the CLI and the mock server: what is sent, how replies are graded, and
what the user is told about replies cut by max_tokens or empty."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from _support import SHARED, run_cli

from benchforge.benchmarks import get_benchmark, oracle_answers
from benchforge.config import compose
from benchforge.engine import free_port, launch_server
from benchforge.mock_server import write_answers
from benchforge.rundir import read_rows

FIXTURES = Path(__file__).with_name("fixtures")
CASES = SHARED / "cases"


@pytest.fixture
def serve(tmp_path: Path):
    """Start the mock server on answers rows; returns (base_url, requests log path)."""
    started = []

    def start(rows: list[dict]) -> tuple[str, Path]:
        answers = tmp_path / f"answers-{len(started)}.jsonl"
        write_answers(answers, rows)
        log = tmp_path / f"requests-{len(started)}.jsonl"
        port = free_port()
        cmd = [sys.executable, "-m", "benchforge.mock_server", "--port", str(port),
               "--answers", str(answers), "--served-model-name", "m", "--log-requests",
               str(log)]
        ctx = launch_server(cmd, port, tmp_path / f"mock-{len(started)}.log", 30)
        url = ctx.__enter__()
        started.append(ctx)
        return url, log

    yield start
    for ctx in started:
        ctx.__exit__(None, None, None)


def bench_and_tasks(*overrides: str):
    cfg = compose(list(overrides))
    bench = get_benchmark(cfg.benchmark, Path(str(cfg.data.root)))
    return bench, bench.load().tasks


def endpoint(url: str, run_dir: Path, *extra: str) -> list[str]:
    # a fixed request timeout: no decode-speed probe, so the request log holds only the task's
    return ["model=endpoint", f"model.base_url={url}", "model.served_name=m",
            "model.request_timeout_s=60",
            f"run.dir={run_dir}", f"run.root={run_dir.parent / 'runs'}",
            "generate.progress=false", *extra]


@pytest.mark.parametrize("key,benchmark,variant,limit", [
    ("cruxeval_o/direct/sample_0", "cruxeval_o", "direct", 1),
    ("cruxeval_i/cot/sample_1", "cruxeval_i", "cot", 2),
])
def test_cruxeval_chat_request_is_the_official_harness_request(
        serve, workdir: Path, shared_data: Path, key: str, benchmark: str, variant: str,
        limit: int) -> None:
    """Case new-cruxeval-chat-no-system-prompt: messages, stop and max_tokens as
    openai/openai_prompt.py + openai_run.py @ 190faf16 send them (values in the fixture)."""
    expected = json.loads((FIXTURES / "cruxeval_answers.json").read_text())["requests"][key]
    common = [f"benchmark={benchmark}", f"benchmark.variant={variant}",
              f"benchmark.limit={limit}", f"data.root={shared_data}"]
    bench, tasks = bench_and_tasks(*common)
    url, log = serve(oracle_answers(bench, tasks, "chat"))
    out = workdir / "cell"
    proc = run_cli("run", *endpoint(url, out), *common, cwd=workdir)
    assert proc.returncode == 0, proc.stderr
    body = next(r["body"] for r in read_rows(log)
                if r["body"]["messages"][1]["content"] == expected["messages"][1]["content"])
    assert body["messages"] == expected["messages"]
    assert body["max_tokens"] == expected["max_tokens"] and body["stop"] == expected["stop"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["pass@1"]["value"] == 1.0  # the oracle's answers pass through chat extraction
    provenance = json.loads((out / "provenance.json").read_text())
    assert provenance["request"]["max_tokens"] == expected["max_tokens"]


def test_benchmark_max_tokens_overrides_the_official_default(serve, workdir: Path,
                                                             shared_data: Path) -> None:
    common = ["benchmark=cruxeval_o", "benchmark.limit=1", f"data.root={shared_data}",
              "benchmark.max_tokens=300"]
    bench, tasks = bench_and_tasks(*common)
    url, log = serve(oracle_answers(bench, tasks, "chat"))
    proc = run_cli("generate", *endpoint(url, workdir / "cell"), *common, cwd=workdir)
    assert proc.returncode == 0, proc.stderr
    assert [r["body"]["max_tokens"] for r in read_rows(log)] == [300]


def test_completion_stop_words_cut_client_side(serve, workdir: Path) -> None:
    """Case humaneval-completion-stop-words: a server that ignores ``stop``; 4 stops sent."""
    bench, tasks = bench_and_tasks("benchmark.limit=1")
    completion = json.loads((CASES / "humaneval-completion-stop-words" / "rules.json")
                            .read_text())["rules"][0]["content"]
    url, log = serve([{"prompt_sha256": bench.prompt(tasks[0], "completion").sha256,
                       "completion": completion, "ignore_stop": True}])
    out = workdir / "cell"
    proc = run_cli("run", *endpoint(url, out, "model.mode=completion", "benchmark.limit=1"),
                   cwd=workdir)
    assert proc.returncode == 0, proc.stderr
    [body] = [r["body"] for r in read_rows(log)]
    assert body["stop"] == ["\nclass", "\ndef", "\nif", "\nprint"]
    [sample] = read_rows(out / "samples.jsonl")
    assert sample["completion"] == completion  # the raw reply is kept
    assert "undefined_list" not in sample["code"]
    [row] = read_rows(out / "results.jsonl")
    assert row["passed"], row


@pytest.mark.parametrize("rules", ["rules_a_bare_code_then_closing_fence",
                                   "rules_c_bare_code_no_fences", "rules_e_think_draft_first"])
def test_humaneval_chat_case_passes_end_to_end(serve, workdir: Path, rules: str) -> None:
    """Case humaneval-chat-extraction: graded PASS as on humanevalplus."""
    bench, tasks = bench_and_tasks("benchmark.limit=1")
    content = json.loads((CASES / "humaneval-chat-extraction" / f"{rules}.json")
                         .read_text())["rules"][0]["content"]
    url, _ = serve([{"prompt_sha256": bench.prompt(tasks[0], "chat").sha256,
                     "completion": content}])
    out = workdir / "cell"
    proc = run_cli("run", *endpoint(url, out, "benchmark.limit=1"), cwd=workdir)
    assert proc.returncode == 0, proc.stderr
    [row] = read_rows(out / "results.jsonl")
    assert row["passed"], row


def test_truncated_and_empty_replies_are_counted_and_reported(serve, workdir: Path) -> None:
    """Case rel-truncated-empty-completions-silent, plus reasoning kept out of grading."""
    bench, tasks = bench_and_tasks("benchmark.limit=4")
    sha = [bench.prompt(t, "chat").sha256 for t in tasks]
    good = bench.reference_completion(tasks[3], "chat")
    url, _ = serve([
        {"prompt_sha256": sha[0], "finish_reason": "length",
         "completion": "```python\nfrom typing import List\n\n\ndef has_close_elements("
                       "numbers: List[float], threshold: float) -> bool:\n    for idx, e"},
        {"prompt_sha256": sha[1], "completion": None, "reasoning_content": "long thoughts",
         "reasoning_tokens": 7},
        {"prompt_sha256": sha[2], "completion": "<think>\nall thinking, no answer\n</think>\n"},
        {"prompt_sha256": sha[3], "completion": good, "reasoning_content": "short",
         "reasoning_tokens": 2},
    ])
    out = workdir / "cell"
    proc = run_cli("run", *endpoint(url, out, "benchmark.limit=4"), cwd=workdir)
    assert proc.returncode == 0, proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if "WARNING" in line]
    assert any("1 of 4 completions hit max_tokens (finish_reason=length); raise "
               "model.max_tokens" in line for line in warnings), proc.stderr
    assert any("2 of 4 completions are empty" in line for line in warnings), proc.stderr
    rows = {r["task_id"]: r for r in read_rows(out / "results.jsonl")}
    modes = [rows[t.task_id]["failure_mode"] for t in tasks]
    assert modes == ["truncated", "empty", "empty", None]
    # what the sandbox said of the sanitized fragment (EvalPlus keeps only the import, so
    # the prompt's own stub is what check() calls)
    exec_mode = rows[tasks[0].task_id]["exec_failure_mode"]
    assert exec_mode == "assertion"
    samples = {r["task_id"]: r for r in read_rows(out / "samples.jsonl")}
    assert samples[tasks[1].task_id]["reasoning_tokens"] == 7
    assert samples[tasks[3].task_id]["reasoning_chars"] == len("short")
    assert samples[tasks[2].task_id]["reasoning_chars"] > 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["generation_outcomes"] == {"truncated": 1, "empty": 2, "samples": 4}
    assert metrics["cost"]["reasoning_tokens"] == 9
    assert metrics["failure_modes"] == {"empty": 2, "truncated": 1}
    assert metrics["pass@1"]["value"] == 0.25
    shown = run_cli("inspect", str(out), "inspect.failed=true", cwd=workdir)
    assert shown.returncode == 0, shown.stderr
    assert "--- raw answer (finish_reason=length)" in shown.stdout
    assert "for idx, e" in shown.stdout and "all thinking, no answer" in shown.stdout
    assert f"code failed as: {exec_mode}" in shown.stdout


def test_cruxeval_skip_rule_n_lt_k(workdir: Path, shared_data: Path) -> None:
    """Case cruxeval-passk-skip-rule-n-lt-k: official n = 3, c = 1 -> pass@1 1/3, pass@5 1.0."""
    source = CASES / "cruxeval-passk-skip-rule-n-lt-k" / "generations.json"
    out = workdir / "cell"
    proc = run_cli("run", "benchmark=cruxeval_i", "benchmark.limit=1", f"score.samples={source}",
                   f"run.dir={out}", f"run.root={workdir / 'runs'}", f"data.root={shared_data}",
                   "aggregate.ks=[1,5]", cwd=workdir)
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["pass@1"]["value"] == pytest.approx(1 / 3)
    assert metrics["pass@5"]["value"] == 1.0


def test_k_above_the_samples_drawn_is_refused_before_any_work(workdir: Path,
                                                               shared_data: Path) -> None:
    source = CASES / "cruxeval-passk-skip-rule-n-lt-k" / "generations.json"
    out = workdir / "cell"
    proc = run_cli("score", "benchmark=cruxeval_i", "benchmark.limit=1",
                   f"score.samples={source}", f"run.dir={out}", f"run.root={workdir / 'runs'}",
                   f"data.root={shared_data}", "aggregate.ks=[1,20]", cwd=workdir)
    assert proc.returncode == 2
    assert "pass@20 needs at least 20 samples per task" in proc.stderr
    assert not (out / "results.jsonl").exists() and not (out / "samples.jsonl").exists()
    gen = run_cli("generate", "model=endpoint", "model.base_url=http://127.0.0.1:9/v1",
                  "model.served_name=m", "model.n_samples=2", "aggregate.ks=[1,5]",
                  f"run.dir={out}", cwd=workdir)
    assert gen.returncode == 2 and "model.n_samples is 2" in gen.stderr
    assert not (out / "samples.jsonl").exists()


@pytest.mark.slow
def test_known_divergence_find_zero(workdir: Path, shared_data: Path) -> None:
    """README "Known divergences": evalplus 0.3.1 fails every HumanEval/32 sample, its own
    canonical solution included (fixed upstream in evalplus#241); benchforge passes it."""
    import gzip

    from evalplus.eval import untrusted_check

    with gzip.open(shared_data / "humanevalplus" / "HumanEvalPlus.jsonl.gz", "rt") as fh:
        task = next(r for r in map(json.loads, fh) if r["task_id"] == "HumanEval/32")
    code = task["prompt"] + task["canonical_solution"]
    namespace: dict = {}
    exec(code, namespace)  # the canonical solution: trusted
    inputs = task["base_input"]
    expected = [namespace["find_zero"](*args) for args in inputs]
    assert untrusted_check("humaneval", code, inputs, "find_zero", expected, task["atol"],
                           [0.01] * len(inputs)) == ("fail", [])
    out = workdir / "ref"
    proc = run_cli("score", "benchmark=humanevalplus", "benchmark.limit=33",
                   "score.reference=true", f"data.root={shared_data}", f"run.dir={out}",
                   f"run.root={workdir / 'runs'}", "generate.progress=false", cwd=workdir,
                   timeout=900)
    assert proc.returncode == 0, proc.stderr
    row = next(r for r in read_rows(out / "results.jsonl") if r["task_id"] == "HumanEval/32")
    assert row["passed"] and row["base_status"] == row["plus_status"] == "pass"


def test_benchmark_max_tokens_keeps_existing_cell_ids() -> None:
    """The key added for the official max_tokens leaves ids of existing cells unchanged
    while unset, and changes the id when set (a cell computed with other requests)."""
    from benchforge.cell import cell_id, cell_identity

    plain = compose(["benchmark=cruxeval_o"])
    assert "max_tokens" not in cell_identity(plain)["benchmark"]
    assert cell_id(compose(["benchmark=cruxeval_o", "benchmark.max_tokens=300"])) != \
        cell_id(plain)
