"""The readiness gate of tier-2 benchmarks: refuses with the missing list when a toolchain piece
is absent inside the scoring sandbox, passes when everything is there; recorded in provenance.
"""

from __future__ import annotations

import os
from importlib import metadata
from pathlib import Path

import pytest
from _support import REPO, run_cli

from benchforge.benchmarks import load_benchmark, multiple
from benchforge.config import compose
from benchforge.errors import BenchforgeError
from benchforge.readiness import check_readiness, probe_program, refusal, run_gate
from benchforge.rundir import read_json
from benchforge.sandbox import Limits, SandboxPool
from benchforge.stages import run_run, run_score

FIXTURE = REPO / "tests" / "fixtures" / "multiple" / "humaneval-py.jsonl"
LIMITS = Limits(timeout_s=10.0, memory_mb=4096, stack_mb=64, cpu_s=30, nofile=256, nproc=64,
                fsize_mb=16, max_output_bytes=100_000)


@pytest.fixture(scope="module")
def pool():
    with SandboxPool("bwrap", LIMITS, 1) as sandbox:
        yield sandbox


def py_bench(tmp_path: Path):
    return load_benchmark(compose(["benchmark=multiple_py", f"benchmark.path={FIXTURE}",
                                   f"run.root={tmp_path / 'runs'}"]))


def test_gate_passes_with_the_toolchain_present(pool, tmp_path: Path) -> None:
    record = check_readiness(py_bench(tmp_path), pool, "multiple_py")
    assert record["ok"] and record["missing"] == []
    [python] = record["requirements"]
    assert python["name"] == "python3" and python["found"]
    assert python["version"].startswith("Python 3.")
    assert record["smoke"] == {"run": True, "passed": True, "failure_mode": None,
                               "duration_s": record["smoke"]["duration_s"]}
    assert record["sandbox_mode"] == "bwrap" and record["container"] == "multiple.def"


def test_gate_refuses_with_the_missing_list(pool, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    # On the host but not in the sandbox view (host /tmp is hidden): must count as missing.
    host_only = tmp_path / "host-only-cc"
    host_only.write_text("#!/bin/sh\necho host-only-cc 1.0\n")
    host_only.chmod(0o755)
    bench = py_bench(tmp_path)
    monkeypatch.setitem(multiple.TOOLS, "py", ("python3", "no-such-compiler-bf"))
    needs = bench.requirements()
    assert [n["name"] for n in needs] == ["python3", "no-such-compiler-bf"]
    monkeypatch.setattr(type(bench), "requirements", lambda self: [*needs, {
        "kind": "executable", "name": "host-only-cc", "path": str(host_only),
        "install": "apt-get install -y host-only-cc"}])
    record = check_readiness(bench, pool, "multiple_py")
    assert not record["ok"] and record["smoke"] == {"run": False}
    assert record["missing"] == [
        "no-such-compiler-bf: not found in the sandbox (install: apt-get install -y python3)",
        "host-only-cc: not found in the sandbox (install: apt-get install -y host-only-cc)"]
    text = refusal(record)
    assert text.startswith("benchmark=multiple_py is not ready to score in sandbox=bwrap: ")
    assert "containers/multiple.def" in text and "benchforge smoke benchmark=multiple_py" in text


def test_gate_refuses_when_the_known_good_program_fails(pool, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(multiple.SMOKE, "py", "import sys\nsys.exit(3)\n")
    record = check_readiness(py_bench(tmp_path), pool, "multiple_py")
    assert not record["ok"] and record["smoke"]["passed"] is False
    assert "a known-good multiple_py program does not pass" in record["missing"][0]


def test_python_libraries_at_pinned_versions(pool) -> None:
    numpy = metadata.version("numpy")
    needs = [{"kind": "python", "name": "numpy", "version": numpy},
             {"kind": "python", "name": "numpy", "version": "0.0.1"},
             {"kind": "python", "name": "no-such-dist-bf", "version": None},
             {"kind": "file", "name": "jar", "paths": ["/usr/no/such.jar"]}]
    result = pool.run(probe_program(needs))
    assert result.failure_mode == "wrong_answer"
    from benchforge.readiness import _parse_report

    report = _parse_report(result.detail)
    assert [(r["found"], r["problem"]) for r in report] == [
        (True, None), (False, f"version {numpy}, pinned 0.0.1"), (False, "not installed"),
        (False, "none of /usr/no/such.jar")]


def test_smoke_of_a_tier2_benchmark_is_the_gate(tmp_path: Path) -> None:
    proc = run_cli("smoke", "benchmark=multiple_py", f"benchmark.path={FIXTURE}",
                   "sandbox=bwrap", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "readiness: multiple_py (sandbox=bwrap)" in proc.stdout
    record = read_json(tmp_path / "runs" / "default" / "logs" / "readiness-multiple_py.json")
    assert record["ok"] and record["requirements"][0]["name"] == "python3"


def test_run_gate_refuses_and_keeps_the_record(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = compose(["benchmark=multiple_py", f"benchmark.path={FIXTURE}", "sandbox=bwrap",
                   f"run.root={tmp_path / 'runs'}"])
    monkeypatch.setitem(multiple.TOOLS, "py", ("no-such-python-bf",))
    with pytest.raises(BenchforgeError, match="no-such-python-bf: not found in the sandbox"):
        run_gate(cfg, load_benchmark(cfg))
    record = read_json(tmp_path / "runs" / "default" / "logs" / "readiness-multiple_py.json")
    assert not record["ok"]


def test_scoring_refuses_until_ready(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    args = ["benchmark=multiple_py", f"benchmark.path={FIXTURE}", "sandbox=bwrap",
            "generate.progress=false", "score.audit_timeouts=false"]
    proc = run_cli("generate", *args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    cell = tmp_path / "runs" / "default" / "oracle" / "multiple_py"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(multiple.TOOLS, "py", ("python3", "no-such-tool-bf"))
    with pytest.raises(BenchforgeError, match=r"not ready to score.*no-such-tool-bf"):
        run_score(compose(args))
    assert not (cell / "results.jsonl").exists()
    readiness = read_json(cell / "provenance.json")["readiness"]
    assert not readiness["ok"] and readiness["missing"]
    assert os.environ.get("PATH")  # the host environment is untouched by the gate


def test_run_refuses_before_any_generation(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(multiple.TOOLS, "py", ("no-such-python-bf",))
    with pytest.raises(BenchforgeError, match="not ready to score"):
        run_run(compose(["benchmark=multiple_py", f"benchmark.path={FIXTURE}", "sandbox=bwrap",
                         "generate.progress=false", "model=endpoint",
                         "model.base_url=http://127.0.0.1:9/v1", "model.served_name=m"]))
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").rglob("samples*"))
