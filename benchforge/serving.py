"""Serving settings local evaluators rely on: server-side sampling, the thinking budget, a
per-request timeout scaled from the endpoint's measured decode speed, and per-cell latency and
decode-speed figures.

``model.sampling=server`` sends no sampling parameter, so the server's configured defaults
apply (what the quality-test workflows of consumer-GPU serving communities do); the defaults
are recorded where the server reports them (llama.cpp ``llama-server``'s ``/props``), and the
run is non-canonical: tagged in metrics, status, report and leaderboard, and refused as a
regression baseline.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from typing import Any

from benchforge.config import Thinking, thinking_choice
from benchforge.errors import BenchforgeError

SAMPLING_MODES = ("request", "server")
PROBE_MAX_TOKENS = 32
# timeout = FLOOR + MARGIN x in-flight requests x max_tokens / measured tokens/s, at least MIN
# (a shared machine's decode speed varies several-fold from minute to minute: wide margins)
TIMEOUT_FLOOR_S = 30.0
TIMEOUT_MARGIN = 4.0
TIMEOUT_MIN_S = 120.0
DEFAULT_TIMEOUT_S = 600.0  # when the probe cannot measure a speed


def sampling_mode(model: Any) -> str:
    """``model.sampling`` checked: ``request`` (canonical) or ``server``.

    Raises:
        BenchforgeError: any other value.
    """
    mode = str(model.get("sampling") or "request")
    if mode not in SAMPLING_MODES:
        raise BenchforgeError(f"model.sampling={mode}: expected request or server")
    return mode


def total_max_tokens(model: Any, answer_tokens: int | None = None) -> int:
    """``max_tokens`` sent per request: the answer's budget (``answer_tokens``, the benchmark's
    official value where it fixes one, else ``model.max_tokens``), plus
    ``model.thinking_max_tokens`` when thinking is on (the reasoning comes before the answer
    within the same budget).

    Raises:
        BenchforgeError: a negative thinking budget; a bad ``model.thinking``.
    """
    budget = model.get("thinking_max_tokens")
    base = int(model.max_tokens) if answer_tokens is None else int(answer_tokens)
    if budget is None or thinking_choice(model) is not Thinking.on:
        return base
    if int(budget) < 0:
        raise BenchforgeError(f"model.thinking_max_tokens={budget}: expected >= 0 or null")
    return base + int(budget)


def _root(base_url: str) -> str:
    return base_url.rstrip("/").removesuffix("/v1")


def server_props(base_url: str) -> dict[str, Any] | None:
    """The server's own generation defaults, where it reports them: llama.cpp's
    ``GET /props`` (``default_generation_settings``). None when the server has no such route
    (vLLM, llama-cpp-python, hosted APIs)."""
    try:
        with urllib.request.urlopen(f"{_root(base_url)}/props", timeout=10) as resp:
            props = json.load(resp)
    except (urllib.error.URLError, OSError, ValueError):
        return None
    if not isinstance(props, dict):
        return None
    settings = props.get("default_generation_settings")
    if isinstance(settings, dict) and isinstance(settings.get("params"), dict):
        settings = settings["params"]  # newer llama-server nests the sampling params
    return {"source": "/props", "default_generation_settings": settings,
            **({"model_path": props["model_path"]} if "model_path" in props else {})}


def probe_decode_speed(base_url: str, served_name: str, api_key: str,
                       prompt: Any, sampling: str) -> dict[str, Any]:
    """One short greedy request (``PROBE_MAX_TOKENS``) with a real prompt of the cell, timed.

    Args:
        prompt: a :class:`benchforge.prompts.Prompt` (chat messages or completion text).
        sampling: ``request`` or ``server`` (then no sampling parameter is sent).
    Returns:
        ``{"completion_tokens", "seconds", "tokens_per_s"}``; ``tokens_per_s`` is None and
        ``error`` says why when the speed could not be measured (the caller falls back).
    """
    body: dict[str, Any] = {"model": served_name, "max_tokens": PROBE_MAX_TOKENS}
    if sampling == "request":
        body |= {"temperature": 0.0, "top_p": 1.0, "seed": 0}
    if prompt.text is not None:
        path, body["prompt"] = "/completions", prompt.text
    else:
        path, body["messages"] = "/chat/completions", prompt.as_messages()
    request = urllib.request.Request(
        f"{base_url.rstrip('/')}{path}", data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {api_key}"})
    started = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=DEFAULT_TIMEOUT_S) as resp:
            reply = json.load(resp)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return {"completion_tokens": None, "seconds": round(time.monotonic() - started, 3),
                "tokens_per_s": None, "error": f"{type(exc).__name__}: {exc}"[:200]}
    seconds = time.monotonic() - started
    usage = reply.get("usage") if isinstance(reply, dict) else None
    tokens = (usage or {}).get("completion_tokens")
    timings = reply.get("timings") if isinstance(reply, dict) else None
    if isinstance(timings, dict) and timings.get("predicted_per_second"):
        speed = float(timings["predicted_per_second"])  # llama-server measures it itself
    elif isinstance(tokens, int) and tokens > 0 and seconds > 0:
        speed = tokens / seconds  # includes the prompt's prefill: a conservative speed
    else:
        return {"completion_tokens": tokens, "seconds": round(seconds, 3),
                "tokens_per_s": None, "error": "reply has no usage.completion_tokens"}
    return {"completion_tokens": tokens, "seconds": round(seconds, 3),
            "tokens_per_s": round(speed, 2)}


def scaled_timeout(max_tokens: int, tokens_per_s: float | None, in_flight: int) -> float:
    """Per-request timeout from a decode speed: ``FLOOR + MARGIN x in_flight x max_tokens /
    tokens_per_s`` (a server that decodes one request at a time makes the last of
    ``in_flight`` wait for the others), at least ``TIMEOUT_MIN_S``; ``DEFAULT_TIMEOUT_S``
    without a speed."""
    if not tokens_per_s or tokens_per_s <= 0:
        return DEFAULT_TIMEOUT_S
    seconds = TIMEOUT_FLOOR_S + TIMEOUT_MARGIN * max(in_flight, 1) * max_tokens / tokens_per_s
    return round(max(TIMEOUT_MIN_S, seconds), 1)


def request_timeout(model: Any, probe: dict[str, Any] | None, in_flight: int,
                    answer_tokens: int | None = None) -> tuple[float, dict[str, Any]]:
    """The per-request timeout and its record for provenance: ``model.request_timeout_s`` when
    set, else scaled from the probe (:func:`scaled_timeout`)."""
    if model.get("request_timeout_s") is not None:
        value = float(model.request_timeout_s)
        if value <= 0:
            raise BenchforgeError(f"model.request_timeout_s={value}: expected > 0 or null")
        return value, {"request_timeout_s": value, "source": "model.request_timeout_s"}
    speed = (probe or {}).get("tokens_per_s")
    max_tokens = total_max_tokens(model, answer_tokens)
    value = scaled_timeout(max_tokens, speed, in_flight)
    return value, {"request_timeout_s": value,
                   "source": "probe" if speed else "default (probe measured no speed)",
                   "probe": probe, "max_tokens": max_tokens,
                   "in_flight": in_flight}


def _percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default), ``q`` in [0, 100]."""
    import numpy as np

    return float(np.percentile(np.asarray(values, dtype=float), q))


