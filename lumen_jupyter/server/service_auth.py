"""Who may call the standalone service, and what each credential may do there.

The service serves many users, so a caller's identity comes from its credential:

* a personal ``sk_`` key names its owner: it may call models (``/v1``) and read
  the owner's profile, models and usage, but not manage keys or consents - a key
  that leaks must not be able to mint more keys;
* the admin token (read from a 0600 file) may use ``api/admin/*`` and nothing
  else: it belongs to no user, so it can neither spend nor pose as one;
* anything else is asked of the pluggable *session* authenticator - JupyterHub's,
  in a hub deployment - and refused with a 401 when there is none.
"""

from __future__ import annotations

import hmac
import os
import secrets
import stat
from pathlib import Path
from typing import Protocol

from ..core.accounts import Identity
from ..core.errors import AuthenticationFailed, PermissionDenied
from ..core.keys import KEY_PREFIX
from ..store import make_private_dir
from .base import LumenHandler, Principal

ADMIN_TOKEN_PREFIX = "lat_"
ADMIN = Identity(username="(admin)", display_name="Administrator")


class SessionAuthenticator(Protocol):
    """Resolves callers that hold no lumen credential (a hub's token or cookie)."""

    async def identify(self, handler: LumenHandler, action: str) -> Identity | None: ...


def load_or_create_admin_token(path: Path) -> str:
    """The admin token in ``path``, created (0600, in a private directory) on first use.

    A file that others may read is refused: the token is as good as the database."""
    if path.exists():
        mode = path.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise PermissionError(
                f"{path} may be read by others (mode {stat.filemode(mode)}); chmod 600 it"
            )
        token = path.read_text(encoding="utf-8").strip()
        if not token.startswith(ADMIN_TOKEN_PREFIX) or len(token) < 36:
            raise ValueError(f"{path} does not hold a lumen admin token")
        return token
    make_private_dir(path.parent)
    token = ADMIN_TOKEN_PREFIX + secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(token + "\n")
    return token


class ServiceAuthenticator:
    """Personal keys, the admin token, and an optional session authenticator."""

    def __init__(self, admin_token: str, sessions: SessionAuthenticator | None = None) -> None:
        self._admin_token = admin_token.encode()
        self.sessions = sessions

    def claims(self, token: str) -> bool:
        return token.startswith(KEY_PREFIX) or token.startswith(ADMIN_TOKEN_PREFIX)

    async def from_bearer(self, handler: LumenHandler, token: str) -> Principal:
        if token.startswith(ADMIN_TOKEN_PREFIX):
            if hmac.compare_digest(token.encode(), self._admin_token):
                return Principal(ADMIN, 0, "admin")
            raise AuthenticationFailed("Invalid admin token", code="invalid_admin_token")
        service = handler.service
        owner = service.known_key_owner(token) if handler.key_checked_on_admission else None
        if owner is None:
            owner = await handler.run(service.key_owner, token)
        username = None if owner is None else service.cached_username(owner.account_id)
        if owner is not None and username is None:
            username = await handler.run(service.username_of, owner.account_id)
        if owner is None or username is None:
            raise AuthenticationFailed(
                "Invalid API key: it is unknown or has been revoked", code="invalid_api_key"
            )
        return Principal(self.identity(handler, username), owner.account_id, "api", owner.key_id)

    @staticmethod
    def identity(
        handler: LumenHandler, username: str, groups: frozenset[str] = frozenset()
    ) -> Identity:
        """A user as the YAML describes them (display name, email); ``groups`` are the
        ones the session authenticator knows besides the YAML's memberships."""
        spec = handler.service.catalog.user(username)
        return Identity(
            username=username,
            display_name=spec.display_name or username,
            email=spec.email or None,
            groups=groups,
        )

    async def from_session(self, handler: LumenHandler, action: str) -> Principal:
        identity = None
        if self.sessions is not None:
            identity = await self.sessions.identify(handler, action)
        if identity is None:
            raise AuthenticationFailed(
                "Missing credentials: send 'Authorization: Bearer sk_…'", code="missing_api_key"
            )
        principal = Principal(
            identity, await handler.run(handler.service.account, identity.username), "session"
        )
        self.authorize(handler, principal, action)
        return principal

    def authorize(self, handler: LumenHandler, principal: Principal, action: str) -> None:
        admin_api = getattr(handler, "admin_api", False)
        if principal.source == "admin":
            if not admin_api:
                raise PermissionDenied(
                    "The admin token works on api/admin only", code="admin_token_not_allowed"
                )
            return
        if admin_api:
            raise PermissionDenied("The admin API needs the admin token", code="admin_only")
        if principal.source == "api" and not handler.accepts_personal_keys and action != "read":
            raise PermissionDenied(
                "A personal API key may call models and read its owner's profile here, "
                "not manage keys or consents",
                code="key_not_allowed",
            )

    async def refuse_unconfigured(self, handler: LumenHandler, failure: str) -> None:
        raise AssertionError("the standalone service does not start without its configuration")
