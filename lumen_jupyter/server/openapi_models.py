"""An OpenAPI 3.1 outline of the OpenAI-compatible model API under ``lumen/v1``.

The model API follows OpenAI's, whose own description is the reference for
clients; this outline lists the routes the gateway serves, what their requests
may carry, and the answers (OpenAI-shaped errors included) they may give, so
that the API can be fuzzed and its errors checked like the profile API's.
``models`` fills the ``model`` fields with names the gateway knows, so that
generated requests reach past the model lookup.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "code"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "code": {"type": ["string", "null"]},
            },
        }
    },
}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    return {str(code): _json(_ERROR, "An OpenAI-shaped error") for code in codes}


def model_api_document(base_url: str = "/", models: Sequence[str] = ()) -> dict[str, Any]:
    model_name: dict[str, Any] = {"type": "string", "minLength": 1, "maxLength": 200}
    if models:
        model_name = {"enum": list(models)}
    message = {
        "type": "object",
        "required": ["role", "content"],
        "properties": {
            "role": {"enum": ["system", "user", "assistant"]},
            "content": {"type": "string", "maxLength": 2000},
        },
    }
    chat = {
        "type": "object",
        "required": ["model", "messages"],
        "properties": {
            "model": model_name,
            "messages": {"type": "array", "minItems": 1, "maxItems": 4, "items": message},
            "max_tokens": {"type": "integer", "minimum": 1, "maximum": 64},
            "stream": {"type": "boolean"},
            "temperature": {"type": "number", "minimum": 0, "maximum": 2},
            "n": {"type": "integer", "minimum": 1, "maximum": 3},
        },
    }
    embeddings = {
        "type": "object",
        "required": ["model", "input"],
        "properties": {
            "model": model_name,
            "input": {
                "anyOf": [
                    {"type": "string", "maxLength": 2000},
                    {"type": "array", "maxItems": 4, "items": {"type": "string"}},
                ]
            },
        },
    }
    calls = _errors(400, 401, 403, 404, 413, 429, 502, 503, 504)
    answer = {"type": "object"}
    return {
        "openapi": "3.1.0",
        "info": {"title": "lumen-jupyter model API (OpenAI-compatible)", "version": "1"},
        "servers": [{"url": f"{base_url.rstrip('/')}/lumen/v1"}],
        "components": {"securitySchemes": {"key": {"type": "http", "scheme": "bearer"}}},
        "security": [{"key": []}],
        "paths": {
            "/models": {
                "get": {
                    "summary": "The models this caller may use",
                    "responses": {"200": _json(answer, "A model list"), **_errors(401, 403)},
                }
            },
            "/models/{name}": {
                "get": {
                    "summary": "One model",
                    "parameters": [
                        {"name": "name", "in": "path", "required": True, "schema": model_name}
                    ],
                    "responses": {"200": _json(answer, "A model"), **_errors(401, 403, 404)},
                }
            },
            "/chat/completions": {
                "post": {
                    "summary": "A chat completion, streamed or not",
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": chat}},
                    },
                    "responses": {
                        "200": {
                            "description": "A completion, or a stream of chunks",
                            "content": {
                                "application/json": {"schema": answer},
                                "text/event-stream": {"schema": {"type": "string"}},
                            },
                        },
                        **calls,
                    },
                }
            },
            "/embeddings": {
                "post": {
                    "summary": "Embeddings of one text or a few",
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": embeddings}},
                    },
                    "responses": {"200": _json(answer, "Embeddings"), **calls},
                }
            },
        },
    }
