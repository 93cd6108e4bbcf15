"""A Lumen admin's own file, in Lumen's format, on a real server: the policy Lumen means.

The YAML below is written for these tests in Lumen's schema (version 2): flat group
pools, ``model_access`` lists, ``needs_ack`` with ``ack_message``, ``disabled``,
``model_name``, a user keyed by email, ``rate_limiting.limit`` and ``app.database.url``
- plus sections this server does not use (OAuth, projects, group rules).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import openai
import pytest

from lumen_jupyter.demo.backend import DemoBackend

DEFAULT_ACK = "Physics models may log prompts upstream; send public data only."
OWN_ACK = "acked-model runs abroad: accept its terms once."

LUMEN_FILE = """
version: 2
app:
  name: Physics Lumen
  secret_key: not-used-here
  database:
    url: sqlite:///physics.db
    pool_recycle: 1800
  dev_user:
    email: someone@example.org
oauth2:
  client_id: physics
  client_secret: not-used-either
admins:
  - boss@example.org
rate_limiting:
  limit: 3 per minute
  storage_url: memory://
defaults:
  models:
    access: blocked
    ack_message: "{default_ack}"
  tokens:
    max: 5
    refresh: 0.5
    starting: 5
groups:
  theory:
    max: 40
    starting: 30
    model_access:
      default: allowed
      blocked: [pro-alias]
      graylist: [legacy-gray]     # Lumen's v1 words, still accepted
      blacklist: [legacy-black]
    rules:
      - field: affiliation
        contains: theory@
  # lab:
  #   max: 0
users:
  Ada@Example.org:
    groups: [theory]
    model_access:
      allowed: [granted-model]
projects:
  default:
    max: 100
models:
  - name: demo-free
    endpoints:
      - {{url: "{url}", api_key: x, model: demo-free}}
  - model_name: demo-pro
    input_cost_per_million: 50
    output_cost_per_million: 150
    url: https://example.org/cards/demo-pro
    endpoints:
      - {{url: "{url}", api_key: x, model: demo-pro}}
  - name: pro-alias
    endpoints:
      - {{url: "{url}", api_key: x, model: demo-pro}}
  - name: consent-model
    needs_ack: true
    endpoints:
      - {{url: "{url}", api_key: x, model: demo-free}}
  - name: acked-model
    needs_ack: true
    ack_message: "{own_ack}"
    endpoints:
      - {{url: "{url}", api_key: x, model: demo-free}}
  - name: retired
    disabled: true
    access: allowed
    endpoints:
      - {{url: "{url}", api_key: x, model: demo-free}}
  - name: granted-model
    access: blocked
    endpoints:
      - {{url: "{url}", api_key: x, model: demo-free}}
  - name: legacy-gray
    endpoints:
      - {{url: "{url}", api_key: x, model: demo-free}}
  - name: legacy-black
    endpoints:
      - {{url: "{url}", api_key: x, model: demo-free}}
