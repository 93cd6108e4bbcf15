"""A small stand-in for JupyterHub's REST API, for fast tests of the service's hub mode.

It answers what the lumen service asks a hub, the way JupyterHub 6 does:

* ``GET /hub/api/user`` with a user's token: the token's owner (``kind``, ``name``,
  ``admin``, ``groups``, ``user_info``) and the *token's* scopes; 403 for an unknown
  or revoked token;
* ``GET /hub/api/users/NAME`` and ``GET /hub/api/groups`` (paginated) with the
  service's own token only;
* the OAuth login: ``GET /hub/api/oauth2/authorize`` for the browser signed in with
  the ``fake-hub-user`` cookie (PKCE S256), redirecting to the service's callback,
  and ``POST /hub/api/oauth2/token`` for the service (its token as client secret).

Tests change users, groups and tokens between requests, and read ``asked`` to see
how often the hub was asked.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import socket
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from tornado import web
from tornado.httpserver import HTTPServer

SERVICE = "lumen"
ACCESS = f"access:services!service={SERVICE}"
LOGIN_COOKIE = "fake-hub-user"


@dataclass
class FakeUser:
    name: str
    groups: set[str] = field(default_factory=set)
    admin: bool = False
    scopes: set[str] = field(default_factory=set)
    """Scopes the user holds through roles (what an OAuth login may pass on)."""
    user_info: dict[str, Any] = field(default_factory=dict)


@dataclass
class FakeToken:
    owner: str
    kind: str = "user"
    scopes: set[str] = field(default_factory=set)


@dataclass
class PendingCode:
    user: str
    challenge: str
    redirect_uri: str
    client_id: str


class FakeHub:
    """The hub's state and its HTTP server."""

    def __init__(self, service_token: str | None = None, page_limit: int = 2) -> None:
        self.service_token = service_token or secrets.token_hex(16)
        self.client_id = f"service-{SERVICE}"
        self.page_limit = page_limit
        self.users: dict[str, FakeUser] = {}
        self.tokens: dict[str, FakeToken] = {}
        self.codes: dict[str, PendingCode] = {}
        self.asked: Counter[str] = Counter()
        self.group_properties: dict[str, dict[str, Any]] = {}
        """``properties`` of groups (a group with properties is listed, even when empty)."""
        self.service_origin = ""
        """Where the service's callback is (a real hub's proxy serves both on one origin)."""
        self.server: HTTPServer | None = None
        self.port = 0

    # -- what tests change --------------------------------------------------------------

    def add_user(
        self,
        name: str,
        groups: set[str] | None = None,
        *,
        admin: bool = False,
        scopes: set[str] | None = None,
        user_info: dict[str, Any] | None = None,
    ) -> FakeUser:
        user = FakeUser(name, set(groups or ()), admin, set(scopes or ()), dict(user_info or {}))
        self.users[name] = user
        return user

    def token(self, owner: str, scopes: set[str] | None = None, kind: str = "user") -> str:
        """A new token of ``owner`` with ``scopes`` (default: access to the service,
        like a user's API token or server token)."""
        value = secrets.token_hex(16)
        given = {ACCESS} if scopes is None else set(scopes)
        self.tokens[value] = FakeToken(owner, kind, given)
        return value

    def revoke(self, token: str) -> None:
        self.tokens.pop(token, None)

    # -- answers --------------------------------------------------------------------------

    def user_model(self, user: FakeUser, scopes: set[str] | None = None) -> dict[str, Any]:
        model: dict[str, Any] = {
            "kind": "user",
            "name": user.name,
            "admin": user.admin,
            "groups": sorted(user.groups),
            "user_info": user.user_info,
        }
        if scopes is not None:
            identify = {f"read:users:name!user={user.name}", f"read:users:groups!user={user.name}"}
            model["scopes"] = sorted(scopes | identify)
        return model

    def groups(self) -> list[dict[str, Any]]:
        names = sorted({g for user in self.users.values() for g in user.groups})
        names = sorted(set(names) | set(self.group_properties))
        return [
            {
                "kind": "group",
                "name": name,
                "users": sorted(u.name for u in self.users.values() if name in u.groups),
                "properties": self.group_properties.get(name, {}),
            }
            for name in names
        ]

    # -- serving --------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.url}/hub/api"

    def environ(self, prefix: str = f"/services/{SERVICE}/") -> dict[str, str]:
        """What JupyterHub puts in a managed service's environment."""
        return {
            "JUPYTERHUB_API_URL": self.api_url,
            "JUPYTERHUB_API_TOKEN": self.service_token,
            "JUPYTERHUB_SERVICE_NAME": SERVICE,
            "JUPYTERHUB_SERVICE_PREFIX": prefix,
            "JUPYTERHUB_CLIENT_ID": self.client_id,
            "JUPYTERHUB_OAUTH_CALLBACK_URL": f"{prefix}oauth_callback",
            "JUPYTERHUB_OAUTH_ACCESS_SCOPES": json.dumps([ACCESS]),
            "JUPYTERHUB_HOST": self.url,
            "JUPYTERHUB_BASE_URL": "/",
        }

    def start(self) -> None:
        app = web.Application(
            [
                (r"/hub/api/user", UserHandler, {"hub": self}),
                (r"/hub/api/users/([^/]+)", OtherUserHandler, {"hub": self}),
                (r"/hub/api/groups", GroupsHandler, {"hub": self}),
                (r"/hub/api/oauth2/authorize", AuthorizeHandler, {"hub": self}),
                (r"/hub/api/oauth2/token", TokenHandler, {"hub": self}),
            ]
        )
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        sock.setblocking(False)
        self.port = sock.getsockname()[1]
        self.server = HTTPServer(app)
        self.server.add_sockets([sock])

    async def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            await self.server.close_all_connections()


