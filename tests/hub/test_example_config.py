"""The example hub config is the one the end-to-end tests run (same scopes, roles, service).

Loaded as JupyterHub loads a config file, without a hub: quick, and it keeps the
example from drifting away from what is tested.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from traitlets.config import Config, PyFileConfigLoader

from tests.hub.hub import REPO, hub_config

EXAMPLE = REPO / "examples" / "jupyterhub" / "jupyterhub_config.py"


def load(path: Path) -> Config:
    return PyFileConfigLoader(path.name, str(path.parent)).load_config()


def config_under_test(tmp_path: Path, monkeypatch: Any) -> Config:
    monkeypatch.setattr("tests.hub.hub.ensure_chp", lambda: tmp_path / "chp")
    ports = {"proxy": 1, "proxy_api": 2, "hub": 3, "service": 4}
    path = tmp_path / "jupyterhub_config.py"
    path.write_text(hub_config(tmp_path, ports, tmp_path / "lumen", "t" * 64))
    return load(path)


def lumen_service(config: Config) -> dict[str, Any]:
    return next(s for s in config.JupyterHub.services if s["name"] == "lumen")


def test_the_example_grants_what_the_tests_grant(tmp_path: Path, monkeypatch: Any) -> None:
    example, tested = load(EXAMPLE), config_under_test(tmp_path, monkeypatch)
    for section, name in (
        ("JupyterHub", "extra_user_scopes"),
        ("Spawner", "server_token_scopes"),
        ("Spawner", "oauth_client_allowed_scopes"),
    ):
        assert example[section][name] == tested[section][name], name
    assert set(example.JupyterHub.custom_scopes) == set(tested.JupyterHub.custom_scopes)
    roles = {role["name"]: role for role in example.JupyterHub.load_roles}
    tested_roles = {role["name"]: role for role in tested.JupyterHub.load_roles}
    assert roles["lumen-service"] == tested_roles["lumen-service"]
    assert roles["lumen-admins"]["scopes"] == tested_roles["lumen-admin"]["scopes"]
    assert roles["lumen-grant-class-a"]["scopes"] == tested_roles["lumen-grant-class-a"]["scopes"]


def test_the_example_service_entry_is_the_tested_one(tmp_path: Path, monkeypatch: Any) -> None:
    example = lumen_service(load(EXAMPLE))
    tested = lumen_service(config_under_test(tmp_path, monkeypatch))
    for key in ("oauth_client_allowed_scopes", "oauth_no_confirm", "display"):
        assert example[key] == tested[key], key
    assert example["command"][1:5] == tested["command"][1:5]  # -m lumen_jupyter.service --workers 2
    assert set(example["environment"]) == set(tested["environment"])
    port = example["url"].rsplit(":", 1)[1]
    assert example["command"][-2:] == ["--port", port]
    spawner_env = load(EXAMPLE).Spawner.environment
    assert spawner_env == {"LUMEN_SERVICE_URL": f"http://127.0.0.1:{port}/services/lumen/"}


def test_the_example_holds_no_secret() -> None:
    """What the hub's config sets names no database, key or token: they are the
    service's, in its own 0600 files."""
    config = load(EXAMPLE)
    service = lumen_service(config)
    assert "--database-url" not in service["command"]
    assert not any(name.startswith("LUMEN_") for name in service["environment"])
    assert "api_token" not in service
    settings = repr(config)
    for secret_like in ("postgresql", "api_key", "sk_", "lat_", "secret_file"):
        assert secret_like not in settings, secret_like
