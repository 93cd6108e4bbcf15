"""The event hub reads a user's pool once per change, whatever the number of streams."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from lumen_jupyter.core.accounts import Identity
from lumen_jupyter.server import events
from lumen_jupyter.server.events import EventHub

ADA = Identity("ada", "Ada")
BOB = Identity("bob", "Bob")


class Pools:
    """Balances by user, and how often each was read."""

    def __init__(self) -> None:
        self.balance = {"ada": 10, "bob": 5}
        self.reads: dict[str, int] = {"ada": 0, "bob": 0}

    async def read(self, who: Identity) -> dict[str, Any]:
        self.reads[who.username] += 1
        return {"balance": self.balance[who.username]}


async def collect(hub: EventHub, who: Identity, into: list[str], ready: asyncio.Event) -> None:
    async for item in hub.subscribe(who, timeout=0.05):
        if item is not None:
            into.append(item)
            ready.set()


@pytest.mark.asyncio
async def test_a_burst_of_calls_costs_one_read_for_two_hundred_streams(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(events, "COALESCE_SECONDS", 0.05)
    pools = Pools()
    hub = EventHub(pools.read, recheck=60)
    received: list[list[str]] = [[] for _ in range(200)]
    ready = [asyncio.Event() for _ in range(200)]
    tasks = [
        asyncio.ensure_future(collect(hub, ADA, into, flag))
        for into, flag in zip(received, ready, strict=True)
    ]
    await asyncio.wait_for(asyncio.gather(*(r.wait() for r in ready)), 5)
    assert pools.reads["ada"] == 1  # the first stream's read served all of them
    assert hub.subscribers == 200

    pools.balance["ada"] = 7
    for _ in range(100):  # a hundred calls settle at once
        hub.publish("usage", {"model": "m"}, "ada")
    await asyncio.sleep(0.3)
    assert pools.reads["ada"] == 2
    assert all(r[-1] == 'event: pool\ndata: {"balance": 7}\n\n' for r in received)
    assert all(len(r) == 2 for r in received)

    hub.publish("usage", {"model": "m"}, "ada")  # nothing moved: read, but no event
    await asyncio.sleep(0.2)
    assert pools.reads["ada"] == 3 and all(len(r) == 2 for r in received)

    hub.publish("refused", {"code": "consent_required"}, "bob")  # nobody of bob's listens
    assert pools.reads["bob"] == 0 and all(len(r) == 2 for r in received)

    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert hub.subscribers == 0
    hub.close()


@pytest.mark.asyncio
async def test_each_user_gets_only_their_own_pool() -> None:
    pools = Pools()
    hub = EventHub(pools.read, recheck=60)
    got: dict[str, list[str]] = {"ada": [], "bob": []}
    flags = {"ada": asyncio.Event(), "bob": asyncio.Event()}
    tasks = [
        asyncio.ensure_future(collect(hub, who, got[who.username], flags[who.username]))
        for who in (ADA, BOB)
    ]
    await asyncio.wait_for(asyncio.gather(*(f.wait() for f in flags.values())), 5)
    assert got["ada"] == ['event: pool\ndata: {"balance": 10}\n\n']
    assert got["bob"] == ['event: pool\ndata: {"balance": 5}\n\n']
    hub.publish("refused", {"code": "coins_exhausted"}, "bob")
    await asyncio.sleep(0.05)
    assert len(got["ada"]) == 1 and got["bob"][-1].startswith("event: refused")
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    hub.close()
