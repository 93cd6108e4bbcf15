"""Hub mode: the extension on a JupyterHub user's server, where lumen runs as a hub service.

On a JupyterHub, lumen's store, YAML (with the provider keys) and key secret live
in one service that users cannot touch (``jupyter lumen serve`` as a hub-managed
service).  A user's server then holds none of them: its extension forwards the
same ``lumen/api/*`` and ``lumen/v1/*`` URLs to the service (:mod:`.forwarder`),
so the widgets, the magics, ``openai_client()`` and the coin meter work as they
do anywhere else.

Hub mode is chosen when the server's environment names the service
(``LUMEN_SERVICE_URL``, set by the hub admin in ``c.Spawner.environment``) and no
store is configured for lumen here (no ``database_url`` trait, no
``LUMEN_DATABASE_URL``, no ``app.database.url`` in a YAML file): a user who
configures a store of their own runs a lumen of their own, with nothing of the
hub's.

Who is calling is decided here, as in the extension's own mode: the server's
Jupyter session (with XSRF) or a kernel's ``lkt_`` credential is the server's
owner; the forwarder then speaks to the service with the server's hub token
(``JUPYTERHUB_API_TOKEN``), which the hub resolves to the owner - nothing a
caller sends names anyone.  A personal ``sk_`` key is passed on unchanged (the
service bills the key's owner).  On a server shared with other hub users, a
visitor is refused: the owner's coins are not theirs to see or spend.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from jupyter_server.auth import User

from ..core.accounts import Identity
from ..core.errors import AuthenticationFailed, ConfigError, PermissionDenied
from ..core.keys import KEY_PREFIX
from ..gateway.http_client import TLSSettings
from .base import LumenHandler, Principal
from .credentials import KERNEL_TOKEN_PREFIX, KernelCredentials
from .jupyter_host import jupyter_session_user
from .runtime import yaml_database_url
from .settings import Lumen

SERVICE_URL_ENV = "LUMEN_SERVICE_URL"
HUB_TOKEN_ENV = "JUPYTERHUB_API_TOKEN"
HUB_USER_ENV = "JUPYTERHUB_USER"

PERSONAL_KEY = Identity(username="(personal key)", display_name="a personal key")
"""Who a caller holding an ``sk_`` key is here: only the service knows the key's owner."""


def hub_service_url(settings: Lumen, environ: Mapping[str, str] = os.environ) -> str | None:
    """The lumen service's URL when the extension runs in hub mode, else ``None``."""
    url = environ.get(SERVICE_URL_ENV, "").strip()
    if not url or settings.database_url:
        return None
    if settings.config_file:
        try:
            if yaml_database_url(settings):
                return None
        except (ConfigError, OSError):
            return None  # a YAML file that does not load: lumen's own start says why
    return url


@dataclass(frozen=True)
class HubLink:
    """Where the service is, and what this server shows it."""

    service_url: str
    """The service's root, ending in ``/`` (its routes are ``lumen/api/*``, ``lumen/v1/*``)."""
    token: str = field(repr=False)
    """The server's hub token: identifies the server's owner to the service."""
    owner: str
    """The hub user who owns this server (``JUPYTERHUB_USER``)."""
    tls: TLSSettings

    @property
    def host(self) -> str:
        """The ``Host`` the service is addressed by (so it names its own URLs as given)."""
        return urlsplit(self.service_url).netloc.rpartition("@")[2]

    @classmethod
    def from_environment(cls, url: str, environ: Mapping[str, str] = os.environ) -> HubLink:
        """The link described by the server's environment; :class:`ConfigError` if incomplete."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"{SERVICE_URL_ENV} must be an http(s) URL of the lumen service")
        if parts.username or parts.password or parts.query or parts.fragment:
            raise ConfigError(
                f"{SERVICE_URL_ENV} must be the service's plain URL (no credentials, query "
                "or fragment)"
            )
        token = environ.get(HUB_TOKEN_ENV, "").strip()
        if not token:
            raise ConfigError(
                f"{SERVICE_URL_ENV} is set but {HUB_TOKEN_ENV} is not: hub mode needs the "
                "server's hub token (JupyterHub sets it when it starts the server)"
            )
        owner = environ.get(HUB_USER_ENV, "").strip()
        if not owner:
            raise ConfigError(f"{SERVICE_URL_ENV} is set but {HUB_USER_ENV} is not")
        root = f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}/"
        # JupyterHub's internal SSL gives the server a certificate and the CA of the
        # hub's internal services: with an https service URL, they are the ones to use.
        tls = TLSSettings(
            ca_certs=environ.get("JUPYTERHUB_SSL_CLIENT_CA") or None,
            client_cert=environ.get("JUPYTERHUB_SSL_CERTFILE") or None,
            client_key=environ.get("JUPYTERHUB_SSL_KEYFILE") or None,
        )
        return cls(service_url=root, token=token, owner=owner, tls=tls)


def hub_user_name(user: Any) -> tuple[str, str] | None:
    """``(kind, name)`` of a session user known to JupyterHub, or ``None`` when the
    server does not authenticate through the hub (its own Jupyter token)."""
    model = getattr(user, "hub_user", None)
    if not isinstance(model, dict) or not isinstance(model.get("name"), str):
        return None
    return str(model.get("kind") or "user"), model["name"]


class HubCallers:
    """Who may use lumen through this server in hub mode: its owner's session and
    kernels, and personal keys (passed on for the service to check)."""

    def __init__(self, link: HubLink, credentials: KernelCredentials) -> None:
        self.link = link
        self.owner = Identity(username=link.owner, display_name=link.owner)
        self.credentials = credentials

    def claims(self, token: str) -> bool:
        return token.startswith(KEY_PREFIX) or token.startswith(KERNEL_TOKEN_PREFIX)

    @staticmethod
    def _known_user(handler: LumenHandler, principal: Principal) -> Principal:
        who = principal.identity
        user = User(username=who.username, name=who.display_name)
        handler.current_user = handler._jupyter_current_user = user  # type: ignore[attr-defined]
        return principal

    async def from_bearer(self, handler: LumenHandler, token: str) -> Principal:
        if token.startswith(KERNEL_TOKEN_PREFIX):
            if self.credentials.valid(token):
                return self._known_user(handler, Principal(self.owner, 0, "kernel"))
            raise AuthenticationFailed(
                "Invalid kernel credential: its kernel has stopped; restart the kernel"
            )
        if not handler.accepts_personal_keys:
            raise PermissionDenied(
                "Personal API keys work on the model API (/lumen/v1) only", code="key_not_allowed"
            )
        return self._known_user(handler, Principal(PERSONAL_KEY, 0, "api"))

    async def from_session(self, handler: LumenHandler, action: str) -> Principal:
        user = jupyter_session_user(handler, action)
        hub_user = hub_user_name(user)
        if hub_user is not None and hub_user != ("user", self.link.owner):
            raise PermissionDenied(
                f"This server belongs to {self.link.owner}; its lumen coins, keys and usage "
                "are theirs. Use lumen on your own server.",
                code="not_server_owner",
            )
        return Principal(self.owner, 0, "session")

    def authorize(self, handler: LumenHandler, principal: Principal, action: str) -> None:
        return None  # a kernel may do what its owner may; the service checks keys

    async def refuse_unconfigured(self, handler: LumenHandler, failure: str) -> None:
        raise AssertionError("hub mode starts only with its link to the service")
