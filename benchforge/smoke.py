"""``benchforge smoke``: is the engine serving what provenance will claim, before any shard?

Starts the engine (or uses the endpoint), then checks: the served model name; that the server
renders chat prompts exactly as benchforge renders them with the recorded template (through
whichever tokenize route the server has, see :mod:`benchforge.prompt_identity`; a server with
none is reported as not checkable while the other checks run); that greedy decoding twice
gives the same text; and reports tokens/s. Any failed check is an error;
``logs/smoke-<model>.json`` keeps the result.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from benchforge.benchmarks import load_benchmark, oracle_answers
from benchforge.cell import run_root
from benchforge.chat_template import render, special_tokens
from benchforge.client import (
    ClientSettings,
    Completion,
    Request,
    api_key,
    generate,
    thinking_kwargs,
)
from benchforge.config import Mode, Provider, slug
from benchforge.console import print_table
from benchforge.engine import concurrency, model_endpoint, served_models
from benchforge.errors import BenchforgeError
from benchforge.gguf_model import model_gguf
from benchforge.hub import hf_cache, snapshot_chat_template, staged_snapshot, template_sha256
from benchforge.prompt_identity import NOT_CHECKABLE, check_prompts, detect_flavour, method
from benchforge.readiness import run_gate
from benchforge.rundir import write_json_atomic
from benchforge.serving import DEFAULT_TIMEOUT_S, request_timeout


def template_source(cfg: DictConfig) -> tuple[str, str, dict[str, Any]] | None:
    """The one chat template of the model (override file, else the staged snapshot's), where
    it came from, and the special tokens it may use."""

    entry = staged_snapshot(cfg.model, hf_cache(cfg)) if cfg.model.provider == Provider.hf else None
    tokenizer_config = Path(entry["path"]) / "tokenizer_config.json" if entry else None
    if cfg.model.get("gguf") and not cfg.model.chat_template:
        info = model_gguf(cfg.model)
        if info is not None and info.chat_template is not None:
            return info.chat_template, f"{info.path}#tokenizer.chat_template", \
                info.special_tokens()
    if cfg.model.chat_template:
        path = Path(str(cfg.model.chat_template)).expanduser()
        return path.read_text(encoding="utf-8"), str(path), special_tokens(tokenizer_config)
    if entry:
        found = snapshot_chat_template(Path(entry["path"]))
        if found:
            return found[0], found[1], special_tokens(tokenizer_config)
    return None


def run_smoke(cfg: DictConfig) -> dict[str, Any]:
    """``benchforge smoke``: start the engine for the model, check the served name, prompt identity
    (the server renders the chat template as benchforge does) and greedy determinism, and measure
    tokens/s; a tier-2 benchmark's readiness gate first.

    Returns:
        The smoke record (also written under the run's logs), ``ok`` true when every check
        passed.

    Raises:
        BenchforgeError: the server cannot be started or reached, or a check failed.
    """
    mode = Mode(cfg.model.mode)
    kwargs = thinking_kwargs(cfg.model) or {}
    benchmark = load_benchmark(cfg)
    if benchmark.tier >= 2:  # the scoring toolchain first: the readiness gate
        readiness = run_gate(cfg, benchmark)
        if cfg.model.provider == Provider.oracle:  # nothing to serve: the gate is the whole smoke
            return {"benchmark": str(cfg.benchmark.name), "readiness": readiness, "ok": True}
    tasks = benchmark.load().tasks[: max(int(cfg.smoke.prompts), 1)]
    prompts = [benchmark.prompt(task, mode) for task in tasks]
    logs = run_root(cfg) / "logs" / f"smoke-{slug(str(cfg.model.name))}"
    checks: list[dict[str, Any]] = []

    def check(name: str, ok: bool | None, detail: str) -> None:
        """ok None: the check cannot be made on this server (neither pass nor failure)."""
        checks.append({"check": name, "ok": None if ok is None else bool(ok),
                       "detail": detail})

    template = template_source(cfg) if mode == Mode.chat else None
    with model_endpoint(cfg.model, logs, cfg.engine, cfg.paths,
                        answers=lambda mode: oracle_answers(benchmark, tasks, mode)) as url:
        names = served_models(url)
        check("served model name", str(cfg.model.served_name) in names,
              f"server lists {names}, config says {cfg.model.served_name}")
        root = url.removesuffix("/").removesuffix("/v1")
        flavour = detect_flavour(root, str(cfg.model.served_name), api_key(cfg.model)) \
            if mode == Mode.chat else None
        if mode == Mode.chat and flavour is None:
            check("prompt identity", None, NOT_CHECKABLE)
        elif mode == Mode.chat and template is None:
            check("prompt identity", False, "no chat template known to benchforge: stage the "
                  "model or set model.chat_template, so the server's rendering can be checked")
        elif template is not None and flavour is not None:
            text, source, special = template
            cases = [(task.task_id, prompt.as_messages(),
                      render(text, prompt.as_messages(), special, **kwargs))
                     for task, prompt in zip(tasks, prompts, strict=True)]
            mismatches = check_prompts(flavour, root, str(cfg.model.served_name),
                                       api_key(cfg.model), cases, kwargs)
            check("prompt identity", not mismatches,
                  f"template {source} (sha256 {template_sha256(text)[:16]}…), {method(flavour)}"
                  + (f": server renders differently for {mismatches}" if mismatches
                     else f": {len(tasks)} prompts rendered identically"))
        settings = ClientSettings(
            base_url=url, served_name=str(cfg.model.served_name), api_key=api_key(cfg.model),
            mode=mode, temperature=0.0, top_p=1.0, max_tokens=int(cfg.model.max_tokens),
            seed=int(cfg.model.seed), stop=[*cfg.model.stop, *benchmark.stop_sequences(mode)],
            concurrency=concurrency(cfg.model, cfg.engine),
            timeout_s=request_timeout(cfg.model, None, 1)[0]
            if cfg.model.request_timeout_s is not None else DEFAULT_TIMEOUT_S,
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
              "checks": checks, "ok": all(c["ok"] is not False for c in checks)}
    write_json_atomic(logs.with_suffix(".json"), result)
    print_table(f"smoke: {cfg.model.name}", ["check", "ok", "detail"],
                [[c["check"], "–" if c["ok"] is None else "✓" if c["ok"] else "✗",
                  c["detail"]] for c in checks])
    print(f"tokens/s: {result['tokens_per_s']}")
    if not result["ok"]:
        failed = "; ".join(f"{c['check']}: {c['detail']}" for c in checks
                           if c["ok"] is False)
        raise BenchforgeError(f"smoke failed for model={cfg.model.name}: {failed}")
    return result
