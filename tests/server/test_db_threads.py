"""The REST API's database threads: two on SQLite unless configured, so a panel's reads
run in parallel (WAL readers) and a slow one does not hold up the others."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from lumen_jupyter.server.runtime import SQLITE_DB_THREADS


def executor_of(jp_serverapp: Any) -> Any:
    return jp_serverapp.web_app.settings["lumen_executor"]


async def test_sqlite_reads_run_on_two_threads(jp_serverapp: Any, api: Any) -> None:
    executor = executor_of(jp_serverapp)
    assert SQLITE_DB_THREADS == 2 and executor._max_workers == 2
    service = jp_serverapp.web_app.settings["lumen_service"]
    # While one thread is held up (a slow read), the API still answers on the other.
    started, release = threading.Event(), threading.Event()

    def slow_read() -> None:
        with service.store.read() as conn:
            conn.exec_driver_sql("SELECT 1")
            started.set()
            release.wait(10)

    loop = asyncio.get_running_loop()
    held = loop.run_in_executor(executor, slow_read)
    assert await asyncio.to_thread(started.wait, 10)
    t0 = time.monotonic()
    status, profile = await api("GET", "profile")
    assert status == 200 and profile["user"]["username"] == "ada"
    assert time.monotonic() - t0 < 5
    release.set()
    await held


@pytest.mark.parametrize("lumen_config", [{"db_threads": 5}])
async def test_a_configured_count_wins(jp_serverapp: Any, lumen_config: Any) -> None:
    assert executor_of(jp_serverapp)._max_workers == 5
