"""Does the server render chat prompts exactly as benchforge does with the recorded template?

Checked through whichever tokenize route the server has:

* vLLM: ``POST /tokenize`` renders ``messages`` with the served template and tokenizes them,
  and tokenizes a plain ``prompt``: the two token lists are compared.
* llama.cpp ``llama-server``: ``POST /apply-template`` returns the rendered prompt,
  ``POST /tokenize`` (``content``) tokenizes text: tokens of both renderings are compared.
* llama-cpp-python: ``POST /extras/tokenize`` tokenizes text but cannot render messages, so
  the server's rendering is seen through ``usage.prompt_tokens`` of a one-token chat request
  and compared with the token count of benchforge's rendering (a count, not the tokens).

A server with none of these (TGI's other schema, hosted APIs) cannot be checked: that is
reported as such, never as a pass or a failure.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any

from benchforge.errors import BenchforgeError

FLAVOURS = ("vllm", "llama-server", "llama-cpp-python")
NOT_CHECKABLE = ("prompt identity not checkable on this server: it has no tokenize route "
                 "(vLLM /tokenize, llama-server /tokenize + /apply-template, llama-cpp-python "
                 "/extras/tokenize); the other checks still ran")


def _post(url: str, body: dict[str, Any], api_key: str = "EMPTY"
          ) -> tuple[int, dict[str, Any] | None]:
    """(HTTP status, JSON object or None); status 0 when the server cannot be reached."""
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={
        "Content-Type": "application/json", "Authorization": f"Bearer {api_key}"})
    try:
        with urllib.request.urlopen(request, timeout=120) as resp:
            data = json.load(resp)
            return resp.status, data if isinstance(data, dict) else None
    except urllib.error.HTTPError as exc:
        return exc.code, None
    except (urllib.error.URLError, OSError, ValueError):
        return 0, None


def _ok(url: str, body: dict[str, Any], key: str, api_key: str) -> dict[str, Any] | None:
    status, data = _post(url, body, api_key)
    return data if status == 200 and data is not None and key in data else None


def detect_flavour(root: str, served_name: str, api_key: str = "EMPTY") -> str | None:
    """Which tokenize API the server at ``root`` (no ``/v1``) speaks, or None."""
    probe = [{"role": "user", "content": "x"}]
    if _ok(f"{root}/apply-template", {"messages": probe}, "prompt", api_key):
        return "llama-server"
    if _ok(f"{root}/extras/tokenize", {"model": served_name, "input": "x"}, "tokens", api_key):
        return "llama-cpp-python"
    found = _ok(f"{root}/tokenize", {"model": served_name, "prompt": "x"}, "tokens", api_key)
    if found and found["tokens"]:
        return "vllm"
    return None


def _need(url: str, body: dict[str, Any], key: str, api_key: str) -> Any:
    status, data = _post(url, body, api_key)
    if status != 200 or data is None or key not in data:
        raise BenchforgeError(f"POST {url}: HTTP {status or 'unreachable'} without {key!r}, "
                              "though the server answered the tokenize probe")
    return data[key]


def served_vs_local(flavour: str, root: str, served_name: str, api_key: str,
                    messages: list[dict[str, str]], local_text: str,
                    template_kwargs: dict[str, Any]) -> tuple[Any, Any]:
    """(server's rendering, benchforge's rendering) of ``messages`` in comparable form: token
    lists (vLLM, llama-server) or token counts (llama-cpp-python)."""
    if flavour == "vllm":
        served = _need(f"{root}/tokenize", {
            "model": served_name, "messages": messages, "add_generation_prompt": True,
            **({"chat_template_kwargs": template_kwargs} if template_kwargs else {})},
            "tokens", api_key)
        local = _need(f"{root}/tokenize", {"model": served_name, "add_special_tokens": False,
                                           "prompt": local_text}, "tokens", api_key)
        return served, local
    if flavour == "llama-server":
        rendered = _need(f"{root}/apply-template", {
            "messages": messages,
            **({"chat_template_kwargs": template_kwargs} if template_kwargs else {})},
            "prompt", api_key)

        def tokens(text: str) -> Any:
            return _need(f"{root}/tokenize", {"content": text, "add_special": False,
                                              "parse_special": True}, "tokens", api_key)

        return tokens(rendered), tokens(local_text)
    if flavour == "llama-cpp-python":
        reply = _need(f"{root}/v1/chat/completions", {
            "model": served_name, "messages": messages, "max_tokens": 1,
            "temperature": 0.0}, "usage", api_key)
        # /extras/tokenize adds the model's automatic BOS; the chat handler does not (the
        # template writes its own special tokens): count the automatic ones and subtract them.
        auto = len(_need(f"{root}/extras/tokenize", {"model": served_name, "input": ""},
                         "tokens", api_key))
        local = len(_need(f"{root}/extras/tokenize", {"model": served_name,
                                                      "input": local_text}, "tokens", api_key))
        return (reply or {}).get("prompt_tokens"), local - auto
    raise BenchforgeError(f"unknown tokenize flavour {flavour!r}")


def check_prompts(flavour: str, root: str, served_name: str, api_key: str,
                  cases: Sequence[tuple[str, list[dict[str, str]], str]],
                  template_kwargs: dict[str, Any]) -> list[str]:
    """Task ids (of ``(task_id, messages, benchforge's rendering)``) the server renders
    differently."""
    differing = []
    for task_id, messages, local_text in cases:
        served, local = served_vs_local(flavour, root, served_name, api_key, messages,
                                        local_text, template_kwargs)
        if served != local:
            differing.append(task_id)
    return differing


def method(flavour: str) -> str:
    """How identity was established, for the smoke table."""
    return {"vllm": "tokens via vLLM /tokenize",
            "llama-server": "tokens via llama-server /apply-template + /tokenize",
            "llama-cpp-python": "token counts via llama-cpp-python /extras/tokenize and "
                                "usage.prompt_tokens (it cannot return its rendered prompt)",
            }[flavour]
