"""Who is calling, in a JupyterHub deployment: only the hub says.

:class:`HubSessions` is the standalone service's session authenticator (and user
directory) when the service runs as a hub service.  A caller's hub token comes
from ``Authorization: token|bearer <t>`` (never a lumen ``sk_``/``lat_``
credential: those are never sent to the hub) or, for the browser pages, from the
service's login cookie, which holds the OAuth token of the page's login.  The
hub resolves the token (:mod:`.hub_client`, cached ``cache_seconds``) into the
user's name, groups and the token's scopes.  Nothing else names a user: not a
header such as ``X-Lumen-User``, not a path or query, not a claim of the user's
own server.

* The token must carry access to this service (``access:services!service=NAME``,
  or unfiltered ``access:services``), as JupyterHub's own ``HubAuth`` requires;
  only users (not other services) are served.
* Groups are the hub's; the YAML's group memberships are added by the catalog.
  Hub group names select the YAML's groups (pools, model rules), and a hub group
  may carry such settings itself (``properties.lumen``, :mod:`.hub_groups`).
* Rights over other accounts come from custom scopes on the token
  (:mod:`.rights`), never from the hub's ``admin`` flag.
* A request authenticated by the cookie and not a plain read must carry the page's
  XSRF token (``X-XSRFToken``), bound to the cookie's hub token, and must not be
  cross-site: the cookie alone never changes anything.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from tornado import web

from ..core.errors import PermissionDenied
from ..core.keys import KEY_PREFIX
from ..core.service import LumenService
from .base import LumenHandler
from .hub_client import HubClient, HubUser, internal_ssl_context
from .hub_groups import HubGroupSettings
from .rights import rights_from_scopes
from .service_auth import ADMIN_TOKEN_PREFIX, SessionUser, describe

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
XSRF_HEADER = "X-XSRFToken"
LOGIN_DAYS = 1
"""How long a login cookie is accepted (the hub's token inside is checked on every
use anyway): a day, after which the page logs in again through the hub."""
NEVER_SENT_TO_THE_HUB = (KEY_PREFIX, ADMIN_TOKEN_PREFIX, "lkt_")
"""lumen's own credentials: not the hub's to see."""


def hub_environment(environ: Mapping[str, str]) -> bool:
    """Whether this process was started by a hub as its service (it has the hub's
    API URL and a token of its own)."""
    return bool(environ.get("JUPYTERHUB_API_TOKEN") and environ.get("JUPYTERHUB_API_URL"))


@dataclass(frozen=True)
class HubSettings:
    """How this service reaches its hub, as the hub tells a service it manages
    (``JUPYTERHUB_*`` variables)."""

    api_url: str
    api_token: str
    service_name: str
    prefix: str
    """The service's URL prefix (``/services/lumen/``)."""
    client_id: str
    oauth_callback_url: str
    authorize_url: str
    cache_seconds: float = 60.0
    ssl_keyfile: str = ""
    ssl_certfile: str = ""
    ssl_client_ca: str = ""

    @classmethod
    def from_environ(
        cls, prefix: str, cache_seconds: float, environ: Mapping[str, str] | None = None
    ) -> HubSettings:
        env = os.environ if environ is None else environ
        api_url = env.get("JUPYTERHUB_API_URL", "")
        api_token = env.get("JUPYTERHUB_API_TOKEN", "")
        if not api_url or not api_token:
            raise ValueError(
                "hub mode needs JUPYTERHUB_API_URL and JUPYTERHUB_API_TOKEN "
                "(set by the hub for a service it manages)"
            )
        name = env.get("JUPYTERHUB_SERVICE_NAME") or "lumen"
        base_url = "/" + env.get("JUPYTERHUB_BASE_URL", "/").strip("/")
        hub_prefix = base_url.rstrip("/") + "/hub/"
        return cls(
            api_url=api_url,
            api_token=api_token,
            service_name=name,
            prefix=prefix,
            client_id=env.get("JUPYTERHUB_CLIENT_ID") or f"service-{name}",
            oauth_callback_url=env.get("JUPYTERHUB_OAUTH_CALLBACK_URL")
            or f"{prefix}oauth_callback",
            authorize_url=env.get("JUPYTERHUB_HOST", "").rstrip("/")
            + f"{hub_prefix}api/oauth2/authorize",
            cache_seconds=cache_seconds,
            ssl_keyfile=env.get("JUPYTERHUB_SSL_KEYFILE", ""),
            ssl_certfile=env.get("JUPYTERHUB_SSL_CERTFILE", ""),
            ssl_client_ca=env.get("JUPYTERHUB_SSL_CLIENT_CA", ""),
        )

    @property
    def access_scopes(self) -> frozenset[str]:
        """Either of these on a token opens the service to its owner."""
        return frozenset({"access:services", f"access:services!service={self.service_name}"})

    def client(self) -> HubClient:
        context = internal_ssl_context(self.ssl_keyfile, self.ssl_certfile, self.ssl_client_ca)
        return HubClient(
            self.api_url, self.api_token, cache_seconds=self.cache_seconds, ssl_context=context
        )


