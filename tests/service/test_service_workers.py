"""The standalone service with two workers on one PostgreSQL: money holds across them.

Real processes throughout: ``python -m lumen_jupyter.service --workers 2``, a demo
upstream process, PostgreSQL, and the ``openai``-shaped HTTP calls of many clients.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from lumen_jupyter.core.ledger import ledger_matches_balance
from lumen_jupyter.store import Store
from lumen_jupyter.store.schema import accounts, instances, requests_log
from tests.service.service_proc import demo_upstream, lumen_service

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

MESSAGES = [{"role": "user", "content": "Tell me a long story"}]


@pytest.fixture
def pg_url(postgres_server: Any) -> Any:
    with postgres_server.database(migrated=False) as url:
        yield url


def books(url: str) -> dict[str, Any]:
    store = Store(url)
    try:
        with store.read() as conn:
            ids = [int(i) for i in conn.execute(select(accounts.c.id)).scalars()]
            by_status = dict(
                conn.execute(
                    select(requests_log.c.status, func.count()).group_by(requests_log.c.status)
                ).all()
            )
            return {
                "ledger_ok": all(ledger_matches_balance(conn, acct) for acct in ids),
                "by_status": by_status,
                "charged": int(
                    conn.execute(
                        select(func.coalesce(func.sum(requests_log.c.coins_micro), 0))
                    ).scalar_one()
                ),
            }
    finally:
        store.dispose()


def pending_by_pid(url: str) -> dict[int, int]:
    store = Store(url)
    try:
        with store.read() as conn:
            rows = conn.execute(
                select(instances.c.pid, func.count())
                .select_from(
                    requests_log.join(instances, instances.c.id == requests_log.c.instance_id)
                )
                .where(requests_log.c.status == "pending")
                .group_by(instances.c.pid)
            ).all()
        return {int(pid): int(n) for pid, n in rows}
    finally:
        store.dispose()


async def call(http: httpx.AsyncClient, url: str, key: str, model: str, **extra: Any) -> int:
    answer = await http.post(
        url,
        json={"model": model, "messages": MESSAGES, **extra},
        headers={"Authorization": f"Bearer {key}"},
    )
    return answer.status_code


def test_500_concurrent_calls_on_two_workers_never_overspend(tmp_path: Path, pg_url: str) -> None:
    with demo_upstream() as upstream, lumen_service(tmp_path / "svc", pg_url, upstream) as svc:
        assert len(svc.workers()) == 2
        key = svc.admin("new-key", "ada", "load", "--create")["key"]["key"]

        async def load() -> list[int]:
            limits = httpx.Limits(max_connections=100)
            async with httpx.AsyncClient(timeout=120, limits=limits) as http:
                url = f"{svc.root}lumen/v1/chat/completions"
                return await asyncio.gather(
                    *(call(http, url, key, "demo-dear", max_tokens=20) for _ in range(500))
                )

        statuses = asyncio.run(load())
        assert set(statuses) <= {200, 429}, statuses
        assert statuses.count(200) > 0 and statuses.count(429) > 0
        state = books(pg_url)
        assert state["ledger_ok"]
        assert "pending" not in state["by_status"], state
        assert state["charged"] <= 20_000_000  # the whole pool, never more
        pool = svc.admin("pool", "ada")["pool"]
        assert pool["balance"]["micro"] >= 0
        assert 20_000_000 - pool["balance"]["micro"] == state["charged"]


def test_a_killed_worker_is_replaced_and_its_calls_are_reconciled(
    tmp_path: Path, pg_url: str
) -> None:
    with (
        demo_upstream(chunk_delay_ms=100) as upstream,
        lumen_service(tmp_path / "svc", pg_url, upstream, pool={"max": 1000}) as svc,
    ):
        before = sorted(svc.workers())
        key = svc.admin("new-key", "ada", "streams", "--create")["key"]["key"]

        async def streams() -> list[tuple[int, bool]]:
            async with httpx.AsyncClient(timeout=120) as http:
                url = f"{svc.root}lumen/v1/chat/completions"

                async def one() -> tuple[int, bool]:
                    body = {"model": "demo-pro", "messages": MESSAGES, "stream": True}
                    body["max_tokens"] = 60
                    headers = {"Authorization": f"Bearer {key}"}
                    try:
                        async with http.stream("POST", url, json=body, headers=headers) as answer:
                            text = "".join([chunk async for chunk in answer.aiter_text()])
                            return answer.status_code, "[DONE]" in text
                    except httpx.HTTPError:
                        return 0, False

                tasks = [asyncio.create_task(one()) for _ in range(20)]
                victim = await asyncio.to_thread(wait_for_victim, pg_url)
                os.kill(victim, signal.SIGKILL)
                return await asyncio.gather(*tasks)

        outcomes = asyncio.run(streams())
        finished = [o for o in outcomes if o == (200, True)]
        broken = [o for o in outcomes if o != (200, True)]
        assert finished and broken, outcomes
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            after = svc.workers()
            if len(after) == 2 and sorted(after) != before:
                break
            time.sleep(0.1)
        assert len(svc.workers()) == 2 and sorted(svc.workers()) != before
        while time.monotonic() < deadline:
            state = books(pg_url)
            if "pending" not in state["by_status"]:
                break
            time.sleep(0.2)
        assert "pending" not in state["by_status"], state
        assert state["by_status"].get("ok", 0) >= len(finished)
        assert state["ledger_ok"]


def wait_for_victim(url: str) -> int:
    """The worker holding the most running streams, once both hold some."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        pending = pending_by_pid(url)
        if len(pending) == 2 and sum(pending.values()) >= 10:
            return max(pending, key=lambda pid: pending[pid])
        time.sleep(0.05)
    raise AssertionError(f"the streams did not spread over both workers: {pending_by_pid(url)}")


