"""The event stream the Lab status bar listens to: pool changes and refusals, pushed."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import openai
import pytest


async def _events(response: httpx.Response) -> Any:
    kind = None
    async for line in response.aiter_lines():
        if line.startswith("event: "):
            kind = line[7:]
        elif line.startswith("data: "):
            yield kind, json.loads(line[6:])


async def test_spending_and_refusals_are_pushed(
    gateway_url: str, new_key: Any, jp_serverapp: Any
) -> None:
    token = jp_serverapp.identity_provider.token
    events_url = gateway_url.replace("/lumen/v1", "/lumen/api/events")
    key = await new_key()
    client = openai.AsyncOpenAI(base_url=gateway_url, api_key=key, max_retries=0)
    async with (
        httpx.AsyncClient(timeout=10) as http,
        http.stream("GET", events_url, headers={"Authorization": f"token {token}"}) as response,
    ):
        assert response.status_code == 200
        stream = _events(response)
        kind, first = await stream.__anext__()
        assert kind == "pool" and first["balance"]["text"] == "20"

        started = time.monotonic()
        await client.chat.completions.create(
            model="demo-pro", messages=[{"role": "user", "content": "spend a little"}]
        )
        kind, moved = await asyncio.wait_for(stream.__anext__(), 2)
        assert kind == "pool" and moved["balance"]["micro"] < first["balance"]["micro"]
        assert time.monotonic() - started < 2

        with pytest.raises(openai.PermissionDeniedError):
            await client.chat.completions.create(
                model="demo-restricted", messages=[{"role": "user", "content": "hi"}]
            )
        kind, refused = await asyncio.wait_for(stream.__anext__(), 2)
        assert kind == "refused"
        assert refused["code"] == "consent_required" and refused["model"] == "demo-restricted"
        assert key not in json.dumps(refused)
