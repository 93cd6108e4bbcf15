"""What the service asks JupyterHub, with a short cache.

Identity in a hub deployment comes only from the hub: a token is resolved by
``GET {api_url}/user`` *with that token* (the hub answers with the token's owner,
groups and scopes), and the groups of another user by ``GET {api_url}/users/NAME``
or ``GET {api_url}/groups`` with the service's own token (roles ``read:users`` and
``read:groups``).  Answers are kept ``cache_seconds`` (60 s by default): a group
change, a revoked token or a stopped server reaches the service within that time
and the hub is asked once per token per minute, however many calls a kernel makes.
Concurrent misses for one key make one request; failed answers are never kept.

This is a small aiohttp client rather than JupyterHub's ``HubAuth``: the group
look-ups and the paginated group list are not part of ``HubAuth``'s public API,
the service needs no ``jupyterhub`` install to run (an externally managed
service), and a hub that cannot be reached is a lumen error (503 JSON) rather than
an HTML page.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar
from urllib.parse import quote, urlencode

import aiohttp

from ..core.errors import LumenError

log = logging.getLogger("lumen_jupyter.hub")

K = TypeVar("K")
V = TypeVar("V")

PAGINATION = "application/jupyterhub-pagination+json"
PAGE_LIMIT = 200
"""Groups asked per page (the hub caps pages at its ``api_page_max_limit``)."""


class HubUnavailable(LumenError):
    """The hub could not be asked (down, slow, or answering with an error)."""

    status = 503
    retryable = True
    error_type = "service_unavailable"
    code = "hub_unavailable"


@dataclass(frozen=True)
class HubUser:
    """A hub user (or service) as the hub's user model describes them."""

    name: str
    kind: str = "user"
    groups: frozenset[str] = frozenset()
    scopes: frozenset[str] = frozenset()
    admin: bool = False
    """The hub's admin flag: shown, never used for lumen's rights."""
    user_info: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_model(cls, model: Mapping[str, Any]) -> HubUser:
        name = model.get("name")
        if not isinstance(name, str) or not name:
            raise HubUnavailable("The hub answered with a user model without a name")
        info = model.get("user_info")
        return cls(
            name=name,
            kind=str(model.get("kind") or "user"),
            groups=frozenset(str(g) for g in model.get("groups") or ()),
            scopes=frozenset(str(s) for s in model.get("scopes") or ()),
            admin=bool(model.get("admin")),
            user_info=info if isinstance(info, dict) else {},
        )


@dataclass(frozen=True)
class HubGroups:
    """The hub's groups: who is in which, and the lumen settings kept on them."""

    members: dict[str, frozenset[str]] = field(default_factory=dict)
    """Each user's groups (users in no group are absent)."""
    settings: dict[str, Any] = field(default_factory=dict)
    """Each group's ``properties["lumen"]``, where it has one (not checked here)."""


class TTLCache(Generic[K, V]):
    """Values kept ``seconds``, at most ``max_entries`` of them (oldest dropped first),
    with one fetch for concurrent misses of a key."""

    def __init__(
        self, seconds: float, max_entries: int = 10_000, clock: Callable[[], float] | None = None
    ) -> None:
        self.seconds = seconds
        self.max_entries = max_entries
        self._clock = clock or time.monotonic
        self._values: dict[K, tuple[float, V]] = {}
        self._pending: dict[K, asyncio.Future[V]] = {}

    def __len__(self) -> int:
        return len(self._values)

    def clear(self) -> None:
        self._values.clear()

    async def get(self, key: K, fetch: Callable[[], Awaitable[V]]) -> V:
        now = self._clock()
        kept = self._values.get(key)
        if kept is not None and kept[0] > now:
            return kept[1]
        pending = self._pending.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[V] = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        try:
            value = await fetch()
        except BaseException as error:
            future.set_exception(error)
            future.exception()  # retrieved: no "never retrieved" warning without waiters
            raise
        else:
            future.set_result(value)
            self._put(key, value)
            return value
        finally:
            del self._pending[key]

    def _put(self, key: K, value: V) -> None:
        if self.seconds <= 0:
            return
        self._values.pop(key, None)
        while len(self._values) >= self.max_entries:
            del self._values[next(iter(self._values))]
        self._values[key] = (self._clock() + self.seconds, value)


def internal_ssl_context(
    keyfile: str = "", certfile: str = "", cafile: str = ""
) -> ssl.SSLContext | None:
    """The client TLS context for a hub with ``internal_ssl`` (its ``JUPYTERHUB_SSL_*``
    files), or ``None`` when none are given."""
    if not (keyfile or certfile or cafile):
        return None
    context = ssl.create_default_context(cafile=cafile or None)
    if certfile:
        context.load_cert_chain(certfile, keyfile or None)
    return context


