"""When the extension runs in hub mode, and what it needs from the server's environment.

Hub mode: ``LUMEN_SERVICE_URL`` set and no store configured for lumen.  A server
that names the service but lacks what hub mode needs starts with every lumen route
answering 503 and the reason - never a lumen of its own beside the hub's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from lumen_jupyter.core.errors import ConfigError
from lumen_jupyter.server.hub_mode import HubLink, hub_service_url
from lumen_jupyter.server.settings import Lumen

URL = "http://127.0.0.1:9999/services/lumen/"
HUB = {"LUMEN_SERVICE_URL": URL, "JUPYTERHUB_API_TOKEN": "a" * 32, "JUPYTERHUB_USER": "ada"}


def settings(monkeypatch: pytest.MonkeyPatch, **traits: Any) -> Lumen:
    monkeypatch.delenv("LUMEN_DATABASE_URL", raising=False)
    monkeypatch.delenv("LUMEN_CONFIG", raising=False)
    return Lumen(**traits)


def write_yaml(path: Path, data: Any) -> str:
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return str(path)


def test_the_service_url_without_a_store_is_hub_mode(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert hub_service_url(settings(monkeypatch), HUB) == URL
    assert hub_service_url(settings(monkeypatch), {}) is None
    own = write_yaml(tmp_path / "own.yaml", {"models": []})
    assert hub_service_url(settings(monkeypatch, config_file=own), HUB) == URL


def test_a_store_of_ones_own_is_not_hub_mode(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    trait = settings(monkeypatch, database_url="sqlite:///x.db")
    assert hub_service_url(trait, HUB) is None
    monkeypatch.setenv("LUMEN_DATABASE_URL", "sqlite:///y.db")
    assert hub_service_url(Lumen(), HUB) is None
    in_yaml = write_yaml(tmp_path / "db.yaml", {"app": {"database": {"url": "sqlite:///z.db"}}})
    assert hub_service_url(settings(monkeypatch, config_file=in_yaml), HUB) is None


def test_the_link_comes_from_the_environment() -> None:
    link = HubLink.from_environment("http://lumen.internal:8090/services/lumen", HUB)
    assert link.service_url == "http://lumen.internal:8090/services/lumen/"
    assert (link.owner, link.host) == ("ada", "lumen.internal:8090")
    assert HUB["JUPYTERHUB_API_TOKEN"] not in repr(link)


@pytest.mark.parametrize(
    ("url", "environment", "says"),
    [
        (URL, {**HUB, "JUPYTERHUB_API_TOKEN": ""}, "JUPYTERHUB_API_TOKEN is not"),
        (URL, {**HUB, "JUPYTERHUB_USER": ""}, "JUPYTERHUB_USER is not"),
        ("ftp://lumen/", HUB, "http(s) URL"),
        ("lumen:8090", HUB, "http(s) URL"),
        ("http://user:pw@lumen:8090/", HUB, "no credentials"),
        ("http://lumen:8090/?x=1", HUB, "no credentials, query"),
    ],
)
def test_an_incomplete_environment_is_a_clear_error(
    url: str, environment: dict[str, str], says: str
) -> None:
    with pytest.raises(ConfigError, match=says.replace("(", r"\(").replace(")", r"\)")):
        HubLink.from_environment(url, environment)


@pytest.fixture
def jp_server_config(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    for name in ("LUMEN_DATABASE_URL", "LUMEN_CONFIG", "JUPYTERHUB_API_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LUMEN_SERVICE_URL", URL)
    monkeypatch.setenv("JUPYTERHUB_USER", "ada")
    return {"ServerApp": {"jpserver_extensions": {"lumen_jupyter": True}}}


async def test_a_server_without_its_hub_token_says_why_on_every_lumen_route(
    jp_fetch: Any, jp_data_dir: Path
) -> None:
    for parts in (("lumen", "api", "profile"), ("lumen", "v1", "models")):
        answer = await jp_fetch(*parts, raise_error=False)
        assert answer.code == 503
        error = answer.body.decode()
        assert "JUPYTERHUB_API_TOKEN is not" in error, error
    assert not (jp_data_dir / "lumen").exists()  # and no lumen of its own
