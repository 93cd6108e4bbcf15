"""lumen's routes are tried first, and everyone else's still answer."""

from __future__ import annotations

from typing import Any

from lumen_jupyter.server.app import LumenJupyter, _serves_lumen


def _lumen_app(serverapp: Any) -> LumenJupyter:
    for extension in serverapp.extension_manager.extension_apps.get("lumen_jupyter", ()):
        if isinstance(extension, LumenJupyter):
            return extension
    raise AssertionError("lumen_jupyter is not loaded")


async def test_lumen_rules_come_first_and_other_routes_still_work(
    jp_fetch: Any, jp_serverapp: Any
) -> None:
    # pytest-jupyter never starts extensions, so call what starting does.
    _lumen_app(jp_serverapp)._route_first()
    rules = jp_serverapp.web_app.default_router.rules
    lumen = [i for i, rule in enumerate(rules) if _serves_lumen(rule)]
    assert lumen == list(range(len(lumen))) and lumen  # all of them, at the front
    assert len(rules) > len(lumen)
    assert (await jp_fetch("lumen", "api", "openapi.json")).code == 200
    assert (await jp_fetch("api", "status")).code == 200  # jupyter_server's own
    assert (await jp_fetch("api", "terminals")).code == 200  # another extension's
