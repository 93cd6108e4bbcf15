"""Every REST route refuses callers without a Jupyter session or a kernel credential."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest

from lumen_jupyter.server.rest import api_routes

CONCRETE = {"([^/]+)": "1"}


def _concrete(pattern: str) -> str:
    for regex, value in CONCRETE.items():
        pattern = pattern.replace(regex, value)
    return pattern


def _all_calls() -> list[tuple[str, str]]:
    calls = []
    for pattern, handler in api_routes("lumen/api"):
        for method in ("GET", "POST", "PATCH", "DELETE"):
            if method.lower() in handler.__dict__:
                calls.append((method, _concrete(pattern)))
    return calls


@pytest.fixture
def raw(jp_fetch: Any) -> Any:
    """A request with exactly the Authorization header given (none by default)."""

    async def call(path: str, method: str, headers: dict[str, str] | None = None, **kw: Any) -> Any:
        body = b"{}" if method in ("POST", "PATCH") else None
        return await jp_fetch(
            *path.split("/"),
            method=method,
            body=body,
            headers={"Authorization": "", **(headers or {})},
            raise_error=False,
            allow_nonstandard_methods=True,
            **kw,
        )

    return call


@pytest.mark.parametrize(("method", "path"), _all_calls())
async def test_every_route_needs_authentication(raw: Any, method: str, path: str) -> None:
    response = await raw(path, method)
    assert response.code == 403, (method, path, response.code)
    # A personal key is for the model API only, never for the profile API.
    response = await raw(path, method, {"Authorization": "Bearer sk_" + "a" * 43})
    assert response.code == 403
    # A wrong kernel credential is refused too.
    response = await raw(path, method, {"Authorization": "Bearer lkt_wrong"})
    assert response.code == 401
    assert "lkt_wrong" not in response.body.decode()


async def test_kernel_credential_reaches_the_api(
    raw: Any, jp_base_url: str, jp_serverapp: Any
) -> None:
    app = next(iter(jp_serverapp.extension_manager.extension_apps["lumen_jupyter"]))
    token = app.kernel_credentials.issue("kernel-for-the-api")
    assert "LUMEN_KERNEL_TOKEN" not in os.environ  # the server's own environment holds none
    assert os.environ["LUMEN_JUPYTER_URL"].endswith(jp_base_url)
    bearer = {"Authorization": f"Bearer {token}"}
    response = await raw("lumen/api/profile", "GET", bearer)
    assert response.code == 200
    assert json.loads(response.body)["user"]["username"] == "ada"
    # Writes with the kernel credential need no XSRF cookie (no cookie is involved).
    response = await raw("lumen/api/keys", "POST", bearer)
    assert response.code == 201


async def test_key_in_query_string_is_not_accepted(raw: Any) -> None:
    response = await raw("lumen/api/profile", "GET", params={"key": "sk_" + "a" * 43})
    assert response.code == 403
