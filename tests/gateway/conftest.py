"""A real Jupyter server running the gateway, and helpers to call it with `openai`."""

from __future__ import annotations

import json
from typing import Any

import pytest

pytest_plugins = ("pytest_jupyter.jupyter_server",)


@pytest.fixture
def lumen_config(tmp_path: Any) -> dict[str, Any]:
    return {}


@pytest.fixture
def jp_server_config(lumen_config: dict[str, Any], tmp_path: Any) -> dict[str, Any]:
    traits = {
        "username": "ada",
        "database_url": f"sqlite:///{tmp_path / 'lumen-gw.db'}",
        "health_interval": 0.0,
        **lumen_config,
    }
    return {
        "ServerApp": {"jpserver_extensions": {"lumen_jupyter": True}},
        "LumenJupyter": traits,
    }


@pytest.fixture
def lumen_app(jp_serverapp: Any) -> Any:
    return jp_serverapp.web_app.settings["lumen_app"]


@pytest.fixture
def gateway_url(jp_serverapp: Any, jp_http_port: int, jp_base_url: str, http_server: Any) -> str:
    """The OpenAI base URL of the gateway on the live test server."""
    return f"http://127.0.0.1:{jp_http_port}{jp_base_url}lumen/v1"


@pytest.fixture
def new_key(jp_fetch: Any) -> Any:
    async def create(name: str = "test-key") -> str:
        response = await jp_fetch(
            "lumen", "api", "keys", method="POST", body=json.dumps({"name": name})
        )
        return str(json.loads(response.body)["key"])

    return create
