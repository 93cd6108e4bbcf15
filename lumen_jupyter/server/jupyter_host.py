"""How the Jupyter server extension hosts lumen's endpoints, and who may call them.

Three kinds of caller reach a user's own Jupyter server:

* the browser or any client holding a Jupyter session or token - authenticated
  by jupyter_server's identity provider and authorized by its authorizer
  (resource ``lumen``), with XSRF enforced for cookie-based writes;
* a kernel started by this server, holding the *kernel credential* the server
  put in its environment (one per kernel, see :mod:`.credentials`) - accepted
  on the REST API and the model API;
* a script holding a personal ``sk_`` key - accepted on the model API only.

Every one of them is the server's one user.  The endpoint classes are combined
with jupyter_server's ``APIHandler`` here, so that Jupyter's own checks (host,
origin, CORS, activity) and its request log and metrics apply to them.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from jupyter_server.auth import User
from jupyter_server.base.handlers import APIHandler
from jupyter_server.log import log_request as jupyter_log_request
from jupyter_server.prometheus.metrics import HTTP_REQUEST_DURATION_SECONDS
from tornado import web

from ..core.accounts import Identity
from ..core.errors import AuthenticationFailed, PermissionDenied
from ..core.keys import KEY_PREFIX
from ..core.redact import redact_uri
from ..gateway.call import SSE_CONTENT_TYPE
from .base import ConfigurationFailed, LumenHandler, Principal, bearer_token
from .credentials import KERNEL_TOKEN_PREFIX, KernelCredentials
from .routes import Routes, combine


class JupyterAuthenticator:
    """Callers of the server extension, all resolved to its one user (``identity``)."""

    def __init__(self, identity: Identity | None, credentials: KernelCredentials) -> None:
        self.identity = identity
        self.credentials = credentials

    def claims(self, token: str) -> bool:
        return token.startswith(KEY_PREFIX) or token.startswith(KERNEL_TOKEN_PREFIX)

    def _known_user(self, handler: LumenHandler, principal: Principal) -> Principal:
        who = principal.identity
        user = User(username=who.username, name=who.display_name)
        handler.current_user = handler._jupyter_current_user = user  # type: ignore[attr-defined]
        return principal

    async def _account(self, handler: LumenHandler, username: str) -> int:
        cached = handler.service.cached_account(username)
        if cached is not None:
            return cached
        return await handler.run(handler.service.account, username)

    async def from_bearer(self, handler: LumenHandler, token: str) -> Principal:
        identity = self.identity
        assert identity is not None
        if token.startswith(KERNEL_TOKEN_PREFIX):
            if self.credentials.valid(token):
                account = await self._account(handler, identity.username)
                return self._known_user(handler, Principal(identity, account, "kernel"))
            raise AuthenticationFailed(
                "Invalid kernel credential: its kernel has stopped; restart the kernel"
            )
        if not handler.accepts_personal_keys:
            raise PermissionDenied(
                "Personal API keys work on the model API (/lumen/v1) only", code="key_not_allowed"
            )
        service = handler.service
        owner = service.known_key_owner(token) if handler.key_checked_on_admission else None
        if owner is None:
            owner = await handler.run(service.key_owner, token)
        account = await self._account(handler, identity.username)
        if owner is None or owner.account_id != account:
            raise AuthenticationFailed(
                "Invalid API key: it is unknown or has been revoked", code="invalid_api_key"
            )
        principal = Principal(identity, account, "api", key_id=owner.key_id)
        return self._known_user(handler, principal)

    async def from_session(self, handler: LumenHandler, action: str) -> Principal:
        jupyter_session_user(handler, action)
        identity = self.identity
        assert identity is not None
        account = await self._account(handler, identity.username)
        return Principal(identity, account, "session")

    def authorize(self, handler: LumenHandler, principal: Principal, action: str) -> None:
        return None  # a kernel may do what its user may; keys were checked in from_bearer

    async def refuse_unconfigured(self, handler: LumenHandler, failure: str) -> None:
        """503 with the reason to a caller this server knows; no details to anyone else."""
        token = bearer_token(handler)
        if token is not None and self.claims(token):
            handler._lumen_bearer = True
            if self.credentials.valid(token):
                raise ConfigurationFailed(failure)
            # A personal key cannot be checked without the store: say only that lumen is down.
            raise ConfigurationFailed("lumen is unavailable: its configuration failed to load")
        await handler.host_prepare()
        if not handler.current_user:
            raise web.HTTPError(403, "Authentication required")
        raise ConfigurationFailed(failure)


def jupyter_session_user(handler: LumenHandler, action: str) -> Any:
    """The Jupyter user of a request without a lumen credential, allowed ``action`` on
    the handler's resource by the server's authorizer (a 403 otherwise)."""
    user = handler.current_user
    if not user:
        raise web.HTTPError(403, "Authentication required")
    authorizer = handler.authorizer  # type: ignore[attr-defined]
    if not authorizer.is_authorized(handler, user, action, handler.auth_resource):
        raise web.HTTPError(403, f"Not authorized to {action} {handler.auth_resource}")
    return user


class JupyterHosted(APIHandler):
    """jupyter_server's API handler, with a request log that costs nothing when unseen."""

    def finish(self, *args: Any, **kwargs: Any) -> Any:
        # APIHandler labels every answer JSON; an event stream keeps its own type (a
        # short stream is sent in one piece by this very call).
        if self._headers.get("Content-Type") == SSE_CONTENT_TYPE:
            kwargs.setdefault("set_content_type", SSE_CONTENT_TYPE)
        return super().finish(*args, **kwargs)

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


def jupyter_routes(routes: Routes) -> Routes:
    """lumen's endpoint classes, each combined with jupyter_server's API handler."""
    return combine(routes, JupyterHosted)


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
