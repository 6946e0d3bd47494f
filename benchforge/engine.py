"""Model servers: launch an OpenAI-compatible server for a cell, or use one already running.

A launched server runs in its own process group, logs to ``logs/server.log``, is ready when
``/health`` answers (llama-cpp-python, which has none: ``/v1/models``), and is torn down
with its whole group on exit, error or signal. It also dies with benchforge
(PR_SET_PDEATHSIG), so a SIGKILLed ``generate`` leaves no orphan server.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from omegaconf import DictConfig

from benchforge.config import Launch, Mode, Provider
from benchforge.errors import BenchforgeError
from benchforge.gguf_model import model_gguf
from benchforge.gpumon import TRACE_NAME, GpuMonitor
from benchforge.hub import offline, require_staged, staged_snapshot
from benchforge.mock_server import write_answers
from benchforge.procutil import (
    die_with_parent,
    exit_on_signals,
    free_port,
    log_tail,
    terminate_group,
)


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


@contextlib.contextmanager
def launch_server(cmd: Sequence[str], port: int, log_path: Path,
                  startup_timeout_s: float, env: dict[str, str] | None = None,
                  ready_path: str = "/health") -> Iterator[str]:
    """Start ``cmd`` (which must listen on ``port``), wait until ``ready_path`` answers 200,
    yield its /v1 URL."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    base = f"http://127.0.0.1:{port}"
    with open(log_path, "ab") as log:
        log.write(f"\n# {time.strftime('%Y-%m-%dT%H:%M:%S')} $ {' '.join(cmd)}\n".encode())
        log.flush()
        proc = subprocess.Popen(
            list(cmd), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=die_with_parent,
            env={**os.environ, **(env or {})},
        )
    try:
        deadline = time.monotonic() + startup_timeout_s
        while not _healthy(f"{base}{ready_path}"):
            if proc.poll() is not None:
                raise BenchforgeError(
                    f"model server exited with code {proc.returncode} before becoming ready; "
                    f"last lines of {log_path}:\n{log_tail(log_path)}"
                )
            if time.monotonic() > deadline:
                raise BenchforgeError(
                    f"model server not ready after {startup_timeout_s:.0f}s "
                    f"(model.startup_timeout_s); last lines of {log_path}:\n{log_tail(log_path)}"
                )
            time.sleep(0.1)
        yield f"{base}/v1"
    finally:
        terminate_group(proc)


def vllm_command(engine: DictConfig, model: DictConfig, port: int,
                 snapshot: Path | None = None) -> list[str]:
    """The server command line: ``vllm serve`` with the seed's pinned flags, inside
    ``apptainer exec`` for the apptainer engine. A staged ``snapshot`` is served from disk;
    otherwise vLLM fetches ``hf_repo`` at ``revision`` itself."""
    if not model.hf_repo:
        raise BenchforgeError(f"model={model.name}: provider=hf needs model.hf_repo")
    source = str(snapshot) if snapshot is not None else str(model.hf_repo)
    serve = ["vllm", "serve", source, "--host", "127.0.0.1", "--port", str(port),
             "--served-model-name", str(model.served_name),
             "--max-model-len", str(engine.max_model_len),
             "--gpu-memory-utilization", f"{float(engine.gpu_memory_utilization):.2f}",
             "--max-num-seqs", str(engine.max_num_seqs), "--seed", str(model.seed)]
    if model.revision and snapshot is None:
        serve += ["--revision", str(model.revision)]
    if model.chat_template:
        serve += ["--chat-template", str(model.chat_template)]
    if model.trust_remote_code:
        serve.append("--trust-remote-code")
    serve += [str(a) for a in engine.extra_args]
    if engine.launch == Launch.native:
        return [str(engine.executable), *serve[1:]]
    if engine.launch == Launch.apptainer:
        image = Path(str(engine.image)).expanduser()
        if not image.is_file():
            raise BenchforgeError(f"engine.image={image}: no such SIF; run `benchforge "
                                  "pull-image` on the login node, or set engine.image")
        return [str(engine.executable), "exec", *map(str, engine.apptainer_args), str(image),
                *serve]
    raise BenchforgeError(f"engine.launch={engine.launch}: expected native, apptainer or none")


