"""What is sent to a model, and its hash: shared by the client and the built-in oracle server."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass


@dataclass(frozen=True)
class Prompt:
    """A chat prompt (``messages``) for instruct models or a raw ``text`` for completion mode."""

    messages: tuple[tuple[str, str], ...] = ()
    text: str | None = None

    def as_messages(self) -> list[dict[str, str]]:
        """The prompt as chat messages: an optional system message, then the user text."""
        return [{"role": role, "content": content} for role, content in self.messages]

    @property
    def sha256(self) -> str:
        """Hex sha256 identifying the prompt (of its messages in chat form, else its text)."""
        if self.text is not None:
            return text_sha256(self.text)
        return messages_sha256(self.as_messages())


def text_sha256(text: str) -> str:
    """Hex sha256 of a completion prompt's UTF-8 text."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def messages_sha256(messages: list[dict[str, str]]) -> str:
    """Hex sha256 of chat messages, as canonical JSON (what rows and the mock server key on)."""
    canonical = [{"role": m["role"], "content": m["content"]} for m in messages]
    blob = json.dumps(canonical, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return text_sha256(blob)
