"""Who may call the standalone service, and what each credential may do there.

The service serves many users, so a caller's identity comes from its credential:

* a personal ``sk_`` key names its owner: it may call models (``/v1``) and read
  the owner's profile, models and usage, but not manage keys or consents - a key
  that leaks must not be able to mint more keys;
* the admin token (read from a 0600 file) may use ``api/admin/*`` and nothing
  else: it belongs to no user, so it can neither spend nor pose as one;
* anything else is asked of the pluggable *session* authenticator - JupyterHub's,
  in a hub deployment (:mod:`.hub_auth`) - and refused with a 401 when there is
  none.  A session may carry :class:`~.rights.Rights` over other accounts, which
  open ``api/admin/*`` to it (what exactly, and for whom, :mod:`.admin` decides).

With a *user directory* (the hub's again), a user's groups are the directory's
wherever lumen meets the user: a key's owner is described with their hub groups
(pools and model rules follow them), and a key whose owner the directory no
longer knows is refused.
"""

from __future__ import annotations

import hmac
import os
import secrets
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ..core.accounts import Identity
from ..core.errors import AuthenticationFailed, PermissionDenied
from ..core.keys import KEY_PREFIX
from ..store import make_private_dir
from .base import LumenHandler, Principal
from .rights import NO_RIGHTS, Rights

ADMIN_TOKEN_PREFIX = "lat_"
ADMIN = Identity(username="(admin)", display_name="Administrator")


@dataclass(frozen=True)
class SessionUser:
    """A caller known to the session authenticator, with their rights over others."""

    identity: Identity
    rights: Rights = NO_RIGHTS


class SessionAuthenticator(Protocol):
    """Resolves callers that hold no lumen credential (a hub's token or cookie)."""

    async def identify(
        self, handler: LumenHandler, action: str
    ) -> Identity | SessionUser | None: ...


class UserDirectory(Protocol):
    """Who the users are, for callers that name someone else (a key, an admin command)."""

    async def groups_of(self, username: str) -> frozenset[str] | None:
        """The user's groups, or ``None`` if the directory does not know the user."""

    async def memberships(self) -> Mapping[str, frozenset[str]]:
        """Every user's groups (users in no group may be absent)."""


def describe(
    handler: LumenHandler,
    username: str,
    groups: frozenset[str] = frozenset(),
    info: Mapping[str, Any] | None = None,
) -> Identity:
    """A user as the YAML describes them (display name, email), else as ``info`` does
    (the hub's ``user_info``); ``groups`` are the ones known besides the YAML's."""
    spec = handler.service.catalog.user(username)
    info = info or {}
    shown = info.get("display_name") or info.get("name")
    email = info.get("email")
    return Identity(
        username=username,
        display_name=spec.display_name or (shown if isinstance(shown, str) and shown else username),
        email=spec.email or (email if isinstance(email, str) and email else None),
        groups=groups,
    )


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

    def __init__(
        self,
        admin_token: str,
        sessions: SessionAuthenticator | None = None,
        directory: UserDirectory | None = None,
    ) -> None:
        self._admin_token = admin_token.encode()
        self.sessions = sessions
        self.directory = directory

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
        identity = await self.identity(handler, username)
        return Principal(identity, owner.account_id, "api", owner.key_id)

    async def identity(self, handler: LumenHandler, username: str) -> Identity:
        """The owner of a key: with the directory's groups, and refused when the
        directory (the hub) no longer knows them."""
        groups: frozenset[str] | None = frozenset()
        if self.directory is not None:
            groups = await self.directory.groups_of(username)
        if groups is None:
            raise AuthenticationFailed(
                "This key's owner is not a user of the hub any more", code="unknown_user"
            )
        return describe(handler, username, groups)

    async def from_session(self, handler: LumenHandler, action: str) -> Principal:
        found = None
        if self.sessions is not None:
            found = await self.sessions.identify(handler, action)
        if found is None:
            raise AuthenticationFailed(
                "Missing credentials: send 'Authorization: Bearer sk_…'", code="missing_api_key"
            )
        user = found if isinstance(found, SessionUser) else SessionUser(found)
        account = await handler.run(handler.service.account, user.identity.username)
        principal = Principal(user.identity, account, "session", rights=user.rights)
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
            if principal.source == "session" and principal.rights:
                return  # which command, for whom: the admin handler checks the rights
            raise PermissionDenied(
                "The admin API needs the admin token or a lumen admin scope on a hub token "
                "(custom:lumen:admin, custom:lumen:grant)",
                code="admin_only",
            )
        if principal.source == "api" and not handler.accepts_personal_keys and action != "read":
            raise PermissionDenied(
                "A personal API key may call models and read its owner's profile here, "
                "not manage keys or consents",
                code="key_not_allowed",
            )

    async def refuse_unconfigured(self, handler: LumenHandler, failure: str) -> None:
        raise AssertionError("the standalone service does not start without its configuration")
