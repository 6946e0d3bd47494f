"""Rendering a chat template the way Hugging Face tokenizers (and vLLM) do.

``smoke`` renders the same messages here and on the server and compares the two: a server
using another template than the one recorded in provenance changes every prompt silently.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from benchforge.errors import BenchforgeError


def _raise(message: str) -> None:
    raise BenchforgeError(f"chat template raised: {message}")


def render(template: str, messages: list[dict[str, str]], special_tokens: dict[str, Any],
           add_generation_prompt: bool = True, **kwargs: Any) -> str:
    """``tokenizer.apply_chat_template(messages, tokenize=False)``: a sandboxed Jinja2
    environment with ``trim_blocks``/``lstrip_blocks``, ``raise_exception`` and ``tojson``."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = _raise
    env.filters["tojson"] = lambda value, indent=None: json.dumps(value, indent=indent,
                                                                  ensure_ascii=False)
    return env.from_string(template).render(messages=messages,
                                            add_generation_prompt=add_generation_prompt,
                                            **special_tokens, **kwargs)


def special_tokens(tokenizer_config: Path | None) -> dict[str, Any]:
    """bos/eos/pad/unk tokens a template may use, as strings (from tokenizer_config.json)."""
    if tokenizer_config is None or not tokenizer_config.is_file():
        return {}
    config = json.loads(tokenizer_config.read_text(encoding="utf-8"))
    tokens = {}
    for name in ("bos_token", "eos_token", "pad_token", "unk_token"):
        value = config.get(name)
        if isinstance(value, dict):  # AddedToken serialised as {"content": ...}
            value = value.get("content")
        if isinstance(value, str):
            tokens[name] = value
    return tokens
