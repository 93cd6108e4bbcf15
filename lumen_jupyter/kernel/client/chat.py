"""Chat conversations kept in the kernel, and the events of a streamed answer.

A :class:`Conversation` holds the messages of one chat across cells and an id the
gateway records (``X-Lumen-Conversation``), so the profile can count
conversations.  :func:`stream_events` turns the gateway's server-sent events into
:class:`Delta` pieces of text and one final :class:`Finished` with the usage; an
error sent in mid-stream becomes a :class:`~.errors.LumenAPIError`.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .errors import LumenAPIError, error_from_body


@dataclass(frozen=True)
class Delta:
    """A piece of the answer's text."""

    text: str


@dataclass(frozen=True)
class Finished:
    """The end of an answer: the model's name, why it stopped, and the usage."""

    model: str
    finish_reason: str | None
    usage: dict[str, Any] | None


ChatEvent = Delta | Finished


@dataclass
class Conversation:
    """The messages of one chat, kept across cells."""

    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    system: str | None = None
    turns: list[dict[str, str]] = field(default_factory=list)
    model: str | None = None

    def restart(self) -> None:
        """Start over: a new id, no turns, no system prompt, no model yet."""
        self.id = uuid.uuid4().hex
        self.turns = []
        self.system = None
        self.model = None

    def messages_for(self, prompt: str) -> list[dict[str, str]]:
        """The messages to send for the next user prompt."""
        head = [{"role": "system", "content": self.system}] if self.system else []
        return [*head, *self.turns, {"role": "user", "content": prompt}]

    def record(self, prompt: str, answer: str) -> None:
        self.turns.append({"role": "user", "content": prompt})
        self.turns.append({"role": "assistant", "content": answer})

    @property
    def exchanges(self) -> int:
        return len(self.turns) // 2


def chat_body(
    model: str,
    messages: list[dict[str, Any]],
    *,
    stream: bool,
    max_tokens: int | None = None,
    temperature: float | None = None,
    **extra: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "messages": messages, **extra}
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    if temperature is not None:
        body["temperature"] = temperature
    return body


def sse_payloads(lines: Iterable[str]) -> Iterator[str]:
    """The ``data:`` payloads of a server-sent event stream, up to ``[DONE]``."""
    for line in lines:
        if not line.startswith("data:"):
            continue
        payload = line[5:].strip()
        if payload == "[DONE]":
            return
        if payload:
            yield payload


class StreamReader:
    """Turns decoded SSE payloads into chat events; shared by the sync and async clients."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.finish_reason: str | None = None
        self.usage: dict[str, Any] | None = None

    def events(self, payload: str) -> list[ChatEvent]:
        try:
            event = json.loads(payload)
        except ValueError:
            raise LumenAPIError(
                "The gateway sent a malformed stream event", code="upstream_malformed"
            ) from None
        if not isinstance(event, dict):
            return []
        if "error" in event:
            error = error_from_body(500, event, model=self.model)
            raise error
        self.model = str(event.get("model") or self.model)
        if isinstance(event.get("usage"), dict):
            self.usage = event["usage"]
        out: list[ChatEvent] = []
        for choice in event.get("choices") or []:
            if not isinstance(choice, dict):
                continue
            if choice.get("finish_reason"):
                self.finish_reason = str(choice["finish_reason"])
            delta = choice.get("delta") or {}
            text = delta.get("content") if isinstance(delta, dict) else None
            if isinstance(text, str) and text:
                out.append(Delta(text))
        return out

    def finished(self) -> Finished:
        return Finished(self.model, self.finish_reason, self.usage)