def derived_key(secret: bytes, purpose: str) -> bytes:
    """A key for one purpose, derived from the service's secret (shared by every
    worker, so a cookie set by one is read by all)."""
    return hmac.new(secret, f"lumen-jupyter hub {purpose}".encode(), hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class HubSessions:
    """The hub's users as lumen's sessions, and the hub as lumen's user directory."""

    def __init__(
        self,
        settings: HubSettings,
        secret: bytes,
        client: HubClient | None = None,
        service: LumenService | None = None,
    ):
        self.settings = settings
        self.client = client or settings.client()
        self.group_settings = None if service is None else HubGroupSettings(self.client, service)
        """Keeps ``service``'s groups in step with the hub's (``properties.lumen``)."""
        self._xsrf_key = derived_key(secret, "xsrf")
        self._pkce_key = derived_key(secret, "pkce")
        self.cookie_secret = derived_key(secret, "cookies").hex()
        """tornado's ``cookie_secret`` (signs the login and OAuth-state cookies)."""

    @property
    def cookie_name(self) -> str:
        return self.settings.client_id

    def tornado_settings(self) -> dict[str, Any]:
        return {
            "cookie_secret": self.cookie_secret,
            "lumen_directory": self,
            "lumen_hub": self,
        }

    # -- sessions ------------------------------------------------------------------------

    async def identify(self, handler: LumenHandler, action: str) -> SessionUser | None:
        found = await self.session_of(handler)
        if found is None:
            return None
        user, _ = found
        await self.refresh_groups()
        identity = describe(handler, user.name, user.groups, user.user_info)
        return SessionUser(identity, rights_from_scopes(user.scopes))

    async def session_of(self, handler: web.RequestHandler) -> tuple[HubUser, str] | None:
        """The hub user calling, and their hub token (``None``: no usable token)."""
        token, from_cookie = self.token_of(handler)
        if token is None:
            return None
        if from_cookie:
            self.check_xsrf(handler, token)
        user = await self.client.user_for_token(token)
        if user is None:
            if from_cookie:
                self.clear_login(handler)  # expired or revoked at the hub: log in again
            return None
        if user.kind != "user":
            raise PermissionDenied(
                f"Only hub users may use lumen here, not the {user.kind} {user.name!r}",
                code="not_a_user",
            )
        if user.scopes.isdisjoint(self.settings.access_scopes):
            raise PermissionDenied(
                f"This token does not give access to the {self.settings.service_name} "
                f"service (scope access:services!service={self.settings.service_name})",
                code="missing_scope",
            )
        return user, token

    def token_of(self, handler: web.RequestHandler) -> tuple[str | None, bool]:
        """The hub token of a request and whether it came from the login cookie."""
        header = handler.request.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        value = value.strip()
        if scheme.lower() in ("token", "bearer") and value:
            if value.startswith(NEVER_SENT_TO_THE_HUB):
                return None, False
            return value, False
        if header:
            return None, False  # another scheme: not ours, and the cookie is not looked at
        cookie = handler.get_signed_cookie(self.cookie_name, max_age_days=LOGIN_DAYS)
        if cookie:
            return cookie.decode("ascii", "replace"), True
        return None, False

    # -- the login cookie ------------------------------------------------------------------

    def set_login(self, handler: web.RequestHandler, token: str) -> None:
        handler.set_signed_cookie(
            self.cookie_name,
            token,
            expires_days=None,
            path=self.settings.prefix,
            httponly=True,
            secure=handler.request.protocol == "https",
            samesite="Lax",
        )

    def clear_login(self, handler: web.RequestHandler) -> None:
        handler.clear_cookie(self.cookie_name, path=self.settings.prefix)

    def xsrf_token(self, hub_token: str) -> str:
        """The token a page must echo in ``X-XSRFToken`` to change anything with the
        login cookie: bound to the hub token in the cookie, so no other session's,
        and no cookie set by a neighbour, fits."""
        digest = hashlib.sha256(hub_token.encode("utf-8", "replace")).digest()
        return _b64(hmac.new(self._xsrf_key, digest, hashlib.sha256).digest())

    def check_xsrf(self, handler: web.RequestHandler, hub_token: str) -> None:
        """Refuse a cookie-authenticated change that the page did not send."""
        if handler.request.method in SAFE_METHODS:
            return
        if handler.request.headers.get("Sec-Fetch-Site", "same-origin") not in (
            "same-origin",
            "none",
        ):
            raise PermissionDenied(
                "A change with the login cookie must come from this site", code="cross_site"
            )
        given = handler.request.headers.get(XSRF_HEADER, "")
        if not given or not hmac.compare_digest(given, self.xsrf_token(hub_token)):
            raise PermissionDenied(
                f"A change with the login cookie needs the page's {XSRF_HEADER} header",
                code="xsrf_missing",
            )

    # -- the OAuth login (see .admin_page) -------------------------------------------------

    def code_verifier(self, nonce: str) -> str:
        """The PKCE verifier of a login, derived from its state's nonce: any worker
        finishes a login that another one started, and nothing is kept in memory."""
        return _b64(hmac.new(self._pkce_key, nonce.encode(), hashlib.sha256).digest())

    def code_challenge(self, nonce: str) -> str:
        verifier = self.code_verifier(nonce)
        return _b64(hashlib.sha256(verifier.encode("ascii")).digest())

    def safe_next(self, target: str | None) -> str:
        """Where to go after login: a path under this service's prefix, else its admin page."""
        fallback = f"{self.settings.prefix}admin/"
        if not target:
            return fallback
        parts = urlsplit(target)
        if parts.scheme or parts.netloc or not parts.path.startswith(self.settings.prefix):
            return fallback
        if "\\" in target or target.startswith("//"):
            return fallback
        return target

    # -- the directory ---------------------------------------------------------------------

    async def groups_of(self, username: str) -> frozenset[str] | None:
        user = await self.client.user(username)
        await self.refresh_groups()
        return None if user is None or user.kind != "user" else user.groups

    async def refresh_groups(self) -> None:
        """Take up the settings kept on the hub's groups, if they changed."""
        if self.group_settings is not None:
            await self.group_settings.refresh()

    async def memberships(self) -> Mapping[str, frozenset[str]]:
        await self.refresh_groups()
        return await self.client.memberships()

    async def close(self) -> None:
        await self.client.close()