def latency_stats(samples: Iterable[dict[str, Any]]) -> dict[str, Any] | None:
    """Per-cell latency p50/p95 (seconds per request, as measured by the client from send to
    answer: no time queued in benchforge) and decode tokens/s: completion tokens over the time
    the server spent, its own ``decode_s`` where it reports one (llama-server), else the
    request's latency. None for a cell without timed rows (imported samples)."""
    timed = [r for r in samples if isinstance(r.get("latency_s"), (int, float))]
    if not timed:
        return None
    latencies = [float(r["latency_s"]) for r in timed]
    tokens = sum(int(r.get("completion_tokens") or 0) for r in timed)
    server_s = sum(float(r["decode_s"]) if isinstance(r.get("decode_s"), (int, float))
                   else float(r["latency_s"]) for r in timed)
    return {"requests": len(timed),
            "latency_p50_s": round(_percentile(latencies, 50), 4),
            "latency_p95_s": round(_percentile(latencies, 95), 4),
            "decode_tokens_per_s": round(tokens / server_s, 2) if server_s > 0 else None,
            "decode_time_source": ("server timings" if all(
                isinstance(r.get("decode_s"), (int, float)) for r in timed)
                else "request latency")}


def non_canonical_reasons(model: dict[str, Any]) -> list[str]:
    """Why a cell's numbers are not canonical (empty: canonical), from its provenance model."""
    return ["sampling=server"] if model.get("sampling") == "server" else []


def serving_settings(model: Any, base_url: str, api_key: str, prompt: Any,
                     in_flight: int, answer_tokens: int | None = None) -> dict[str, Any]:
    """What generation sends and waits for, measured against the live server, as recorded in
    ``provenance.json`` under ``serving``: sampling mode (and the server's reported defaults
    when it applies its own), ``max_tokens`` with the thinking budget, the per-request
    timeout (probed unless ``model.request_timeout_s`` is set). ``answer_tokens``: the answer's
    ``max_tokens`` (see :func:`total_max_tokens`)."""
    sampling = sampling_mode(model)
    probe = None
    if model.get("request_timeout_s") is None:
        probe = probe_decode_speed(base_url, str(model.served_name), api_key, prompt, sampling)
    timeout, timeout_record = request_timeout(model, probe, in_flight, answer_tokens)
    record: dict[str, Any] = {"sampling": sampling,
                              "max_tokens": total_max_tokens(model, answer_tokens),
                              "thinking_max_tokens": model.get("thinking_max_tokens"),
                              "timeout": timeout_record, "request_timeout_s": timeout}
    if sampling == "server":
        record["server_sampling"] = server_props(base_url) or {
            "source": None, "note": "the server does not report its sampling defaults"}
    return record


def serving_metrics(provenance: dict[str, Any], samples: list[dict[str, Any]]
                    ) -> dict[str, Any]:
    """``metrics.json``'s serving figures (:func:`latency_stats`) and whether the cell's
    numbers are canonical."""
    reasons = non_canonical_reasons(provenance.get("model", {}))
    return {"serving": latency_stats(samples), "canonical": not reasons,
            **({"non_canonical": reasons} if reasons else {})}


def serving_line(serving: dict[str, Any]) -> str:
    """One line for aggregate's output."""
    return (f"latency p50 {serving['latency_p50_s']:.2f} s, p95 {serving['latency_p95_s']:.2f} s"
            f" over {serving['requests']} requests; decode "
            f"{serving['decode_tokens_per_s']} tokens/s ({serving['decode_time_source']})")


def serving_cell(serving: dict[str, Any] | None) -> str:
    """``p50/p95, tokens/s`` for a status table cell ('-' without timed rows)."""
    if not serving:
        return "-"
    return (f"{serving['latency_p50_s']:.2f}/{serving['latency_p95_s']:.2f}, "
            f"{serving['decode_tokens_per_s']}")
