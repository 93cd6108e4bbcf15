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
