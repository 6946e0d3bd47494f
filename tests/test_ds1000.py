"""DS-1000 (tier 2) on committed fixtures in the official row format.

``tests/fixtures/ds1000/ds1000-fixtures.jsonl`` (``make_fixtures.py`` in the same folder): seven
numpy/pandas problems shaped like the Hub rows (``prompt``, ``reference_code``, ``code_context``
with ``test_execution`` and, for pandas, ``test_string``; ``metadata``), each with the answer the
oracle gives and the outcome DS-1000's ``check_correctness`` gives it (passed, a wrong answer,
an endless loop, a raising answer, a dying process, a loop ``test_string`` forbids). DS-1000
ships no installable package: the outcomes follow its ``test_ds1000.py``/``execution.py``
(a dying process has no official verdict; benchforge fails it).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from _support import REPO, run_cli
from fakes.fake_hub import FakeHub

from benchforge.benchmarks import ds1000, load_benchmark
from benchforge.config import compose
from benchforge.errors import BenchforgeError
from benchforge.readiness import check_readiness
from benchforge.rundir import read_json, read_rows
from benchforge.sandbox import Limits, SandboxPool

FIXTURE = REPO / "tests" / "fixtures" / "ds1000" / "ds1000-fixtures.jsonl"
SEABORN = FIXTURE.with_name("ds1000-seaborn.jsonl")  # loads seaborn's "penguins" by name
MIRROR = FIXTURE.with_name("mirror")  # laid out as raw.githubusercontent.com
ANY_VERSION = ["benchmark.pins.numpy=null", "benchmark.pins.pandas=null"]
LIMITS = Limits(timeout_s=10.0, memory_mb=4096, stack_mb=64, cpu_s=60, nofile=256, nproc=64,
                fsize_mb=16, max_output_bytes=100_000)


def rows() -> list[dict]:
    return [json.loads(line) for line in FIXTURE.read_text().splitlines()]


def bench(*extra: str):
    return load_benchmark(compose(["benchmark=ds1000", f"benchmark.path={FIXTURE}",
                                   "benchmark.timeout_s=2", *ANY_VERSION, *extra]))


def test_fixtures_are_in_the_official_row_format() -> None:
    outcomes = {r["fixture_result"].split(":")[0] for r in rows()}
    assert outcomes == {"passed", "failed", "timed out", "died"}
    for row in rows():
        assert set(ds1000.ROW_FIELDS) <= set(row)
        assert row["metadata"]["library"] in ("Numpy", "Pandas")
        assert "def test_execution(solution: str)" in row["code_context"]


def test_postprocess_is_test_ds1000s() -> None:
    assert ds1000.postprocess("result = 1\n</code>\nEND SOLUTION") == "result = 1\n"
    assert ds1000.postprocess("Sure:\n```python\nresult = 1\n```\nDone") == "Sure:\n\nresult = 1\n"
    assert ds1000.postprocess("<code>\nresult = 1\nEND SOLUTION\nmore") == "\nresult = 1"
    assert ds1000.postprocess("```\nresult = 1\n```") == ""
    assert ds1000.postprocess("a```python\nb```python\nc```d") == "a\nb\nc"
    b = bench()
    task = b.load().tasks[0]
    thinking = "<think>```python\nx = 0\n```</think>result = a.sum(axis=0)"
    assert b.extract_code(task, thinking, "chat") == "result = a.sum(axis=0)"
    assert b.rescoring_code(task, {"code": ["result = 2\n</code>", "x"]}) == "result = 2\n"
    assert b.rescoring_code(task, {"code": "result = 2\n</code>"}) == "result = 2\n"


def test_program_prompts_and_stops() -> None:
    b = bench()
    numpy_task, pandas_task = b.load().tasks[:2]
    assert ds1000.test_program("ctx", "x = 1") == "ctx\ncode = 'x = 1'\ntest_execution(code)\n\n"
    program = b.check_program(pandas_task, "r = 1").code
    assert program.endswith("code = 'r = 1'\ntest_execution(code)\ntest_string(code)\n")
    assert b.check_program(numpy_task, "r").bare_globals
    assert b.check_program(numpy_task, "r").wall_limit_s() == 3.0
    assert bench("benchmark.timeout_s=null").check_program(numpy_task, "r").wall_limit_s() == 121
    assert b.prompt(numpy_task, "completion").text == numpy_task.data["prompt"]
    assert b.prompt(numpy_task, "chat").messages == (
        ("system", "Write a short code following the given format and indentation. Place the "
                   "executable code between <code> and </code> tags, without any other "
                   "non-executable things."), ("user", numpy_task.data["prompt"]))
    assert bench("benchmark.variant=gpt4o").prompt(numpy_task, "chat").messages[0] == (
        "system", "Only provide the code completion needed. Don't repeat the context code.")
    with pytest.raises(BenchforgeError, match=r"benchmark\.variant=cot: expected null"):
        bench("benchmark.variant=cot").prompt(numpy_task, "chat")
    assert b.stop_sequences("completion") == b.stop_sequences("chat") == [
        "</code>", "# SOLUTION END"]
    assert b.max_tokens("chat") == 1024 and b.max_tokens("completion") is None


def test_loading_errors_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(BenchforgeError, match=r"ds1000/test\.jsonl: DS-1000 data not found; "
                       r"run `benchforge stage benchmark=ds1000`"):
        load_benchmark(compose(["benchmark=ds1000", f"data.root={tmp_path}"])).load()
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "", "reference_code": "", "code_context": "",
                               "metadata": {"problem_id": 1}}) + "\n")
    with pytest.raises(BenchforgeError, match=r"row 1 lacks DS-1000 field\(s\) metadata\.library"):
        load_benchmark(compose(["benchmark=ds1000", f"benchmark.path={bad}"])).load()


def test_stage_fetches_the_dataset_from_the_hub(tmp_path: Path) -> None:
    blob = FIXTURE.read_bytes()  # the Hub file is plain JSON lines: test.jsonl
    commit = "b" * 40
    repos = {"datasets/xlangai/DS-1000": {"sha": commit, "files": {"test.jsonl": blob}}}
    args = ["benchmark=ds1000", f"data.root={tmp_path / 'data'}",
            f"run.root={tmp_path / 'runs'}", f"benchmark.version={commit}"]
    with FakeHub(repos) as server:
        env = {"HF_ENDPOINT": server.url, "HF_HUB_DISABLE_TELEMETRY": "1"}
        proc = run_cli("stage", *args, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    dataset = load_benchmark(compose(args)).load()
    assert [t.task_id for t in dataset.tasks] == [f"DS1000/{i}" for i in range(7)]
    assert dataset.extra["hf_commit"] == commit
    # `main` (the default) is resolved to the commit it was at, and provenance keeps it
    latest = ["benchmark=ds1000", f"data.root={tmp_path / 'latest'}",
              f"run.root={tmp_path / 'runs'}"]
    with FakeHub(repos) as server:
        env = {"HF_ENDPOINT": server.url, "HF_HUB_DISABLE_TELEMETRY": "1"}
        proc = run_cli("stage", *latest, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    staged = tmp_path / "latest" / "ds1000" / "test.jsonl"
    assert f"hf://datasets/xlangai/DS-1000@{commit}" in proc.stdout
    record = json.loads(staged.with_name("test.jsonl.source.json").read_text())
    assert record["requested_revision"] == "main" and record["commit"] == commit
    assert load_benchmark(compose(latest)).load().extra["hf_commit"] == commit
    staged.write_text(staged.read_text() + "\n")  # no longer the file that was fetched
    assert load_benchmark(compose(latest)).load().extra["hf_commit"] is None


def test_gate_refuses_unpinned_libraries_and_passes_pinned(tmp_path: Path) -> None:
    import numpy

    strict = bench("benchmark.pins.numpy=0.0.1")
    with SandboxPool("bwrap", LIMITS, 1) as pool:
        record = check_readiness(strict, pool, "ds1000")
        ready = check_readiness(bench(), pool, "ds1000")
    assert not record["ok"] and record["missing"] == [
        f"numpy: version {numpy.__version__}, pinned 0.0.1 (install: pip install "
        "'numpy==0.0.1')"]
    assert ready["ok"] and ready["smoke"]["passed"], ready
    assert [(r["name"], r["found"]) for r in ready["requirements"]] == [
        ("numpy", True), ("pandas", True)]


@pytest.mark.slow
def test_scored_end_to_end_through_the_oracle(workdir: Path) -> None:
    """Every fixture problem gets DS-1000's outcome, the per-library breakdown is in
    metrics.json, the gate is in provenance, every reference solution passes."""
    args = ["benchmark=ds1000", f"benchmark.path={FIXTURE}", "benchmark.timeout_s=2",
            *ANY_VERSION, "score.audit_timeouts=false", "generate.progress=false",
            "score.workers=2"]
    proc = run_cli("run", *args, cwd=workdir, timeout=300)
    assert proc.returncode == 0, proc.stderr
    cell = workdir / "runs" / "default" / "oracle" / "ds1000"
    results = {r["task_id"]: r for r in read_rows(cell / "results.jsonl")}
    expected = {f"DS1000/{r['metadata']['problem_id']}": r for r in rows()}
    assert {t: r["passed"] for t, r in results.items()} == {
        t: r["fixture_result"] == "passed" for t, r in expected.items()}
    assert {t: r["failure_mode"] for t, r in results.items()} == {
        t: r["fixture_failure_mode"] for t, r in expected.items()}
    assert {t: r["category"] for t, r in results.items()} == {
        t: r["metadata"]["library"] for t, r in expected.items()}
    metrics = read_json(cell / "metrics.json")
    assert metrics["pass@1"]["value"] == pytest.approx(2 / 7)
    by_library = metrics["breakdown"]["category"]
    assert by_library["Numpy"]["n_tasks"] == 3
    assert by_library["Numpy"]["pass@1"]["value"] == pytest.approx(1 / 3)
    assert by_library["Pandas"]["pass@1"]["value"] == pytest.approx(1 / 4)
    by_perturbation = metrics["breakdown"]["perturbation"]  # test_ds1000.py's second table
    assert list(by_perturbation) == ["Origin"] and by_perturbation["Origin"]["n_tasks"] == 7
    assert {r["perturbation"] for r in results.values()} == {"Origin"}
    readiness = read_json(cell / "provenance.json")["readiness"]
    assert readiness["ok"] and {r["name"] for r in readiness["requirements"]} == {
        "numpy", "pandas"}
    reference = run_cli("run", *args, "score.reference=true", cwd=workdir, timeout=300)
    assert reference.returncode == 0, reference.stderr
    ref = read_rows(workdir / "runs" / "default" / "reference" / "ds1000" / "results.jsonl")
    assert len(ref) == 7 and all(r["passed"] for r in ref)


def test_gate_needs_every_module_the_problems_import(tmp_path: Path) -> None:
    """Modules come from each code_context's imports (its exec_context string included),
    stdlib left out, mapped to DS-1000's environment.yml distributions and pins."""
    context = ("import numpy as np\nfrom PIL import Image\nimport matplotlib.pyplot as plt\n"
               "import tokenize, io\nfrom sklearn.model_selection import GridSearchCV\n"
               "from __future__ import annotations\n"
               'exec_context = r"""\nimport xgboost.sklearn as xgb, os\n'
               'df = sns.load_dataset("penguins")\n[insert]\n"""\n'
               "def f():\n    import tensorflow as tf  # later\n")
    assert ds1000.imported_modules(context) == {
        "numpy", "PIL", "matplotlib", "sklearn", "xgboost", "tensorflow"}
    assert ds1000.seaborn_datasets(context) == {"penguins"}
    assert ds1000.seaborn_datasets("sns.load_dataset( 'tips' ) load_dataset(name)") == {"tips"}
    data = tmp_path / "rows.jsonl"
    data.write_text(json.dumps(dict(rows()[0], code_context=context)) + "\n")
    b = load_benchmark(compose(["benchmark=ds1000", f"benchmark.path={data}",
                                f"data.root={tmp_path}"]))
    needs = {n["name"]: n for n in b.requirements()}
    assert [(n["kind"], n.get("version")) for n in needs.values()] == [
        ("module", None), ("python", "3.8.4"), ("python", "1.26.4"), ("python", "1.4.0"),
        ("python", "2.16.1"), ("python", "2.0.3"), ("file", None)]
    assert list(needs) == ["PIL", "matplotlib", "numpy", "scikit-learn", "tensorflow-cpu",
                           "xgboost", "seaborn dataset penguins"]
    assert needs["seaborn dataset penguins"]["paths"] == [
        str(tmp_path / "ds1000" / "seaborn-data" / "penguins.csv")]
    assert b.sandbox_paths() == []  # not staged yet
    assert [d.source for d in b.dependent_downloads()] == [
        "mwaskom/seaborn-data/master/penguins.csv"]
    task = b.load().tasks[0]
    official_env = {"TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": "-1"}
    assert b.check_program(task, "x").env == {**official_env, "SEABORN_DATA": str(b.seaborn_dir)}
    assert bench().check_program(bench().load().tasks[0], "x").env == official_env
    assert "benchforge stage benchmark=ds1000" in needs["seaborn dataset penguins"]["install"]


