"""Fault settings and counters shared by the demo backend's handlers.

The gateway has to survive upstreams that are slow, fail, hang, cut streams
short or send garbage.  Real providers do all of that rarely and never on cue,
so the demo backend can be told to misbehave on purpose.  This module holds the
bookkeeping for that (which faults are armed and for how many requests, what a
single request has to do, the counters tests and benchmarks read back) and the
handler base class that acts the faults out on a tornado connection: sleeping
unless the client leaves, answering with an error, hanging, or cutting the
connection.  The endpoints themselves live in :mod:`.backend`.

Faults apply to the POST endpoints (chat completions, completions, embeddings)
once the request has been validated; an invalid request leaves them armed.
``count`` is how many affected requests are left (-1: until cleared).

* ``latency``: sleep ``latency_ms`` (default 500) before answering.
* ``slow_chunks``: streams only; ``latency_ms`` (default 50) between chunks.
* ``no_usage``: no ``usage`` in the answer, even when a stream asked for it.
* ``http_500``, ``http_503``, ``http_429``, ``http_400``: an OpenAI-shaped error
  (code ``demo_<fault>``; 429 and 503 carry ``Retry-After: 1``).
* ``hang``: no answer until the client disconnects.
* ``drop``: close the connection without any response.
* ``error_mid_stream``: streams only; after ``after_chunks`` chunks (default 1),
  a ``data: {"error": ...}`` event, then ``data: [DONE]``.
* ``drop_mid_stream``: streams only; close the connection after ``after_chunks``
  chunks (the chunked body is left incomplete, no ``[DONE]``).
* ``malformed_sse``: streams only; after ``after_chunks`` chunks a ``data:`` line
  that is not JSON, then the response ends (no ``[DONE]``).

``after_chunks`` counts the ``data:`` events sent, the chat role chunk included;
if the reply is shorter the fault fires in place of the finish chunk.  A request
takes at most one answer-replacing fault (in the order above; the others stay
armed) and at most one mid-stream fault; latency applies on top of either.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import tornado.iostream
import tornado.web

#: Faults that replace the whole answer; at most one applies to a request.
TERMINAL_FAULTS: tuple[str, ...] = (
    "http_500",
    "http_503",
    "http_429",
    "http_400",
    "hang",
    "drop",
)
#: Faults that break a stream after some chunks; at most one applies to a request.
MID_STREAM_FAULTS: tuple[str, ...] = (
    "error_mid_stream",
    "drop_mid_stream",
    "malformed_sse",
)
#: Faults that only change timing or content and combine with the others.
MODIFIER_FAULTS: tuple[str, ...] = ("latency", "slow_chunks", "no_usage")
FAULT_NAMES: frozenset[str] = frozenset(TERMINAL_FAULTS + MID_STREAM_FAULTS + MODIFIER_FAULTS)

#: ``count`` value meaning "until cleared".
UNTIL_CLEARED = -1
DEFAULT_AFTER_CHUNKS = 1
DEFAULT_DELAY_MS: dict[str, float] = {"latency": 500.0, "slow_chunks": 50.0}

ENDPOINTS: tuple[str, ...] = ("models", "chat_completions", "completions", "embeddings")


@dataclass
class FaultRule:
    """One armed fault: what it is and how many more requests it affects."""

    name: str
    remaining: int
    after_chunks: int = DEFAULT_AFTER_CHUNKS
    latency_ms: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "fault": self.name,
            "count": self.remaining,
            "after_chunks": self.after_chunks,
            "latency_ms": self.latency_ms,
        }


@dataclass(frozen=True)
class RequestFaults:
    """What one request has to do, decided (and consumed) when it arrives."""

    latency_ms: float = 0.0
    chunk_delay_ms: float = 0.0
    terminal: str | None = None
    mid_stream: str | None = None
    after_chunks: int = 0
    no_usage: bool = False


NO_FAULTS = RequestFaults()


def _checked_int(value: Any, field: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"'{field}' must be an integer >= {minimum}")
    return value


def _checked_delay(value: Any, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"'{field}' must be a number of milliseconds")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"'{field}' must be a finite number >= 0")
    return float(value)


class DemoState:
    """Fault settings and counters of one demo backend (shared by its handlers).

    ``latency_ms`` and ``chunk_delay_ms`` apply to every request; armed faults
    add to them or replace the answer.  Everything runs on one event loop, so
    no locking is needed.
    """

    def __init__(self, latency_ms: float = 0.0, chunk_delay_ms: float = 0.0) -> None:
        self.latency_ms = _checked_delay(latency_ms, "latency_ms")
        self.chunk_delay_ms = _checked_delay(chunk_delay_ms, "chunk_delay_ms")
        self._faults: dict[str, FaultRule] = {}
        self.active_requests = 0
        self.active_connections = 0
        self.reset_stats()

    # -- faults -------------------------------------------------------------

    def set_fault(
        self,
        name: str,
        count: int = 1,
        after_chunks: int = DEFAULT_AFTER_CHUNKS,
        latency_ms: float | None = None,
    ) -> FaultRule:
        """Arm ``name`` for the next ``count`` affected requests (-1: until cleared).

        Arming a fault that is already armed replaces its settings.
        Raises ``ValueError`` for an unknown name or an invalid setting.
        """
        if name not in FAULT_NAMES:
            raise ValueError(f"unknown fault {name!r}; known: {', '.join(sorted(FAULT_NAMES))}")
        if count != UNTIL_CLEARED:
            count = _checked_int(count, "count", 1)
        after_chunks = _checked_int(after_chunks, "after_chunks", 0)
        delay = DEFAULT_DELAY_MS.get(name, 0.0) if latency_ms is None else latency_ms
        rule = FaultRule(name, count, after_chunks, _checked_delay(delay, "latency_ms"))
        self._faults[name] = rule
        return rule

    def clear_faults(self, name: str | None = None) -> None:
        """Disarm one fault, or all of them."""
        if name is None:
            self._faults.clear()
        else:
            self._faults.pop(name, None)

    def armed_faults(self) -> list[dict[str, Any]]:
        return [rule.as_dict() for rule in self._faults.values()]

    def take_faults(self, streaming: bool) -> RequestFaults:
        """Decide what the arriving request must do and use up the faults that apply."""
        if not self._faults:
            if not self.latency_ms and not self.chunk_delay_ms:
                return NO_FAULTS
            return RequestFaults(self.latency_ms, self.chunk_delay_ms)
        latency = self._consume("latency")
        latency_ms = self.latency_ms + (latency.latency_ms if latency else 0.0)
        terminal = self._consume_first(TERMINAL_FAULTS)
        if terminal is not None:
            # The answer is replaced, so faults that shape an answer stay armed.
            return RequestFaults(latency_ms, self.chunk_delay_ms, terminal=terminal.name)
        slow = self._consume("slow_chunks") if streaming else None
        no_usage = self._consume("no_usage")
        mid_stream = self._consume_first(MID_STREAM_FAULTS) if streaming else None
        return RequestFaults(
            latency_ms=latency_ms,
            chunk_delay_ms=self.chunk_delay_ms + (slow.latency_ms if slow else 0.0),
            mid_stream=mid_stream.name if mid_stream else None,
            after_chunks=mid_stream.after_chunks if mid_stream else 0,
            no_usage=no_usage is not None,
        )

    def _consume_first(self, names: tuple[str, ...]) -> FaultRule | None:
        for name in names:
            if name in self._faults:
                return self._consume(name)
        return None

    def _consume(self, name: str) -> FaultRule | None:
        rule = self._faults.get(name)
        if rule is None:
            return None
        if rule.remaining != UNTIL_CLEARED:
            rule.remaining -= 1
            if rule.remaining <= 0:
                del self._faults[name]
        self.faults_applied[name] += 1
        return rule

    # -- counters -----------------------------------------------------------

    def reset_stats(self) -> None:
        """Zero the counters (not the gauges of what is open right now)."""
        self.requests: Counter[str] = Counter(dict.fromkeys(ENDPOINTS, 0))
        self.faults_applied: Counter[str] = Counter()
        self.streams_started = 0
        self.streams_completed = 0
        self.streams_aborted = 0
        self.client_disconnects = 0
        self.connections_opened = 0

    def request_started(self, endpoint: str) -> None:
        self.requests[endpoint] += 1
        self.active_requests += 1

    def request_ended(self) -> None:
        self.active_requests -= 1

    def client_went_away(self, mid_stream: bool) -> None:
        """Count a client that disconnected before its answer was complete."""
        self.client_disconnects += 1
        if mid_stream:
            self.streams_aborted += 1

    def connection_opened(self) -> None:
        self.connections_opened += 1
        self.active_connections += 1

    def connection_closed(self) -> None:
        self.active_connections -= 1

    def stats(self) -> dict[str, Any]:
        return {
            "requests": dict(self.requests),
            "streams_started": self.streams_started,
            "streams_completed": self.streams_completed,
            "streams_aborted": self.streams_aborted,
            "client_disconnects": self.client_disconnects,
            "faults_applied": dict(self.faults_applied),
            "active_requests": self.active_requests,
            "active_connections": self.active_connections,
            "connections_opened": self.connections_opened,
        }


# -- acting faults out ----------------------------------------------------------------

_dumps = json.JSONEncoder(separators=(",", ":")).encode
_WRITES_PER_YIELD = 16


class ApiError(Exception):
    """An error answered with an OpenAI-shaped body ``{"error": {...}}``."""

    def __init__(
        self,
        status: int,
        message: str,
        error_type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        error = {"message": message, "type": error_type, "param": param, "code": code}
        self.body = {"error": error}


def _fault_error(fault: str, status: int, message: str, error_type: str) -> ApiError:
    return ApiError(status, f"Demo fault: {message}", error_type, code=f"demo_{fault}")


_FAULT_ERRORS: dict[str, ApiError] = {
    fault: _fault_error(fault, status, message, error_type)
    for fault, status, message, error_type in (
        ("http_500", 500, "internal server error.", "server_error"),
        ("http_503", 503, "the model is overloaded.", "server_error"),
        ("http_429", 429, "rate limit reached.", "rate_limit_error"),
        ("http_400", 400, "bad request.", "invalid_request_error"),
    )
}
_RETRY_AFTER_STATUSES = frozenset({429, 503})


def _resolve_if_pending(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class DemoHandler(tornado.web.RequestHandler):
    """Common plumbing: JSON answers, OpenAI-shaped errors, quiet defaults."""

    state: DemoState

    def initialize(self, state: DemoState) -> None:
        self.state = state

    def compute_etag(self) -> str | None:
        return None

    def send_json(self, payload: Mapping[str, Any], status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(_dumps(payload))

    def send_api_error(self, error: ApiError) -> None:
        if error.status in _RETRY_AFTER_STATUSES:
            self.set_header("Retry-After", "1")
        self.send_json(error.body, error.status)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        error_type = "server_error" if status_code >= 500 else "invalid_request_error"
        self.send_json(ApiError(status_code, self._reason, error_type).body, status_code)


class FaultAwareHandler(DemoHandler):
    """A handler whose answer faults can delay, replace or cut short."""

    _client_gone = False
    _wakeup: asyncio.Future[None] | None = None
    _writes_without_yield = 0

    def on_connection_close(self) -> None:
        self._client_gone = True
        if self._wakeup is not None:
            _resolve_if_pending(self._wakeup)
        super().on_connection_close()

    async def apply_leading_faults(self, streaming: bool) -> RequestFaults | None:
        """Take this request's faults; apply latency and answer-replacing faults.

        Returns None when the request has been dealt with (or the client left).
        """
        faults = self.state.take_faults(streaming)
        if faults is NO_FAULTS:
            return faults
        if faults.latency_ms and not await self.pause(faults.latency_ms / 1000):
            self.client_left(mid_stream=False)
            return None
        if faults.terminal is None:
            return faults
        if faults.terminal in _FAULT_ERRORS:
            self.send_api_error(_FAULT_ERRORS[faults.terminal])
        elif faults.terminal == "hang":
            await self.pause(None)
            self.client_left(mid_stream=False)
        else:  # "drop"
            self.abandon_connection()
        return None

    async def pause(self, seconds: float | None) -> bool:
        """Sleep (forever if None) unless the client leaves; False if it left."""
        if self._client_gone:
            return False
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        self._wakeup = waiter
        timer = None if seconds is None else loop.call_later(seconds, _resolve_if_pending, waiter)
        try:
            await waiter
        finally:
            if timer is not None:
                timer.cancel()
            self._wakeup = None
        return not self._client_gone

    def abandon_connection(self) -> None:
        """Close the TCP connection without finishing the HTTP response."""
        if not self._finished:
            self.detach().close()

    def client_left(self, mid_stream: bool) -> None:
        self.state.client_went_away(mid_stream)
        self.abandon_connection()

    async def send_chunk(self, data: str, delay: float, mid_stream: bool = True) -> bool:
        """Write and flush one piece of a response; False if the client has left."""
        if delay and not await self.pause(delay):
            self.client_left(mid_stream)
            return False
        self.write(data)
        try:
            flushed = self.flush()
            if flushed.done():
                await self._yield_every_few_writes()
            await flushed
        except tornado.iostream.StreamClosedError:
            self.client_left(mid_stream)
            return False
        return True

    async def _yield_every_few_writes(self) -> None:
        """Let the event loop run every few writes that completed at once.

        Awaiting a finished future does not yield, so while the socket keeps
        accepting data a stream would monopolise the loop (starving other
        connections) and pile up tornado's write callbacks without bound.
        """
        self._writes_without_yield += 1
        if self._writes_without_yield >= _WRITES_PER_YIELD:
            self._writes_without_yield = 0
            await asyncio.sleep(0)

    def break_stream(self, fault: str, sent: int) -> None:
        """End a stream the way a mid-stream fault says, after ``sent`` chunks."""
        if fault == "drop_mid_stream":
            self.abandon_connection()
        elif fault == "error_mid_stream":
            message = f"Demo fault: the stream failed after {sent} chunks."
            error = ApiError(500, message, "server_error", "demo_error_mid_stream")
            self.finish(f"data: {_dumps(error.body)}\n\ndata: [DONE]\n\n")
        else:  # "malformed_sse"
            self.finish('data: {"id": "demo-malformed", "choices": [ this is not JSON\n\n')
