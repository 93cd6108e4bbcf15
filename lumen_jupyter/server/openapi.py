"""The OpenAPI 3.1 description of the profile REST API, served at ``lumen/api/openapi.json``.

Its schemas are derived from the payload types of :mod:`lumen_jupyter.core.wire`,
the ones the service builds, so a field cannot be sent without being documented
(the tests validate every REST response against this document).  The paths are
checked against the route table by the tests, so the document and the server
cannot drift apart.
"""

from __future__ import annotations

from typing import Any

from ..core import wire
from .typed_schema import SchemaBuilder


def _schemas() -> tuple[SchemaBuilder, dict[str, Any]]:
    builder = SchemaBuilder(open_names=wire.OPEN_SCHEMAS)
    refs = {
        name: builder.schema(getattr(wire, name))
        for name in (
            "Error",
            "Profile",
            "Key",
            "CreatedKey",
            "KeyList",
            "KeyRevoked",
            "Model",
            "ModelList",
            "UsageHistory",
            "NewKey",
            "SaveKey",
            "ConsentBody",
        )
    }
    return builder, refs


_BUILDER, _REF = _schemas()
_ERROR = _REF["Error"]


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    """The error answers of an operation: ``codes`` plus the ones every route may give."""
    codes = tuple(sorted({*codes, 401, 403, 502, 503}))
    text = {
        400: "Malformed input",
        401: "A credential was sent but is unknown, revoked or expired",
        403: "Not authenticated or not allowed",
        404: "Not found",
        409: "Conflicts with the current state",
        413: "The request body is too large",
        502: "On a JupyterHub server: the lumen service's answer broke off",
        503: "The configuration could not be loaded, or on a JupyterHub server the lumen "
        "service cannot be reached (the message says why)",
    }
    return {str(c): _json(_ERROR, text.get(c, "Error")) for c in codes}


def openapi_document(base_url: str = "/") -> dict[str, Any]:
    prefix = f"{base_url.rstrip('/')}/lumen/api"
    key_id = {"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}}
    model_name = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
    page = [
        {
            "name": "limit",
            "in": "query",
            "description": "Send at most this many (default: all), in the profile's order: "
            "by name (case and accents ignored, numbers by value), then by id",
            "schema": {"type": "integer", "minimum": 0, "maximum": 999_999_999},
        },
        {
            "name": "offset",
            "in": "query",
            "description": "Skip this many first (default 0); `total` counts them all",
            "schema": {"type": "integer", "minimum": 0, "maximum": 999_999_999},
        },
    ]
    key_ref = _REF["Key"]
    model_ref = _REF["Model"]
    return {
        "openapi": "3.1.0",
        "info": {"title": "lumen-jupyter profile API", "version": "1"},
        "servers": [{"url": prefix}],
        "components": {
            "schemas": dict(_BUILDER.named),
            "securitySchemes": {
                "jupyter": {"type": "apiKey", "in": "header", "name": "Authorization"},
                "kernel": {"type": "http", "scheme": "bearer"},
            },
        },
        "security": [{"jupyter": []}, {"kernel": []}],
        "paths": {
            "/profile": {
                "get": {
                    "summary": "Identity, the six tiles, pool state and Web Chat Usage",
                    "responses": {
                        "200": _json(_REF["Profile"]),
                        **_errors(403),
                    },
                }
            },
            "/keys": {
                "get": {
                    "summary": "Personal API keys (active; revoked too with include_revoked), "
                    "all of them or a page (limit, offset), with their total",
                    "parameters": [
                        {"name": "include_revoked", "in": "query", "schema": {"type": "boolean"}},
                        *page,
                    ],
                    "responses": {
                        "200": _json(_REF["KeyList"]),
                        **_errors(400, 403),
                    },
                },
                "post": {
                    "summary": "Create a key; the raw key is in this response only. "
                    "Without a name the key is a draft until named (PATCH) or discarded (DELETE). "
                    "A budget (coins) and an expiry (expires_at, or expires_in such as '7d') "
                    "are the key's own limits.",
                    "requestBody": {"content": {"application/json": {"schema": _REF["NewKey"]}}},
                    "responses": {
                        "201": _json(_REF["CreatedKey"], "Created"),
                        **_errors(400, 403, 413),
                    },
                },
            },
            "/keys/{id}": {
                "patch": {
                    "summary": "Name or rename a key; saves a draft, with its limits if given "
                    "(a key in use keeps the limits it was made with: 409)",
                    "parameters": [key_id],
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _REF["SaveKey"]}},
                    },
                    "responses": {"200": _json(key_ref), **_errors(400, 403, 404, 409, 413)},
                },
                "delete": {
                    "summary": "Revoke an active key (history kept) or discard a draft",
                    "parameters": [key_id],
                    "responses": {"200": _json(_REF["KeyRevoked"]), **_errors(400, 403, 404)},
                },
            },
            "/models": {
                "get": {
                    "summary": "Model Access rows: usage, access, consent, status, notice; "
                    "all of them or a page (limit, offset), with their total",
                    "parameters": page,
                    "responses": {
                        "200": _json(_REF["ModelList"]),
                        **_errors(400, 403),
                    },
                }
            },
            "/models/{name}": {
                "get": {
                    "summary": "One model in detail",
                    "parameters": [model_name],
                    "responses": {"200": _json(model_ref), **_errors(403, 404)},
                }
            },
            "/models/{name}/consent": {
                "post": {
                    "summary": "Acknowledge the model's current notice (once per notice text)",
                    "parameters": [model_name],
                    "requestBody": {
                        "content": {"application/json": {"schema": _REF["ConsentBody"]}}
                    },
                    "responses": {"200": _json(model_ref), **_errors(400, 403, 404, 413)},
                }
            },
            "/usage": {
                "get": {
                    "summary": "Spending history in time buckets, split into series",
                    "parameters": [
                        {
                            "name": "period",
                            "in": "query",
                            "schema": {"enum": ["week", "month", "year", "all"]},
                        },
                        {
                            "name": "bucket",
                            "in": "query",
                            "schema": {"enum": ["day", "week", "month"]},
                        },
                        {
                            "name": "group_by",
                            "in": "query",
                            "schema": {"enum": ["model", "source", "key", "notebook", "cell"]},
                        },
                        {
                            "name": "notebook",
                            "in": "query",
                            "description": "With group_by=cell: the notebook's path",
                            "schema": {"type": "string"},
                        },
                    ],
                    "responses": {"200": _json(_REF["UsageHistory"]), **_errors(400, 403)},
                }
            },
            "/events": {
                "get": {
                    "summary": "Server-sent events: 'pool' (the pool state, whenever it changes) "
                    "and 'refused' (a model call refused for consent or coins)",
                    "responses": {
                        "200": {
                            "description": "An event stream",
                            "content": {"text/event-stream": {"schema": {"type": "string"}}},
                        },
                        **_errors(403),
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "summary": "This document",
                    "responses": {"200": _json({"type": "object"}), **_errors()},
                }
            },
        },
    }
