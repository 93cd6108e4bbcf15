#!/usr/bin/env python
"""The floor of a Python gateway: a bare tornado proxy with one pooled aiohttp session.

    python benchmarks/_bare_proxy.py UPSTREAM_V1_URL     # prints "listening on port N"

``POST /v1/<anything>`` is sent to ``UPSTREAM_V1_URL/<anything>`` with the same body
and answered with the upstream's status, content type and body: relayed chunk by
chunk (a flush per upstream read) when the upstream streams, read whole otherwise.
No authentication, no accounting, no parsing of the body: what any gateway on the
same stack (tornado server, aiohttp client, one event loop) pays before it does
its own work.  ``bench_service.py`` measures lumen's hosts against it.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import aiohttp
from tornado import web
from tornado.httpserver import HTTPServer
from tornado.iostream import StreamClosedError
from tornado.netutil import bind_sockets


class Forward(web.RequestHandler):
    def initialize(self, upstream: str) -> None:
        self.upstream = upstream

    @property
    def session(self) -> aiohttp.ClientSession:
        return self.settings["session"]  # type: ignore[no-any-return]

    async def post(self, path: str) -> None:
        async with self.session.post(
            f"{self.upstream}/{path}",
            data=self.request.body,
            headers={"Content-Type": "application/json"},
        ) as response:
            self.set_status(response.status)
            self.set_header("Content-Type", response.headers.get("Content-Type", "text/plain"))
            if response.headers.get("Transfer-Encoding", "").lower() == "chunked":
                async for chunk in response.content.iter_any():
                    self.write(chunk)
                    try:
                        await self.flush()
                    except StreamClosedError:
                        return
                self.finish()
            else:
                self.finish(await response.read())


async def serve(upstream: str) -> None:
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=512, keepalive_timeout=2.0),
        cookie_jar=aiohttp.DummyCookieJar(),
    )
    settings: dict[str, Any] = {"session": session, "log_function": lambda _handler: None}
    app = web.Application([(r"/v1/(.*)", Forward, {"upstream": upstream.rstrip("/")})], **settings)
    sockets = bind_sockets(0, "127.0.0.1")
    HTTPServer(app).add_sockets(sockets)
    print(f"listening on port {sockets[0].getsockname()[1]}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(serve(sys.argv[1]))
