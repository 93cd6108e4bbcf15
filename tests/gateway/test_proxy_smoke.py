from __future__ import annotations

from typing import Any

import openai


async def test_chat_with_personal_key(gateway_url: str, new_key: Any, lumen_app: Any) -> None:
    key = await new_key()
    client = openai.AsyncOpenAI(base_url=gateway_url, api_key=key, max_retries=0)
    reply = await client.chat.completions.create(
        model="demo-pro", messages=[{"role": "user", "content": "Hello there"}], max_tokens=20
    )
    assert reply.usage is not None
    assert reply.choices[0].message.content
    stream = await client.chat.completions.create(
        model="demo-pro",
        messages=[{"role": "user", "content": "Hello there"}],
        max_tokens=20,
        stream=True,
    )
    parts = [chunk async for chunk in stream]
    assert parts
    models = await client.models.list()
    assert {m.id for m in models.data} == {"demo-free", "demo-pro"}


async def test_a_stream_sent_in_one_piece_is_still_an_event_stream(
    gateway_url: str, new_key: Any
) -> None:
    """A short answer can reach the gateway in one read and leave in one write; it must
    still be labelled text/event-stream, or SSE clients and usage tallies miss it."""
    import httpx

    key = await new_key()
    body = {
        "model": "demo-free",
        "messages": [{"role": "user", "content": "Hi"}],
        "max_tokens": 3,
        "stream": True,
    }
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.post(
            f"{gateway_url}/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}
        )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.text.rstrip().endswith("data: [DONE]")
