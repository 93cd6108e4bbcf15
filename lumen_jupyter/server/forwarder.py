"""Hub mode's routes: every ``lumen/api/*`` and ``lumen/v1/*`` request passed on to the service.

A caller of the user's server is authenticated here as everywhere (see
:mod:`.hub_mode`); its request then goes to the lumen service straight (not
through the hub's proxy) on a keep-alive pool, with:

* the server's hub token as ``Authorization: token …`` - or, for a caller that
  sent a personal ``sk_`` key, that key unchanged;
* the attribution labels (``X-Lumen-Notebook``, ``-Cell``, ``-Conversation``,
  ``-Source``) and the body's own headers (type, length, ``Accept``), and nothing
  else: no cookie, no Jupyter token, no header naming a user;
* the body as it arrives, and the answer as it arrives: a model's stream and the
  coin meter's event stream reach the caller event by event.  A caller that goes
  away closes the request to the service, which then bills what was delivered.

The service answering nothing is a 503 (it may be restarting: retry), a broken
exchange a 502, both in lumen's JSON error shape.  The answers' URLs that point at
the service's own routes (a consent error's ``consent_url``, the OpenAPI
document's server) are given as this server's, where the caller can use them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from http.client import responses as reasons
from typing import Any
from urllib.parse import unquote

from tornado import httputil, web
from tornado.http1connection import HTTP1Connection
from tornado.iostream import StreamClosedError

from ..core.errors import LumenError, NotFound
from ..gateway.http_client import (
    ConnectFailed,
    HttpClient,
    Response,
    UpstreamError,
    describe,
)
from .base import LumenHandler, Principal
from .hub_mode import HubLink
from .model_api import CELL_HEADER, CONVERSATION_HEADER, NOTEBOOK_HEADER, SOURCE_HEADER
from .model_api import GatewayHandler as _ModelAPIRules
from .relayed_body import RelayedBody
from .routes import Routes

log = logging.getLogger("lumen_jupyter.forwarder")

KEEPALIVE_SECONDS = 15.0
"""How long an idle connection to the service is kept for reuse: well below the
service's own idle timeout (300 s), so the service never closes one first."""

MAX_CONNECTIONS = 100
"""Connections to the service at once; more requests wait for one."""

WHOLE_ANSWER_BYTES = 256 * 1024
"""An answer of declared length up to this is read whole and sent in one piece;
longer ones, and every answer of unknown length (a stream), go piece by piece."""

FORWARDED_REQUEST_HEADERS = (
    "Content-Type",
    "Content-Length",
    "Accept",
    "Last-Event-ID",
    NOTEBOOK_HEADER,
    CELL_HEADER,
    CONVERSATION_HEADER,
    SOURCE_HEADER,
)
"""The caller's headers passed on: the body's framing, and labels. Never identity."""

RELAYED_RESPONSE_HEADERS = (
    "Content-Type",
    "Cache-Control",
    "Retry-After",
    "x-should-retry",
    "X-Accel-Buffering",
)


class ServiceUnreachable(LumenError):
    """No connection to the lumen service (it may be restarting)."""

    status = 503
    retryable = True
    error_type = "service_unavailable"
    code = "lumen_service_unreachable"


class ServiceFailed(LumenError):
    """The exchange with the lumen service broke before its answer began."""

    status = 502
    retryable = True
    error_type = "api_error"
    code = "lumen_service_error"


