"""Stop strings: applied client-side, whatever the server did with them.

The OpenAI API accepts at most 4 stop strings per request (vLLM accepts more, some hosted
APIs reject a fifth), so only the first :data:`MAX_SENT` are sent; every stop string is then
cut client-side, which is idempotent when the server already stopped there.
"""

from __future__ import annotations

from collections.abc import Sequence

MAX_SENT = 4  # OpenAI API: "Up to 4 sequences where the API will stop generating"


def sent_stops(stops: Sequence[str]) -> list[str]:
    """The stop strings put in a request: the first :data:`MAX_SENT`, duplicates dropped."""
    unique = list(dict.fromkeys(s for s in stops if s))
    return unique[:MAX_SENT]


def stop_at_stop_token(text: str, stops: Sequence[str]) -> str:
    """The prefix of ``text`` before the earliest occurrence of any stop string.

    The rule of bigcode-evaluation-harness ``Task._stop_at_stop_token`` (``bigcode_eval/base.py``
    @ 01762fc7) and of vLLM's ``stop`` (the stop string itself is not returned).

    Args:
        text: the generated text, without the prompt (a prompt may contain stop strings).
        stops: stop strings; empty strings are ignored.
    """
    cut = len(text)
    for stop in stops:
        if not stop:
            continue
        index = text.find(stop)
        if index != -1 and index < cut:
            cut = index
    return text[:cut]
