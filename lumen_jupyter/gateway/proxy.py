"""The OpenAI-compatible gateway under ``<base_url>lumen/v1/``.

Every call is authenticated (personal key, kernel credential or Jupyter
session), checked for access, admitted by reserving its worst-case cost, sent
to a healthy upstream, and settled to its real usage before the client sees
the end of the answer.  Streams are relayed chunk by chunk, never buffered.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import unquote

from sqlalchemy import Connection
from tornado import web
from tornado.http1connection import HTTP1Connection
from tornado.iostream import StreamClosedError

from ..core import billing, strict_json
from ..core.access import may_call
from ..core.calls import Admission
from ..core.catalog import EndpointSpec, ModelSpec
from ..core.errors import (
    AuthenticationFailed,
    BadRequest,
    BudgetExhausted,
    ConsentRequired,
    LumenError,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    RateLimited,
    UpstreamFailed,
    UpstreamUnavailable,
)
from ..core.money import micro_to_coins
from ..core.redact import redact
from ..core.tokens import count_message_tokens, count_prompt_tokens
from ..server.accountant import Accountant
from ..server.auth import LumenHandler, Principal, bearer_token, lumen_endpoint
from .http_client import ConnectFailed, Response, UpstreamError, describe
from .ratelimit import RateLimiter
from .relay import (
    DONE,
    MalformedEvent,
    StreamBook,
    is_usage_only,
    parse_event,
    reported_tokens,
    sse_data_batches,
)
from .upstream import Upstreams

if TYPE_CHECKING:
    from ..server.app import LumenJupyter

log = logging.getLogger("lumen_jupyter.gateway")

T = TypeVar("T")

SSE_CONTENT_TYPE = "text/event-stream; charset=utf-8"
YIELD_EVERY_EVENTS = 64
"""While relaying a large upstream read, give other requests a turn this often."""
PROGRESS_SECONDS = 1.0
"""A stream records its delivered output this often (billed if the server dies), and
learns then whether its key was revoked by another process."""
MAX_CHOICES = {"n": 128, "best_of": 20}

NOTEBOOK_HEADER = "X-Lumen-Notebook"
CELL_HEADER = "X-Lumen-Cell"
CONVERSATION_HEADER = "X-Lumen-Conversation"
SOURCE_HEADER = "X-Lumen-Source"


def mask_secrets(text: str) -> str:
    """Hide the configured upstream keys, and anything shaped like a key, in relayed text."""
    return redact(text)


class UpstreamTimeout(LumenError):
    status = 504
    error_type = "api_error"
    code = "upstream_timeout"


class Gateway:
    """Routing, health and rate limits shared by the gateway's handlers."""

    def __init__(self, app: LumenJupyter) -> None:
        self.service = app.service
        self.upstreams = Upstreams(
            app.service.catalog,
            total_timeout=app.upstream_timeout,
            connect_timeout=app.upstream_connect_timeout,
        )
        self.service.status_provider = self.upstreams.status
        self.service.calls.default_output_cap = app.default_max_output_tokens
        self.rate_limiter = RateLimiter(app.rate_limit_per_minute)
        self.rate_limit_sessions = app.rate_limit_sessions
        self.max_request_bytes = app.max_request_bytes
        self.health_interval = app.health_interval
        self.started = int(time.time())
        self._tasks: list[asyncio.Task[None]] = []
        self._streams_by_key: dict[int, set[ModelCallHandler]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self.service.revocation_listeners.append(self._key_revoked)

    def track(self, key_id: int, handler: ModelCallHandler) -> None:
        """Remember a running call made with a personal key, to stop it on revocation."""
        self._loop = asyncio.get_running_loop()
        self._streams_by_key.setdefault(key_id, set()).add(handler)

    def untrack(self, key_id: int, handler: ModelCallHandler) -> None:
        running = self._streams_by_key.get(key_id)
        if running is not None:
            running.discard(handler)
            if not running:
                del self._streams_by_key[key_id]

    def _key_revoked(self, key_id: int) -> None:
        """Called from the thread that revoked the key: stop its streams on the loop."""
        loop = self._loop
        if loop is not None and key_id in self._streams_by_key:
            loop.call_soon_threadsafe(self._stop_streams_of, key_id)

    def _stop_streams_of(self, key_id: int) -> None:
        for handler in list(self._streams_by_key.get(key_id, ())):
            handler.stop_stream("revoked")

    def routes(self, prefix: str) -> list[tuple[str, type[LumenHandler]]]:
        return [
            (f"{prefix}/models", ModelsHandler),
            (rf"{prefix}/models/(.+)", ModelHandler),
            (f"{prefix}/chat/completions", ChatCompletionsHandler),
            (f"{prefix}/completions", CompletionsHandler),
            (f"{prefix}/embeddings", EmbeddingsHandler),
        ]

    def start_background_tasks(self) -> None:
        if self.health_interval > 0 and not self._tasks:
            task = asyncio.ensure_future(self.upstreams.probe_forever(self.health_interval))
            self._tasks.append(task)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        self._tasks.clear()
        await self.upstreams.close()

    def model_object(self, model: ModelSpec) -> dict[str, Any]:
        """An OpenAI model object with Lumen's extra fields (unknown ones omitted)."""
        status, configured, healthy = self.upstreams.status(model)
        data: dict[str, Any] = {
            "id": model.name,
            "object": "model",
            "created": self.started,
            "owned_by": "lumen",
            "status": status,
            "input_cost_per_million": float(micro_to_coins(model.input_price_micro)),
            "output_cost_per_million": float(micro_to_coins(model.output_price_micro)),
            "instances": {"configured": configured, "healthy": healthy},
            "requests": self.upstreams.request_counts(model.name),
        }
        optional = {
            "max_model_len": model.max_model_len,
            "description": model.description,
            "max_output_tokens": model.max_output_tokens,
            "supports_function_calling": model.supports_function_calling,
            "supports_reasoning": model.supports_reasoning,
            "knowledge_cutoff": model.knowledge_cutoff,
            "input_modalities": list(model.input_modalities) if model.input_modalities else None,
            "output_modalities": list(model.output_modalities) if model.output_modalities else None,
        }
        data.update({k: v for k, v in optional.items() if v is not None})
        return data


class GatewayHandler(LumenHandler):
    """Base of the ``/v1`` handlers: OpenAI-style errors and the Bearer rules."""

    accepts_personal_keys = True

    @property
    def gateway(self) -> Gateway:
        return self.settings["lumen_gateway"]  # type: ignore[no-any-return]

    async def prepare(self) -> None:  # type: ignore[override]
        header = self.request.headers.get("Authorization")
        if header is not None and header.strip():
            scheme = header.strip().split(" ", 1)[0].lower()
            if scheme not in ("bearer", "token") or not header.strip().count(" "):
                raise BadRequest(
                    "Malformed Authorization header: send 'Authorization: Bearer sk_…'",
                    code="invalid_authorization",
                )
        try:
            await super().prepare()
        except web.HTTPError as error:
            # Jupyter answers a caller it does not know with 403 (its XSRF or login
            # check); on the model API that is a missing or invalid key: 401.
            if error.status_code != 403 or getattr(self, "_jupyter_current_user", None):
                raise
            if header is None or not header.strip():
                raise AuthenticationFailed(
                    "Missing API key: send 'Authorization: Bearer sk_…'", code="missing_api_key"
                ) from None
            raise AuthenticationFailed("Invalid API key or token", code="invalid_api_key") from None

    async def principal(self, action: str) -> Principal:
        if self._principal is None and not self.current_user:
            raise AuthenticationFailed(
                "Missing API key: send 'Authorization: Bearer sk_…'", code="missing_api_key"
            )
        return await super().principal(action)


class ModelsHandler(GatewayHandler):
    """The models callable now (OpenAI's list), each with its ``access``."""

    @lumen_endpoint("read")
    async def get(self) -> None:
        visible = await self.run(self.service.visible_models, self.identity)
        data = [
            {**self.gateway.model_object(model), "access": access.value}
            for model, access in visible
        ]
        self.send_json({"object": "list", "data": data})


class ModelHandler(GatewayHandler):
    """One model: also one that needs the caller's consent first, with its ``access``
    (``needs_ack``) and where to consent, so a client that looks before calling does
    not tell its user the model does not exist."""

    @lumen_endpoint("read")
    async def get(self, name: str) -> None:
        found = await self.run(self.service.findable_model, self.identity, name)
        if found is None:
            raise NotFound(f"The model '{name}' does not exist", code="model_not_found")
        model, access = found
        data = {**self.gateway.model_object(model), "access": access.value}
        if not may_call(access, self.service.catalog.require_consent):
            consent = ConsentRequired(name).at(self._root_url()).to_json()["error"]
            data["consent"] = {
                "message": consent["message"],
                "consent_url": consent["consent_url"],
                "profile_url": consent["profile_url"],
            }
        self.send_json(data)

    def _root_url(self) -> str:
        return f"{self.request.protocol}://{self.request.host}{self.base_url}"


@web.stream_request_body
class ModelCallHandler(GatewayHandler):
    """A model call: admit, relay, settle."""

    endpoint_kind = "chat"
    key_checked_on_admission = True

    _body: bytearray
    _too_large = False
    _client_gone = False
    _upstream: Response | None = None
    _stop_reason: str | None = None
    _rate_slot: object | None = None
    _output_limit = 0
    _next_progress = 0.0
    _progress: asyncio.Future[None] | None = None

    async def prepare(self) -> None:  # type: ignore[override]
        self._body = bytearray()
        await super().prepare()
        declared = self.request.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > self.gateway.max_request_bytes:
            raise PayloadTooLarge(self._too_large_message())
        connection = self.request.connection
        if isinstance(connection, HTTP1Connection):
            connection.set_max_body_size(self.gateway.max_request_bytes * 2)

    def _too_large_message(self) -> str:
        limit_mb = self.gateway.max_request_bytes / (1024 * 1024)
        return f"The request body is larger than the limit of {limit_mb:g} MB"

    def data_received(self, chunk: bytes) -> None:
        if self._too_large:
            return
        self._body += chunk
        if len(self._body) > self.gateway.max_request_bytes:
            # A body without a declared length (chunked) shows its size only now:
            # answer at once and let tornado close the connection instead of reading
            # the rest of it.
            self._too_large = True
            self._body = bytearray()
            self.send_error_json(PayloadTooLarge(self._too_large_message()))

    def on_connection_close(self) -> None:
        self._client_gone = True
        upstream = self._upstream
        if upstream is not None:
            upstream.close()
        super().on_connection_close()

    # -- request parsing ------------------------------------------------------------------

    def parse_body(self) -> dict[str, Any]:
        """The request as a JSON object whose fields have the types OpenAI gives them."""
        if self._too_large:
            raise PayloadTooLarge(self._too_large_message())
        body = strict_json.loads(bytes(self._body))
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

    def input_tokens(self, body: dict[str, Any]) -> int:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise BadRequest("'messages' must be a non-empty list", param="messages")
        if not all(isinstance(m, dict) for m in messages):
            raise BadRequest("each message must be an object", param="messages")
        return count_message_tokens(messages)

    @staticmethod
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

    def capped(self, body: dict[str, Any], admission: Admission) -> dict[str, Any]:
        """The request to send upstream: its output limit is the budget that was reserved,
        so the upstream cannot produce (or bill) more than the reservation covers."""
        if self.endpoint_kind == "embeddings":
            return body
        asked = [f for f in ("max_completion_tokens", "max_tokens") if body.get(f) is not None]
        return {**body, **dict.fromkeys(asked or ["max_tokens"], admission.output_budget)}

    @staticmethod
    def max_output(body: dict[str, Any]) -> int | None:
        for field in ("max_completion_tokens", "max_tokens"):
            value = body.get(field)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise BadRequest(f"'{field}' must be a positive integer", param=field)
            return value
        return None

    def call_context(self, principal: Principal) -> billing.CallContext:
        headers = self.request.headers

        def header(name: str, limit: int) -> str | None:
            value = headers.get(name)
            return unquote(value)[:limit] if value else None

        source = principal.source
        if source in ("kernel", "session") and headers.get(SOURCE_HEADER) == "chat":
            source = "chat"
        return billing.CallContext(
            account_id=principal.account_id,
            source=source,
            key_id=principal.key_id,
            notebook=header(NOTEBOOK_HEADER, 1024),
            cell=header(CELL_HEADER, 64),
            conversation=header(CONVERSATION_HEADER, 64),
        )

    def check_rate_limit(self, principal: Principal) -> None:
        if principal.source == "api" or self.gateway.rate_limit_sessions:
            who = principal.key_id if principal.key_id is not None else principal.source
            wait = self.gateway.rate_limiter.retry_after(who)
            if wait is None:
                self._rate_slot = who
            else:
                self.set_header("Retry-After", str(int(wait) + 1))
                raise RateLimited(
                    f"Rate limit of {self.gateway.rate_limiter.per_minute} calls per minute "
                    f"reached; retry in {int(wait) + 1} s"
                )

    # -- the call -------------------------------------------------------------------------

    @lumen_endpoint("write")
    async def post(self) -> None:
        if self._finished:  # answered 413 while the body was still arriving
            return
        principal = self._principal
        assert principal is not None
        body = self.parse_body()
        input_tokens = self.input_tokens(body)
        generates = self.endpoint_kind != "embeddings"
        max_output = self.max_output(body) if generates else None
        choices = self.choices(body) if generates else 1
        self.check_rate_limit(principal)
        try:
            ctx = self.call_context(principal)
            outcome = await self.book(
                lambda conn: self.service.calls.open_call_in(
                    conn,
                    self.identity,
                    ctx,
                    body["model"],
                    endpoint=self.endpoint_kind,
                    input_tokens=input_tokens,
                    max_output_tokens=max_output,
                    choices=choices,
                )
            )
            admission = self.service.calls.admission_or_raise(outcome)
        except LumenError as refused:
            if self._rate_slot is not None:  # a refused call does not count
                self.gateway.rate_limiter.give_back(self._rate_slot)
            if isinstance(refused, (BudgetExhausted, PermissionDenied)):
                self.publish_refusal(refused, body["model"], principal)
            raise
        self.gateway.upstreams.record_request(admission.model.name)
        body = self.capped(body, admission)
        self._output_limit = admission.output_budget * choices
        streaming = bool(body.get("stream")) and generates
        if streaming and admission.key_id is not None:  # a revocation stops it
            self.gateway.track(admission.key_id, self)
        settled = False
        try:
            if streaming:
                settled = await self.relay_stream(admission, body, input_tokens)
            else:
                settled = await self.relay_once(admission, body, input_tokens)
        finally:
            if streaming and admission.key_id is not None:
                self.gateway.untrack(admission.key_id, self)
            if not settled:
                await self.book(
                    lambda conn: self.service.calls.release_in(
                        conn, admission, status="error", http_status=None
                    )
                )
            self.settings["lumen_events"].publish(
                "usage", {"model": admission.model.name}, self.identity.username
            )

    @property
    def accountant(self) -> Accountant:
        return self.settings["lumen_accountant"]  # type: ignore[no-any-return]

    async def book(self, write: Callable[[Connection], T]) -> T:
        """Write to the books, in the accountant's next transaction (off the event loop)."""
        return await self.accountant.run(write)

    async def settle(
        self,
        admission: Admission,
        input_tokens: int,
        output_tokens: int,
        *,
        status: str,
        estimated: bool,
        http_status: int | None,
    ) -> None:
        """Charge the call, in the accountant's next transaction.

        Output is counted at most up to what was reserved; a cost above the call's cap
        is not billed but recorded on the request and logged for the admin."""
        settled = await self.book(
            lambda conn: self.service.calls.settle_in(
                conn,
                admission,
                input_tokens,
                output_tokens,
                status=status,
                estimated=estimated,
                http_status=http_status,
                output_limit=self._output_limit,
            )
        )
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
                lambda conn: self.service.calls.record_progress_in(conn, admission, delivered)
            )
        except Exception:  # the next checkpoint tries again; the settle bills it anyway
            log.warning("lumen: could not record the progress of a stream", exc_info=True)
            return
        if stop is not None:
            self.stop_stream(stop)

    def publish_refusal(self, error: LumenError, model: str, principal: Principal) -> None:
        """Tell open front ends, so JupyterLab can point at the fix (consent, refill)."""
        self.settings["lumen_events"].publish(
            "refused",
            {
                "code": error.code,
                "status": error.status,
                "model": model,
                "message": error.message,
                "source": principal.source,
                **{k: v for k, v in error.details.items() if k == "next_refill_at"},
            },
            principal.identity.username,
        )

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
        for endpoint in candidates:
            data = json.dumps({**payload, "model": endpoint.model}).encode()
            try:
                response = await upstreams.request(
                    endpoint,
                    "POST",
                    self.upstream_path,
                    body=data,
                    timeout=timeout,
                    read_timeout=read_timeout,
                )
                return endpoint, response
            except ConnectFailed as error:
                refused += 1
                upstreams.mark_failed(endpoint, describe(error))
            except TimeoutError:
                raise UpstreamTimeout(
                    f"'{model.name}' did not answer in time; nothing was charged"
                ) from None
            except UpstreamError as error:
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

    @property
    def upstream_path(self) -> str:
        return {"chat": "chat/completions", "completions": "completions"}.get(
            self.endpoint_kind, "embeddings"
        )

    def upstream_error(
        self, status: int, raw: bytes, model: str, headers: Mapping[str, str] | None = None
    ) -> LumenError:
        """4xx pass through with their message; 429 and 503 keep their status and
        ``Retry-After`` and may be retried; anything else is a generic 502.

        Two exceptions keep secrets in: a 401/403 from upstream concerns the
        gateway's own upstream credential, so it becomes a generic failure; and
        anything shaped like a key is masked in a message that passes through.
        """
        retry_after = (headers or {}).get("Retry-After", "")
        if status in (429, 503) and re.fullmatch(r"[0-9]{1,6}|[A-Za-z0-9 ,:]{1,40}", retry_after):
            self.set_header("Retry-After", retry_after)
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
                    message = mask_secrets(detail["message"][:2000])
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

    async def relay_once(
        self, admission: Admission, body: dict[str, Any], input_tokens: int
    ) -> bool:
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
            if self._client_gone:
                await self.settle(
                    admission,
                    input_tokens,
                    0,
                    status="aborted",
                    estimated=True,
                    http_status=None,
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
        usage = reported_tokens(data.get("usage"), with_output=self.endpoint_kind != "embeddings")
        estimated = usage is None
        if usage is not None:
            used_in, used_out = usage
        else:
            book = StreamBook()
            # A whole answer's message counts like a stream's delta (content, reasoning,
            # tool calls); a completion's choice carries its text directly.
            choices = [
                {"delta": c["message"]} if isinstance(c, dict) and "message" in c else c
                for c in data.get("choices") or []
            ]
            book.note({"choices": choices})
            used_in, used_out = input_tokens, book.output.tokens
        await self.settle(
            admission,
            used_in,
            used_out,
            status="ok",
            estimated=estimated,
            http_status=200,
        )
        if endpoint.model != model.name and "model" in data:
            data["model"] = model.name
            self.send_json(data)
        else:
            self.send_json_bytes(raw)  # the upstream's answer, byte for byte
        return True

    async def relay_stream(
        self, admission: Admission, body: dict[str, Any], input_tokens: int
    ) -> bool:
        model = admission.model
        options = body.get("stream_options")
        caller_wants_usage = isinstance(options, dict) and options.get("include_usage") is True
        payload = {**body, "stream_options": {**(options or {}), "include_usage": True}}
        endpoint, response = await self.open_upstream(model, payload, stream=True)
        self._upstream = response
        rename = endpoint.model != model.name
        book = StreamBook()
        done = False
        failure: str | None = None
        async with response:
            if response.status >= 400:
                try:
                    raw = await response.read(limit=1024 * 1024)
                except UpstreamError:
                    raw = b""
                self._upstream = None
                raise self.upstream_error(response.status, raw, model.name, response.headers)
            self.set_header("Content-Type", SSE_CONTENT_TYPE)
            self.set_header("Cache-Control", "no-cache")
            self.set_header("X-Accel-Buffering", "no")
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
                        self.write(b"data: " + payload_line + b"\n\n")
                        relayed += 1
                        if relayed % YIELD_EVERY_EVENTS == 0:
                            await asyncio.sleep(0)  # a huge read must not hold the loop
                    if done or failure is not None or self._stop_reason is not None:
                        break
                    await self.flush()  # once per upstream read, not per event
                    self.note_progress(admission, book.output.tokens)  # what was sent
            except StreamClosedError:
                self._client_gone = True
            except MalformedEvent:
                failure = "malformed"
            except TimeoutError:
                failure = "timeout"
            except UpstreamError as error:
                log.warning("lumen: the stream of %s broke: %s", model.name, describe(error))
                failure = None if self._client_gone else "dropped"
            finally:
                self._upstream = None
        if self._stop_reason is not None and not done:
            failure = self._stop_reason
        if not done and failure is None and not self._client_gone:
            failure = "dropped"  # the upstream ended without [DONE]
        await self.bill_stream(admission, book, input_tokens, failure)
        if self._client_gone:
            return True
        if failure is not None:
            self.write(b"data: " + json.dumps(self.stream_error(model.name, failure)).encode())
            self.write(b"\n\n")
        self.write(b"data: [DONE]\n\n")
        with contextlib.suppress(StreamClosedError):
            # jupyter_server's APIHandler.finish() would otherwise label a stream that is
            # sent in one piece (a short answer, read upstream at once) as JSON.
            await self.finish(set_content_type=SSE_CONTENT_TYPE)
        return True

    async def bill_stream(
        self, admission: Admission, book: StreamBook, input_tokens: int, failure: str | None
    ) -> None:
        """Bill before [DONE]: the reported usage, else input plus delivered output."""
        complete = failure is None and not self._client_gone
        reported = reported_tokens(book.usage)
        if complete and reported is not None:
            used_in, used_out = reported
            estimated = False
        else:
            used_in = reported[0] if reported is not None else input_tokens
            used_out = book.output.tokens
            estimated = True
        status = "ok" if complete else ("aborted" if self._client_gone else "partial")
        await self.settle(
            admission,
            used_in,
            used_out,
            status=status,
            estimated=estimated,
            http_status=200,
        )

    @staticmethod
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


class ChatCompletionsHandler(ModelCallHandler):
    endpoint_kind = "chat"


class CompletionsHandler(ModelCallHandler):
    endpoint_kind = "completions"

    def input_tokens(self, body: dict[str, Any]) -> int:
        prompt = body.get("prompt")
        if not isinstance(prompt, (str, list)) or not prompt:
            raise BadRequest("'prompt' is required", param="prompt")
        return count_prompt_tokens(prompt)


class EmbeddingsHandler(ModelCallHandler):
    endpoint_kind = "embeddings"

    def input_tokens(self, body: dict[str, Any]) -> int:
        value = body.get("input")
        if not isinstance(value, (str, list)) or not value:
            raise BadRequest("'input' is required", param="input")
        return count_prompt_tokens(value)


__all__ = ["Gateway", "bearer_token"]