def llamacpp_command(engine: DictConfig, model: DictConfig, port: int, gguf: Path,
                     has_template: bool) -> list[str]:
    """``python -m llama_cpp.server`` with pinned flags: context length, seed, threads, GPU
    layers, the served name as ``--model_alias``, and (chat models) the GGUF's own embedded
    chat template (``--chat_format chat_template.default``: llama-cpp-python would otherwise
    swap a template it recognises for a built-in formatter)."""
    if model.chat_template:
        raise BenchforgeError(
            f"model.chat_template={model.chat_template}: engine=llamacpp serves the template "
            "embedded in the GGUF and cannot load another one; unset model.chat_template")
    threads = int(engine.threads) if engine.threads else len(os.sched_getaffinity(0)) or 1
    if engine.executable:
        head = [str(engine.executable)]
    else:
        import importlib.util

        if importlib.util.find_spec("llama_cpp") is None:
            raise BenchforgeError("engine=llamacpp needs llama-cpp-python in this environment: "
                                  "pip install 'benchforge[llamacpp]'")
        head = [sys.executable, "-m", "llama_cpp.server"]
    cmd = [*head, "--model", str(gguf), "--model_alias", str(model.served_name),
           "--host", "127.0.0.1", "--port", str(port), "--n_ctx", str(engine.max_model_len),
           "--seed", str(model.seed), "--n_threads", str(threads),
           "--n_threads_batch", str(threads), "--n_gpu_layers", str(engine.gpu_layers)]
    if has_template and model.mode == Mode.chat:
        cmd += ["--chat_format", "chat_template.default"]
    return cmd + [str(a) for a in engine.extra_args]


def served_models(base_url: str) -> list[str]:
    """The model ids the server at ``base_url`` lists (``/models``); [] when it does not answer."""
    try:
        with urllib.request.urlopen(f"{base_url}/models", timeout=10) as resp:
            return [m["id"] for m in json.load(resp).get("data", [])]
    except (urllib.error.URLError, OSError, ValueError, KeyError):
        return []


def resolve_snapshot(model: DictConfig,
                     paths: DictConfig | None) -> tuple[Path | None, dict[str, str]]:
    """The staged snapshot to serve and the server's hub environment. Offline (a compute
    node) the snapshot must have been staged, and the server may not contact the hub."""

    if paths is None:
        return None, {}
    cache = Path(str(paths.hf_cache)).expanduser()
    if offline(paths):
        entry = require_staged(model, cache)
        return Path(entry["path"]), {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache)}
    entry = staged_snapshot(model, cache)
    return (Path(entry["path"]) if entry else None), {"HF_HUB_CACHE": str(cache)}


def concurrency(model: DictConfig, engine: DictConfig) -> int:
    """Requests in flight: the model's setting, else as many as the server batches."""
    if model.concurrency is not None:
        return int(model.concurrency)
    if model.provider in (Provider.hf, Provider.gguf) and engine.launch != Launch.none:
        return int(engine.max_num_seqs)
    return 16