class ServiceLink:
    """The connection pool to the service, and how a request is addressed to it."""

    def __init__(self, hub: HubLink, *, connect_timeout: float = 10.0) -> None:
        self.hub = hub
        self.client = HttpClient(
            connect_timeout=connect_timeout,
            tls=hub.tls,
            keepalive_seconds=KEEPALIVE_SECONDS,
            max_connections=MAX_CONNECTIONS,
            # The service is reached directly: the token must not pass through a
            # forward proxy named in the user's environment.
            environment_proxies=False,
        )

    def url(self, path: str, query: str) -> str:
        """The service's URL of ``lumen/<path>`` (``path`` as the caller sent it, quoted)."""
        segments = path.split("/")
        plain = [unquote(segment) for segment in segments]
        if any(segment in (".", "..") or "\\" in segment for segment in plain):
            raise NotFound("No such lumen route")
        if plain[:2] == ["api", "admin"]:
            raise NotFound(
                "The admin API is the lumen service's own: call it there with an admin "
                "credential, not through a user's server",
                code="not_found",
            )
        url = f"{self.hub.service_url}lumen/{path}"
        return f"{url}?{query}" if query else url

    def headers(self, incoming: httputil.HTTPHeaders, principal: Principal) -> dict[str, str]:
        """What the service is sent: the caller's body headers and labels, and the
        credential that names who pays - the server's, or the caller's own key."""
        headers = {"Host": self.hub.host, "Accept-Encoding": "identity"}
        for name in FORWARDED_REQUEST_HEADERS:
            value = incoming.get(name)
            if value is not None:
                headers[name] = value
        if principal.source == "kernel" and headers.get(SOURCE_HEADER) != "chat":
            headers[SOURCE_HEADER] = "kernel"  # a label: the service's books say where from
        if principal.source == "api":
            header = incoming.get("Authorization", "")
            headers["Authorization"] = "Bearer " + header.partition(" ")[2].strip()
        else:
            headers["Authorization"] = f"token {self.hub.token}"
        return headers

    def service_root(self) -> str:
        """The service's root as it names it in its answers."""
        return self.hub.service_url

    async def close(self) -> None:
        await self.client.close()


def _quiet(task: asyncio.Future[Any]) -> None:
    """Take a finished request's outcome, so an unawaited failure is not reported."""
    if not task.cancelled():
        task.exception()