def test_a_pin_matches_a_local_version_label() -> None:
    """torch==2.2.0 from PyTorch's CPU index installs 2.2.0+cpu (containers/ds1000.def)."""
    from benchforge import readiness

    probe: dict = {}
    exec(readiness.PROBE, probe)  # the probe's own code, as it runs in the sandbox
    assert probe["pin_matches"]("2.2.0+cpu", "2.2.0") and probe["pin_matches"]("2.2.0", "2.2.0")
    assert not probe["pin_matches"]("2.2.1", "2.2.0")
    assert not probe["pin_matches"]("2.2.0", "2.2.0+cpu")
    assert probe["pin_matches"]("2.2.0+cpu", "2.2.0+cpu")


def test_gate_refuses_a_module_that_is_not_installed(tmp_path: Path) -> None:
    data = tmp_path / "xgb.jsonl"
    data.write_text(json.dumps(dict(rows()[0], code_context="import xgboost.sklearn as xgb\n"
                                    + rows()[0]["code_context"])) + "\n")
    b = load_benchmark(compose(["benchmark=ds1000", f"benchmark.path={data}", *ANY_VERSION]))
    with SandboxPool("bwrap", LIMITS, 1) as pool:
        record = check_readiness(b, pool, "ds1000")
    assert not record["ok"]
    assert "xgboost: not installed (install: pip install 'xgboost==2.0.3')" in record["missing"]


