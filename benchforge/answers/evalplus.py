"""EvalPlus protocols (evalplus 0.3.1): ``sanitize`` for generated answers, and rescoring rows.

- Chat answers: ``evalplus.sanitize.sanitize(answer, entrypoint)``, exactly as
  ``evalplus/codegen.py`` writes its ``-sanitized`` samples (the installed library function
  is called, not re-implemented). Reasoning is split off first (see
  :mod:`benchforge.answers.thinking`).
- Completion (base) models: ``sanitize(prompt + completion, entrypoint)`` (``codegen.py``:
  ``solution = prompt + impl if model.is_direct_completion()``).
- Rescoring an existing samples file (``evalplus/evaluate.py``): a ``solution`` is run as
  is; a ``completion`` becomes ``prompt + completion``, unsanitized.
"""

from __future__ import annotations

from typing import Any

from benchforge.answers.thinking import split_thinking


def sanitize(code: str, entry_point: str | None) -> str:
    """evalplus 0.3.1's ``sanitize`` (imported lazily: tree-sitter takes a second to load)."""
    from evalplus.sanitize import sanitize as official

    return official(code, entry_point)


def chat_solution(answer: str, entry_point: str) -> str:
    """The program EvalPlus grades for a chat answer (its reasoning removed first)."""
    return sanitize(split_thinking(answer)[0], entry_point)


def completion_solution(prompt: str, completion: str, entry_point: str) -> str:
    """The program EvalPlus grades for a base model's completion of ``prompt``."""
    return sanitize(prompt + completion, entry_point)


def rescoring_solution(prompt: str, row: dict[str, Any]) -> str | None:
    """``evalplus.evaluate``'s program for a samples row: ``solution`` as is, else
    ``prompt + completion``; None when the row has neither as a string."""
    if isinstance(row.get("solution"), str):
        return row["solution"]
    if isinstance(row.get("completion"), str):
        return prompt + row["completion"]
    return None
