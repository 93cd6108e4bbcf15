"""Fixtures shared by every test directory: a fake clock and the two databases.

``store_url`` runs a test on SQLite (a file in ``tmp_path``) and on PostgreSQL (a fresh
database on a throwaway server, see ``tests/pg.py``); ``store`` is a migrated ``Store`` on it;
``empty_store_url`` is the same without the schema, for migration tests.
Without PostgreSQL the PostgreSQL half is skipped, except under ``CI`` where it fails.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

import pytest

from lumen_jupyter.core.clock import FakeClock
from lumen_jupyter.demo.backend import DemoBackend
from lumen_jupyter.store import Store, sqlite_url
from tests import pg

pytest_plugins = ("pytest_jupyter.jupyter_server",)
"""A real Jupyter server for the server, gateway, kernel and widget tests (jp_* fixtures)."""

SLOW_PATHS = (
    "tests/ui/",  # a browser driving JupyterLab
    "tests/install/",  # a fresh virtual environment
    "tests/gateway/test_crash_recovery.py",  # kill -9 and a second server
    "tests/kernel/test_notebooks.py",  # whole notebooks through nbclient
    "tests/widgets/test_frontend.py",  # node: the TypeScript compiler and tests
)
SLOW_FIXTURES = frozenset({"server", "fresh_server", "client_python"})
"""A Jupyter server in a subprocess, with kernels it starts (tests/kernel); modules that
start their own with ``tests.kernel.server.start_server`` are slow as a whole; the
environment of the third-party clients (tests/clients)."""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the slow tests ``slow``: ``python -m pytest -m "not slow"`` is the quick loop."""
    root = config.rootpath
    for item in items:
        path = item.path.relative_to(root).as_posix() if item.path.is_relative_to(root) else ""
        fixtures = set(getattr(item, "fixturenames", ()))
        own_server = hasattr(getattr(item, "module", None), "start_server")
        if path.startswith(SLOW_PATHS) or fixtures & SLOW_FIXTURES or own_server:
            item.add_marker(pytest.mark.slow)


START = datetime(2026, 3, 4, 12, 0, tzinfo=timezone.utc)
"""Where every ``clock`` starts: a Wednesday, noon UTC."""


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[pg.PostgresServer]:
    reason = pg.unavailable_reason()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"CI must test PostgreSQL: {reason}", pytrace=False)
        pytest.skip(reason)
    try:
        server = pg.open_server()
    except Exception as exc:
        if os.environ.get("CI"):
            pytest.fail(f"CI must test PostgreSQL, which did not start: {exc}", pytrace=False)
        pytest.skip(f"PostgreSQL did not start: {exc}")
    try:
        yield server
    finally:
        pg.stop(server)


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres),
    ]
)
def backend(request: pytest.FixtureRequest) -> str:
    """``sqlite`` then ``postgresql``: every test using the fixtures below runs on both."""
    return str(request.param)


def _fresh_url(request: pytest.FixtureRequest, backend: str, migrated: bool) -> Iterator[str]:
    if backend == "sqlite":
        path = request.getfixturevalue("tmp_path") / "lumen.sqlite"
        url = sqlite_url(path)
        if migrated:
            db = Store(url)
            db.migrate()
            db.dispose()
        yield url
        return
    server: pg.PostgresServer = request.getfixturevalue("postgres_server")
    with server.database(migrated=migrated) as url:
        yield url


@pytest.fixture
def empty_store_url(request: pytest.FixtureRequest, backend: str) -> Iterator[str]:
    """The URL of a fresh, empty database: a SQLite file in ``tmp_path``, or a new
    PostgreSQL database dropped after the test."""
    yield from _fresh_url(request, backend, migrated=False)


@pytest.fixture
def store_url(request: pytest.FixtureRequest, backend: str) -> Iterator[str]:
    """The URL of a fresh database already at the latest schema (so another process or
    server can open it directly)."""
    yield from _fresh_url(request, backend, migrated=True)


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    """A migrated ``Store`` on ``store_url`` (migrated already: no need to migrate again)."""
    db = Store(store_url)
    try:
        yield db
    finally:
        db.dispose()


@pytest.fixture
def demo(jp_asyncio_loop: asyncio.AbstractEventLoop) -> Iterator[DemoBackend]:
    """An in-process demo backend with fault controls, on the server's event loop."""
    backend = DemoBackend(enable_control=True)
    jp_asyncio_loop.run_until_complete(backend.start())
    yield backend
    jp_asyncio_loop.run_until_complete(backend.stop())


@pytest.fixture
def jp_fetch(jp_fetch: Any) -> Any:
    """pytest-jupyter's ``jp_fetch``, with every ``lumen/api`` answer (errors too) checked
    against the served OpenAPI document (``tests/contract.py``)."""
    from urllib.parse import unquote

    import tornado.httpclient

    from tests.contract import check_response

    async def fetch(*parts: Any, **kwargs: Any) -> Any:
        method = str(kwargs.get("method", "GET")).upper()
        try:
            response = await jp_fetch(*parts, **kwargs)
        except tornado.httpclient.HTTPClientError as error:
            if error.response is not None:
                path = unquote(error.response.request.url.split("://", 1)[-1])
                check_response(method, path, error.code, error.response.body)
            raise
        check_response(method, unquote(response.request.url), response.code, response.body)
        return response

    return fetch
