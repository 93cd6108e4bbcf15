"""From a notebook, a model whose only way out is a forward proxy and whose certificate an
institutional CA signed: a real server, a real kernel, tinyproxy and a ``trustme`` CA."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
import yaml
from jupyter_client import BlockingKernelClient

from tests.gateway.forward_proxy import TinyProxy
from tests.gateway.scripted import Scripted, answer, completion

from .server import JupyterServer, start_server


class ThreadedUpstream:
    """An https upstream on its own event loop in a thread (the test process blocks)."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

        async def serve(server: Scripted, reader: Any, writer: Any) -> None:
            while True:
                await server.read_request(reader)
                reply = completion("Hello through the campus proxy.")
                writer.write(answer(reply, b"Content-Type: application/json\r\n"))
                await writer.drain()

        self.server = Scripted(serve, host="127.0.0.1")
        asyncio.run_coroutine_threadsafe(self.server.start(ssl=context), self.loop).result(10)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture
def campus(tmp_path: Path) -> Iterator[tuple[JupyterServer, ThreadedUpstream, TinyProxy]]:
    if shutil.which("tinyproxy") is None:
        pytest.skip("tinyproxy is not installed (tests/run installs it)")
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(context)
    ca_file = tmp_path / "institution-ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    upstream = ThreadedUpstream(context)
    proxy = TinyProxy(tmp_path)
    config = {
        "models": [
            {
                "name": "campus-llm",
                "input_cost_per_million": 1,
                "output_cost_per_million": 2,
                "endpoints": [
                    {
                        "url": f"https://localhost:{upstream.server.port}/v1",
                        "model": "up",
                        "proxy": proxy.url(),
                        "ca_certs": str(ca_file),
                    }
                ],
            }
        ],
        "defaults": {"models": "allowed", "tokens": {"max": 20, "refresh": 1}},
    }
    server = start_server(tmp_path / "server", lumen_config=yaml.safe_dump(config))
    try:
        yield server, upstream, proxy
    finally:
        server.stop()
        proxy.stop()
        upstream.stop()


def test_a_model_behind_a_proxy_and_an_institutional_ca_works_from_a_notebook(
    campus: tuple[JupyterServer, ThreadedUpstream, TinyProxy],
) -> None:
    server, upstream, proxy = campus
    session = server.start_session("campus.ipynb")
    kc = BlockingKernelClient(connection_file=str(server.connection_file(session["kernel"]["id"])))
    kc.load_connection_file()
    kc.start_channels(hb=False)
    seen: list[dict[str, Any]] = []
    try:
        kc.wait_for_ready(timeout=60)
        reply = kc.execute_interactive(
            "import lumen_jupyter\n"
            "client = lumen_jupyter.openai_client(max_retries=0)\n"
            "answer = client.chat.completions.create(\n"
            "    model='campus-llm', messages=[{'role': 'user', 'content': 'hi'}])\n"
            "print(answer.choices[0].message.content)\n",
            output_hook=seen.append,
            timeout=60,
        )
    finally:
        kc.stop_channels()
    printed = "".join(m["content"].get("text", "") for m in seen if m["msg_type"] == "stream")
    assert reply["content"]["status"] == "ok", seen
    assert "Hello through the campus proxy." in printed
    assert f"CONNECT localhost:{upstream.server.port}" in proxy.forwarded()
    assert len(upstream.server.requests) == 1
    with sqlite3.connect(server.db_path) as db:
        rows = db.execute("SELECT model, status, input_tokens, output_tokens FROM lumen_requests")
        assert list(rows) == [("campus-llm", "ok", 7, 5)]  # billed on the upstream's usage