@contextlib.contextmanager
def model_endpoint(model: DictConfig, logs: Path, engine: DictConfig | None = None,
                   paths: DictConfig | None = None,
                   answers: Callable[[str], list[dict[str, str]]] | None = None
                   ) -> Iterator[str]:
    """Yield the base URL of a server for ``model``, launching one if the provider needs it.

    Args:
        model: the ``model`` config group (``provider`` picks what is launched).
        logs: the cell's ``logs/`` dir; a launched server writes ``server.log`` there.
        engine: the ``engine`` config group (none: only ``model.base_url`` can be used).
        paths: the ``paths`` config group (where staged snapshots are, offline or not).
        answers: for ``provider=oracle``, called with ``model.mode``, the mock server's answers
            file rows (``benchforge.benchmarks.oracle_answers``).

    Raises:
        BenchforgeError: no server to talk to, a server that exits or is not ready in
            ``startup_timeout_s``, or one that serves another model name.
    """
    if model.provider == Provider.endpoint or (
            model.provider in (Provider.hf, Provider.gguf)
            and (engine is None or engine.launch == Launch.none)):
        if not model.base_url:
            engines = ("llamacpp" if model.provider == Provider.gguf
                       else "vllm_native|vllm_apptainer")
            raise BenchforgeError(f"model={model.name}: no server to talk to; set "
                                  f"model.base_url, or engine={engines}")
        yield str(model.base_url)
        return
    if (model.provider in (Provider.gguf, Provider.hf) and engine is not None
            and engine.launch == Launch.llamacpp):
        # a GPU build offloading layers: what the GPU spent goes to cost.gpu (benchforge.gpumon)
        with (_gpu_monitor(logs, int(engine.gpu_layers) != 0),
              _llamacpp_server(model, engine, logs) as url):
            yield url
        return
    if model.provider == Provider.gguf:
        raise BenchforgeError(f"model={model.name} is a GGUF model: use engine=llamacpp "
                              f"(engine={engine.name if engine is not None else None} serves "
                              "Hugging Face snapshots)")
    if model.provider == Provider.hf:
        assert engine is not None
        snapshot, env = resolve_snapshot(model, paths)
        port = free_port()
        cmd = vllm_command(engine, model, port, snapshot)
        with (exit_on_signals(), _gpu_monitor(logs, True),
              launch_server(cmd, port, logs / "server.log", float(engine.startup_timeout_s),
                            env) as url):
            require_served(url, model, logs / "server.log")
            yield url
        return
    if model.provider != Provider.oracle:
        raise BenchforgeError(
            f"model.provider={model.provider}: expected oracle, endpoint, hf or gguf")
    with tempfile.TemporaryDirectory(prefix="benchforge-oracle-") as tmp:
        answers_file = Path(tmp) / "answers.jsonl"
        if answers is None:
            raise BenchforgeError(f"model={model.name}: the oracle needs the benchmark's answers")
        write_answers(answers_file, answers(str(model.mode)))
        port = free_port()
        cmd = [sys.executable, "-m", "benchforge.mock_server", "--port", str(port),
               "--answers", str(answers_file), "--served-model-name", str(model.served_name),
               "--delay-s", str(float(model.oracle_latency_s))]
        with launch_server(cmd, port, logs / "server.log", model.startup_timeout_s) as url:
            yield url


@contextlib.contextmanager
def _gpu_monitor(logs: Path, on_gpu: bool) -> Iterator[None]:
    """Trace the visible GPUs into ``logs/gpu.jsonl`` while a launched engine serves (a no-op
    for CPU engines and hosts without a GPU: cost.gpu then stays null)."""
    if not on_gpu:
        yield
        return
    with GpuMonitor(logs / TRACE_NAME):
        yield


def require_served(url: str, model: DictConfig, log_path: Path) -> None:
    """Raise BenchforgeError unless the server at ``url`` lists ``model.served_name``."""
    names = served_models(url)
    if str(model.served_name) not in names:
        raise BenchforgeError(
            f"server at {url} serves {names or 'no models'}, not "
            f"model.served_name={model.served_name}; see {log_path}")


@contextlib.contextmanager
def _llamacpp_server(model: DictConfig, engine: DictConfig, logs: Path) -> Iterator[str]:
    """Launch llama-cpp-python's server for ``model.gguf``; yield its /v1 URL."""

    if model.provider not in (Provider.gguf, Provider.hf) or not model.get("gguf"):
        raise BenchforgeError(f"engine=llamacpp serves GGUF files: model={model.name} sets no "
                              "model.gguf (a path, or pkg:<distribution>/<file>)")
    info = model_gguf(model)
    assert info is not None
    port = free_port()
    cmd = llamacpp_command(engine, model, port, Path(info.path), info.chat_template is not None)
    log_path = logs / "server.log"
    with (exit_on_signals(),
          launch_server(cmd, port, log_path, float(engine.startup_timeout_s),
                        ready_path="/v1/models") as url):
        require_served(url, model, log_path)
        yield url
