"""`benchforge stage` against a fake Hugging Face Hub (real HTTP protocol, via HF_ENDPOINT),
and offline generation from the staged snapshot with the fake `vllm`."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from _support import QWEN, REPO, run_cli
from fakes.fake_hub import FakeHub

from benchforge.errors import BenchforgeError
from benchforge.rundir import read_rows
from benchforge.stages import run_generate

COMMIT = "3f1c0ffee0123456789abcdef0123456789abcde"
TEMPLATE = "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}<|assistant|>"
REPOS = {"Qwen/Qwen2.5-Coder-7B-Instruct": {"sha": COMMIT, "files": {
    "config.json": b'{"architectures": ["Qwen2ForCausalLM"]}',
    "tokenizer_config.json": json.dumps({"chat_template": TEMPLATE}).encode(),
    "model.safetensors": b"\0" * 1024,
}}}


@pytest.fixture
def hub():
    with FakeHub(REPOS) as server:
        yield server


def stage(tmp_path: Path, hub, *args: str):
    return run_cli("stage", "model=qwen2.5-coder-7b-instruct", f"paths.hf_cache={tmp_path / 'hf'}",
                   f"run.root={tmp_path / 'runs'}", *args, cwd=tmp_path,
                   env={"HF_ENDPOINT": hub.url, "HF_HUB_DISABLE_TELEMETRY": "1"})


def test_stage_downloads_the_snapshot_and_records_the_commit(tmp_path: Path, hub) -> None:
    proc = stage(tmp_path, hub)
    assert proc.returncode == 0, proc.stderr
    staged = json.loads((tmp_path / "hf" / "benchforge-staged.json").read_text())
    entry = staged["Qwen/Qwen2.5-Coder-7B-Instruct@main"]
    assert entry["commit"] == COMMIT
    snapshot = Path(entry["path"])
    assert snapshot == (tmp_path / "hf" / "models--Qwen--Qwen2.5-Coder-7B-Instruct" / "snapshots"
                        / COMMIT)
    assert (snapshot / "model.safetensors").read_bytes() == b"\0" * 1024
    assert "GET /api/models/Qwen/Qwen2.5-Coder-7B-Instruct/revision/main" in hub.requests
    assert COMMIT in proc.stdout


def test_stage_of_an_unknown_revision_is_one_line(tmp_path: Path, hub) -> None:
    proc = stage(tmp_path, hub, "model.revision=v9-nonexistent")
    assert proc.returncode == 2
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("benchforge stage: error: stage model=qwen2.5-coder-7b-instruct")
    assert "Traceback" not in proc.stderr


def test_offline_generation_needs_a_staged_model(cfg_with, tmp_path: Path) -> None:
    cfg = cfg_with(**QWEN, paths__offline="true", paths__hf_cache=str(tmp_path / "empty"),
                   benchmark__limit=2)
    with pytest.raises(BenchforgeError) as info:
        run_generate(cfg)
    message = str(info.value)
    assert "is not staged: no snapshot under" in message
    assert str(tmp_path / "empty" / "models--Qwen--Qwen2.5-Coder-7B-Instruct") in message
    assert "`benchforge stage model=qwen-coder-7b` on the login node" in message


def test_offline_generation_serves_the_staged_snapshot(cfg_with, tmp_path: Path, hub,
                                                       fake_engine) -> None:
    assert stage(tmp_path, hub, "model.revision=0123abcd").returncode == 2  # not on the hub
    assert stage(tmp_path, hub).returncode == 0
    cfg = cfg_with(**{**QWEN, "model.revision": None}, paths__offline="true",
                   paths__hf_cache=str(tmp_path / "hf"), benchmark__limit=3,
                   generate__progress=False)
    cell = run_generate(cfg)
    (launched,) = fake_engine["launches"]()
    snapshot = tmp_path / "hf" / "models--Qwen--Qwen2.5-Coder-7B-Instruct" / "snapshots" / COMMIT
    assert launched["argv"][1] == str(snapshot)
    assert "--revision" not in launched["argv"]  # the commit is in the path
    assert launched["HF_HUB_OFFLINE"] == "1"
    template_sha = hashlib.sha256(TEMPLATE.encode()).hexdigest()
    provenance = json.loads(cell.dir.provenance.read_text())
    assert provenance["model"]["commit"] == COMMIT
    assert provenance["chat_template_sha256"] == template_sha
    assert {r["chat_template_sha256"] for r in read_rows(cell.dir.samples)} == {template_sha}
    assert os.environ.get("HF_HUB_OFFLINE") is None  # only the server's environment


def test_smoke_checks_prompt_identity_and_determinism(cfg_with, tmp_path: Path, hub,
                                                      fake_engine, monkeypatch) -> None:
    from benchforge.smoke import run_smoke

    assert stage(tmp_path, hub).returncode == 0
    cfg = cfg_with(**{**QWEN, "model.revision": None}, paths__hf_cache=str(tmp_path / "hf"),
                   smoke__prompts=3)
    result = run_smoke(cfg)
    assert result["ok"] and [c["check"] for c in result["checks"]] == [
        "served model name", "prompt identity", "greedy is deterministic"]
    assert result["chat_template_sha256"] == hashlib.sha256(TEMPLATE.encode()).hexdigest()
    assert result["tokens_per_s"] > 0

    monkeypatch.setenv("FAKE_VLLM_MODE", "template_drift")
    with pytest.raises(BenchforgeError) as info:
        run_smoke(cfg)
    assert "prompt identity: template" in str(info.value)
    assert "server renders differently for ['HumanEval/0', 'HumanEval/1', 'HumanEval/2']" \
        in str(info.value)


def test_smoke_needs_a_known_template_for_chat_models(cfg_with, fake_engine) -> None:
    from benchforge.smoke import run_smoke

    cfg = cfg_with(**QWEN, smoke__prompts=1)  # not staged, no override file
    with pytest.raises(BenchforgeError, match="no chat template known to benchforge"):
        run_smoke(cfg)


@pytest.fixture
def mirror(tmp_path: Path, shared_data: Path):
    """A raw-GitHub stand-in serving the shared data files at their pinned source paths."""
    import functools
    import shutil
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    from benchforge.benchmarks._cruxeval import SOURCE

    root = tmp_path / "mirror"
    target = root / SOURCE[0]
    target.parent.mkdir(parents=True)
    shutil.copy(shared_data / "cruxeval" / "cruxeval.jsonl", target)
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a: None  # type: ignore[attr-defined]
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield {"url": f"http://127.0.0.1:{server.server_address[1]}", "file": target}
    server.shutdown()
    server.server_close()


def test_stage_fetches_pinned_benchmark_data_and_checks_its_sha256(tmp_path: Path,
                                                                    mirror) -> None:
    data = tmp_path / "data"
    args = ["benchmark=cruxeval_o", f"data.root={data}", f"data.mirror={mirror['url']}",
            f"run.root={tmp_path / 'runs'}"]
    proc = run_cli("stage", *args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    staged = data / "cruxeval" / "cruxeval.jsonl"
    digest = "8368b81047dc5014e4caf5a2f97604eff7644e0ecd7415e3ceeb184bbc2e0c96"
    assert hashlib.sha256(staged.read_bytes()).hexdigest() == digest
    assert "downloaded" in proc.stdout
    assert "present" in run_cli("stage", *args, cwd=tmp_path).stdout  # idempotent

    staged.unlink()
    mirror["file"].write_bytes(mirror["file"].read_bytes() + b"\n")  # the mirror changed
    proc = run_cli("stage", *args, cwd=tmp_path)
    assert proc.returncode == 2
    assert f"is not the pinned {digest}; nothing written" in proc.stderr
    assert not staged.exists() and not list(staged.parent.glob("*.partial"))


def test_stage_fetches_livecodebench_from_the_hub(tmp_path: Path) -> None:
    fixture = REPO / "tests" / "fixtures" / "livecodebench" / "code_generation_lite"
    files = {p.name: p.read_bytes() for p in fixture.glob("test*.jsonl")}
    assert list(files) == ["test6.jsonl"]  # the fixture is release v6's own file
    repos = {"datasets/livecodebench/code_generation_lite": {"sha": "c" * 40, "files": files}}
    version = "v6"
    with FakeHub(repos) as server:
        proc = run_cli("stage", "benchmark=livecodebench", f"benchmark.version={version}",
                       f"data.root={tmp_path / 'data'}", f"run.root={tmp_path / 'runs'}",
                       cwd=tmp_path, env={"HF_ENDPOINT": server.url})
    assert proc.returncode == 0, proc.stderr
    folder = tmp_path / "data" / "livecodebench" / "code_generation_lite"
    for name, content in files.items():
        assert (folder / name).read_bytes() == content
