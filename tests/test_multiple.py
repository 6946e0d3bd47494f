"""MultiPL-E (tier 2) on committed fixtures in the official row format.

Each ``tests/fixtures/multiple/humaneval-<lang>.jsonl`` holds five rows shaped like the Hub
dataset's (name, language, prompt, doctests, original, prompt_terminology, tests, stop_tokens)
plus three fixture-only fields: ``fixture_completion`` (what the oracle serves),
``fixture_status`` and ``fixture_exit_code`` (what MultiPL-E's evaluation script gives that
program: OK, a wrong answer, a timeout, a crash and a compile error per language). The
expected statuses and exit codes were produced by running MultiPL-E's own evaluation scripts
(evaluation/src: safe_subprocess, eval_cpp, eval_java, eval_javascript, eval_go, eval_rust,
eval_python) on each fixture program, outside any sandbox, on this project's toolchains
(g++ 12.2, OpenJDK 17, node 20, go 1.19, rustc 1.63, Python 3.11): 30/30 equal.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from _support import REPO, run_cli
from fakes.fake_hub import FakeHub

from benchforge.benchmarks import load_benchmark, multiple
from benchforge.cell import cell_id
from benchforge.config import compose
from benchforge.errors import BenchforgeError
from benchforge.rundir import read_json, read_rows

FIXTURES = REPO / "tests" / "fixtures" / "multiple"
LANGS = ["cpp", "java", "js", "go", "rs", "py"]
FAILURE_MODE = {"OK": None, "SyntaxError": "syntax_error", "Timeout": "timeout",
                "Exception": "runtime_error", "AssertionError": "assertion"}
REVISION = "1c0307db4294b39f11f1f1752bf06bcae355af49"


def fixture(lang: str) -> Path:
    return FIXTURES / f"humaneval-{lang}.jsonl"


def bench(lang: str, *extra: str):
    return load_benchmark(compose([f"benchmark=multiple_{lang}",
                                   f"benchmark.path={fixture(lang)}", *extra]))


def test_fixtures_are_in_the_official_row_format() -> None:
    for lang in LANGS:
        rows = [json.loads(line) for line in fixture(lang).read_text().splitlines()]
        statuses = {r["fixture_status"] for r in rows}
        assert {"OK", "Timeout", "SyntaxError", "Exception"} <= statuses, lang
        for row in rows:
            assert set(multiple.ROW_FIELDS) <= set(row)
            assert row["language"] == multiple.LANGUAGES[lang][0]
            # the oracle's completion must survive the stop-token cut unchanged
            assert multiple.stop_at_stop_token(row["fixture_completion"],
                                               row["stop_tokens"]) == row["fixture_completion"]


def test_stop_tokens_prompts_and_extraction() -> None:
    assert multiple.stop_at_stop_token("  return 1;\n}\nint main", ["\n}"]) == "  return 1;"
    assert multiple.stop_at_stop_token("a\n#b\ndef c", ["\ndef", "\n#"]) == "a"
    assert multiple.stop_at_stop_token("no stop", ["\n}"]) == "no stop"
    b = bench("cpp")
    task = b.load().tasks[0]
    assert b.stop_sequences("completion") == ["\n}"]
    assert b.stop_sequences("chat") == []
    assert b.prompt(task, "completion").text == task.data["prompt"]
    assert b.extract_code(task, "    return x + y;\n}\nint main(){}", "completion") == \
        "    return x + y;"
    chat = f"Sure:\n```cpp\n{task.data['prompt']}    return x + y;\n}}\n```\nDone."
    assert b.extract_code(task, chat, "chat") == "    return x + y;"
    program = b.program(task, "    return x + y;")
    assert program == task.data["prompt"] + "    return x + y;\n" + task.data["tests"]
    py = bench("py")
    assert py.stop_sequences("completion") == ["\n#", "\nclass", "\ndef", "\nif"]


def test_loading_errors_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(BenchforgeError, match=r"humaneval-cpp/test/0000\.parquet: MultiPL-E "
                       r"data not found; run `benchforge stage benchmark=multiple_cpp`"):
        load_benchmark(compose(["benchmark=multiple_cpp", f"data.root={tmp_path}"])).load()
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"name": "x", "language": "cpp", "prompt": ""}) + "\n")
    with pytest.raises(BenchforgeError, match=r"row 1 lacks MultiPL-E field.*doctests"):
        load_benchmark(compose(["benchmark=multiple_cpp", f"benchmark.path={bad}"])).load()
    with pytest.raises(BenchforgeError, match="rows of language 'java', but "
                       "benchmark=multiple_cpp expects 'cpp'"):
        load_benchmark(compose(["benchmark=multiple_cpp",
                                f"benchmark.path={fixture('java')}"])).load()
    with pytest.raises(BenchforgeError, match=r"benchmark\.language=cobol: expected one of"):
        bench("cpp", "benchmark.language=cobol").load()


def test_the_hub_parquet_reads_like_the_rows(tmp_path: Path) -> None:
    rows = [json.loads(line) for line in fixture("go").read_text().splitlines()]
    path = tmp_path / "0000.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    b = load_benchmark(compose(["benchmark=multiple_go", f"benchmark.path={path}"]))
    dataset = b.load()
    assert [t.data for t in dataset.tasks] == rows
    assert dataset.version == REVISION and dataset.extra["language"] == "go_test.go"


def test_language_is_in_the_cell_id_only_for_multiple() -> None:
    humaneval = compose([])
    assert "language" not in json.dumps(
        {k: v for k, v in humaneval.benchmark.items() if v is not None})
    assert cell_id(compose(["benchmark=multiple_cpp"])) != cell_id(
        compose(["benchmark=multiple_cpp", "benchmark.language=java"]))


def test_stage_fetches_the_pinned_revision_from_the_hub(tmp_path: Path) -> None:
    rows = [json.loads(line) for line in fixture("rs").read_text().splitlines()]
    blob = tmp_path / "blob.parquet"
    pq.write_table(pa.Table.from_pylist(rows), blob)
    files = {"humaneval-rs/test/0000.parquet": blob.read_bytes()}
    repos = {"datasets/nuprl/MultiPL-E": {"sha": REVISION, "files": files}}
    args = ["benchmark=multiple_rs", f"data.root={tmp_path / 'data'}",
            f"run.root={tmp_path / 'runs'}"]
    with FakeHub(repos) as server:
        env = {"HF_ENDPOINT": server.url, "HF_HUB_DISABLE_TELEMETRY": "1"}
        proc = run_cli("stage", *args, cwd=tmp_path, env=env)
        assert proc.returncode == 0, proc.stderr
        assert "0000.parquet  downloaded  sha256:" in proc.stdout
        other = run_cli("stage", *args[:1], "benchmark.version=" + "f" * 40,
                        f"data.root={tmp_path / 'other'}", *args[2:], cwd=tmp_path, env=env)
    assert other.returncode == 2 and "stage dataset nuprl/MultiPL-E" in other.stderr
    staged = tmp_path / "data" / "multiple" / "humaneval-rs" / "test" / "0000.parquet"
    assert staged.read_bytes() == files["humaneval-rs/test/0000.parquet"]
    loaded = load_benchmark(compose(args[:2])).load()
    assert [t.task_id for t in loaded.tasks] == [r["name"] for r in rows]


@pytest.mark.slow
@pytest.mark.parametrize("lang", LANGS)
def test_scored_end_to_end_through_the_oracle(lang: str, workdir: Path) -> None:
    """Every fixture row gets the status MultiPL-E's evaluation script gives it; the readiness
    gate ran first, in the scoring sandbox, and is in provenance."""
    proc = run_cli("run", f"benchmark=multiple_{lang}", f"benchmark.path={fixture(lang)}",
                   "score.audit_timeouts=false", "generate.progress=false", "score.workers=2",
                   cwd=workdir, timeout=400)
    assert proc.returncode == 0, proc.stderr
    cell = workdir / "runs" / "default" / "oracle" / f"multiple_{lang}"
    expected = {json.loads(line)["name"]: json.loads(line)["fixture_status"]
                for line in fixture(lang).read_text().splitlines()}
    rows = {r["task_id"]: r for r in read_rows(cell / "results.jsonl")}
    got = {t: (r["detail"].split("status=")[1].split()[0] if not r["passed"] else "OK")
           for t, r in rows.items()}
    assert got == expected
    codes = {json.loads(line)["name"]: json.loads(line)["fixture_exit_code"]
             for line in fixture(lang).read_text().splitlines()}
    assert {t: r["detail"].split("exit_code=")[1].split()[0] for t, r in rows.items()
            if not r["passed"]} == {t: str(c) for t, c in codes.items() if c != 0}
    assert {t: r["failure_mode"] for t, r in rows.items()} == {
        t: FAILURE_MODE[s] for t, s in expected.items()}
    assert {t: r["passed"] for t, r in rows.items()} == {t: s == "OK" for t, s in
                                                          expected.items()}
    metrics = read_json(cell / "metrics.json")
    assert metrics["pass@1"]["value"] == pytest.approx(1 / 5)
    provenance = read_json(cell / "provenance.json")
    readiness = provenance["readiness"]
    assert readiness["ok"] and readiness["smoke"]["passed"]
    assert all(r["found"] and r["version"] for r in readiness["requirements"])
    assert provenance["dataset"]["version"] == REVISION


@pytest.mark.slow
def test_completion_mode_is_multiples_protocol(workdir: Path) -> None:
    """model.mode=completion: the raw prompt goes out with the row's stop tokens, the sample's
    code is the bare completion, and the verdicts are the same."""
    proc = run_cli("run", "benchmark=multiple_js", f"benchmark.path={fixture('js')}",
                   "model.mode=completion", "score.audit_timeouts=false",
                   "generate.progress=false", cwd=workdir, timeout=300)
    assert proc.returncode == 0, proc.stderr
    cell = workdir / "runs" / "default" / "oracle" / "multiple_js"
    rows = {json.loads(line)["name"]: json.loads(line)
            for line in fixture("js").read_text().splitlines()}
    samples = {s["task_id"]: s for s in read_rows(cell / "samples.jsonl")}
    assert {t: s["code"] for t, s in samples.items()} == {
        t: r["fixture_completion"] for t, r in rows.items()}
    results = {r["task_id"]: r for r in read_rows(cell / "results.jsonl")}
    assert {t: r["failure_mode"] for t, r in results.items()} == {
        t: FAILURE_MODE[r["fixture_status"]] for t, r in rows.items()}
