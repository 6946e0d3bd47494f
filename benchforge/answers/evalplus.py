"""EvalPlus protocols (evalplus 0.3.1): ``sanitize`` for generated answers, and rescoring rows.

- Chat answers: ``evalplus.sanitize.sanitize(answer, entrypoint)``, exactly as
  ``evalplus/codegen.py`` writes its ``-sanitized`` samples; the same output comes from
  :mod:`benchforge.answers.sanitize`, whose cost grows with the answer instead of its cube
  (tests/test_sanitize.py compares it with the installed official function). Reasoning is
  split off first (see :mod:`benchforge.answers.thinking`).
- Completion (base) models: ``sanitize(prompt + completion, entrypoint)`` (``codegen.py``:
  ``solution = prompt + impl if model.is_direct_completion()``), the completion cut at
  EvalPlus's stop strings for the dataset (``provider/vllm.py``: ``EOS`` +
  ``extra_eos_for_direct_completion(dataset)``, read from the installed evalplus).
- Rescoring an existing samples file (``evalplus/evaluate.py``): a ``solution`` is run as
  is; a ``completion`` becomes ``prompt + completion``, unsanitized.
"""

from __future__ import annotations

from typing import Any

from benchforge.answers.stops import stop_at_stop_token
from benchforge.answers.thinking import split_thinking


def sanitize(code: str, entry_point: str | None) -> str:
    """evalplus 0.3.1's ``sanitize`` output (:func:`benchforge.answers.sanitize.sanitize`;
    imported lazily: tree-sitter takes a second to load)."""
    from benchforge.answers.sanitize import sanitize as same_as_evalplus

    return same_as_evalplus(code, entry_point)


def chat_solution(answer: str, entry_point: str) -> str:
    """The program EvalPlus grades for a chat answer (its reasoning removed first)."""
    return sanitize(split_thinking(answer)[0], entry_point)


def completion_stops(dataset: str) -> list[str]:
    """EvalPlus's stop strings for a base model on ``dataset`` (``humaneval`` | ``mbpp``)."""
    from evalplus.provider.utility import EOS, extra_eos_for_direct_completion

    # the dataset's own first, special tokens last: the first 4 are the ones sent
    stops = [*extra_eos_for_direct_completion(dataset), *EOS]
    return sorted(stops, key=lambda s: s.startswith("<"))


def completion_solution(prompt: str, completion: str, entry_point: str,
                        dataset: str) -> str:
    """The program EvalPlus grades for a base model's completion of ``prompt``: the
    completion cut at :func:`completion_stops` (as vLLM's ``stop`` cuts it), then
    ``sanitize(prompt + completion)``."""
    return sanitize(prompt + stop_at_stop_token(completion, completion_stops(dataset)),
                    entry_point)


def rescoring_solution(prompt: str, row: dict[str, Any]) -> str | None:
    """``evalplus.evaluate``'s program for a samples row: ``solution`` as is, else
    ``prompt + completion``; None when the row has neither as a string."""
    if isinstance(row.get("solution"), str):
        return row["solution"]
    if isinstance(row.get("completion"), str):
        return prompt + row["completion"]
    return None