@pytest.mark.slow
def test_seaborn_datasets_are_staged_and_read_offline_in_the_sandbox(workdir: Path) -> None:
    """A problem that loads seaborn's "penguins": the gate refuses until `stage` has fetched
    it (from the URL seaborn uses, under data.mirror); then the sample reads the staged file
    inside the offline sandbox (SEABORN_DATA) and passes; the reference does too."""
    commit = "c" * 40
    args = ["benchmark=ds1000", f"benchmark.version={commit}", "benchmark.timeout_s=60",
            *ANY_VERSION, "benchmark.pins.seaborn=null", "benchmark.pins.matplotlib=null",
            f"data.root={workdir / 'data'}", "generate.progress=false", "sandbox=bwrap"]
    refused = run_cli("run", *args, f"benchmark.path={SEABORN}", "run.name=unstaged",
                      cwd=workdir, timeout=300)
    assert refused.returncode == 2, refused.stderr
    assert "seaborn dataset penguins: none of" in refused.stderr
    assert "benchforge stage benchmark=ds1000" in refused.stderr
    repos = {"datasets/xlangai/DS-1000": {"sha": commit,
                                          "files": {"test.jsonl": SEABORN.read_bytes()}}}
    with FakeHub(repos) as server:
        env = {"HF_ENDPOINT": server.url, "HF_HUB_DISABLE_TELEMETRY": "1"}
        staged = run_cli("stage", *args, f"data.mirror=file://{MIRROR}", cwd=workdir, env=env)
    assert staged.returncode == 0, staged.stderr
    csv = workdir / "data" / "ds1000" / "seaborn-data" / "penguins.csv"
    source = MIRROR / "mwaskom" / "seaborn-data" / "master" / "penguins.csv"
    assert csv.read_bytes() == source.read_bytes()
    assert f"{csv}  downloaded  sha256:" in staged.stdout
    done = run_cli("run", *args, cwd=workdir, timeout=300)
    assert done.returncode == 0, done.stderr
    cell = workdir / "runs" / "default" / "oracle" / "ds1000"
    [result] = read_rows(cell / "results.jsonl")
    assert result["passed"] and result["category"] == "Matplotlib", result
    readiness = read_json(cell / "provenance.json")["readiness"]
    assert {r["name"]: r["version"] for r in readiness["requirements"]}[
        "seaborn dataset penguins"] == str(csv)
    assert read_json(cell / "provenance.json")["dataset"]["seaborn_datasets"] == {
        "penguins": hashlib.sha256(source.read_bytes()).hexdigest()}
    reference = run_cli("run", *args, "score.reference=true", cwd=workdir, timeout=300)
    assert reference.returncode == 0, reference.stderr
    [ref] = read_rows(workdir / "runs" / "default" / "reference" / "ds1000" / "results.jsonl")
    assert ref["passed"], ref