class HubClient:
    """The hub's REST API, as this service uses it."""

    def __init__(
        self,
        api_url: str,
        api_token: str,
        *,
        cache_seconds: float = 60.0,
        timeout: float = 10.0,
        ssl_context: ssl.SSLContext | None = None,
        max_entries: int = 10_000,
    ) -> None:
        self.api_url = api_url.rstrip("/") + "/"
        self._api_token = api_token
        self.cache_seconds = cache_seconds
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._ssl: ssl.SSLContext | bool = ssl_context if ssl_context is not None else True
        self._tokens: TTLCache[str, HubUser | None] = TTLCache(cache_seconds, max_entries)
        self._users: TTLCache[str, HubUser | None] = TTLCache(cache_seconds, max_entries)
        self._groups: TTLCache[str, HubGroups] = TTLCache(cache_seconds, 1)
        self._session: aiohttp.ClientSession | None = None

    # -- what is asked -------------------------------------------------------------------

    async def user_for_token(self, token: str) -> HubUser | None:
        """The owner of ``token`` with the token's scopes, or ``None`` if the hub does
        not accept it.  The cache is keyed by the token's hash, never the token."""
        key = hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()

        async def fetch() -> HubUser | None:
            status, body = await self._request("GET", "user", token=token)
            if status in (401, 403, 404):
                return None
            return HubUser.from_model(self._json_object(status, body, "user"))

        return await self._tokens.get(key, fetch)

    async def user(self, name: str) -> HubUser | None:
        """User ``name`` as the service's token may see them (``None``: no such user)."""

        async def fetch() -> HubUser | None:
            status, body = await self._request("GET", f"users/{quote(name, safe='')}")
            if status == 404:
                return None
            return HubUser.from_model(self._json_object(status, body, f"users/{name}"))

        return await self._users.get(name, fetch)

    async def memberships(self) -> dict[str, frozenset[str]]:
        """Every user's hub groups, from the hub's group list (``read:groups``)."""
        return (await self.groups()).members

    async def groups(self) -> HubGroups:
        """The hub's group list (``read:groups``): members, and lumen's group settings."""
        return await self._groups.get("", self._fetch_groups)

    async def _fetch_groups(self) -> HubGroups:
        members: dict[str, set[str]] = {}
        settings: dict[str, Any] = {}
        offset = 0
        while True:
            query = urlencode({"offset": offset, "limit": PAGE_LIMIT})
            status, body = await self._request(
                "GET", f"groups?{query}", headers={"Accept": PAGINATION}
            )
            page = self._json(status, body, "groups")
            items = page.get("items", []) if isinstance(page, dict) else page
            if not isinstance(items, list):
                raise HubUnavailable("The hub answered groups with something else than a list")
            for group in items:
                name = group.get("name") if isinstance(group, dict) else None
                if not isinstance(name, str):
                    continue  # not a group model: nothing to learn from it
                for user in group.get("users") or ():
                    members.setdefault(str(user), set()).add(name)
                properties = group.get("properties")
                if isinstance(properties, dict) and "lumen" in properties:
                    settings[name] = properties["lumen"]
            following = page.get("_pagination", {}).get("next") if isinstance(page, dict) else None
            if not following or not items:
                break
            offset = int(following.get("offset", offset + len(items)))
        return HubGroups({user: frozenset(groups) for user, groups in members.items()}, settings)

    async def token_for_code(
        self, code: str, *, client_id: str, redirect_uri: str, code_verifier: str
    ) -> str:
        """The OAuth access token for ``code`` (the last step of a browser login)."""
        form = {
            "client_id": client_id,
            "client_secret": self._api_token,
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "code_verifier": code_verifier,
        }
        status, body = await self._request(
            "POST",
            "oauth2/token",
            data=urlencode(form).encode(),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        reply = self._json_object(status, body, "oauth2/token")
        token = reply.get("access_token")
        if not isinstance(token, str) or not token:
            raise HubUnavailable("The hub's OAuth answer holds no access token")
        return token

    def forget(self) -> None:
        """Drop every cached answer."""
        self._tokens.clear()
        self._users.clear()
        self._groups.clear()

    # -- HTTP ----------------------------------------------------------------------------

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout,
                cookie_jar=aiohttp.DummyCookieJar(),
                trust_env=False,  # the hub's API is internal: never through a forward proxy
            )
        return self._session

    async def _request(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        data: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, bytes]:
        url = self.api_url + path
        sent = {"Authorization": f"token {token or self._api_token}", **(headers or {})}
        try:
            async with self._client().request(
                method, url, data=data, headers=sent, ssl=self._ssl, allow_redirects=False
            ) as response:
                return response.status, await response.read()
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as error:
            log.warning("lumen: the hub at %s could not be asked: %s", self.api_url, error)
            raise HubUnavailable("The hub could not be reached to check who is calling") from None

    def _json(self, status: int, body: bytes, what: str) -> Any:
        if status in (401, 403) and what != "oauth2/token":
            log.error(
                "lumen: the hub refused the service's own token for %s (%d): give the "
                "service a role with the scopes read:users, read:groups and list:groups",
                what,
                status,
            )
            raise HubUnavailable(
                f"The hub does not let this service read {what.split('/')[0]} "
                "(its role needs read:users, read:groups and list:groups)"
            )
        if status != 200:
            log.warning("lumen: the hub answered %s with %d: %.200r", what, status, body)
            raise HubUnavailable(f"The hub answered {status} when asked for {what}")
        try:
            return json.loads(body)
        except ValueError:
            raise HubUnavailable(f"The hub's answer for {what} is not JSON") from None

    def _json_object(self, status: int, body: bytes, what: str) -> dict[str, Any]:
        data = self._json(status, body, what)
        if not isinstance(data, dict):
            raise HubUnavailable(f"The hub's answer for {what} is not an object")
        return data

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
