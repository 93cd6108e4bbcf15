"""What only the standalone service has: the admin API, health, metrics, its access log."""

from __future__ import annotations

import asyncio
import logging
import os
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import openai
import pytest

from lumen_jupyter.server.service_auth import load_or_create_admin_token

MESSAGES = [{"role": "user", "content": "Say something short"}]


@pytest.fixture(params=["standalone"])
def host_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def admin_headers(tmp_path: Path) -> dict[str, str]:
    token = (tmp_path / "admin" / "token").read_text().strip()
    return {"Authorization": f"Bearer {token}"}


async def admin(host: Any, tmp_path: Path, method: str, command: str, body: Any = None) -> Any:
    url = f"{host.root}lumen/api/admin/{command}"
    answer = await host.http.request(method, url, headers=admin_headers(tmp_path), json=body)
    return answer


async def test_the_admin_api_runs_the_clis_commands(host: Any, tmp_path: Path) -> None:
    _, key = await host.key()
    await host.openai(key).chat.completions.create(
        model="demo-pro", messages=MESSAGES, max_tokens=5
    )
    await host.settled()
    users = await admin(host, tmp_path, "GET", "users")
    assert users.status_code == 200, users.text
    assert [u["username"] for u in users.json()["result"]["users"]] == ["ada"]
    granted = await admin(host, tmp_path, "POST", "grant", {"user": "ada", "coins": "5"})
    assert granted.status_code == 200, granted.text
    assert "granted 5 coins" in granted.json()["text"]
    usage = await admin(host, tmp_path, "GET", "usage?user=ada&period=week")
    assert usage.json()["result"]["totals"]["demo-pro"]["requests"] == 1
    pool = await admin(host, tmp_path, "POST", "pool", {"user": "ada", "max": "3"})
    assert pool.json()["result"]["own_pool"]["max"]["micro"] == 3_000_000
    await host.settled()


async def test_the_admin_api_refuses_bad_commands_clearly(host: Any, tmp_path: Path) -> None:
    unknown = await admin(host, tmp_path, "POST", "drop-everything", {})
    assert unknown.status_code == 404
    missing = await admin(host, tmp_path, "POST", "grant", {"user": "ada"})
    assert missing.status_code == 400 and "coins" in missing.json()["error"]["message"]
    extra = await admin(host, tmp_path, "POST", "grant", {"user": "ada", "coins": 1, "db": "x"})
    assert extra.status_code == 400 and "db" in extra.json()["error"]["message"]
    nobody = await admin(host, tmp_path, "POST", "grant", {"user": "nobody", "coins": 1})
    assert nobody.status_code == 400 and "no account" in nobody.json()["error"]["message"]
    change_by_get = await admin(host, tmp_path, "GET", "pool?user=ada&max=5")
    assert change_by_get.status_code == 400


async def test_revoking_a_key_through_the_admin_api_stops_it_at_once(
    host: Any, tmp_path: Path
) -> None:
    key_id, key = await host.key()
    client = host.openai(key)
    await client.chat.completions.create(model="demo-free", messages=MESSAGES, max_tokens=3)
    revoked = await admin(host, tmp_path, "POST", "revoke", {"user": "ada", "key_id": key_id})
    assert revoked.status_code == 200, revoked.text
    answer = await host.http.post(
        f"{host.v1}/chat/completions",
        json={"model": "demo-free", "messages": MESSAGES},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert answer.status_code == 401
    await host.settled()


async def test_each_credential_stays_in_its_lane(host: Any, tmp_path: Path) -> None:
    _, key = await host.key()
    as_key = {"Authorization": f"Bearer {key}"}
    by_key = await host.http.get(f"{host.root}lumen/api/admin/users", headers=as_key)
    assert by_key.status_code == 403 and by_key.json()["error"]["code"] == "admin_only"
    by_session = await host.http.get(f"{host.root}lumen/api/admin/users", headers=host.session)
    assert by_session.status_code == 403
    as_admin = admin_headers(tmp_path)
    for url in (f"{host.root}lumen/api/profile", f"{host.v1}/models"):
        refused = await host.http.get(url, headers=as_admin)
        assert refused.status_code == 403, url
        assert refused.json()["error"]["code"] == "admin_token_not_allowed"
    forged = {"Authorization": "Bearer lat_" + "x" * 43}
    wrong = await host.http.get(f"{host.root}lumen/api/admin/users", headers=forged)
    assert wrong.status_code == 401


async def test_health_and_readiness(host: Any) -> None:
    live = await host.http.get(f"{host.root}health")
    assert live.status_code == 200 and live.json() == {"status": "ok"}
    ready = await host.http.get(f"{host.root}health?ready=1")
    assert ready.json() == {"status": "ok", "database": "ok"}
    host.service.store.dispose()
    host.service.store.engine.pool._creator = _refuse  # type: ignore[attr-defined]
    down = await host.http.get(f"{host.root}health?ready=1")
    assert down.status_code == 503 and down.json()["status"] == "unavailable"


def _refuse() -> Any:
    raise ConnectionRefusedError("the database is away")


async def test_metrics_move_with_calls(host: Any) -> None:
    _, key = await host.key()

    def count(text: str, prefix: str) -> float:
        return sum(
            float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix)
        )

    before = (await host.http.get(f"{host.root}metrics")).text
    await host.openai(key).chat.completions.create(
        model="demo-pro", messages=MESSAGES, max_tokens=5
    )
    with pytest.raises(Exception):  # noqa: B017 - any refusal: counted by its code
        await host.openai(key).chat.completions.create(
            model="demo-costly", messages=MESSAGES, max_tokens=5
        )
    after = (await host.http.get(f"{host.root}metrics")).text
    calls = 'lumen_model_calls_total{model="demo-pro",status="ok"}'
    assert count(after, calls) == count(before, calls) + 1
    refused = 'lumen_refusals_total{reason="coins_exhausted"}'
    assert count(after, refused) == count(before, refused) + 1
    assert count(after, "lumen_coins_charged_total") > count(before, "lumen_coins_charged_total")
    await host.settled()


