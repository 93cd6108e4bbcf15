"""The OpenAPI 3.1 description of the profile REST API, served at ``lumen/api/openapi.json``.

Kept beside the handlers and checked against the route table by the tests, so
the document and the server cannot drift apart.
"""

from __future__ import annotations

from typing import Any

_ERROR = {"$ref": "#/components/schemas/Error"}
_COINS = {"$ref": "#/components/schemas/Coins"}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    text = {400: "Malformed input", 403: "Not authenticated or not allowed", 404: "Not found"}
    return {str(c): _json(_ERROR, text.get(c, "Error")) for c in codes}


_COUNTERS = {
    "type": "object",
    "properties": {
        "requests": {"type": "integer"},
        "input_tokens": {"type": "integer"},
        "output_tokens": {"type": "integer"},
        "tokens": {"type": "integer"},
        "coins_micro": {"type": "integer"},
        "coins": {"type": "string"},
        "last_used_at": {"type": ["string", "null"], "format": "date-time"},
    },
}

_SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["message", "type", "code"],
                "properties": {
                    "message": {"type": "string"},
                    "type": {"type": "string"},
                    "code": {"type": "string"},
                },
            }
        },
    },
    "Coins": {
        "type": "object",
        "description": "An exact amount: integer micro-coins and its decimal text.",
        "properties": {"micro": {"type": "integer"}, "text": {"type": "string"}},
    },
    "Counters": _COUNTERS,
    "Profile": {
        "type": "object",
        "required": ["user", "tiles", "pool", "web_chat", "server_time"],
        "properties": {
            "user": {
                "type": "object",
                "properties": {
                    "username": {"type": "string"},
                    "display_name": {"type": "string"},
                    "email": {"type": ["string", "null"]},
                    "initials": {"type": "string"},
                    "avatar_url": {"type": ["string", "null"]},
                },
            },
            "tiles": {
                "type": "object",
                "properties": {
                    "groups": {"type": "array", "items": {"type": "string"}},
                    "coins_used": _COINS,
                    "tokens_used": {"type": "integer"},
                    "favorite_model": {"type": ["string", "null"]},
                },
            },
            "pool": {
                "type": "object",
                "properties": {
                    "state": {"enum": ["none", "unlimited", "limited", "blocked"]},
                    "source": {"type": ["string", "null"]},
                    "balance": _COINS,
                    "max": _COINS,
                    "refresh_per_hour": _COINS,
                    "exhausted": {"type": "boolean"},
                    "last_refill_at": {"type": ["string", "null"], "format": "date-time"},
                    "next_refill_at": {"type": ["string", "null"], "format": "date-time"},
                },
            },
            "web_chat": {
                "allOf": [
                    {"$ref": "#/components/schemas/Counters"},
                    {"type": "object", "properties": {"conversations": {"type": "integer"}}},
                ]
            },
            "server_time": {"type": "string", "format": "date-time"},
        },
    },
    "Key": {
        "type": "object",
        "properties": {
            "id": {"type": "integer"},
            "name": {"type": "string"},
            "hint": {"type": "string", "description": "First 4 and last 4 characters"},
            "status": {"enum": ["draft", "active", "revoked"]},
            "created_at": {"type": "string", "format": "date-time"},
            "revoked_at": {"type": ["string", "null"], "format": "date-time"},
            "last_used_at": {"type": ["string", "null"], "format": "date-time"},
            "requests": {"type": "integer"},
            "tokens": {"type": "integer"},
            "coins_micro": {"type": "integer"},
            "coins": {"type": "string"},
        },
    },
    "Model": {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "description": {"type": ["string", "null"]},
            "active": {"type": "boolean"},
            "access": {"enum": ["allowed", "blocked", "needs_ack", "consented"]},
            "status": {"enum": ["ok", "degraded", "down", "disabled"]},
            "needs_consent": {"type": "boolean"},
            "notice": {"type": ["string", "null"]},
            "notice_digest": {"type": ["string", "null"]},
            "input_cost_per_million": _COINS,
            "output_cost_per_million": _COINS,
            "usage": {"$ref": "#/components/schemas/Counters"},
        },
    },
}


def openapi_document(base_url: str = "/") -> dict[str, Any]:
    prefix = f"{base_url.rstrip('/')}/lumen/api"
    key_id = {"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}}
    model_name = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
    key_ref = {"$ref": "#/components/schemas/Key"}
    model_ref = {"$ref": "#/components/schemas/Model"}
    return {
        "openapi": "3.1.0",
        "info": {"title": "lumen-jupyter profile API", "version": "1"},
        "servers": [{"url": prefix}],
        "components": {
            "schemas": _SCHEMAS,
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
                        "200": _json({"$ref": "#/components/schemas/Profile"}),
                        **_errors(403),
                    },
                }
            },
            "/keys": {
                "get": {
                    "summary": "Personal API keys (active; revoked too with include_revoked)",
                    "parameters": [
                        {"name": "include_revoked", "in": "query", "schema": {"type": "boolean"}}
                    ],
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "properties": {"keys": {"type": "array", "items": key_ref}},
                            }
                        ),
                        **_errors(400, 403),
                    },
                },
                "post": {
                    "summary": "Create a key; the raw key is in this response only. "
                    "Without a name the key is a draft until named (PATCH) or discarded (DELETE).",
                    "requestBody": {
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "properties": {"name": {"type": "string"}},
                                }
                            }
                        }
                    },
                    "responses": {
                        "201": _json(
                            {
                                "allOf": [
                                    key_ref,
                                    {"type": "object", "properties": {"key": {"type": "string"}}},
                                ]
                            },
                            "Created",
                        ),
                        **_errors(400, 403),
                    },
                },
            },
            "/keys/{id}": {
                "patch": {
                    "summary": "Name or rename a key; saves a draft",
                    "parameters": [key_id],
                    "requestBody": {
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["name"],
                                    "properties": {"name": {"type": "string"}},
                                }
                            }
                        }
                    },
                    "responses": {"200": _json(key_ref), **_errors(400, 403, 404)},
                },
                "delete": {
                    "summary": "Revoke an active key (history kept) or discard a draft",
                    "parameters": [key_id],
                    "responses": {"200": _json({"type": "object"}), **_errors(400, 403, 404)},
                },
            },
            "/models": {
                "get": {
                    "summary": "Model Access rows: usage, access, consent, status, notice",
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "properties": {"models": {"type": "array", "items": model_ref}},
                            }
                        ),
                        **_errors(403),
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
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "properties": {"notice_digest": {"type": "string"}},
                                }
                            }
                        }
                    },
                    "responses": {"200": _json(model_ref), **_errors(400, 403, 404)},
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
                            "schema": {"enum": ["model", "source", "key", "notebook"]},
                        },
                    ],
                    "responses": {"200": _json({"type": "object"}), **_errors(400, 403)},
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
                "get": {"summary": "This document", "responses": {"200": _json({"type": "object"})}}
            },
        },
    }
