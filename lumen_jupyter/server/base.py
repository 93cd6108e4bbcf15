"""The base of every lumen endpoint, whichever process hosts it.

A handler here parses the request, asks the host's :class:`Authenticator` who is
calling, calls the service off the event loop, serializes the answer, and turns
every error into one JSON shape.  What differs between hosts - Jupyter's login
and XSRF rules in the server extension, personal keys and an admin token in the
standalone service - is the authenticator's, and the host's base class that the
endpoint classes are combined with (see :mod:`.routes`).

Bearer credentials never fall through to another check, a key is never accepted
in a query string, and REST bodies are read only up to a limit.
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from tornado import web
from tornado.http1connection import HTTP1Connection

from ..core import strict_json
from ..core.accounts import Identity
from ..core.errors import BadRequest, LumenError, PayloadTooLarge
from ..core.redact import redact_uri
from ..core.service import LumenService
from .rights import NO_RIGHTS, Rights

DEFAULT_MAX_BODY_BYTES = 1024 * 1024

T = TypeVar("T")


@dataclass(frozen=True)
class Principal:
    """The authenticated caller: who, which account, and with what credential."""

    identity: Identity
    account_id: int
    source: str  # session | kernel | api | admin
    key_id: int | None = None
    rights: Rights = NO_RIGHTS
    """Rights over other users' accounts (``api/admin/*``), from a hub token's scopes."""


class Authenticator(Protocol):
    """How a host learns who is calling (supplied in the ``lumen_authenticator`` setting)."""

    def claims(self, token: str) -> bool:
        """Whether a bearer token is one of lumen's own credentials (resolved by
        :meth:`from_bearer`, never by anything else)."""

    async def from_bearer(self, handler: LumenHandler, token: str) -> Principal:
        """The caller holding ``token``, or an :class:`AuthenticationFailed`."""

    async def from_session(self, handler: LumenHandler, action: str) -> Principal:
        """The caller of a request without a lumen credential, authorized for ``action``."""

    def authorize(self, handler: LumenHandler, principal: Principal, action: str) -> None:
        """Raise unless a caller known by a bearer credential may do ``action`` here."""

    async def refuse_unconfigured(self, handler: LumenHandler, failure: str) -> None:
        """Answer a request while lumen could not start (always raises)."""


def bearer_token(handler: web.RequestHandler) -> str | None:
    header = handler.request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return value.strip() or None


class ConfigurationFailed(LumenError):
    """lumen is not running: its configuration failed to load (every route says why)."""

    status = 503
    error_type = "service_unavailable"
    code = "lumen_config_error"


class LumenHandler(web.RequestHandler):
    """Base for every lumen endpoint: auth, JSON bodies, errors, and off-loop DB work."""

    #: Whether a personal ``sk_`` key may call this endpoint.
    accepts_personal_keys = False
    #: Whether the endpoint's own transaction checks the key again (model calls do), so
    #: that a key found active before may be taken from memory.
    key_checked_on_admission = False
    auth_resource = "lumen"

    _principal: Principal | None = None
    _lumen_bearer = False

    @property
    def service(self) -> LumenService:
        return self.settings["lumen_service"]  # type: ignore[no-any-return]

    @property
    def executor(self) -> Executor:
        return self.settings["lumen_executor"]  # type: ignore[no-any-return]

    @property
    def authenticator(self) -> Authenticator:
        return self.settings["lumen_authenticator"]  # type: ignore[no-any-return]

    @property
    def lumen_base_url(self) -> str:
        """Where lumen's routes start (``<base_url>`` of the host, ending in ``/``)."""
        return str(self.settings.get("lumen_base_url") or self.settings.get("base_url") or "/")

    @property
    def identity(self) -> Identity:
        """The authenticated caller (only after :meth:`principal`)."""
        if self._principal is None:
            raise RuntimeError("identity asked before the caller was authenticated")
        return self._principal.identity

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run blocking domain work (database) off the event loop."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, functools.partial(fn, *args, **kwargs))

    async def prepare(self) -> None:
        failure = self.settings.get("lumen_config_error")
        if failure is not None:
            await self.authenticator.refuse_unconfigured(self, failure)
        token = bearer_token(self)
        if token is not None and self.authenticator.claims(token):
            self._lumen_bearer = True
            self._principal = await self.authenticator.from_bearer(self, token)
            return
        await self.host_prepare()

    async def host_prepare(self) -> None:
        """The host base class's own ``prepare`` (Jupyter's login and XSRF checks)."""
        result = super().prepare()
        if result is not None:
            await result

    def check_xsrf_cookie(self) -> None:
        if self._lumen_bearer:
            return None  # no cookie is involved, so no cross-site forgery is possible
        return super().check_xsrf_cookie()

    async def principal(self, action: str) -> Principal:
        """The caller, authenticated and authorized for ``action`` (read or write)."""
        if self._principal is None:
            self._principal = await self.authenticator.from_session(self, action)
        else:
            self.authenticator.authorize(self, self._principal, action)
        return self._principal

    def raw_body(self) -> bytes:
        return self.request.body

    def json_body(self) -> dict[str, Any]:
        raw = self.raw_body()
        if not raw:
            return {}
        data = strict_json.loads(raw, code="invalid_request")
        if not isinstance(data, dict):
            raise BadRequest("The request body must be a JSON object")
        return data

    def send_json(self, data: Any, status: int = 200) -> None:
        self.send_json_bytes(json.dumps(data).encode(), status)

    def finish(self, *args: Any, **kwargs: Any) -> asyncio.Future[None]:
        connection = self.request.connection
        if (
            not self._headers_written
            and isinstance(connection, HTTP1Connection)
            and not connection._read_finished
        ):
            # Answered before the request was read to its end (a streamed handler that
            # refuses in ``prepare``): tornado then closes the connection after this
            # answer without saying so, and a proxy that keeps its connections to us
            # (JupyterHub's) would send the next request, perhaps another user's, into
            # the closed socket and answer it 503.  Saying so keeps the proxy off it.
            self.set_header("Connection", "close")
        return super().finish(*args, **kwargs)  # the host's base may take more (Jupyter's)

    def send_json_bytes(self, body: bytes, status: int = 200) -> None:
        """Answer with a JSON document that is already encoded."""
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(body)

    def send_error_json(self, error: LumenError) -> None:
        """The one error translator: a :class:`LumenError` as OpenAI-style JSON."""
        request = self.request
        error = error.at(f"{request.protocol}://{request.host}{self.lumen_base_url}")
        self.clear_header("Content-Type")
        self.set_status(error.status)
        if error.status == 429:
            self.set_header("x-should-retry", "true" if error.retryable else "false")
        self.send_json(error.to_json(), status=error.status)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc_info = kwargs.get("exc_info")
        error = exc_info[1] if exc_info else None
        if isinstance(error, LumenError):
            self.send_error_json(error)
            return
        if isinstance(error, web.HTTPError):
            message = error.log_message or error.reason or "error"
            if status_code == 403 and "Authentication" not in message:
                code = "forbidden"
            else:
                code = {401: "unauthenticated", 403: "unauthenticated", 404: "not_found"}.get(
                    status_code, "error"
                )
            self.set_header("Content-Type", "application/json")
            body = {"error": {"message": message, "type": "request_error", "code": code}}
            self.finish(json.dumps(body))
            return
        self.set_header("Content-Type", "application/json")
        body = {
            "error": {"message": "Internal server error", "type": "api_error", "code": "internal"}
        }
        self.finish(json.dumps(body))

    def _request_summary(self) -> str:
        request = self.request
        return f"{request.method} {redact_uri(request.uri or '')} ({request.remote_ip})"

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if isinstance(value, LumenError):
            return  # an expected answer, already sent as JSON; nothing secret to log
        super().log_exception(typ, value, tb)


