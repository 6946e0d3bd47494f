"""Reasoning text is never graded: split a model answer into (answer, reasoning).

Rule (the one vLLM's reasoning parsers apply to ``content``): everything up to the last
``</think>`` is reasoning, whether or not the template already opened ``<think>`` in the
prompt (Qwen3, DeepSeek-R1); a ``<think>`` that is never closed (a reply cut while thinking)
makes the rest of the text reasoning. A server's separate ``reasoning_content`` never reaches
the answer at all.
"""

from __future__ import annotations

OPEN = "<think>"
CLOSE = "</think>"


def split_thinking(text: str) -> tuple[str, str]:
    """``(answer, reasoning)`` of a reply.

    Args:
        text: the reply's ``content`` as the server returned it.

    Returns:
        The text that is graded, and the reasoning text removed from it ("" when none).
    """
    reasoning = ""
    end = text.rfind(CLOSE)
    if end != -1:
        reasoning, text = text[:end + len(CLOSE)], text[end + len(CLOSE):]
    start = text.find(OPEN)
    if start != -1:  # opened and never closed: cut while thinking
        reasoning, text = reasoning + text[start:], text[:start]
    return text, reasoning
