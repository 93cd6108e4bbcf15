"""This kernel session's own model usage, counted from the gateway's answers.

Where no profile API exists (a plain Lumen or OpenAI-compatible endpoint) this is
the only usage the kernel can show, so every HTTP client made here - the magics'
client and the ``openai`` clients - passes its model answers through a response
hook that reads ``usage``: from the JSON body of a plain answer, and from the
final chunk of a stream (the stream is observed, never buffered).  A stream whose
usage did not come is counted as a request with unknown tokens (``openai`` 3 uses
``httpx2``, a copy of httpx: the hooks work with both).  Each counted
call also tells any live profile widget to refresh (``widgets.notify_call``).
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import httpx

from .call_listeners import notify_call
from .pricing import ModelPrice, call_cost_micro, coins_json

_MODEL_PATHS = ("/chat/completions", "/completions", "/embeddings")


@dataclass
class ModelTally:
    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    unknown: int = 0  # requests whose usage never came


class SessionUsage:
    """Per-model counters for this process, safe to update from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._models: dict[str, ModelTally] = {}
        self.started_at = datetime.now(timezone.utc)

    def record(self, model: str, usage: Mapping[str, Any] | None) -> None:
        with self._lock:
            tally = self._models.setdefault(model or "(unknown)", ModelTally())
            tally.requests += 1
            if usage is None:
                tally.unknown += 1
                return
            tally.input_tokens += int(usage.get("prompt_tokens") or 0)
            tally.output_tokens += int(usage.get("completion_tokens") or 0)

    def reset(self) -> None:
        with self._lock:
            self._models.clear()
            self.started_at = datetime.now(timezone.utc)

    def snapshot(self, prices: Mapping[str, ModelPrice] | None = None) -> dict[str, Any]:
        """Totals and per-model rows; coins where the model's price is known."""
        prices = prices or {}
        with self._lock:
            items = sorted((name, ModelTally(**vars(t))) for name, t in self._models.items())
        rows: dict[str, Any] = {}
        total_micro = 0
        priced = True
        for name, t in items:
            price = prices.get(name)
            micro = call_cost_micro(price, t.input_tokens, t.output_tokens) if price else None
            if micro is None:
                priced = False
            else:
                total_micro += micro
            rows[name] = {
                "requests": t.requests,
                "input_tokens": t.input_tokens,
                "output_tokens": t.output_tokens,
                "tokens": t.input_tokens + t.output_tokens,
                "coins": coins_json(micro) if micro is not None else None,
                "unknown_usage": t.unknown,
            }
        return {
            "since": self.started_at.isoformat().replace("+00:00", "Z"),
            "requests": sum(r["requests"] for r in rows.values()),
            "tokens": sum(r["tokens"] for r in rows.values()),
            "coins": coins_json(total_micro),
            "all_priced": priced,
            "by_model": rows,
        }


SESSION = SessionUsage()
"""The usage of this kernel session."""


def _counter(usage_of: SessionUsage) -> Callable[[str, Mapping[str, Any] | None], None]:
    def count(model: str, usage: Mapping[str, Any] | None) -> None:
        usage_of.record(model, usage)
        notify_call(model)

    return count


def _is_model_call(response: httpx.Response) -> bool:
    request = response.request
    return (
        request.method == "POST"
        and response.status_code == 200
        and request.url.path.endswith(_MODEL_PATHS)
    )


class _SSETap:
    """Watches SSE bytes go by and reports the usage chunk once the stream ends."""

    def __init__(self, report: Callable[[str, Mapping[str, Any] | None], None]) -> None:
        self._report = report
        self._pending = b""
        self._model = ""
        self._usage: Mapping[str, Any] | None = None
        self._done = False

    def feed(self, chunk: bytes) -> None:
        data = self._pending + chunk
        *lines, self._pending = data.split(b"\n")
        for line in lines:
            line = line.strip()
            if not line.startswith(b"data:"):
                continue
            payload = line[5:].strip()
            if payload == b"[DONE]" or not payload.startswith(b"{"):
                continue
            try:
                event = json.loads(payload)
            except ValueError:
                continue
            if isinstance(event, dict):
                self._model = str(event.get("model") or self._model)
                usage = event.get("usage")
                if isinstance(usage, dict):
                    self._usage = usage

    def finish(self) -> None:
        if not self._done:
            self._done = True
            self._report(self._model, self._usage)


class _TappedStream:
    """Yields the response's chunks unchanged, showing each to the tap."""

    def __init__(self, inner: Any, tap: _SSETap) -> None:
        self._inner = inner
        self._tap = tap

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._inner:
            self._tap.feed(chunk)
            yield chunk

    def close(self) -> None:
        self._tap.finish()
        self._inner.close()


class _TappedAsyncStream:
    def __init__(self, inner: Any, tap: _SSETap) -> None:
        self._inner = inner
        self._tap = tap

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._inner:
            self._tap.feed(chunk)
            yield chunk

    async def aclose(self) -> None:
        self._tap.finish()
        await self._inner.aclose()


_TAPS: dict[tuple[str, bool], type] = {}


def _tapped(response: Any, tap: _SSETap, *, asynchronous: bool) -> Any:
    """Wrap ``response.stream`` in a subclass of *its own* library's byte stream.

    httpx checks the stream's type; ``openai`` uses ``httpx2``, a separate copy of
    httpx, so the wrapper must derive from the base class of the response's library.
    """
    library = sys.modules[type(response).__module__.split(".")[0]]
    key = (library.__name__, asynchronous)
    cls = _TAPS.get(key)
    if cls is None:
        base = library.AsyncByteStream if asynchronous else library.SyncByteStream
        mixin = _TappedAsyncStream if asynchronous else _TappedStream
        cls = _TAPS[key] = type(mixin.__name__, (mixin, base), {})
    return cls(response.stream, tap)


def _record_body(response: httpx.Response, usage_of: SessionUsage) -> None:
    try:
        data = json.loads(response.content)
    except ValueError:
        return
    if isinstance(data, dict):
        usage = data.get("usage")
        count = _counter(usage_of)
        count(str(data.get("model") or ""), usage if isinstance(usage, dict) else None)


def tally_response(response: httpx.Response, usage_of: SessionUsage = SESSION) -> None:
    """httpx response hook: count a model answer in this session's usage."""
    if not _is_model_call(response):
        return
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        response.stream = _tapped(response, _SSETap(_counter(usage_of)), asynchronous=False)
        return
    response.read()
    _record_body(response, usage_of)


async def atally_response(response: httpx.Response, usage_of: SessionUsage = SESSION) -> None:
    """The same hook for ``httpx.AsyncClient``."""
    if not _is_model_call(response):
        return
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        response.stream = _tapped(response, _SSETap(_counter(usage_of)), asynchronous=True)
        return
    await response.aread()
    _record_body(response, usage_of)
