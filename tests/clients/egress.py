"""A proxy that lets nothing out and remembers who tried: what the clients send
anywhere but the server under test.

The client environment's processes (the server, its kernels, the client scripts) get
it as their HTTP(S) proxy, with loopback exempt; a library that phones home - a price
list download, a trace upload, a telemetry ping - then shows up here instead of
leaving the machine, and the tests assert that nothing did.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager

REFUSAL = b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


class EgressRecorder:
    """Answers every proxied request with 403 and records its request line."""

    def __init__(self) -> None:
        self.attempts: list[str] = []
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="egress-recorder", daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()
        server.close()
        self._loop.run_until_complete(server.wait_closed())

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 10)
            if line:
                self.attempts.append(line.decode("latin-1").strip())
            writer.write(REFUSAL)
            await writer.drain()
        except (OSError, asyncio.TimeoutError):
            pass
        finally:
            writer.close()

    def start(self) -> None:
        self._thread.start()
        self._ready.wait(10)

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    @property
    def env(self) -> dict[str, str]:
        """The environment that sends everything but loopback here."""
        proxy = f"http://127.0.0.1:{self.port}"
        exempt = "127.0.0.1,localhost,::1"
        names = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")
        env = {name: proxy for name in names} | {name.lower(): proxy for name in names}
        return env | {"NO_PROXY": exempt, "no_proxy": exempt}


@contextmanager
def egress_recorder() -> Iterator[EgressRecorder]:
    recorder = EgressRecorder()
    recorder.start()
    try:
        yield recorder
    finally:
        recorder.stop()