def test_container_pins_are_the_gates() -> None:
    import re

    text = (REPO / "containers" / "ds1000.def").read_text()
    pinned = dict(re.findall(r"'([A-Za-z0-9_.-]+)==([^']+)'", text))
    assert pinned == dict(compose(["benchmark=ds1000"]).benchmark.pins)


def test_smoke_of_ds1000_is_the_gate(tmp_path: Path) -> None:
    proc = run_cli("smoke", "benchmark=ds1000", f"benchmark.path={FIXTURE}", *ANY_VERSION,
                   "sandbox=bwrap", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "readiness: ds1000 (sandbox=bwrap)" in proc.stdout
    record = read_json(tmp_path / "runs" / "default" / "logs" / "readiness-ds1000.json")
    assert record["ok"] and [r["name"] for r in record["requirements"]] == ["numpy", "pandas"]
    refused = run_cli("smoke", "benchmark=ds1000", f"benchmark.path={FIXTURE}", *ANY_VERSION,
                      "benchmark.pins.numpy=0.0.1", "sandbox=bwrap", cwd=tmp_path)
    assert refused.returncode == 2
    assert "benchmark=ds1000 is not ready to score" in refused.stderr
    assert "numpy: version" in refused.stderr and "pinned 0.0.1" in refused.stderr
    assert "containers/ds1000.def" in refused.stderr