@web.stream_request_body
class ForwardHandler(LumenHandler):
    """A ``lumen/api/*`` request, passed on to the service."""

    _body: RelayedBody | None = None
    _answer: asyncio.Future[Response] | None = None
    _upstream: Response | None = None
    _gone = False
    _early: asyncio.Future[None] | None = None

    @property
    def link(self) -> ServiceLink:
        return self.settings["lumen_service_link"]  # type: ignore[no-any-return]

    def _lumen_path(self) -> str:
        """The request's path after ``<base_url>lumen/``, still quoted as it came."""
        prefix = self.lumen_base_url + "lumen/"
        path = self.request.path
        if not path.startswith(prefix):  # the router matched it, so it starts so
            raise NotFound("No such lumen route")
        return path[len(prefix) :]

    def _has_body(self) -> bool:
        headers = self.request.headers
        if "chunked" in headers.get("Transfer-Encoding", "").lower():
            return True
        return headers.get("Content-Length", "0").strip() not in ("", "0")

    async def prepare(self) -> None:
        await super().prepare()
        if self._finished:
            return
        method = self.request.method or "GET"
        principal = await self.principal("read" if method in ("GET", "HEAD") else "write")
        link = self.link
        url = link.url(self._lumen_path(), self.request.query)
        headers = link.headers(self.request.headers, principal)
        body: bytes | RelayedBody = b""
        if self._has_body():
            body = self._body = RelayedBody()
            connection = self.request.connection
            if isinstance(connection, HTTP1Connection):
                # The service sets the limits; this server only relays, a window at a time.
                connection.set_max_body_size(1 << 40)
        answer = asyncio.ensure_future(link.client.request(method, url, headers=headers, body=body))
        answer.add_done_callback(_quiet)
        if self._body is not None:
            answer.add_done_callback(self._answered_early)
        self._answer = answer

    def _answered_early(self, answer: asyncio.Future[Response]) -> None:
        """The service answered while the caller's body was still coming (it refused
        it: too large, say): the caller gets the answer now, as from lumen itself."""
        body = self._body
        assert body is not None
        body.answered()
        if body.ended or self._gone or answer.cancelled() or answer.exception() is not None:
            return
        if answer.result().status >= 400:
            self._early = asyncio.ensure_future(self._relay_early())

    async def _relay_early(self) -> None:
        try:
            await self._relay()
        except LumenError as error:
            self.send_error_json(error)

    async def data_received(self, chunk: bytes) -> None:
        if self._body is not None:
            await self._body.feed(chunk)

    def on_connection_close(self) -> None:
        self._gone = True
        if self._body is not None:
            self._body.abort()
        answer = self._answer
        if self._upstream is not None:
            self._upstream.close()
        elif answer is not None:
            if not answer.done():
                answer.cancel()
            elif not answer.cancelled() and answer.exception() is None:
                answer.result().close()
        super().on_connection_close()

    async def get(self, *args: str) -> None:
        if self._early is not None:
            await self._early  # answering already
            return
        if self._body is not None:
            self._body.end()
        await self._relay()

    post = put = patch = delete = get

    # -- the answer -------------------------------------------------------------------

    async def _relay(self) -> None:
        answer = self._answer
        assert answer is not None
        try:
            response = await answer
        except asyncio.CancelledError:
            if self._gone:
                return
            raise
        except ConnectFailed as error:
            raise ServiceUnreachable(
                f"The lumen service cannot be reached ({describe(error)}); it may be "
                "restarting - try again in a moment, and if it persists tell your hub's "
                "administrator"
            ) from None
        except (UpstreamError, TimeoutError) as error:
            if self._gone:
                return
            raise ServiceFailed(
                f"The lumen service did not answer properly ({describe(error)}); try again"
            ) from None
        self._upstream = response
        if self._gone:
            response.close()
            return
        self.set_status(response.status, reasons.get(response.status, "Unknown"))
        for name in RELAYED_RESPONSE_HEADERS:
            value = response.headers.get(name)
            if value is not None:
                self.set_header(name, value)
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) <= WHOLE_ANSWER_BYTES:
            await self._relay_whole(response)
        else:
            if declared.isdigit():
                self.set_header("Content-Length", declared)
            await self._relay_stream(response)

    async def _relay_whole(self, response: Response) -> None:
        try:
            body = await response.read(WHOLE_ANSWER_BYTES)
        except (UpstreamError, TimeoutError) as error:
            if self._gone:
                return
            self.clear()
            raise ServiceFailed(
                f"The lumen service's answer broke off ({describe(error)}); try again"
            ) from None
        finally:
            response.close()
        self.finish(self._as_here(response.status, body))

    async def _relay_stream(self, response: Response) -> None:
        broken = False
        try:
            await self.flush()  # the head at once: an event stream's client knows it is on
            async for piece in response.chunks():
                self.write(piece)
                await self.flush()
        except StreamClosedError:
            self._gone = True
        except (UpstreamError, TimeoutError) as error:
            if not self._gone:
                log.warning("lumen: the service's answer broke off: %s", describe(error))
                broken = True
        finally:
            response.close()
        if self._gone:
            return
        if broken:
            # Headers and part of the answer are out: only a cut connection tells the
            # caller that the rest is missing (a clean end would look complete).
            connection = self.request.connection
            if isinstance(connection, HTTP1Connection):
                connection.close()
        with contextlib.suppress(StreamClosedError):
            await self.finish()

    def _as_here(self, status: int, body: bytes) -> bytes:
        """The service's own URLs in an answer (where to consent to a model), made
        this server's: the caller can reach these, and has the login they need."""
        here = f"{self.request.protocol}://{self.request.host}{self.lumen_base_url}"
        body = body.replace(self.link.service_root().encode(), here.encode())
        if self._lumen_path() == "api/openapi.json" and status == 200:
            return _with_server(body, f"{self.lumen_base_url.rstrip('/')}/lumen/api")
        return body

    def finish(self, *args: Any, **kwargs: Any) -> Any:
        # A host's finish may label every answer JSON: the service's type is kept.
        content_type = self._headers.get("Content-Type")
        if content_type:
            kwargs.setdefault("set_content_type", content_type)
        return super().finish(*args, **kwargs)


def _with_server(body: bytes, server: str) -> bytes:
    try:
        document = json.loads(body)
    except ValueError:
        return body
    if isinstance(document, dict):
        document["servers"] = [{"url": server}]
    return json.dumps(document).encode()


class ForwardModelHandler(ForwardHandler, _ModelAPIRules):
    """A ``lumen/v1/*`` request: also personal keys, and the model API's 401 rules."""

    accepts_personal_keys = True


def forward_routes(prefix: str) -> Routes:
    """Hub mode's routes under ``prefix`` (``<base_url>lumen``)."""
    return [
        (rf"{prefix}/api/.*", ForwardHandler),
        (rf"{prefix}/v1/.*", ForwardModelHandler),
    ]


__all__: list[str] = [
    "ForwardHandler",
    "ForwardModelHandler",
    "ServiceFailed",
    "ServiceLink",
    "ServiceUnreachable",
    "forward_routes",
]
