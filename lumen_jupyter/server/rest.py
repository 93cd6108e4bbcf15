"""The profile REST API under ``<base_url>lumen/api/``: thin handlers over the service.

Each handler parses, authenticates and authorizes (``lumen_endpoint``), calls
:class:`~lumen_jupyter.core.service.LumenService` off the event loop, and
serializes.  Unknown or malformed input is a 400 with a clear message.
"""

from __future__ import annotations

import re
from typing import Any, cast

from tornado import web

from ..core import wire
from ..core.errors import BadRequest
from ..core.paging import Page, parse_page
from .base import LumenHandler, RestHandler, lumen_endpoint
from .events import EventsHandler
from .openapi import openapi_document
from .routes import Routes

_NEW_KEY_FIELDS = frozenset(wire.NewKey.__annotations__) | frozenset(wire.KeyLimits.__annotations__)
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _flag(handler: LumenHandler, name: str) -> bool:
    value = handler.get_query_argument(name, "false").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise BadRequest(f"{name} must be true or false", param=name)


_KEY_ID = re.compile(r"[0-9]{1,12}")


def _key_id(raw: str) -> int:
    # ASCII digits only: str.isdigit() also takes "²" and "①", and int() reads "٣" as 3.
    if not _KEY_ID.fullmatch(raw):
        raise BadRequest("a key id is a positive whole number", param="id")
    return int(raw)


class ProfileHandler(RestHandler):
    @lumen_endpoint("read")
    async def get(self) -> None:
        self.send_json(await self.run(self.service.profile, self.identity))


def _page(handler: LumenHandler) -> Page:
    return parse_page(
        handler.get_query_argument("limit", None), handler.get_query_argument("offset", None)
    )


class KeysHandler(RestHandler):
    @lumen_endpoint("read")
    async def get(self) -> None:
        include = _flag(self, "include_revoked")
        page = _page(self)
        keys, total = await self.run(self.service.list_keys_page, self.identity, include, page)
        listed: wire.KeyList = {"keys": keys, "total": total}
        self.send_json(listed)

    @lumen_endpoint("write")
    async def post(self) -> None:
        body = self.json_body()
        unknown = set(body) - _NEW_KEY_FIELDS
        if unknown:
            raise BadRequest(
                f"unknown field {sorted(unknown)[0]!r}; "
                f"accepted: {', '.join(sorted(_NEW_KEY_FIELDS))}"
            )
        created = await self.run(
            self.service.create_key,
            self.identity,
            body.get("name"),
            budget=body.get("budget"),
            expires_at=body.get("expires_at"),
            expires_in=body.get("expires_in"),
        )
        self.send_json(created, status=201)


class KeyHandler(RestHandler):
    @lumen_endpoint("write")
    async def patch(self, key_id: str) -> None:
        body = self.json_body()
        if "name" not in body or set(body) - _NEW_KEY_FIELDS:
            raise BadRequest(
                'send {"name": "..."} to name or rename a key (and, while it is new, '
                "budget, expires_at or expires_in)"
            )
        saved = await self.run(
            self.service.save_key,
            self.identity,
            _key_id(key_id),
            body["name"],
            budget=body.get("budget"),
            expires_at=body.get("expires_at"),
            expires_in=body.get("expires_in"),
        )
        self.send_json(saved)

    @lumen_endpoint("write")
    async def delete(self, key_id: str) -> None:
        outcome = await self.run(self.service.revoke_key, self.identity, _key_id(key_id))
        revoked: wire.KeyRevoked = {"id": _key_id(key_id), "result": cast(Any, outcome)}
        self.send_json(revoked)


class ModelsHandler(RestHandler):
    @lumen_endpoint("read")
    async def get(self) -> None:
        page = _page(self)
        models, total = await self.run(self.service.list_models_page, self.identity, page)
        listed: wire.ModelList = {"models": models, "total": total}
        self.send_json(listed)


class ModelHandler(RestHandler):
    @lumen_endpoint("read")
    async def get(self, name: str) -> None:
        self.send_json(await self.run(self.service.model_detail, self.identity, name))


class ConsentHandler(RestHandler):
    @lumen_endpoint("write")
    async def post(self, name: str) -> None:
        body = self.json_body()
        digest: Any = body.get("notice_digest")
        if digest is not None and not isinstance(digest, str):
            raise BadRequest("notice_digest must be a string", param="notice_digest")
        self.send_json(await self.run(self.service.consent, self.identity, name, digest))


class UsageHandler(RestHandler):
    @lumen_endpoint("read")
    async def get(self) -> None:
        period = self.get_query_argument("period", "month")
        bucket = self.get_query_argument("bucket", None)
        group_by = self.get_query_argument("group_by", "model")
        notebook = self.get_query_argument("notebook", None)
        result = await self.run(
            self.service.usage_history, self.identity, period, bucket, group_by, notebook
        )
        self.send_json(result)


class OpenAPIHandler(RestHandler):
    @lumen_endpoint("read")
    async def get(self) -> None:
        self.send_json(openapi_document(self.lumen_base_url))


def api_routes(prefix: str) -> Routes:
    """The REST routes, relative to ``prefix`` (``<base_url>lumen/api``)."""
    return [
        (f"{prefix}/profile", ProfileHandler),
        (f"{prefix}/keys", KeysHandler),
        (rf"{prefix}/keys/([^/]+)", KeyHandler),
        (f"{prefix}/models", ModelsHandler),
        (rf"{prefix}/models/([^/]+)/consent", ConsentHandler),
        (rf"{prefix}/models/([^/]+)", ModelHandler),
        (f"{prefix}/usage", UsageHandler),
        (f"{prefix}/events", EventsHandler),
        (f"{prefix}/openapi.json", OpenAPIHandler),
    ]


class UnavailableHandler(LumenHandler):
    """Every lumen route while the configuration has failed to load: the base handler
    answers 503 with the reason before any of these methods could run."""

    async def get(self, *args: str) -> None:
        raise web.HTTPError(503)

    post = patch = put = delete = get


def unavailable_routes(prefix: str) -> Routes:
    """The routes of a lumen that could not start: its REST API and its model API."""
    return [(rf"{prefix}/(api|v1)(/.*)?", UnavailableHandler)]