async def test_the_access_log_never_carries_a_secret(
    host: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="lumen_jupyter.access")  # what --log-level INFO sets
    _, key = await host.key()
    await host.http.get(
        f"{host.v1}/models?api_key={key}", headers={"Authorization": f"Bearer {key}"}
    )
    await host.http.get(f"{host.root}lumen/api/profile?token={key}")
    log = tmp_path / "access.log"
    deadline = time.monotonic() + 5
    while "lumen/api/profile" not in log.read_text() and time.monotonic() < deadline:
        await asyncio.sleep(0.1)  # written within a second
    lines = [line for line in log.read_text().splitlines() if "models" in line or "profile" in line]
    assert len(lines) == 2, lines
    assert all(key not in line and key[3:12] not in line for line in lines), lines
    assert lines[0].startswith(
        "[INFO lumen_jupyter.access] 200 GET /services/lumen/lumen/v1/models"
    )
    assert lines[1].startswith("[WARNING lumen_jupyter.access] 40"), lines  # no session


async def test_forwarded_headers_are_not_believed_without_a_proxy_in_front(host: Any) -> None:
    """The links in an answer keep the scheme the caller really used."""
    spoofed = {**host.session, "X-Forwarded-Proto": "https", "X-Scheme": "https"}
    answer = await host.http.get(f"{host.v1}/models/demo-restricted", headers=spoofed)
    assert answer.status_code == 200, answer.text
    assert answer.json()["consent"]["consent_url"].startswith("http://127.0.0.1:")


def test_the_admin_token_file_is_private(tmp_path: Path) -> None:
    path = tmp_path / "dir" / "token"
    token = load_or_create_admin_token(path)
    assert token.startswith("lat_")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert load_or_create_admin_token(path) == token
    os.chmod(path, 0o644)
    with pytest.raises(PermissionError):
        load_or_create_admin_token(path)


def test_serve_says_how_to_use_it() -> None:
    shown = subprocess.run(
        [sys.executable, "-m", "lumen_jupyter.cli", "serve", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    for option in ("--workers", "--database-url", "--prefix", "--admin-token-file"):
        assert option in shown.stdout


async def test_the_model_api_also_answers_right_under_the_prefix(host: Any) -> None:
    """``https://hub/services/lumen/v1`` as well as ``…/services/lumen/lumen/v1``."""
    _, key = await host.key()
    short = openai.AsyncOpenAI(base_url=f"{host.root}v1", api_key=key, max_retries=0)
    answer = await short.chat.completions.create(model="demo-free", messages=MESSAGES, max_tokens=3)
    assert answer.choices
    profile = await host.http.get(f"{host.root}api/profile", headers=host.session)
    assert profile.status_code == 200 and profile.json()["user"]["username"] == "ada"
    await host.settled()


def test_the_service_reads_its_python_config_beside_the_yaml(tmp_path: Path) -> None:
    """``config_file`` is lumen's YAML (as on the extension); the Python config is
    ``jupyter_lumen_config.py`` on the config path, or ``--config FILE``."""
    from lumen_jupyter.service.app import LumenServe

    yaml_file = tmp_path / "lumen.yaml"
    yaml_file.write_text("models: []\n", encoding="utf-8")
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    (config_dir / "jupyter_lumen_config.py").write_text(
        "c.LumenServe.port = 8123\nc.Lumen.billing_mode = 'soft'\n", encoding="utf-8"
    )
    other = tmp_path / "other.py"
    other.write_text("c.LumenServe.port = 8124\n", encoding="utf-8")
    environ = {"JUPYTER_CONFIG_DIR": str(config_dir), "LUMEN_CONFIG": str(yaml_file)}
    with pytest.MonkeyPatch.context() as patch:
        for name, value in environ.items():
            patch.setenv(name, value)
        app = LumenServe()
        app.initialize(["--lumen-config", str(yaml_file)])
        assert (app.port, app.billing_mode, app.config_file) == (8123, "soft", str(yaml_file))
        LumenServe.clear_instance()
        app = LumenServe()
        app.initialize(["--config", str(other)])
        assert (app.port, app.billing_mode, app.config_file) == (8124, "strict", str(yaml_file))
        LumenServe.clear_instance()


async def test_made_up_model_names_never_become_metric_labels(host: Any) -> None:
    """Every label value is a series in every worker: a caller must not be able to mint them."""
    _, key = await host.key()
    for name in ("no-such-model-1", "no-such-model-2"):
        with pytest.raises(openai.NotFoundError):
            await host.openai(key).chat.completions.create(
                model=name, messages=MESSAGES, max_tokens=3
            )
    scraped = (await host.http.get(f"{host.root}metrics")).text
    assert "no-such-model" not in scraped
    assert 'lumen_model_calls_total{model="(unknown)",status="refused"}' in scraped
