"""A real Jupyter server with lumen-jupyter enabled, on the embedded default."""

from __future__ import annotations

import json
from typing import Any

import pytest


@pytest.fixture
def lumen_config(tmp_path: Any) -> dict[str, Any]:
    """Extra ``LumenJupyter`` traits; tests override this fixture to change them."""
    return {}


@pytest.fixture
def jp_server_config(lumen_config: dict[str, Any], tmp_path: Any) -> dict[str, Any]:
    traits = {
        "username": "ada",
        "display_name": "Ada Lovelace",
        "email": "ada@example.org",
        "database_url": f"sqlite:///{tmp_path / 'lumen-test.db'}",
        **lumen_config,
    }
    return {
        "ServerApp": {"jpserver_extensions": {"lumen_jupyter": True}},
        "LumenJupyter": traits,
    }


@pytest.fixture
def api(jp_fetch: Any) -> Any:
    """Call the REST API: ``await api("GET", "profile")`` returns (status, json)."""

    async def call(method: str, path: str, body: Any = None, **kwargs: Any) -> tuple[int, Any]:
        options: dict[str, Any] = {"method": method, "raise_error": False, **kwargs}
        if body is not None:
            options["body"] = body if isinstance(body, (str, bytes)) else json.dumps(body)
        elif method in ("POST", "PATCH", "PUT"):
            options["body"] = b""
            options["allow_nonstandard_methods"] = True
        path, _, query = path.partition("?")
        if query:
            options["params"] = dict(pair.split("=", 1) for pair in query.split("&"))
        response = await jp_fetch("lumen", "api", *path.split("/"), **options)
        text = response.body.decode() if response.body else ""
        return response.code, (json.loads(text) if text else None)

    return call
