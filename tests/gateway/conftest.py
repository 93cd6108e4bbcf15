"""A real Jupyter server running the gateway, and helpers to call it with `openai`.

Two set-ups:

* the embedded default (``lumen_config`` returns ``{}``): the server starts its own demo
  backend without control endpoints;
* a YAML configuration pointing at a ``demo`` backend of the test's own (with the
  ``/_demo`` fault controls and its counters reachable as ``demo.state``).  A test module
  opts in by overriding ``lumen_config`` with ``yaml_lumen_config``; a test changes the
  set-up with ``@pytest.mark.gateway(traits=..., pool=..., models=..., patch=...)``.

``books`` reads what was charged straight from the store and checks the ledger invariant.
"""

from __future__ import annotations

import asyncio
import copy
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml
from sqlalchemy import select

from lumen_jupyter.core.ledger import ledger_matches_balance, ledger_sum, read_balance
from lumen_jupyter.demo.backend import DemoBackend
from lumen_jupyter.store.schema import (
    accounts,
    api_keys,
    balances,
    ledger,
    requests_log,
    usage_stats,
)

NOTICE = "demo-restricted has terms of use: accept them once before calling it."


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "gateway(traits=None, pool=..., models=None, patch=None): change the YAML set-up "
        "of one gateway test (LumenJupyter traits, defaults.tokens, the models list, or a "
        "function patch(config_dict, demo_base_url) that edits the YAML).",
    )


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


@pytest.fixture
def make_key(jp_fetch: Any) -> Any:
    """``await make_key(name)`` -> (key id, raw key)."""

    async def create(name: str = "test-key") -> tuple[int, str]:
        response = await jp_fetch(
            "lumen", "api", "keys", method="POST", body=json.dumps({"name": name})
        )
        created = json.loads(response.body)
        return int(created["id"]), str(created["key"])

    return create


# -- a YAML configuration pointing at the demo backend (the `demo` fixture) ---------------


def model_entry(
    name: str,
    url: str,
    upstream: str = "demo-pro",
    price_in: float = 50,
    price_out: float = 150,
    **extra: Any,
) -> dict[str, Any]:
    return {
        "name": name,
        "input_cost_per_million": price_in,
        "output_cost_per_million": price_out,
        "endpoints": [{"url": url, "model": upstream}],
        **extra,
    }


def default_models(url: str) -> list[dict[str, Any]]:
    """demo-free, demo-pro (priced), pro-alias (another name for demo-pro upstream),
    demo-restricted (needs consent) and demo-blocked (access blocked)."""
    return [
        model_entry("demo-free", url, "demo-free", 0, 0, max_model_len=8192),
        model_entry(
            "demo-pro",
            url,
            "demo-pro",
            50,
            150,
            description="Priced demo model",
            max_model_len=32768,
            max_output_tokens=2048,
            supports_function_calling=True,
            supports_reasoning=False,
            knowledge_cutoff="2024-06",
            input_modalities=["text"],
            output_modalities=["text"],
        ),
        model_entry("pro-alias", url, "demo-pro", 2, 3),
        model_entry(
            "demo-restricted", url, "demo-restricted", 100, 300, needs_consent=True, notice=NOTICE
        ),
        model_entry("demo-blocked", url, "demo-pro", access="blocked"),
    ]


DEFAULT_POOL = {"max": 20, "refresh": 1, "starting": 20}


@pytest.fixture
def gateway_marker(request: pytest.FixtureRequest) -> dict[str, Any]:
    marker = request.node.get_closest_marker("gateway")
    return dict(marker.kwargs) if marker else {}


@pytest.fixture
def lumen_yaml(demo: DemoBackend, gateway_marker: dict[str, Any]) -> dict[str, Any]:
    """The YAML configuration (as a dict) the server reads."""
    data: dict[str, Any] = {
        "models": gateway_marker.get("models") or default_models(demo.base_url),
        "defaults": {"models": "allowed"},
    }
    pool = gateway_marker.get("pool", DEFAULT_POOL)
    if pool is not None:
        data["defaults"]["tokens"] = copy.deepcopy(pool)
    patch: Callable[[dict[str, Any], str], None] | None = gateway_marker.get("patch")
    if patch is not None:
        patch(data, demo.base_url)
    return data


@pytest.fixture
def yaml_lumen_config(
    tmp_path: Path, lumen_yaml: dict[str, Any], gateway_marker: dict[str, Any]
) -> dict[str, Any]:
    """Traits that make the server read ``lumen_yaml`` and start no demo of its own."""
    path = tmp_path / "lumen.yaml"
    path.write_text(yaml.safe_dump(lumen_yaml), encoding="utf-8")
    return {
        "config_file": str(path),
        "demo_backend": "off",
        **(gateway_marker.get("traits") or {}),
    }


