"""Reading an upstream's server-sent events and keeping the books on the way.

The relay forwards every event as it arrives and remembers only what billing
needs: the ``usage`` the upstream reported and a running token count of the
output delivered so far, so a 100 MB stream costs no more memory than a short
one.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, TypeGuard

from ..core.tokens import TokenCounter

DONE = b"[DONE]"


MAX_LINE = 8 * 1024 * 1024
"""Longest line of an upstream's event stream accepted (one event's JSON)."""


class MalformedEvent(ValueError):
    """An upstream ``data:`` line that is not JSON."""


class LineTooLong(MalformedEvent):
    """An upstream event line longer than the limit: the stream is refused there."""


@dataclass
class StreamBook:
    """What a stream has delivered so far, for billing."""

    usage: dict[str, Any] | None = None
    output: TokenCounter = field(default_factory=TokenCounter)
    events: int = 0
    error: dict[str, Any] | None = None

    def note(self, event: dict[str, Any]) -> None:
        self.events += 1
        usage = event.get("usage")
        if isinstance(usage, dict) and "prompt_tokens" in usage:
            self.usage = usage
        error = event.get("error")
        if error is not None:
            self.error = error if isinstance(error, dict) else {"message": str(error)}
        for choice in event.get("choices") or ():
            if not isinstance(choice, dict):
                continue
            delta = choice.get("delta")
            if isinstance(delta, dict):
                content = delta.get("content")
                if isinstance(content, str):
                    self.output.add(content)
                reasoning = delta.get("reasoning_content") or delta.get("reasoning")
                if isinstance(reasoning, str):
                    self.output.add(reasoning)
                if delta.get("tool_calls"):
                    self.output.add(json.dumps(delta["tool_calls"]))
            text = choice.get("text")
            if isinstance(text, str):
                self.output.add(text)


async def sse_data_batches(
    chunks: AsyncIterator[bytes], max_line: int = MAX_LINE
) -> AsyncIterator[list[bytes]]:
    """For every read from upstream, the payloads of the ``data:`` lines it completed.

    Batching by read lets the relay write a whole read and flush once, instead of
    flushing after every event.  Linear in the stream's size: every byte is
    searched for a line end once and copied out once, however the lines are cut
    into reads.  A ``data:`` line with nothing after it carries no event and is
    skipped; a line longer than ``max_line`` raises :class:`LineTooLong`.
    """
    pending = bytearray()
    async for chunk in chunks:
        searched = len(pending)  # everything before this holds no line end
        pending += chunk
        batch: list[bytes] = []
        start = 0
        while True:
            cut = pending.find(b"\n", searched)
            if cut < 0:
                break
            if cut - start > max_line:
                raise LineTooLong(f"an upstream event line is longer than {max_line} bytes")
            if pending.startswith(b"data:", start):
                payload = bytes(pending[start + 5 : cut]).strip()
                if payload:
                    batch.append(payload)
            start = searched = cut + 1
        del pending[:start]
        if len(pending) > max_line:
            raise LineTooLong(f"an upstream event line is longer than {max_line} bytes")
        if batch:
            yield batch
    if pending.startswith(b"data:"):
        payload = bytes(pending[5:]).strip()
        if payload:
            yield [payload]


async def sse_data_lines(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The payload of every ``data:`` line, one at a time."""
    async for batch in sse_data_batches(chunks):
        for payload in batch:
            yield payload


def parse_event(payload: bytes) -> dict[str, Any]:
    try:
        event = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        raise MalformedEvent("upstream sent an event that is not JSON") from None
    if not isinstance(event, dict):
        raise MalformedEvent("upstream sent an event that is not a JSON object")
    return event


def is_usage_only(event: dict[str, Any]) -> bool:
    """The extra chunk that ``include_usage`` adds: usage and no choices."""
    return event.get("usage") is not None and not event.get("choices")


MAX_REPORTED_TOKENS = 10**12
"""Token counts above this in an upstream's ``usage`` are not believed."""


def reported_tokens(usage: Any, *, with_output: bool = True) -> tuple[int, int] | None:
    """The prompt and completion tokens an upstream reported, if they can be believed.

    Both must be plain non-negative integers (not booleans, floats or strings) below
    :data:`MAX_REPORTED_TOKENS`; an embedding's usage has no completion tokens
    (``with_output=False``).  Anything else is a malformed answer: the caller bills
    from what was delivered instead, and the charge is capped either way.
    """
    if not isinstance(usage, dict):
        return None
    prompt = usage.get("prompt_tokens")
    completion = usage.get("completion_tokens") if with_output else 0
    if _plausible_count(prompt) and _plausible_count(completion):
        return prompt, completion
    return None


def _plausible_count(value: Any) -> TypeGuard[int]:
    return type(value) is int and 0 <= value <= MAX_REPORTED_TOKENS
