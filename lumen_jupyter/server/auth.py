"""Who is calling, and may they: the base handler every lumen endpoint uses.

Three kinds of caller reach the server:

* the browser or any client holding a Jupyter session or token - authenticated
  by jupyter_server's identity provider and authorized by its authorizer
  (resource ``lumen``), with XSRF enforced for cookie-based writes;
* a kernel started by this server, holding the *kernel credential* the server
  put in its environment (one per kernel, see :mod:`.credentials`) - accepted
  on the REST API and the model gateway;
* a script holding a personal ``sk_`` key - accepted on the model gateway only.

Bearer credentials never fall through to Jupyter's token check, and a key is
never accepted in a query string.  Request lines are logged with their query
values hidden, and REST bodies are read only up to a limit.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, TypeVar

from jupyter_server.auth import User
from jupyter_server.base.handlers import APIHandler
from jupyter_server.log import log_request as jupyter_log_request
from jupyter_server.prometheus.metrics import HTTP_REQUEST_DURATION_SECONDS
from tornado import web
from tornado.http1connection import HTTP1Connection

from ..core import strict_json
from ..core.accounts import Identity
from ..core.errors import (
    AuthenticationFailed,
    BadRequest,
    LumenError,
    PayloadTooLarge,
    PermissionDenied,
)
from ..core.keys import KEY_PREFIX
from ..core.redact import redact_uri
from ..core.service import LumenService
from .credentials import KERNEL_TOKEN_PREFIX, KernelCredentials

DEFAULT_MAX_BODY_BYTES = 1024 * 1024

T = TypeVar("T")


@dataclass(frozen=True)
class Principal:
    """The authenticated caller, resolved to the server's user."""

    identity: Identity
    account_id: int
    source: str  # session | kernel | api
    key_id: int | None = None


def bearer_token(handler: web.RequestHandler) -> str | None:
    header = handler.request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return value.strip() or None


def is_lumen_credential(token: str | None) -> bool:
    return bool(token) and (
        token.startswith(KEY_PREFIX) or token.startswith(KERNEL_TOKEN_PREFIX)  # type: ignore[union-attr]
    )


class ConfigurationFailed(LumenError):
    """lumen is not running: its configuration failed to load (every route says why)."""

    status = 503
    error_type = "service_unavailable"
    code = "lumen_config_error"


