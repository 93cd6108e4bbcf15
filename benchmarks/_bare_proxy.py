#!/usr/bin/env python
"""The floor of a Python gateway: a bare tornado proxy with one pooled aiohttp session.

    python benchmarks/_bare_proxy.py UPSTREAM_V1_URL     # prints "listening on port N"

``POST /v1/<anything>`` is sent to ``UPSTREAM_V1_URL/<anything>`` with the same body
and answered with the upstream's status, content type and body: relayed chunk by
chunk (a flush per upstream read) when the upstream streams, read whole otherwise.
No authentication, no accounting, no parsing of the body: what any gateway on the
same stack (tornado server, aiohttp client, one event loop) pays before it does
its own work.  ``bench_service.py`` measures lumen's hosts against it.

    python benchmarks/_bare_proxy.py UPSTREAM_V1_URL --books DATABASE_URL

adds lumen's books and nothing else: before each call its worst case is reserved,
after it the call is settled (fixed token counts, the body still not parsed), each a
transaction of lumen's accountant thread, as the service writes them.  What a
gateway that never overspends pays on this stack before any other work of its own:
the floor that ``bench_service.py`` compares lumen with, besides the bare proxy.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

import aiohttp
from tornado import web
from tornado.httpserver import HTTPServer
from tornado.iostream import StreamClosedError
from tornado.netutil import bind_sockets


class Books:
    """lumen's books of one account, written by lumen's accountant (as the service does)."""

    MODEL = "demo-free"  # priced as in the YAML of bench_service.py

    def __init__(self, database_url: str) -> None:
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
        from lumen_jupyter.core.accounts import Identity
        from lumen_jupyter.core.billing import CallContext
        from lumen_jupyter.core.catalog import Catalog, EndpointSpec, ModelSpec, PoolSpec, Rule
        from lumen_jupyter.core.money import MICRO
        from lumen_jupyter.core.service import LumenService
        from lumen_jupyter.store import Store
        from lumen_jupyter.store.accountant import Accountant

        model = ModelSpec(
            name=self.MODEL,
            input_price_micro=MICRO,
            output_price_micro=2 * MICRO,
            endpoints=(EndpointSpec(url="http://127.0.0.1:9/v1", model=self.MODEL),),
        )
        pool = PoolSpec(max_micro=10**15, refresh_micro=0, starting_micro=10**15)
        store = Store(database_url)
        store.migrate()
        catalog = Catalog(models={self.MODEL: model}, default_pool=pool, default_rule=Rule.ALLOWED)
        self.service = LumenService(store, catalog, b"bare-proxy-books-secret-0123456789abcdef")
        self.who = Identity(username="bench", display_name="bench")
        account = self.service.account("bench")
        self.context = CallContext(account_id=account, source="api")
        self.accountant = Accountant(store)

    async def reserve(self) -> Any:
        calls = self.service.calls
        outcome = await self.accountant.run(
            lambda conn: calls.open_call_in(
                conn,
                self.who,
                self.context,
                self.MODEL,
                endpoint="chat",
                input_tokens=20,
                max_output_tokens=64,
            ),
            order=self.context.account_id,
        )
        return calls.admission_or_raise(outcome)

    async def settle(self, admission: Any) -> None:
        calls = self.service.calls
        await self.accountant.run(
            lambda conn: calls.settle_in(conn, admission, 20, 40),
            order=self.context.account_id,
        )


class Forward(web.RequestHandler):
    def initialize(self, upstream: str) -> None:
        self.upstream = upstream

    @property
    def session(self) -> aiohttp.ClientSession:
        return self.settings["session"]  # type: ignore[no-any-return]

    async def post(self, path: str) -> None:
        books: Books | None = self.settings["books"]
        if books is None:
            await self.relay(path)
            return
        admission = await books.reserve()
        try:
            await self.relay(path)
        finally:
            await books.settle(admission)

    async def relay(self, path: str) -> None:
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


async def serve(upstream: str, books_url: str | None) -> None:
    books = Books(books_url) if books_url else None
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=512, keepalive_timeout=2.0),
        cookie_jar=aiohttp.DummyCookieJar(),
    )
    settings: dict[str, Any] = {
        "session": session,
        "books": books,
        "log_function": lambda _handler: None,
    }
    app = web.Application([(r"/v1/(.*)", Forward, {"upstream": upstream.rstrip("/")})], **settings)
    sockets = bind_sockets(0, "127.0.0.1")
    HTTPServer(app).add_sockets(sockets)
    print(f"listening on port {sockets[0].getsockname()[1]}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("upstream", help="the upstream's /v1 URL")
    parser.add_argument("--books", metavar="DATABASE_URL", help="also keep lumen's books")
    arguments = parser.parse_args()
    asyncio.run(serve(arguments.upstream, arguments.books))
