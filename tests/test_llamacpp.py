"""engine=llamacpp and GGUF models against a fake `python -m llama_cpp.server` that parses the
real flags and reads a real (tiny, tensor-free) GGUF written here with the `gguf` library;
smoke's prompt identity against servers speaking each tokenize API; the serving settings."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from _support import QWEN, REPO

from benchforge.benchmarks import oracle_answers
from benchforge.engine import llamacpp_command
from benchforge.errors import BenchforgeError
from benchforge.gguf_model import gguf_info, resolve_gguf
from benchforge.mock_server import write_answers
from benchforge.rundir import read_json, read_rows
from benchforge.stages import run_generate

TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
            "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def write_gguf(path: Path, template: str | None = TEMPLATE) -> Path:
    import gguf

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny-test")
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(["<|endoftext|>", "<|im_start|>", "<|im_end|>", "a"])
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    if template is not None:
        writer.add_chat_template(template)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"


@pytest.fixture
def fake_llamacpp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, humaneval):
    """A GGUF file, and a fake llama_cpp.server (engine.executable) with HumanEval answers."""
    gguf_path = write_gguf(tmp_path / "tiny.gguf")
    script = tmp_path / "llama-cpp-server"
    target = REPO / "tests" / "fakes" / "fake_llama_cpp.py"
    script.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{target}" "$@"\n')
    script.chmod(0o755)
    bench, dataset = humaneval
    answers = tmp_path / "answers.jsonl"
    write_answers(answers, oracle_answers(bench, dataset.tasks, "chat"))
    record = tmp_path / "llama-record.jsonl"
    monkeypatch.setenv("FAKE_LLAMA_ANSWERS", str(answers))
    monkeypatch.setenv("FAKE_LLAMA_RECORD", str(record))
    return {"gguf": gguf_path, "executable": script,
            "launches": lambda: read_rows(record) if record.exists() else []}


def gguf_model(fake: dict, **extra: object) -> dict[str, object]:
    return {"model.name": "tiny-gguf", "model.provider": "gguf",
            "model.gguf": str(fake["gguf"]), "model.served_name": "tiny",
            "model.concurrency": None, "model.request_timeout_s": None,  # probed
            "engine.name": "llamacpp", "engine.launch": "llamacpp",
            "engine.executable": str(fake["executable"]), "engine.max_model_len": 4096,
            "engine.max_num_seqs": 1, "engine.threads": 2, "engine.startup_timeout_s": 30,
            "generate.progress": False, **extra}


def test_model_gguf_is_a_path_or_a_file_of_an_installed_distribution(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "m.gguf")
    assert resolve_gguf(str(path)) == path.resolve()
    with pytest.raises(BenchforgeError, match=r"model.gguf=.*nope.gguf: file not found"):
        resolve_gguf(str(tmp_path / "nope.gguf"))
    # any installed distribution's file resolves (here: a file of the gguf library itself)
    found = resolve_gguf("pkg:gguf/gguf/constants.py")
    assert found.name == "constants.py" and found.is_file()
    with pytest.raises(BenchforgeError, match=r"'no-such-dist-xyz' is not installed; "
                                              r"pip install no-such-dist-xyz"):
        resolve_gguf("pkg:no-such-dist-xyz/m.gguf")
    with pytest.raises(BenchforgeError, match=r"no such file in gguf .*its GGUF files: none"):
        resolve_gguf("pkg:gguf/missing.gguf")
    with pytest.raises(BenchforgeError, match="expected pkg:<distribution>/<file>"):
        resolve_gguf("pkg:gguf")


def test_gguf_metadata_is_read_with_the_gguf_library(tmp_path: Path) -> None:
    import hashlib

    path = write_gguf(tmp_path / "m.gguf")
    info = gguf_info(path)
    assert info.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert info.chat_template == TEMPLATE
    assert info.chat_template_sha256 == hashlib.sha256(TEMPLATE.encode()).hexdigest()
    assert (info.bos_token, info.eos_token) == ("<|im_start|>", "<|im_end|>")
    assert info.architecture == "llama" and info.name == "tiny-test"
    assert gguf_info(write_gguf(tmp_path / "plain.gguf", None)).chat_template_sha256 is None
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf file at all")
    with pytest.raises(BenchforgeError, match="not a readable GGUF file"):
        gguf_info(bad)


def test_llamacpp_command_pins_the_flags(cfg_with, fake_llamacpp) -> None:
    cfg = cfg_with(**gguf_model(fake_llamacpp), engine__executable=None, model__seed=5)
    cmd = llamacpp_command(cfg.engine, cfg.model, 8123, fake_llamacpp["gguf"], True)
    flags = dict(zip(cmd[3::2], cmd[4::2], strict=False))
    assert cmd[:3] == [sys.executable, "-m", "llama_cpp.server"] or "llama_cpp" not in cmd[2]
    assert flags == {"--model": str(fake_llamacpp["gguf"]), "--model_alias": "tiny",
                     "--host": "127.0.0.1", "--port": "8123", "--n_ctx": "4096", "--seed": "5",
                     "--n_threads": "2", "--n_threads_batch": "2", "--n_gpu_layers": "0",
                     "--chat_format": "chat_template.default"}
    cfg = cfg_with(**gguf_model(fake_llamacpp), model__chat_template="/x.jinja")
    with pytest.raises(BenchforgeError, match="serves the template embedded in the GGUF"):
        llamacpp_command(cfg.engine, cfg.model, 1, fake_llamacpp["gguf"], True)


def test_generate_through_the_llamacpp_engine(cfg_with, fake_llamacpp) -> None:
    cfg = cfg_with(**gguf_model(fake_llamacpp), benchmark__limit=4)
    cell = run_generate(cfg)
    rows = read_rows(cell.dir.samples)
    info = gguf_info(fake_llamacpp["gguf"])
    assert len(rows) == 4 and all("def " in r["code"] for r in rows)
    assert {r["chat_template_sha256"] for r in rows} == {info.chat_template_sha256}
    prov = read_json(cell.dir.provenance)
    assert prov["chat_template_sha256"] == info.chat_template_sha256
    assert prov["model"]["gguf"]["sha256"] == info.sha256
    assert prov["model"]["gguf"]["spec"] == str(fake_llamacpp["gguf"])
    assert "llama-cpp-python" in prov["packages"] and prov["packages"]["gguf"]
    timeout = prov["serving"]["timeout"]
    assert timeout["source"] == "probe" and timeout["probe"]["tokens_per_s"] > 0
    assert prov["serving"]["request_timeout_s"] >= 120
    (launched,) = fake_llamacpp["launches"]()
    assert launched["argv"][launched["argv"].index("--model_alias") + 1] == "tiny"
    assert not alive(launched["pid"]) and not alive(launched["child_pid"])
    assert "Uvicorn running" in (cell.dir.logs / "server.log").read_text()


def test_a_crashing_llamacpp_server_is_one_line_and_the_log_tail(cfg_with, fake_llamacpp,
                                                                 monkeypatch) -> None:
    monkeypatch.setenv("FAKE_LLAMA_MODE", "crash")
    cfg = cfg_with(**gguf_model(fake_llamacpp), benchmark__limit=2)
    with pytest.raises(BenchforgeError) as err:
        run_generate(cfg)
    first, *tail = str(err.value).splitlines()
    assert first.startswith("model server exited with code 1 before becoming ready")
    assert any("error loading model" in line for line in tail)
    (launched,) = fake_llamacpp["launches"]()
    assert not alive(launched["child_pid"])


def test_a_gguf_model_needs_the_llamacpp_engine(cfg_with, fake_llamacpp) -> None:
    cfg = cfg_with(**{**gguf_model(fake_llamacpp), "engine.name": "vllm_native",
                      "engine.launch": "native", "engine.executable": "vllm"},
                   benchmark__limit=1)
    with pytest.raises(BenchforgeError, match="is a GGUF model: use engine=llamacpp"):
        run_generate(cfg)


@pytest.mark.parametrize("flavour", ["vllm", "llama-server", "llama-cpp-python"])
def test_smoke_checks_prompt_identity_through_each_tokenize_api(cfg_with, mock_server,
                                                                tmp_path: Path,
                                                                flavour: str) -> None:
    from benchforge.smoke import run_smoke

    template = tmp_path / "t.jinja"
    template.write_text(TEMPLATE)
    url = mock_server(flavour=flavour, chat_template=template)
    cfg = cfg_with(model__name="m", model__provider="endpoint", model__base_url=url,
                   model__served_name="mock-model", model__chat_template=str(template),
                   smoke__prompts=2)
    result = run_smoke(cfg)
    identity = next(c for c in result["checks"] if c["check"] == "prompt identity")
    assert identity["ok"] is True and "2 prompts rendered identically" in identity["detail"]
    drift = mock_server(flavour=flavour, chat_template=template, template_suffix=" ")
    cfg.model.base_url = drift
    with pytest.raises(BenchforgeError, match=r"prompt identity: .*renders differently"):
        run_smoke(cfg)


def test_smoke_without_a_tokenize_route_says_so_and_runs_the_rest(cfg_with, mock_server,
                                                                  capsys) -> None:
    from benchforge.smoke import run_smoke

    url = mock_server(flavour="none")
    cfg = cfg_with(model__name="m", model__provider="endpoint", model__base_url=url,
                   model__served_name="mock-model", smoke__prompts=2)
    result = run_smoke(cfg)
    assert result["ok"] is True
    checks = {c["check"]: c["ok"] for c in result["checks"]}
    assert checks == {"served model name": True, "prompt identity": None,
                      "greedy is deterministic": True}
    assert "prompt identity not checkable on this server" in capsys.readouterr().out


def test_server_sampling_sends_no_sampling_and_is_non_canonical(cfg_with, fake_engine,
                                                                capsys) -> None:
    from benchforge.stages import run_run

    cfg = cfg_with(**QWEN, model__sampling="server", model__request_timeout_s=100,
                   benchmark__limit=3, generate__progress=False)
    metrics = run_run(cfg)
    bodies = [r["body"] for r in fake_engine["requests"]()]
    assert len(bodies) == 3  # a set timeout: no probe request
    assert not any({"temperature", "top_p", "seed"} & set(b) for b in bodies)
    assert metrics["canonical"] is False and metrics["non_canonical"] == ["sampling=server"]
    assert "[non-canonical: server sampling]" in capsys.readouterr().out
    prov = read_json(Path(str(cfg.run.dir)) / "provenance.json")
    assert prov["serving"]["server_sampling"]["source"] is None  # vLLM has no /props
    assert prov["serving"]["timeout"]["source"] == "model.request_timeout_s"
    # refused as a regression baseline
    from benchforge.compare import check_baseline
    from benchforge.rundir import CellDir

    base = cfg_with(**QWEN, aggregate__baseline=str(cfg.run.dir))
    with pytest.raises(BenchforgeError, match=r"ran with model\.sampling=server"):
        check_baseline(CellDir(Path(str(cfg.run.dir))), base)
    bad = cfg_with(**QWEN, model__sampling="whatever", benchmark__limit=1, run__name="bad")
    with pytest.raises(BenchforgeError, match=r"model\.sampling=whatever: expected request or"):
        run_generate(bad)


def test_server_defaults_are_recorded_from_props(cfg_with, mock_server) -> None:
    from benchforge.serving import server_props

    assert server_props(mock_server(flavour="llama-server"))["default_generation_settings"][
        "top_k"] == 40
    assert server_props(mock_server(flavour="vllm")) is None


def test_thinking_budget_is_added_to_max_tokens(cfg_with, fake_engine) -> None:
    cfg = cfg_with(**QWEN, model__thinking="on", model__thinking_max_tokens=300,
                   model__request_timeout_s=100, benchmark__limit=2, generate__progress=False)
    run_generate(cfg)
    bodies = [r["body"] for r in fake_engine["requests"]()]
    assert [b["max_tokens"] for b in bodies] == [2048 + 300] * 2
    off = cfg_with(**QWEN, model__thinking="off", model__thinking_max_tokens=300,
                   model__request_timeout_s=100, benchmark__limit=1, run__name="off")
    run_generate(off)
    assert fake_engine["requests"]()[-1]["body"]["max_tokens"] == 2048


def test_timeout_scales_with_the_measured_decode_speed() -> None:
    from benchforge.serving import DEFAULT_TIMEOUT_S, scaled_timeout

    assert scaled_timeout(1000, 10.0, 1) == 30 + 4 * 1000 / 10  # 430 s
    assert scaled_timeout(1000, 10.0, 4) == 30 + 4 * 4 * 1000 / 10  # a serialising server
    assert scaled_timeout(100, 1000.0, 1) == 120  # never below the minimum
    assert scaled_timeout(1000, None, 1) == DEFAULT_TIMEOUT_S


def test_latency_and_decode_speed_per_cell(cfg_with, mock_server, capsys) -> None:
    from benchforge.serving import latency_stats
    from benchforge.stages import run_run, run_status

    rows = [{"latency_s": s, "completion_tokens": 10} for s in (1.0, 2.0, 3.0, 4.0)]
    stats = latency_stats(rows)
    assert stats["latency_p50_s"] == 2.5 and stats["latency_p95_s"] == pytest.approx(3.85)
    assert stats["decode_tokens_per_s"] == 4.0 and stats["decode_time_source"] == (
        "request latency")
    timed = latency_stats([{**r, "decode_s": 0.5} for r in rows])
    assert timed["decode_tokens_per_s"] == 20.0 and timed["decode_time_source"] == (
        "server timings")
    url = mock_server(flavour="llama-server")
    cfg = cfg_with(model__name="m", model__provider="endpoint", model__base_url=url,
                   model__served_name="mock-model", benchmark__limit=3,
                   generate__progress=False)
    metrics = run_run(cfg)
    assert metrics["canonical"] is True
    assert metrics["serving"]["requests"] == 3
    assert metrics["serving"]["decode_time_source"] == "server timings"
    assert "latency p50" in capsys.readouterr().out
    cfg.stage = "status"
    (status,) = run_status(cfg)
    assert status["serving"] == metrics["serving"]
    samples = read_rows(Path(str(cfg.run.dir)) / "samples.jsonl")
    assert all(isinstance(r["decode_s"], float) for r in samples)
    assert json.loads((Path(str(cfg.run.dir)) / "metrics.json").read_text())["serving"]
