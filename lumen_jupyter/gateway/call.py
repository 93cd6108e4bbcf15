"""One model call: admit, relay, settle - the same in every host.

The host's handler reads the request, knows who is calling, and gives this
module a :class:`CallRequest` and a :class:`Reply` (how to answer its client).
Everything else happens here: the call is admitted by reserving its worst-case
cost, sent to a healthy upstream with its output limited to what was reserved,
relayed (streams chunk by chunk, never buffered), and settled to its real usage
before the client sees the end of the answer.  Nothing here knows tornado.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from sqlalchemy import Connection

from ..core import billing, strict_json
from ..core.accounts import Identity
from ..core.calls import Admission
from ..core.catalog import EndpointSpec, ModelSpec
from ..core.errors import (
    BadRequest,
    BudgetExhausted,
    LumenError,
    PermissionDenied,
    RateLimited,
    UpstreamFailed,
    UpstreamUnavailable,
)
from ..core.money import micro_to_coins
from ..core.redact import redact
from ..core.tokens import count_message_tokens, count_prompt_tokens
from .http_client import ConnectFailed, Response, UpstreamError, describe
from .metrics import CallStatus
from .relay import (
    DONE,
    MalformedEvent,
    StreamBook,
    is_usage_only,
    parse_event,
    reported_tokens,
    sse_data_batches,
)

if TYPE_CHECKING:
    from .gateway import Gateway

log = logging.getLogger("lumen_jupyter.gateway")

T = TypeVar("T")

SSE_CONTENT_TYPE = "text/event-stream; charset=utf-8"
YIELD_EVERY_EVENTS = 64
"""While relaying a large upstream read, give other requests a turn this often."""
PROGRESS_SECONDS = 1.0
"""A stream records its delivered output this often (billed if the server dies), and
learns then whether its key was revoked by another process."""
MAX_CHOICES = {"n": 128, "best_of": 20}
KINDS = ("chat", "completions", "embeddings")
UPSTREAM_PATHS = {"chat": "chat/completions", "completions": "completions"}


_STATUSES: dict[str, CallStatus] = {"ok": "ok", "partial": "partial", "aborted": "aborted"}


class ClientGone(Exception):
    """The client closed its connection while the answer was being written."""


class Reply(Protocol):
    """How a call answers its client; supplied by the host's handler."""

    @property
    def client_gone(self) -> bool: ...

    def set_header(self, name: str, value: str) -> None: ...

    def write(self, data: bytes) -> None: ...

    async def push(self) -> None:
        """Send what was written; raises :class:`ClientGone`."""

    def send_json(self, data: Any) -> None: ...

    def send_json_bytes(self, body: bytes) -> None: ...

    async def end_stream(self) -> None:
        """Finish an event stream (its content type stays ``text/event-stream``)."""


class UpstreamTimeout(LumenError):
    status = 504
    error_type = "api_error"
    code = "upstream_timeout"


@dataclass(frozen=True)
class CallRequest:
    """A model call as the host's handler received it."""

    kind: str  # chat | completions | embeddings
    body: dict[str, Any]
    identity: Identity
    context: billing.CallContext


def parse_body(raw: bytes) -> dict[str, Any]:
    """The request as a JSON object whose fields have the types OpenAI gives them."""
    body = strict_json.loads(raw)
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object", code="invalid_json")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("'model' is required", param="model", code="missing_model")
    # Fields whose type is checked before anything acts on them (null means absent).
    typed: tuple[tuple[str, type, str], ...] = (
        ("stream", bool, "true or false"),
        ("stream_options", dict, "an object"),
        ("messages", list, "a list of message objects"),
        ("user", str, "a string"),
    )
    for name, kind, what in typed:
        value = body.get(name)
        if value is not None and not isinstance(value, kind):
            raise BadRequest(f"'{name}' must be {what}", param=name, code="invalid_type")
    messages = body.get("messages")
    if messages is not None and not all(isinstance(m, dict) for m in messages):
        raise BadRequest("each message must be an object", param="messages")
    options = body.get("stream_options")
    if options is not None and not isinstance(options.get("include_usage", False), bool):
        raise BadRequest(
            "'stream_options.include_usage' must be true or false",
            param="stream_options",
            code="invalid_type",
        )
    return body


