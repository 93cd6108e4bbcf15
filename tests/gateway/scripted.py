"""Loopback upstreams that answer each connection with a script: well or badly.

A raw asyncio server, so a test can send exactly the bytes a hostile or broken
upstream would (a negative chunk size, two framings at once, bytes after the
answer) and see what the client did: requests received, connections opened and
how many are still open.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable

Script = Callable[["Scripted", asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Scripted:
    """A loopback server that answers each connection with ``script``."""

    def __init__(self, script: Script | None = None, *, host: str = "127.0.0.1") -> None:
        self.script = script
        self.host = host
        self.connections = 0
        self.open_connections = 0
        self.requests: list[bytes] = []
        self.server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    async def start(self, ssl: object = None) -> Scripted:
        self.server = await asyncio.start_server(self._serve, self.host, 0, ssl=ssl)  # type: ignore[arg-type]
        return self

    async def stop(self) -> None:
        if self.server is None:
            return
        self.server.close()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await self.server.wait_closed()
        self.server = None

    async def __aenter__(self) -> Scripted:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    @property
    def url(self) -> str:
        return f"{self.base_url}/chat/completions"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open_connections += 1
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            if self.script is not None:
                await self.script(self, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            self.open_connections -= 1
            writer.close()
            self._handlers.discard(task)

    async def read_request(self, reader: asyncio.StreamReader) -> bytes:
        """One request (head and Content-Length body); its body is returned."""
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        body = await reader.readexactly(length)
        self.requests.append(head + body)
        return body

    def paths(self) -> list[str]:
        return [r.split(b" ", 2)[1].decode() for r in self.requests]


def answer(body: bytes, extra: bytes = b"", status: bytes = b"200 OK") -> bytes:
    """A whole HTTP/1.1 answer framed by Content-Length."""
    head = b"HTTP/1.1 %s\r\nContent-Length: %d\r\n%s\r\n" % (status, len(body), extra)
    return head + body


def completion(text: str = "Hello from a scripted upstream.", model: str = "up") -> bytes:
    """A chat completion with usage, as JSON."""
    return json.dumps(
        {
            "id": "chatcmpl-scripted",
            "object": "chat.completion",
            "created": 1,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 7, "completion_tokens": 5, "total_tokens": 12},
        }
    ).encode()


def models_list() -> bytes:
    return json.dumps({"object": "list", "data": [{"id": "up", "object": "model"}]}).encode()


def sse_chunk(text: str, model: str = "up") -> bytes:
    event = {
        "id": "chatcmpl-scripted",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": model,
        "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}],
    }
    return b"data: " + json.dumps(event).encode() + b"\n\n"


def sse_usage(prompt: int = 7, completion_tokens: int = 5) -> bytes:
    event = {
        "id": "chatcmpl-scripted",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "up",
        "choices": [],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt + completion_tokens,
        },
    }
    return b"data: " + json.dumps(event).encode() + b"\n\n"


def chunked(*pieces: bytes) -> bytes:
    """Pieces in chunked transfer encoding, with the final empty chunk."""
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces if p) + b"0\r\n\r\n"
