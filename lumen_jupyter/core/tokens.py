"""Token estimates used where an exact count is not available.

The gateway needs a token count before the upstream answers (to reserve the
worst-case cost) and after a stream that ended without a ``usage`` chunk.  The
demo backend uses the same rule so that its reported usage is realistic and
predictable in tests.  The rule is the usual "about four characters per token"
with a floor of one token per word-like piece, which errs on the high side for
English text: a reservation should over-estimate, never under-estimate.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

_PIECE = re.compile(r"\w+|[^\w\s]", re.UNICODE)

#: Tokens an OpenAI-style chat format adds per message (role markers, separators).
MESSAGE_OVERHEAD_TOKENS = 4
#: Tokens added once per request for the assistant's reply primer.
REPLY_PRIMER_TOKENS = 3


def count_text_tokens(text: str) -> int:
    """Estimate the tokens of ``text``: the larger of pieces and characters / 4."""
    if not text:
        return 0
    pieces = len(_PIECE.findall(text))
    return max(pieces, (len(text) + 3) // 4)


def _content_text(content: Any) -> str:
    """Flatten an OpenAI message ``content`` (string or list of parts) to text."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts: list[str] = []
        for part in content:
            if isinstance(part, Mapping):
                text = part.get("text")
                if isinstance(text, str):
                    parts.append(text)
            elif isinstance(part, str):
                parts.append(part)
        return " ".join(parts)
    return ""


def count_message_tokens(messages: Iterable[Mapping[str, Any]]) -> int:
    """Estimate the prompt tokens of a list of chat messages."""
    total = REPLY_PRIMER_TOKENS
    for message in messages:
        total += MESSAGE_OVERHEAD_TOKENS
        total += count_text_tokens(_content_text(message.get("content")))
        name = message.get("name")
        if isinstance(name, str):
            total += count_text_tokens(name)
        tool_calls = message.get("tool_calls")
        if tool_calls:
            total += count_text_tokens(repr(tool_calls))
    return total


def count_prompt_tokens(prompt: Any) -> int:
    """Estimate the tokens of a completions/embeddings ``prompt``/``input`` value."""
    if isinstance(prompt, str):
        return count_text_tokens(prompt)
    if isinstance(prompt, list):
        total = 0
        for item in prompt:
            if isinstance(item, str):
                total += count_text_tokens(item)
            elif isinstance(item, int):
                total += 1
            elif isinstance(item, list):
                total += len(item)
        return total
    return 0


class TokenCounter:
    """Counts the tokens of text that arrives in pieces, in constant memory.

    ``tokens`` equals :func:`count_text_tokens` of the joined text whenever no
    word is split across pieces (as in word-by-word streams), and errs high
    otherwise - the right direction for billing an estimate.
    """

    __slots__ = ("chars", "pieces")

    def __init__(self) -> None:
        self.chars = 0
        self.pieces = 0

    def add(self, text: str) -> None:
        if text:
            self.chars += len(text)
            self.pieces += len(_PIECE.findall(text))

    @property
    def tokens(self) -> int:
        if self.chars == 0:
            return 0
        return max(self.pieces, (self.chars + 3) // 4)