class LumenHandler(APIHandler):
    """Base for every lumen endpoint: auth, JSON bodies, errors, and off-loop DB work."""

    #: Which bearer credentials this endpoint accepts besides a Jupyter session.
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
    def identity(self) -> Identity:
        return self.settings["lumen_identity"]  # type: ignore[no-any-return]

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run blocking domain work (database) off the event loop."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, functools.partial(fn, *args, **kwargs))

    async def prepare(self) -> None:  # type: ignore[override]
        failure = self.settings.get("lumen_config_error")
        if failure is not None:
            await self._refuse_while_unconfigured(failure)
        token = bearer_token(self)
        if is_lumen_credential(token):
            assert token is not None
            self._lumen_bearer = True
            self._principal = await self._principal_from_bearer(token)
            who = self._principal.identity
            user = User(username=who.username, name=who.display_name)
            self.current_user = self._jupyter_current_user = user
            return
        await super().prepare()

    async def _refuse_while_unconfigured(self, failure: str) -> None:
        """503 with the reason to a caller this server knows; no details to anyone else."""
        token = bearer_token(self)
        if is_lumen_credential(token):
            assert token is not None
            self._lumen_bearer = True
            credentials: KernelCredentials = self.settings["lumen_kernel_credentials"]
            if credentials.valid(token):
                raise ConfigurationFailed(failure)
            # A personal key cannot be checked without the store: say only that lumen is down.
            raise ConfigurationFailed("lumen is unavailable: its configuration failed to load")
        await super().prepare()
        if not self.current_user:
            raise web.HTTPError(403, "Authentication required")
        raise ConfigurationFailed(failure)

    def check_xsrf_cookie(self) -> None:
        if self._lumen_bearer:
            return None  # no cookie is involved, so no cross-site forgery is possible
        return super().check_xsrf_cookie()

    async def _principal_from_bearer(self, token: str) -> Principal:
        identity = self.identity
        if token.startswith(KERNEL_TOKEN_PREFIX):
            credentials: KernelCredentials = self.settings["lumen_kernel_credentials"]
            if credentials.valid(token):
                account = await self._account_of(identity.username)
                return Principal(identity, account, "kernel")
            raise AuthenticationFailed(
                "Invalid kernel credential: its kernel has stopped; restart the kernel"
            )
        if not self.accepts_personal_keys:
            raise PermissionDenied(
                "Personal API keys work on the model API (/lumen/v1) only", code="key_not_allowed"
            )
        owner = self.service.known_key_owner(token) if self.key_checked_on_admission else None
        if owner is None:
            owner = await self.run(self.service.key_owner, token)
        account = await self._account_of(identity.username)
        if owner is None or owner.account_id != account:
            raise AuthenticationFailed(
                "Invalid API key: it is unknown or has been revoked", code="invalid_api_key"
            )
        return Principal(identity, account, "api", key_id=owner.key_id)

    async def _account_of(self, username: str) -> int:
        """The account id: from the service's cache when known, else off the event loop."""
        cached = self.service.cached_account(username)
        if cached is not None:
            return cached
        return await self.run(self.service.account, username)

    async def principal(self, action: str) -> Principal:
        """The caller, authenticated and authorized for ``action`` (read or write)."""
        if self._principal is not None:
            return self._principal
        user = self.current_user
        if not user:
            raise web.HTTPError(403, "Authentication required")
        if not self.authorizer.is_authorized(self, user, action, self.auth_resource):
            raise web.HTTPError(403, f"Not authorized to {action} {self.auth_resource}")
        account = await self._account_of(self.identity.username)
        self._principal = Principal(self.identity, account, "session")
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

    def send_json_bytes(self, body: bytes, status: int = 200) -> None:
        """Answer with a JSON document that is already encoded."""
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(body)

    def send_error_json(self, error: LumenError) -> None:
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

    def _log(self) -> None:
        """Log the finished request as jupyter_server does, minus wasted work.

        Its log function formats a debug line for every successful request, and the
        server's logger passes it on to handlers that drop it: on the model path that
        was ~7 % of the CPU of a call.  The line is skipped only when nothing would
        show it; the request metric is always recorded.
        """
        log_function = self.settings.get("log_function")
        if (
            isinstance(log_function, functools.partial)
            and log_function.func is jupyter_log_request
            and self.get_status() < 300
            and not shows_debug(self.log)
        ):
            if log_function.keywords.get("record_prometheus_metrics", True):
                record_request_time(self)
            return
        # Query values may hold anything, keys included: the log shows them hidden.
        self.request.uri = redact_uri(self.request.uri or "")
        super()._log()

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
    before any of its code runs (up to jupyter_server's 512 MB); streamed, it can
    refuse a declared length at once and stop a chunked body at the limit.
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

    async def prepare(self) -> None:  # type: ignore[override]
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


_TIMERS: dict[tuple[str, type, int], Any] = {}


def record_request_time(handler: web.RequestHandler) -> None:
    """jupyter_server's request-duration metric, with its labelled child looked up
    once per (method, handler, status) instead of on every request."""
    key = (handler.request.method or "", type(handler), handler.get_status())
    timer = _TIMERS.get(key)
    if timer is None:
        cls = type(handler)
        timer = _TIMERS[key] = HTTP_REQUEST_DURATION_SECONDS.labels(
            method=key[0], handler=f"{cls.__module__}.{cls.__name__}", status_code=key[2]
        )
    timer.observe(handler.request.request_time())


def shows_debug(logger: logging.Logger) -> bool:
    """Whether a debug record sent to ``logger`` would reach any handler."""
    if not logger.isEnabledFor(logging.DEBUG):
        return False
    current: logging.Logger | None = logger
    while current is not None:
        if any(handler.level <= logging.DEBUG for handler in current.handlers):
            return True
        if not current.propagate:
            return False
        current = current.parent
    return False


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
