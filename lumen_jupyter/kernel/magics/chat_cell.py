"""Run one ``%%lumen`` chat cell: stream the answer into the output, then a footer.

The answer is shown as Markdown (made inert by
:mod:`~lumen_jupyter.kernel.display.safe_markdown`) in one display that is updated
as chunks arrive, at most every ``interval`` seconds, and a last time with a
footer: tokens, coins and the balance left.  In a terminal the chunks are written
as they come instead.
"""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..client.chat import Conversation, Delta, Finished
from ..client.errors import LumenAPIError
from ..client.lumen_client import LumenClient
from ..client.pricing import call_cost_micro
from ..display.render import Notice, Stack, View
from ..display.safe_markdown import safe_markdown
from ..display.usage_views import chat_reply

Publish = Callable[[View, str, bool], None]


@dataclass
class ChatRequest:
    prompt: str
    model: str
    max_tokens: int | None
    temperature: float | None
    #: Said first in the footer (e.g. that a new conversation was started).
    note: str | None = None


def footer_text(client: LumenClient, finished: Finished) -> str:
    """``demo-pro · 25 in + 40 out tokens · 0.00725 coins · 19.99 coins left``."""
    parts = [finished.model]
    usage = finished.usage
    if usage:
        prompt_tokens = int(usage.get("prompt_tokens") or 0)
        completion_tokens = int(usage.get("completion_tokens") or 0)
        parts.append(f"{prompt_tokens:,} in + {completion_tokens:,} out tokens")
        try:
            price = client.price(finished.model)
        except LumenAPIError:
            price = None
        if price is not None:
            micro = call_cost_micro(price, prompt_tokens, completion_tokens)
            parts.append(f"{micro / 1_000_000:.6f}".rstrip("0").rstrip(".") + " coins")
    else:
        parts.append("usage not reported")
    if finished.finish_reason == "length":
        parts.append("cut at max tokens")
    parts.append(_balance_text(client))
    return " · ".join(p for p in parts if p)


def _balance_text(client: LumenClient) -> str:
    try:
        if client.profile_api_available():
            pool = client.profile().get("pool") or {}
            state = pool.get("state")
            if state == "unlimited":
                return "unlimited coins"
            if state in ("limited", "blocked"):
                return f"{(pool.get('balance') or {}).get('text', '?')} coins left"
            return ""
        session = client.session_usage()
        return f"this session: {session['coins']['text']} coins"
    except LumenAPIError:
        return ""


class ChatRunner:
    """Streams one answer into a display; records the exchange when it completes."""

    def __init__(
        self,
        client: LumenClient,
        conversation: Conversation,
        publish: Publish,
        *,
        interval: float = 0.1,
        terminal: bool = False,
    ) -> None:
        self.client = client
        self.conversation = conversation
        self.publish = publish
        self.interval = interval
        self.terminal = terminal

    def run(self, request: ChatRequest) -> LumenAPIError | None:
        """Stream the answer; return the error (already shown) if there was one."""
        display_id = uuid.uuid4().hex
        text = ""
        shown = False
        last = 0.0
        finished: Finished | None = None

        def show(footer: str | None, streaming: bool, extra: View | None = None) -> None:
            nonlocal shown
            view: View = chat_reply(safe_markdown(text), text, footer, streaming=streaming)
            if extra is not None:
                view = Stack([view, extra]) if text else extra
            self.publish(view, display_id, shown)
            shown = True

        if not self.terminal:
            show(None, True)
        messages = self.conversation.messages_for(request.prompt)
        try:
            for event in self.client.stream_chat(
                request.model,
                messages,
                max_tokens=request.max_tokens,
                temperature=request.temperature,
                conversation=self.conversation.id,
                source="chat",
            ):
                if isinstance(event, Delta):
                    text += event.text
                    if self.terminal:
                        sys.stdout.write(event.text)
                        sys.stdout.flush()
                    elif time.monotonic() - last >= self.interval:
                        show(None, True)
                        last = time.monotonic()
                else:
                    finished = event
        except LumenAPIError as error:
            self._stopped(show, Notice(error.one_line(), "error"))
            return error
        except KeyboardInterrupt:
            self._stopped(show, Notice("Interrupted; this answer is not kept.", "warn"))
            raise
        assert finished is not None
        self.conversation.record(request.prompt, text)
        self.conversation.model = request.model
        footer = footer_text(self.client, finished)
        if request.note:
            footer = f"{request.note} · {footer}"
        if self.terminal:
            sys.stdout.write(f"\n\n[{footer}]\n")
        else:
            show(footer, False)
        return None

    def _stopped(self, show: Callable[..., Any], notice: Notice) -> None:
        if self.terminal:
            sys.stdout.write("\n")
            self.publish(notice, uuid.uuid4().hex, False)
        else:
            show(None, False, notice)
