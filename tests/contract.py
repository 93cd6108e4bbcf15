"""Validating REST answers against the served OpenAPI document.

Every test that calls ``lumen/api/...`` through ``jp_fetch`` goes through
:func:`check_response` (see the ``jp_fetch`` override in ``tests/conftest.py``):
an answer whose status the document does not list for that operation, or whose
JSON the document's schema rejects (a field missing, unexpected or of the wrong
type), fails the test that made it.
"""

from __future__ import annotations

import json
import re
from functools import cache
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from lumen_jupyter.server.openapi import openapi_document

DOCUMENT_URI = "urn:lumen:openapi"


@cache
def document() -> dict[str, Any]:
    return openapi_document("/")


@cache
def _registry() -> Registry:
    resource = Resource.from_contents(document(), default_specification=DRAFT202012)
    return Registry().with_resource(DOCUMENT_URI, resource)


@cache
def _routes() -> list[tuple[re.Pattern[str], str]]:
    routes = []
    for template in document()["paths"]:
        pattern = re.sub(r"\{[^}]+\}", "[^/]+", template)
        routes.append((re.compile(f"^{pattern}$"), template))
    return routes


def operation(method: str, api_path: str) -> dict[str, Any]:
    """The document's operation for ``method`` on ``api_path`` (``/keys/3``)."""
    for pattern, template in _routes():
        if pattern.match(api_path):
            found = document()["paths"][template].get(method.lower())
            if found is None:
                raise AssertionError(f"the OpenAPI document has no {method} {template}")
            return dict(found)
    raise AssertionError(f"the OpenAPI document has no path for {api_path}")


def schema_pointer(method: str, api_path: str, status: int) -> str | None:
    """A JSON pointer to the schema of this answer, or ``None`` for a non-JSON answer."""
    op = operation(method, api_path)
    responses = op["responses"]
    if str(status) not in responses:
        raise AssertionError(
            f"{method} {api_path} answered {status}, which the OpenAPI document does not list "
            f"(it lists {sorted(responses)})"
        )
    content = responses[str(status)].get("content", {})
    if "application/json" not in content:
        return None
    template = next(t for p, t in _routes() if p.match(api_path))
    escaped = template.replace("~", "~0").replace("/", "~1")
    return (
        f"{DOCUMENT_URI}#/paths/{escaped}/{method.lower()}/responses/{status}"
        "/content/application~1json/schema"
    )


def validate(method: str, api_path: str, status: int, body: Any) -> None:
    """Raise ``AssertionError`` unless ``body`` is what the document says for this answer."""
    pointer = schema_pointer(method, api_path, status)
    if pointer is None:
        return
    validator = Draft202012Validator(
        {"$ref": pointer}, registry=_registry(), format_checker=FormatChecker()
    )
    errors = sorted(validator.iter_errors(body), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [f"{'/'.join(map(str, e.absolute_path)) or '.'}: {e.message}" for e in errors]
        raise AssertionError(
            f"{method} {api_path} -> {status} does not match the OpenAPI document:\n  "
            + "\n  ".join(lines[:10])
        )


def check_response(method: str, url_path: str, status: int, raw: bytes | None) -> None:
    """Validate an answer to ``url_path`` (anything under ``.../lumen/api``)."""
    marker = "/lumen/api"
    at = url_path.find(marker)
    if at < 0:
        return
    api_path = url_path[at + len(marker) :].split("?", 1)[0] or "/"
    if api_path == "/events":
        return  # a stream, not JSON
    if not any(pattern.match(api_path) for pattern, _ in _routes()):
        return  # not a route of the API (a test of unknown paths); the route table is
        # compared with the document's paths in tests/server
    body = json.loads(raw) if raw else None
    validate(method, api_path, status, body)