@web.stream_request_body
class RestHandler(LumenHandler):
    """A REST endpoint: its body is read only up to ``max_body_bytes`` (413 above).

    A handler that is not streamed gets its whole body read into memory by tornado
    before any of its code runs; streamed, it can refuse a declared length at once
    and stop a chunked body at the limit.
    """

    _rest_body: bytearray | None = None
    _body_refused = False

    @property
    def max_body_bytes(self) -> int:
        return int(self.settings.get("lumen_max_body_bytes", DEFAULT_MAX_BODY_BYTES))

    def _too_large(self) -> PayloadTooLarge:
        return PayloadTooLarge(
            f"The request body is larger than the limit of {self.max_body_bytes} bytes"
        )

    async def prepare(self) -> None:
        self._rest_body = bytearray()
        declared = self.request.headers.get("Content-Length", "")
        if declared.isascii() and declared.isdigit() and int(declared) > self.max_body_bytes:
            raise self._too_large()
        connection = self.request.connection
        if isinstance(connection, HTTP1Connection):
            connection.set_max_body_size(self.max_body_bytes * 2)
        await super().prepare()

    def data_received(self, chunk: bytes) -> None:
        if self._body_refused or self._rest_body is None:
            return
        self._rest_body += chunk
        if len(self._rest_body) > self.max_body_bytes:
            self._body_refused = True
            self._rest_body = bytearray()
            self.send_error_json(self._too_large())

    def raw_body(self) -> bytes:
        if self._body_refused:
            raise self._too_large()
        return bytes(self._rest_body or b"")


def lumen_endpoint(action: str) -> Callable[[Callable[..., Awaitable[None]]], Callable[..., Any]]:
    """Authenticate and authorize for ``action``, and turn domain errors into JSON."""

    def decorate(method: Callable[..., Awaitable[None]]) -> Callable[..., Any]:
        @functools.wraps(method)
        async def wrapper(self: LumenHandler, *args: Any, **kwargs: Any) -> None:
            if self._finished:  # answered (413) while the body was still arriving
                return
            await self.principal(action)
            try:
                await method(self, *args, **kwargs)
            except LumenError as error:
                self.send_error_json(error)

        return wrapper

    return decorate