def input_tokens(kind: str, body: dict[str, Any]) -> int:
    """The input of a call, counted before it is sent (its reservation's input part)."""
    if kind == "chat":
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise BadRequest("'messages' must be a non-empty list", param="messages")
        if not all(isinstance(m, dict) for m in messages):
            raise BadRequest("each message must be an object", param="messages")
        return count_message_tokens(messages)
    field = "prompt" if kind == "completions" else "input"
    value = body.get(field)
    if not isinstance(value, (str, list)) or not value:
        raise BadRequest(f"'{field}' is required", param=field)
    return count_prompt_tokens(value)


def choices(body: dict[str, Any]) -> int:
    """How many answers the call asks for (``n``, ``best_of``): each is reserved."""
    count = 1
    for field, limit in MAX_CHOICES.items():
        value = body.get(field)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= limit:
            raise BadRequest(f"'{field}' must be an integer from 1 to {limit}", param=field)
        count = max(count, value)
    return count


def max_output(body: dict[str, Any]) -> int | None:
    for field in ("max_completion_tokens", "max_tokens"):
        value = body.get(field)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise BadRequest(f"'{field}' must be a positive integer", param=field)
        return value
    return None


def capped(kind: str, body: dict[str, Any], admission: Admission) -> dict[str, Any]:
    """The request to send upstream: its output limit is the budget that was reserved,
    so the upstream cannot produce (or bill) more than the reservation covers."""
    if kind == "embeddings":
        return body
    asked = [f for f in ("max_completion_tokens", "max_tokens") if body.get(f) is not None]
    return {**body, **dict.fromkeys(asked or ["max_tokens"], admission.output_budget)}


def stream_error(model: str, failure: str) -> dict[str, Any]:
    text = {
        "error": f"The upstream of '{model}' reported an error during the answer",
        "malformed": f"The upstream of '{model}' sent a malformed event",
        "timeout": f"The upstream of '{model}' stopped sending",
        "dropped": f"The upstream of '{model}' closed the stream early",
        "revoked": "The API key of this call was revoked during the answer",
        "ended": "The gateway ended this call",
    }[failure]
    return {
        "error": {
            "message": text + "; you were billed for what was delivered",
            "type": "api_error",
            "code": failure if failure in ("revoked", "ended") else f"upstream_{failure}",
        }
    }


def upstream_error(status: int, raw: bytes, model: str) -> LumenError:
    """The answer to a failed upstream call: 4xx pass through with their message; 429
    and 503 keep their status and may be retried; anything else is a generic 502.

    Two exceptions keep secrets in: a 401/403 from upstream concerns the
    gateway's own upstream credential, so it becomes a generic failure; and
    anything shaped like a key is masked in a message that passes through.
    """
    if status in (401, 403):
        return UpstreamFailed(
            f"The upstream of '{model}' refused the gateway's credentials; "
            "tell an administrator. Nothing was charged",
            code="upstream_auth",
        )
    if 400 <= status < 500:
        message = f"The upstream of '{model}' refused the request ({status})"
        try:
            detail = json.loads(raw).get("error", {})
            if isinstance(detail, dict) and isinstance(detail.get("message"), str):
                message = redact(detail["message"][:2000])
        except (ValueError, AttributeError):
            pass
        error = LumenError(message, code="upstream_refused")
        error.status = status
        if status == 429:
            error.code, error.error_type, error.retryable = (
                "upstream_rate_limited",
                "rate_limit_error",
                True,
            )
        return error
    if status == 503:
        busy = UpstreamUnavailable(
            f"The upstream of '{model}' is unavailable right now; nothing was charged",
            code="upstream_unavailable",
        )
        busy.retryable = True
        return busy
    failed = UpstreamFailed(f"The upstream of '{model}' failed; nothing was charged")
    failed.status = 502
    return failed


