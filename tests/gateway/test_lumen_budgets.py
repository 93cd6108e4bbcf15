"""Pools from a Lumen file on a real server: group budgets, a user's own pool, no pool at
all, and a database that belongs to Lumen itself.  Each test writes its own YAML in
Lumen's format (version 2)."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from lumen_jupyter.demo.backend import DemoBackend

MODELS = """
models:
  - name: demo-pro
    access: allowed
    input_cost_per_million: 50
    output_cost_per_million: 150
    endpoints:
      - {{url: "{url}", api_key: x, model: demo-pro}}
"""

GROUP_BUDGETS = """
version: 2
app:
  name: Budgets
defaults:
  tokens: {{max: 5, refresh: 1}}
groups:
  closed:
    max: 0
  small:
    max: 2
    refresh: 0
    starting: 0.001
users:
  ada@example.org:
    groups: [closed, small]
"""

OWN_POOL = """
version: 2
defaults:
  tokens: {{max: 5}}
groups:
  small:
    max: 2
    starting: 0.001
users:
  ada@example.org:
    groups: [small]
    max: -2
"""

NO_POOL = """
oauth2:
  client_id: x
groups:
  # staff:
  #   max: 10
"""


@pytest.fixture
def lumen_text(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class Records(logging.Filter):
    """Notes every record and lets it through: a filter, because the server's logging
    set-up replaces the logger's handlers (and the logger does not propagate)."""

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def filter(self, record: logging.LogRecord) -> bool:
        self.messages.append(record.getMessage())
        return True


@pytest.fixture
def lumen_log() -> Iterator[Records]:
    """What the extension logs, from before it starts."""
    records = Records()
    logger = logging.getLogger("LumenJupyter")
    logger.addFilter(records)
    yield records
    logger.removeFilter(records)


@pytest.fixture
def lumen_config(
    tmp_path: Path, demo: DemoBackend, lumen_text: str, lumen_log: Records
) -> dict[str, Any]:
    path = tmp_path / "config.yaml"
    path.write_text((lumen_text + MODELS).format(url=demo.base_url), encoding="utf-8")
    return {"config_file": str(path), "demo_backend": "off", "email": "ada@example.org"}


async def call(client: openai.AsyncOpenAI) -> tuple[int, str]:
    try:
        await client.chat.completions.create(
            model="demo-pro", messages=[{"role": "user", "content": "hi"}], max_tokens=100
        )
    except openai.APIStatusError as error:
        body = error.body if isinstance(error.body, dict) else {}
        return error.status_code, str(body.get("code"))
    return 200, "ok"


@pytest.mark.parametrize("lumen_text", [GROUP_BUDGETS], indirect=True)
async def test_the_group_budget_applies(lumen_app: Any, aclient: Any, books: Any) -> None:
    state = lumen_app.service.pool_state(lumen_app.identity)
    # 'closed' (max 0) is skipped; 'small' wins over the 5-coin default.
    assert (state["source"], state["max"]["micro"]) == ("group:small", 2_000_000)
    assert state["refresh_per_hour"]["micro"] == 0
    assert books.balance() == 1_000  # starting: 0.001
    # Its worst case (100 output tokens at 150/M = 0.015) is more than the group's balance.
    assert await call(aclient(lumen_app.kernel_credentials.issue("test-kernel"))) == (
        429,
        "coins_exhausted",
    )
    assert books.balance() == 1_000
    books.check_ledger()


@pytest.mark.parametrize("lumen_text", [OWN_POOL], indirect=True)
async def test_a_users_own_pool_beats_the_groups(lumen_app: Any, aclient: Any, books: Any) -> None:
    state = lumen_app.service.pool_state(lumen_app.identity)
    assert state == {"state": "unlimited", "source": "user"}
    assert await call(aclient(lumen_app.kernel_credentials.issue("test-kernel"))) == (200, "ok")
    await books.settled()
    books.check_ledger()


@pytest.mark.parametrize("lumen_text", [NO_POOL], indirect=True)
async def test_without_a_pool_calls_are_refused(lumen_app: Any, aclient: Any) -> None:
    assert lumen_app.config_error is None
    assert lumen_app.service.pool_state(lumen_app.identity) == {"state": "none", "source": None}
    assert await call(aclient(lumen_app.kernel_credentials.issue("test-kernel"))) == (
        403,
        "no_pool",
    )


UNUSED_LOGGED = "configuration keys read but not used here: app.name"


@pytest.mark.parametrize("lumen_text", [GROUP_BUDGETS], indirect=True)
async def test_unused_keys_are_logged_once_at_start(lumen_app: Any, lumen_log: Records) -> None:
    assert sum(UNUSED_LOGGED in line for line in lumen_log.messages) == 1, lumen_log.messages


LUMENS_OWN_DB = """
version: 2
app:
  database:
    url: sqlite:///lumen.db
"""


@pytest.fixture
def jp_server_config(lumen_config: dict[str, Any]) -> dict[str, Any]:
    # No database trait: app.database.url names the store.
    traits = {"username": "ada", "health_interval": 0.0, **lumen_config}
    return {
        "ServerApp": {"jpserver_extensions": {"lumen_jupyter": True}},
        "LumenJupyter": traits,
    }


@pytest.fixture
def lumens_database(tmp_path: Path) -> Path:
    path = tmp_path / "lumen.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE entities (id INTEGER PRIMARY KEY, email TEXT)")
        conn.execute("CREATE TABLE api_keys (id INTEGER PRIMARY KEY, key_hash TEXT)")
    return path


@pytest.mark.parametrize("lumen_text", [LUMENS_OWN_DB], indirect=True)
async def test_a_database_of_lumen_itself_is_refused(
    lumens_database: Path, jp_fetch: Any, lumen_app: Any
) -> None:
    response = await jp_fetch("lumen", "api", "profile", raise_error=False)
    assert response.code == 503
    assert b"holds Lumen's own tables" in response.body
    with sqlite3.connect(lumens_database) as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    assert tables == {"entities", "api_keys"}  # nothing of ours was created in it
