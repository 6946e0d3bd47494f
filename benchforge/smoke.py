"""``benchforge smoke``: is the engine serving what provenance will claim, before any shard?

Starts the engine (or uses the endpoint), then checks: the served model name; that the server
renders chat prompts exactly as benchforge renders them with the recorded template (compared
token by token through the server's ``/tokenize``); that greedy decoding twice gives the same
text; and reports tokens/s. Any failed check is an error; ``logs/smoke-<model>.json`` keeps
the result.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from benchforge.errors import BenchforgeError


def _post(url: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as resp:
            return dict(json.load(resp))
    except urllib.error.HTTPError as exc:
        raise BenchforgeError(f"POST {url}: HTTP {exc.code}: "
                              f"{exc.read().decode(errors='replace')[:200]}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise BenchforgeError(f"POST {url}: {exc}") from exc


def template_source(cfg: DictConfig) -> tuple[str, str, dict[str, Any]] | None:
    """The one chat template of the model (override file, else the staged snapshot's), where
    it came from, and the special tokens it may use."""
    from benchforge.chat_template import special_tokens
    from benchforge.hub import hf_cache, snapshot_chat_template, staged_snapshot

    entry = staged_snapshot(cfg.model, hf_cache(cfg)) if cfg.model.provider == "hf" else None
    tokenizer_config = Path(entry["path"]) / "tokenizer_config.json" if entry else None
    if cfg.model.chat_template:
        path = Path(str(cfg.model.chat_template)).expanduser()
        return path.read_text(encoding="utf-8"), str(path), special_tokens(tokenizer_config)
    if entry:
        found = snapshot_chat_template(Path(entry["path"]))
        if found:
            return found[0], found[1], special_tokens(tokenizer_config)
    return None


def run_smoke(cfg: DictConfig) -> dict[str, Any]:
    from benchforge.chat_template import render
    from benchforge.client import ClientSettings, Completion, Request, generate
    from benchforge.config import slug
    from benchforge.console import print_table
    from benchforge.engine import concurrency, model_endpoint, served_models
    from benchforge.hub import template_sha256
    from benchforge.rundir import write_json_atomic
    from benchforge.stages import _api_key, load_benchmark, run_root, thinking_kwargs

    mode = str(cfg.model.mode)
    kwargs = thinking_kwargs(cfg.model) or {}
    benchmark = load_benchmark(cfg)
    if benchmark.tier >= 2:  # the scoring toolchain first: the readiness gate
        from benchforge.readiness import run_gate

        readiness = run_gate(cfg, benchmark)
        if cfg.model.provider == "oracle":  # nothing to serve: the gate is the whole smoke
            return {"benchmark": str(cfg.benchmark.name), "readiness": readiness, "ok": True}
    tasks = benchmark.load().tasks[: max(int(cfg.smoke.prompts), 1)]
    prompts = [benchmark.prompt(task, mode) for task in tasks]
    logs = run_root(cfg) / "logs" / f"smoke-{slug(str(cfg.model.name))}"
    checks: list[dict[str, Any]] = []

    def check(name: str, ok: bool, detail: str) -> None:
        checks.append({"check": name, "ok": bool(ok), "detail": detail})

    template = template_source(cfg) if mode == "chat" else None
    with model_endpoint(cfg.model, benchmark, tasks, logs, cfg.engine, cfg.paths) as url:
        names = served_models(url)
        check("served model name", str(cfg.model.served_name) in names,
              f"server lists {names}, config says {cfg.model.served_name}")
        root = url.removesuffix("/").removesuffix("/v1")
        if mode == "chat" and template is None:
            check("prompt identity", False, "no chat template known to benchforge: stage the "
                  "model or set model.chat_template, so the server's rendering can be checked")
        elif template is not None:
            text, source, special = template
            mismatches = []
            for task, prompt in zip(tasks, prompts, strict=True):
                messages = prompt.as_messages()
                served = _post(f"{root}/tokenize", {
                    "model": str(cfg.model.served_name), "messages": messages,
                    "add_generation_prompt": True,
                    **({"chat_template_kwargs": kwargs} if kwargs else {})})["tokens"]
                local = _post(f"{root}/tokenize", {
                    "model": str(cfg.model.served_name), "add_special_tokens": False,
                    "prompt": render(text, messages, special, **kwargs)})["tokens"]
                if served != local:
                    mismatches.append(task.task_id)
            check("prompt identity", not mismatches,
                  f"template {source} (sha256 {template_sha256(text)[:16]}…): "
                  + (f"server renders differently for {mismatches}" if mismatches
                     else f"{len(tasks)} prompts rendered identically"))
        settings = ClientSettings(
            base_url=url, served_name=str(cfg.model.served_name), api_key=_api_key(cfg),
            mode=mode, temperature=0.0, top_p=1.0, max_tokens=int(cfg.model.max_tokens),
            seed=int(cfg.model.seed), stop=[*cfg.model.stop, *benchmark.stop_sequences(mode)],
            concurrency=concurrency(cfg.model, cfg.engine), timeout_s=cfg.model.request_timeout_s,
            max_retries=cfg.model.max_retries, chat_template_kwargs=kwargs or None)
        runs: list[dict[tuple[str, int], Completion]] = []
        started = time.monotonic()
        for _ in range(2):
            answers: dict[tuple[str, int], Completion] = {}
            generate([Request(t.task_id, 0, p) for t, p in zip(tasks, prompts, strict=True)],
                     settings, lambda r, c, a=answers: a.__setitem__((r.task_id, 0), c))
            runs.append(answers)
        wall = time.monotonic() - started
        differing = sorted(k[0] for k in runs[0] if runs[0][k].text != runs[1][k].text)
        check("greedy is deterministic", not differing,
              f"two greedy runs differ on {differing}" if differing
              else f"{len(tasks)} prompts gave identical text twice")
        tokens = sum(c.completion_tokens or 0 for run in runs for c in run.values())
    result = {"model": str(cfg.model.name), "served_name": str(cfg.model.served_name),
              "chat_template_sha256": template_sha256(template[0]) if template else None,
              "tokens_per_s": round(tokens / wall, 1) if wall > 0 else None,
              "checks": checks, "ok": all(c["ok"] for c in checks)}
    write_json_atomic(logs.with_suffix(".json"), result)
    print_table(f"smoke: {cfg.model.name}", ["check", "ok", "detail"],
                [[c["check"], "✓" if c["ok"] else "✗", c["detail"]] for c in checks])
    print(f"tokens/s: {result['tokens_per_s']}")
    if not result["ok"]:
        failed = "; ".join(f"{c['check']}: {c['detail']}" for c in checks if not c["ok"])
        raise BenchforgeError(f"smoke failed for model={cfg.model.name}: {failed}")
    return result