class HubHandler(web.RequestHandler):
    def initialize(self, hub: FakeHub) -> None:
        self.hub = hub

    def token(self) -> str:
        scheme, _, value = self.request.headers.get("Authorization", "").partition(" ")
        return value.strip() if scheme.lower() in ("token", "bearer") else ""

    def answer(self, data: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(data))

    def refuse(self, status: int, message: str) -> None:
        self.answer({"status": status, "message": message}, status)

    def service_only(self) -> bool:
        if self.token() != self.hub.service_token:
            self.refuse(403, "Action is not authorized with current scopes")
            return False
        return True


class UserHandler(HubHandler):
    def get(self) -> None:
        self.hub.asked["user"] += 1
        found = self.hub.tokens.get(self.token())
        if found is None:
            self.refuse(403, "Missing or invalid credentials")
            return
        if found.kind != "user":
            self.answer({"kind": found.kind, "name": found.owner, "scopes": sorted(found.scopes)})
            return
        user = self.hub.users.get(found.owner)
        if user is None:
            self.refuse(403, "Missing or invalid credentials")
            return
        self.answer(self.hub.user_model(user, found.scopes))


class OtherUserHandler(HubHandler):
    def get(self, name: str) -> None:
        self.hub.asked["users"] += 1
        if not self.service_only():
            return
        user = self.hub.users.get(name)
        if user is None:
            self.refuse(404, f"No such user: {name}")
            return
        self.answer(self.hub.user_model(user))


class GroupsHandler(HubHandler):
    def get(self) -> None:
        self.hub.asked["groups"] += 1
        if not self.service_only():
            return
        offset = int(self.get_query_argument("offset", "0"))
        limit = min(int(self.get_query_argument("limit", "50")), self.hub.page_limit)
        everything = self.hub.groups()
        page = everything[offset : offset + limit]
        if "jupyterhub-pagination" not in self.request.headers.get("Accept", ""):
            self.answer(page)
            return
        following = offset + limit
        self.answer(
            {
                "items": page,
                "_pagination": {
                    "offset": offset,
                    "limit": limit,
                    "total": len(everything),
                    "next": (
                        {"offset": following, "limit": limit}
                        if following < len(everything)
                        else None
                    ),
                },
            }
        )


class AuthorizeHandler(HubHandler):
    def get(self) -> None:
        self.hub.asked["authorize"] += 1
        user = self.hub.users.get(self.get_cookie(LOGIN_COOKIE) or "")
        if user is None:
            self.refuse(403, "not signed in at the hub")
            return
        args = {name: self.get_query_argument(name, "") for name in self.request.query_arguments}
        if args.get("client_id") != self.hub.client_id or args.get("response_type") != "code":
            self.refuse(400, "bad authorize request")
            return
        if args.get("code_challenge_method") != "S256" or not args.get("code_challenge"):
            self.refuse(400, "PKCE required")
            return
        code = secrets.token_urlsafe(12)
        self.hub.codes[code] = PendingCode(
            user.name, args["code_challenge"], args["redirect_uri"], args["client_id"]
        )
        query = urlencode({"code": code, "state": args.get("state", "")})
        self.redirect(f"{self.hub.service_origin}{args['redirect_uri']}?{query}")


class TokenHandler(HubHandler):
    def check_xsrf_cookie(self) -> None:
        return None

    def post(self) -> None:
        self.hub.asked["token"] += 1
        form = {name: self.get_body_argument(name, "") for name in self.request.body_arguments}
        pending = self.hub.codes.pop(form.get("code", ""), None)
        if form.get("client_secret") != self.hub.service_token or pending is None:
            self.refuse(400, "invalid_grant")
            return
        digest = hashlib.sha256(form.get("code_verifier", "").encode()).digest()
        challenge = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
        if challenge != pending.challenge or form.get("redirect_uri") != pending.redirect_uri:
            self.refuse(400, "invalid_grant: PKCE or redirect_uri mismatch")
            return
        user = self.hub.users[pending.user]
        # the login's token: access to the service, plus the custom scopes the user holds
        # (the service's oauth_client_allowed_scopes allow them through)
        token = self.hub.token(user.name, {ACCESS, *(s for s in user.scopes if "custom:" in s)})
        self.answer({"access_token": token, "token_type": "Bearer"})