# -- calling the gateway -----------------------------------------------------------------


@pytest.fixture
def session_token(jp_serverapp: Any) -> str:
    return str(jp_serverapp.identity_provider.token)


@pytest.fixture
def aclient(gateway_url: str) -> Callable[..., openai.AsyncOpenAI]:
    """``aclient(key, **options)``: an AsyncOpenAI client on the gateway, no retries."""

    def make(api_key: str, **options: Any) -> openai.AsyncOpenAI:
        options.setdefault("max_retries", 0)
        options.setdefault("timeout", 30)
        return openai.AsyncOpenAI(base_url=gateway_url, api_key=api_key, **options)

    return make


@pytest.fixture
def sclient(gateway_url: str) -> Callable[..., openai.OpenAI]:
    """``sclient(key, **options)``: a sync OpenAI client (use it in a thread)."""

    def make(api_key: str, **options: Any) -> openai.OpenAI:
        options.setdefault("max_retries", 0)
        options.setdefault("timeout", 30)
        return openai.OpenAI(base_url=gateway_url, api_key=api_key, **options)

    return make


# -- what was charged ---------------------------------------------------------------------


class Books:
    """Read-only views of the store, and the invariants every test ends with."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.store = app.store

    def account_id(self, username: str = "ada") -> int:
        with self.store.read() as conn:
            found = conn.execute(
                select(accounts.c.id).where(accounts.c.username == username)
            ).scalar_one()
        return int(found)

    def balance(self, username: str = "ada") -> int | None:
        with self.store.read() as conn:
            row = read_balance(conn, self.account_id(username))
        return None if row is None else row.balance_micro

    def last_refill_at(self, username: str = "ada") -> Any:
        with self.store.read() as conn:
            row = read_balance(conn, self.account_id(username))
        assert row is not None
        return row.last_refill_at

    def requests(self) -> list[Any]:
        with self.store.read() as conn:
            return list(conn.execute(select(requests_log).order_by(requests_log.c.id)))

    def request(self) -> Any:
        """The only request in the log."""
        rows = self.requests()
        assert len(rows) == 1, rows
        return rows[0]

    def ledger(self) -> list[Any]:
        with self.store.read() as conn:
            return list(conn.execute(select(ledger).order_by(ledger.c.id)))

    def key(self, key_id: int) -> Any:
        with self.store.read() as conn:
            return conn.execute(select(api_keys).where(api_keys.c.id == key_id)).one()

    def keys(self) -> list[Any]:
        with self.store.read() as conn:
            return list(conn.execute(select(api_keys).order_by(api_keys.c.id)))

    def usage(self) -> dict[tuple[str, str], Any]:
        """usage_stats rows by (model, source)."""
        with self.store.read() as conn:
            rows = conn.execute(select(usage_stats))
            return {(r.model, r.source): r for r in rows}

    def spent(self) -> int:
        """Coins charged by settled calls (the sum of request costs)."""
        return sum(int(r.coins_micro) for r in self.requests())

    def check_ledger(self) -> None:
        """balance == sum(ledger) for every account; every request's charge is in the ledger."""
        with self.store.read() as conn:
            ids = [int(i) for i in conn.execute(select(accounts.c.id)).scalars()]
            for acct in ids:
                row = read_balance(conn, acct)
                total = ledger_sum(conn, acct)
                assert ledger_matches_balance(conn, acct), (
                    f"account {acct}: balance {row} != sum(ledger) {total}"
                )
            has_balance = {int(i) for i in conn.execute(select(balances.c.account_id)).scalars()}
        by_request: dict[int, int] = {}
        for entry in self.ledger():
            if entry.request_id is not None:
                by_request[int(entry.request_id)] = by_request.get(int(entry.request_id), 0) + int(
                    entry.amount_micro
                )
        for req in self.requests():
            if int(req.account_id) in has_balance and req.metered:
                # reserve + settle (or release) of a finished call add up to minus its cost
                assert by_request.get(int(req.id), 0) == -int(req.coins_micro), req

    async def settled(self, timeout: float = 10.0) -> None:
        """Wait until no request is pending, then check the ledger invariant."""
        deadline = time.monotonic() + timeout
        while True:
            pending = [r for r in self.requests() if r.status == "pending"]
            if not pending:
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"requests left pending: {pending}")
            await asyncio.sleep(0.02)
        self.check_ledger()


@pytest.fixture
def books(lumen_app: Any) -> Books:
    return Books(lumen_app)


async def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


@pytest.fixture
def eventually() -> Callable[..., Any]:
    """``await eventually(lambda: cond)``: poll a condition while the server runs."""
    return wait_for