"""


@pytest.fixture
def lumen_file(tmp_path: Path, demo: DemoBackend) -> Path:
    path = tmp_path / "etc" / "config.yaml"
    path.parent.mkdir()
    text = LUMEN_FILE.format(url=demo.base_url, default_ack=DEFAULT_ACK, own_ack=OWN_ACK)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def jp_server_config(lumen_file: Path) -> dict[str, Any]:
    # No database trait: the store is the file's app.database.url.
    traits = {
        "username": "ada",
        "email": "ada@example.org",
        "health_interval": 0.0,
        "config_file": str(lumen_file),
        "demo_backend": "off",
    }
    return {
        "ServerApp": {"jpserver_extensions": {"lumen_jupyter": True}},
        "LumenJupyter": traits,
    }


async def api(jp_fetch: Any, method: str, *path: str, body: Any = None) -> tuple[int, Any]:
    options: dict[str, Any] = {"method": method, "raise_error": False}
    if method == "POST":
        options["body"] = json.dumps(body or {})
    response = await jp_fetch("lumen", "api", *path, **options)
    return response.code, json.loads(response.body)


async def call(client: openai.AsyncOpenAI, model: str) -> tuple[int, str]:
    try:
        await client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=5
        )
    except openai.APIStatusError as error:
        body = error.body if isinstance(error.body, dict) else {}
        return error.status_code, str(body.get("code") or body.get("error", {}).get("code"))
    return 200, "ok"


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


async def test_the_policy_lumen_means(
    jp_fetch: Any, lumen_app: Any, lumen_file: Path, aclient: Any, books: Any
) -> None:
    # The store is app.database.url, relative to the YAML file.
    assert lumen_app.store.url.endswith(str(lumen_file.parent / "physics.db"))
    assert (lumen_file.parent / "physics.db").exists()

    status, models = await api(jp_fetch, "GET", "models")
    assert status == 200
    access = {m["name"]: m["access"] for m in models["models"]}
    assert access == {
        "demo-free": "allowed",  # the group's default
        "demo-pro": "allowed",  # model_name is the name
        "pro-alias": "blocked",  # the group's blocked list
        "consent-model": "needs_ack",
        "acked-model": "needs_ack",
        "retired": "blocked",  # disabled beats access: allowed
        "granted-model": "allowed",  # the email-keyed user's allowed list beats access: blocked
        "legacy-gray": "needs_ack",  # a graylist entry: allowed, and the model needs consent
        "legacy-black": "blocked",
    }
    notices = {m["name"]: m["notice"] for m in models["models"] if m["notice"]}
    assert notices == {
        "consent-model": DEFAULT_ACK,
        "acked-model": OWN_ACK,
        "legacy-gray": DEFAULT_ACK,
    }

    # The group's pool: max 40, starting 30, refresh from defaults.tokens.
    status, profile = await api(jp_fetch, "GET", "profile")
    assert status == 200
    pool = profile["pool"]
    assert (pool["source"], pool["max"]["micro"], pool["refresh_per_hour"]["micro"]) == (
        "group:theory",
        40_000_000,
        500_000,
    )
    assert pool["balance"]["micro"] == books.balance() == 30_000_000
    assert profile["tiles"]["groups"] == ["theory"]
    assert profile["user"]["email"] == "ada@example.org"

    # The kernel credential: not rate limited, so every outcome below is the policy's.
    client = aclient(lumen_app.kernel_credentials.issue("test-kernel"))
    assert await call(client, "demo-free") == (200, "ok")
    assert await call(client, "demo-pro") == (200, "ok")
    assert await call(client, "granted-model") == (200, "ok")
    assert await call(client, "retired") == (404, "model_disabled")
    assert await call(client, "pro-alias") == (403, "model_blocked")
    assert await call(client, "legacy-black") == (403, "model_blocked")
    assert await call(client, "legacy-gray") == (403, "consent_required")
    assert await call(client, "consent-model") == (403, "consent_required")
    status, _ = await api(
        jp_fetch,
        "POST",
        "models",
        "consent-model",
        "consent",
        body={"notice_digest": digest(DEFAULT_ACK)},
    )
    assert status == 200
    assert await call(client, "consent-model") == (200, "ok")
    # acked-model's notice is its own ack_message: a consent to another text does not count.
    assert await call(client, "acked-model") == (403, "consent_required")
    path = ("models", "acked-model", "consent")
    status, _ = await api(jp_fetch, "POST", *path, body={"notice_digest": digest(DEFAULT_ACK)})
    assert status == 400
    status, _ = await api(jp_fetch, "POST", *path, body={"notice_digest": digest(OWN_ACK)})
    assert status == 200
    assert await call(client, "acked-model") == (200, "ok")
    await books.settled()
    books.check_ledger()


async def test_rate_limit_from_the_file(aclient: Any, new_key: Any, books: Any) -> None:
    client = aclient(await new_key())
    outcomes = [await call(client, "demo-free") for _ in range(4)]
    assert [status for status, _ in outcomes] == [200, 200, 200, 429]
    await books.settled()
    books.check_ledger()