class ModelCall:
    """One call from admission to settlement."""

    def __init__(self, gateway: Gateway, request: CallRequest, reply: Reply) -> None:
        self.gateway = gateway
        self.request = request
        self.reply = reply
        self.kind = request.kind
        self._upstream: Response | None = None
        self._stop_reason: str | None = None
        self._output_limit = 0
        self._next_progress = 0.0
        self._progress: asyncio.Future[None] | None = None
        self._status: CallStatus | None = None
        self._charged = 0

    @property
    def client_gone(self) -> bool:
        return self.reply.client_gone

    def client_closed(self) -> None:
        """The client went away: stop reading the upstream (the relay then bills)."""
        upstream = self._upstream
        if upstream is not None:
            upstream.close()

    # -- the call -------------------------------------------------------------------------

    async def run(self) -> None:
        gateway = self.gateway
        gateway.in_flight += 1
        gateway.metrics.started()
        started = time.monotonic()
        try:
            await self._run()
        except LumenError:
            if self._status is None:
                self._status = "refused"
            raise
        finally:
            gateway.in_flight -= 1
            gateway.metrics.finished(
                self.metric_model(),
                self._status or "error",
                time.monotonic() - started,
                self._charged,
                endpoint=self.kind,
            )

    def metric_model(self) -> str:
        """The model label of this call's metrics: a configured model's name, never a
        name a caller made up (every new label value is a new series in every worker)."""
        name = self.request.body.get("model")
        return name if name in self.gateway.service.catalog.models else "(unknown)"

    async def _run(self) -> None:
        gateway = self.gateway
        service = gateway.service
        request = self.request
        body = request.body
        tokens_in = input_tokens(self.kind, body)
        generates = self.kind != "embeddings"
        output = max_output(body) if generates else None
        count = choices(body) if generates else 1
        try:
            outcome = await self.book(
                lambda conn: service.calls.open_call_in(
                    conn,
                    request.identity,
                    request.context,
                    body["model"],
                    endpoint=self.kind,
                    input_tokens=tokens_in,
                    max_output_tokens=output,
                    choices=count,
                )
            )
            admission = service.calls.admission_or_raise(outcome)
        except LumenError as refused:
            if isinstance(refused, RateLimited) and refused.retry_after is not None:
                self.reply.set_header("Retry-After", str(refused.retry_after))
            if isinstance(refused, (BudgetExhausted, PermissionDenied)):
                self.publish_refusal(refused, body["model"])
            raise
        gateway.upstreams.record_request(admission.model.name)
        body = capped(self.kind, body, admission)
        self._output_limit = admission.output_budget * count
        streaming = bool(body.get("stream")) and generates
        if streaming and admission.key_id is not None:  # a revocation stops it
            gateway.track(admission.key_id, self)
        settled = False
        try:
            if streaming:
                settled = await self.relay_stream(admission, body, tokens_in)
            else:
                settled = await self.relay_once(admission, body, tokens_in)
        finally:
            if streaming and admission.key_id is not None:
                gateway.untrack(admission.key_id, self)
            if not settled:
                await self.book(
                    lambda conn: service.calls.release_in(
                        conn, admission, status="error", http_status=None
                    )
                )
            gateway.publish("usage", {"model": admission.model.name}, request.identity.username)

    async def book(self, write: Callable[[Connection], T]) -> T:
        """Write to the books, in the accountant's next transaction (off the event loop)."""
        return await self.gateway.accountant.run(write, order=self.request.context.account_id)

    async def settle(
        self,
        admission: Admission,
        used_in: int,
        used_out: int,
        *,
        status: str,
        estimated: bool,
        http_status: int | None,
    ) -> None:
        """Charge the call, in the accountant's next transaction.

        Output is counted at most up to what was reserved; a cost above the call's cap
        is not billed but recorded on the request and logged for the admin."""
        settled = await self.book(
            lambda conn: self.gateway.service.calls.settle_in(
                conn,
                admission,
                used_in,
                used_out,
                status=status,
                estimated=estimated,
                http_status=http_status,
                output_limit=self._output_limit,
            )
        )
        self._status = _STATUSES.get(status, "error")
        self._charged = settled.coins_micro if settled is not None else 0
        if settled is not None and settled.overrun_micro > 0:
            log.warning(
                "lumen: the upstream of %s reported usage worth %s coins above the cap of "
                "request %d; charged the cap, the overrun is recorded on the request",
                admission.model.name,
                micro_to_coins(settled.overrun_micro),
                admission.request_id,
            )

    def stop_stream(self, reason: str) -> None:
        """End a running stream early (its key was revoked): the relay sends a final
        error event and bills what was delivered."""
        if self._stop_reason is None:
            self._stop_reason = reason
            upstream = self._upstream
            if upstream is not None:
                upstream.close()

    def note_progress(self, admission: Admission, delivered: int) -> None:
        """At most once a second, record the output delivered so far (off the loop)."""
        now = time.monotonic()
        if now < self._next_progress or (self._progress is not None and not self._progress.done()):
            return
        self._next_progress = now + PROGRESS_SECONDS
        self._progress = asyncio.ensure_future(self._record_progress(admission, delivered))

    async def _record_progress(self, admission: Admission, delivered: int) -> None:
        try:
            stop = await self.book(
                lambda conn: self.gateway.service.calls.record_progress_in(
                    conn, admission, delivered
                )
            )
        except Exception:  # the next checkpoint tries again; the settle bills it anyway
            log.warning("lumen: could not record the progress of a stream", exc_info=True)
            return
        if stop is not None:
            self.stop_stream(stop)

    def publish_refusal(self, error: LumenError, model: str) -> None:
        """Tell open front ends, so JupyterLab can point at the fix (consent, refill)."""
        self.gateway.publish(
            "refused",
            {
                "code": error.code,
                "status": error.status,
                "model": model,
                "message": error.message,
                "source": self.request.context.source,
                **{k: v for k, v in error.details.items() if k == "next_refill_at"},
            },
            self.request.identity.username,
        )

    # -- upstream ---------------------------------------------------------------------------

    async def open_upstream(
        self, model: ModelSpec, payload: dict[str, Any], stream: bool
    ) -> tuple[EndpointSpec, Response]:
        upstreams = self.gateway.upstreams
        candidates = upstreams.candidates(model)
        if not candidates:
            raise UpstreamUnavailable(
                f"No healthy endpoint serves '{model.name}' right now; nothing was charged"
            )
        refused = 0
        # A whole answer must come within the timeout; a stream, each of its pieces.
        timeout = None if stream else upstreams.total_timeout
        read_timeout = upstreams.total_timeout if stream else None
        path = UPSTREAM_PATHS.get(self.kind, "embeddings")
        for endpoint in candidates:
            data = json.dumps({**payload, "model": endpoint.model}).encode()
            try:
                response = await upstreams.request(
                    endpoint,
                    "POST",
                    path,
                    body=data,
                    timeout=timeout,
                    read_timeout=read_timeout,
                )
                return endpoint, response
            except ConnectFailed as error:
                refused += 1
                upstreams.mark_failed(endpoint, describe(error))
                self.gateway.metrics.upstream_error(model.name, "connect")
            except TimeoutError:
                self.gateway.metrics.upstream_error(model.name, "timeout")
                raise UpstreamTimeout(
                    f"'{model.name}' did not answer in time; nothing was charged"
                ) from None
            except UpstreamError as error:
                self.gateway.metrics.upstream_error(model.name, "broken")
                log.warning(
                    "lumen: upstream %s of %s failed before answering: %s",
                    upstreams.where(endpoint),
                    model.name,
                    describe(error),
                )
        if refused == len(candidates):
            raise UpstreamUnavailable(
                f"No healthy endpoint serves '{model.name}' right now; nothing was charged"
            )
        raise self.upstream_error(502, b"", model.name)

    def upstream_error(
        self, status: int, raw: bytes, model: str, headers: Mapping[str, str] | None = None
    ) -> LumenError:
        """:func:`upstream_error`, counted, with the upstream's ``Retry-After`` passed on."""
        self.gateway.metrics.upstream_error(model, f"status_{status // 100}xx")
        retry_after = (headers or {}).get("Retry-After", "")
        if status in (429, 503) and re.fullmatch(r"[0-9]{1,6}|[A-Za-z0-9 ,:]{1,40}", retry_after):
            self.reply.set_header("Retry-After", retry_after)
        return upstream_error(status, raw, model)

    # -- relaying ---------------------------------------------------------------------------

    async def relay_once(self, admission: Admission, body: dict[str, Any], tokens_in: int) -> bool:
        model = admission.model
        endpoint, response = await self.open_upstream(model, body, stream=False)
        self._upstream = response
        try:
            async with response:
                raw = await response.read(limit=self.gateway.upstreams.max_answer_bytes)
        except TimeoutError:
            raise UpstreamTimeout(f"'{model.name}' did not answer in time") from None
        except UpstreamError as error:
            log.warning("lumen: the answer of %s broke: %s", model.name, describe(error))
            if self.client_gone:
                await self.settle(
                    admission, tokens_in, 0, status="aborted", estimated=True, http_status=None
                )
                return True
            raise self.upstream_error(502, b"", model.name) from None
        finally:
            self._upstream = None
        if response.status >= 400:
            raise self.upstream_error(response.status, raw, model.name, response.headers)
        try:
            data = json.loads(raw)
            if not isinstance(data, dict):
                raise ValueError
        except ValueError:
            raise UpstreamFailed(f"The upstream of '{model.name}' sent an invalid answer") from None
        usage = reported_tokens(data.get("usage"), with_output=self.kind != "embeddings")
        estimated = usage is None
        if usage is not None:
            used_in, used_out = usage
        else:
            book = StreamBook()
            # A whole answer's message counts like a stream's delta (content, reasoning,
            # tool calls); a completion's choice carries its text directly.
            answers = [
                {"delta": c["message"]} if isinstance(c, dict) and "message" in c else c
                for c in data.get("choices") or []
            ]
            book.note({"choices": answers})
            used_in, used_out = tokens_in, book.output.tokens
        await self.settle(
            admission, used_in, used_out, status="ok", estimated=estimated, http_status=200
        )
        if endpoint.model != model.name and "model" in data:
            data["model"] = model.name
            self.reply.send_json(data)
        else:
            self.reply.send_json_bytes(raw)  # the upstream's answer, byte for byte
        return True

    async def relay_stream(
        self, admission: Admission, body: dict[str, Any], tokens_in: int
    ) -> bool:
        model = admission.model
        reply = self.reply
        options = body.get("stream_options")
        caller_wants_usage = isinstance(options, dict) and options.get("include_usage") is True
        payload = {**body, "stream_options": {**(options or {}), "include_usage": True}}
        endpoint, response = await self.open_upstream(model, payload, stream=True)
        self._upstream = response
        rename = endpoint.model != model.name
        book = StreamBook()
        done = False
        failure: str | None = None
        gone = False
        async with response:
            if response.status >= 400:
                try:
                    raw = await response.read(limit=1024 * 1024)
                except UpstreamError:
                    raw = b""
                self._upstream = None
                raise self.upstream_error(response.status, raw, model.name, response.headers)
            reply.set_header("Content-Type", SSE_CONTENT_TYPE)
            reply.set_header("Cache-Control", "no-cache")
            reply.set_header("X-Accel-Buffering", "no")
            try:
                relayed = 0
                async for batch in sse_data_batches(response.chunks()):
                    for payload_line in batch:
                        if payload_line == DONE:
                            done = True
                            break
                        event = parse_event(payload_line)
                        book.note(event)
                        if book.error is not None:
                            failure = "error"
                            break
                        if is_usage_only(event) and not caller_wants_usage:
                            continue
                        if rename and "model" in event:
                            event["model"] = model.name
                            payload_line = json.dumps(event).encode()
                        reply.write(b"data: " + payload_line + b"\n\n")
                        relayed += 1
                        if relayed % YIELD_EVERY_EVENTS == 0:
                            await asyncio.sleep(0)  # a huge read must not hold the loop
                    if done or failure is not None or self._stop_reason is not None:
                        break
                    await reply.push()  # once per upstream read, not per event
                    self.note_progress(admission, book.output.tokens)  # what was sent
            except ClientGone:
                gone = True
            except MalformedEvent:
                failure = "malformed"
            except TimeoutError:
                failure = "timeout"
            except UpstreamError as error:
                log.warning("lumen: the stream of %s broke: %s", model.name, describe(error))
                failure = None if self.client_gone else "dropped"
            finally:
                self._upstream = None
        gone = gone or self.client_gone
        if self._stop_reason is not None and not done:
            failure = self._stop_reason
        if not done and failure is None and not gone:
            failure = "dropped"  # the upstream ended without [DONE]
        await self.bill_stream(admission, book, tokens_in, failure, gone)
        if gone:
            return True
        if failure is not None:
            if failure in ("error", "malformed", "timeout", "dropped"):
                self.gateway.metrics.upstream_error(model.name, f"stream_{failure}")
            reply.write(b"data: " + json.dumps(stream_error(model.name, failure)).encode())
            reply.write(b"\n\n")
        reply.write(b"data: [DONE]\n\n")
        with contextlib.suppress(ClientGone):
            await reply.end_stream()
        return True

    async def bill_stream(
        self,
        admission: Admission,
        book: StreamBook,
        tokens_in: int,
        failure: str | None,
        gone: bool,
    ) -> None:
        """Bill before [DONE]: the reported usage, else input plus delivered output."""
        complete = failure is None and not gone
        reported = reported_tokens(book.usage)
        if complete and reported is not None:
            used_in, used_out = reported
            estimated = False
        else:
            used_in = reported[0] if reported is not None else tokens_in
            used_out = book.output.tokens
            estimated = True
        status = "ok" if complete else ("aborted" if gone else "partial")
        await self.settle(
            admission, used_in, used_out, status=status, estimated=estimated, http_status=200
        )
