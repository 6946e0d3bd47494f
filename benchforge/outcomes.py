"""Generation outcomes: why a sample's code may have failed for reasons outside the code.

A reply cut by ``max_tokens`` (``finish_reason == "length"``) is ``truncated``; a reply whose
graded answer is empty (``content`` null or blank, or nothing but reasoning) is ``empty``.
A failed sample with such an outcome gets it as its ``failure_mode`` (the sandbox's own
verdict stays in ``exec_failure_mode``); ``metrics.json`` counts both over all samples under
``generation_outcomes``, and ``generate`` warns once when any occurred.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from benchforge.answers.thinking import split_thinking

TRUNCATED = "truncated"
EMPTY = "empty"
OUTCOMES = (TRUNCATED, EMPTY)


def generation_outcome(sample: dict[str, Any]) -> str | None:
    """``truncated``, ``empty`` or None for a samples row (``finish_reason``, ``completion``)."""
    if sample.get("finish_reason") == "length":
        return TRUNCATED
    text = sample.get("completion")
    if not isinstance(text, str) or not split_thinking(text)[0].strip():
        return EMPTY
    return None


def count_outcomes(samples: Iterable[dict[str, Any]]) -> dict[str, int]:
    """``{"truncated": n, "empty": n, "samples": total}`` over samples rows."""
    counts = {TRUNCATED: 0, EMPTY: 0, "samples": 0}
    for sample in samples:
        counts["samples"] += 1
        outcome = generation_outcome(sample)
        if outcome:
            counts[outcome] += 1
    return counts


def warning_lines(counts: dict[str, int], max_tokens_key: str) -> list[str]:
    """The lines ``generate`` prints (none when every reply ended normally)."""
    total = counts["samples"]
    lines = []
    if counts[TRUNCATED]:
        lines.append(f"{counts[TRUNCATED]} of {total} completions hit max_tokens "
                     f"(finish_reason=length); raise {max_tokens_key}")
    if counts[EMPTY]:
        lines.append(f"{counts[EMPTY]} of {total} completions are empty (content null or "
                     "blank, or reasoning only); check the server's reasoning parser and "
                     f"{max_tokens_key}")
    return lines


def relabel(row: dict[str, Any], sample: dict[str, Any]) -> dict[str, Any]:
    """A results row with ``failure_mode`` set to the sample's generation outcome where the
    sample failed and the reply was truncated or empty (the sandbox's mode is kept as
    ``exec_failure_mode``)."""
    outcome = None if row.get("passed") else generation_outcome(sample)
    if outcome is None:
        return row
    return {**row, "failure_mode": outcome, "exec_failure_mode": row.get("failure_mode")}