def test_sigterm_leaves_no_process_and_frees_the_port(tmp_path: Path, pg_url: str) -> None:
    with demo_upstream() as upstream, lumen_service(tmp_path / "svc", pg_url, upstream) as svc:
        workers = svc.workers()
        assert len(workers) == 2
        assert svc.stop() == 0
        for pid in workers:
            assert not Path(f"/proc/{pid}").exists() or _is_zombie(pid), pid
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", svc.port))


def test_more_than_one_worker_needs_postgresql(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'lumen.db'}"
    with demo_upstream() as upstream:
        try:
            with lumen_service(tmp_path / "svc", url, upstream):
                pytest.fail("the service started two workers on SQLite")
        except AssertionError as refused:
            assert "needs PostgreSQL" in str(refused)


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True


def test_a_pool_change_in_another_process_reaches_an_event_stream_at_once(
    tmp_path: Path, pg_url: str
) -> None:
    """The coin meter's stream is held by one worker; a grant made by another process
    (the admin command) reaches it through PostgreSQL's notifications, well before the
    streams' own 5-second re-read."""
    with demo_upstream() as upstream, lumen_service(tmp_path / "svc", pg_url, upstream) as svc:
        key = svc.admin("new-key", "ada", "meter", "--create")["key"]["key"]

        async def watch() -> float:
            headers = {"Authorization": f"Bearer {key}"}
            async with (
                httpx.AsyncClient(timeout=30) as http,
                http.stream("GET", f"{svc.root}lumen/api/events", headers=headers) as events,
            ):
                assert events.status_code == 200
                lines = events.aiter_lines()
                first = await anext(_pool_balances(lines))
                granted_at = time.monotonic()
                await asyncio.to_thread(svc.admin, "grant", "ada", "5")
                moved = await asyncio.wait_for(anext(_pool_balances(lines)), 10)
                assert moved == first + 5_000_000
                return time.monotonic() - granted_at

        assert asyncio.run(watch()) < 2.0


async def _pool_balances(lines: Any) -> Any:
    kind = None
    async for line in lines:
        if line.startswith("event: "):
            kind = line.removeprefix("event: ")
        elif line.startswith("data: ") and kind == "pool":
            yield json.loads(line.removeprefix("data: "))["balance"]["micro"]


def test_connections_arriving_together_are_spread_over_the_workers(
    tmp_path: Path, pg_url: str
) -> None:
    """Each worker listens on a socket of its own (SO_REUSEPORT): the kernel spreads new
    connections over them.  On one shared socket, the first worker to wake accepted every
    connection waiting - a client opening its pool at once landed on one worker."""
    with (
        demo_upstream(chunk_delay_ms=100) as upstream,
        lumen_service(tmp_path / "svc", pg_url, upstream, pool={"max": 1000}) as svc,
    ):
        key = svc.admin("new-key", "ada", "spread", "--create")["key"]["key"]
        body = {"model": "demo-pro", "messages": MESSAGES, "stream": True, "max_tokens": 30}
        url = f"{svc.root}lumen/v1/chat/completions"

        async def streams() -> dict[int, int]:
            clients = [
                httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=1))
                for _ in range(32)
            ]

            async def one(http: httpx.AsyncClient) -> None:
                headers = {"Authorization": f"Bearer {key}"}
                async with http.stream("POST", url, json=body, headers=headers) as answer:
                    async for _ in answer.aiter_bytes():
                        pass

            tasks = [asyncio.create_task(one(http)) for http in clients]
            try:
                deadline = time.monotonic() + 20
                while time.monotonic() < deadline:
                    pending = await asyncio.to_thread(pending_by_pid, pg_url)
                    if sum(pending.values()) == 32:
                        return pending
                    await asyncio.sleep(0.05)
                raise AssertionError(f"32 streams did not start: {pending}")
            finally:
                await asyncio.gather(*tasks, return_exceptions=True)
                for http in clients:
                    await http.aclose()

        by_worker = asyncio.run(streams())
        # 32 connections hashed over 2 sockets: fewer than 6 on one has odds of 1 in 9,000
        assert sorted(by_worker) == sorted(svc.workers()), by_worker
        assert min(by_worker.values()) >= 6, by_worker
