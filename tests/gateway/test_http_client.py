"""The upstream HTTP client against scripted servers on loopback: framing, reuse, failures."""

from __future__ import annotations

import asyncio
import shutil
import socket
import ssl
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from lumen_jupyter.gateway.http_client import (
    MAX_PIECE,
    PAUSE_ABOVE,
    ConnectFailed,
    Disconnected,
    HttpClient,
    ProtocolError,
    split_url,
)

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Scripted:
    """A loopback server that answers each connection with a script."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.connections = 0
        self.requests: list[bytes] = []
        self.server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> Scripted:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for task in self._handlers:
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await self.server.wait_closed()

    @property
    def url(self) -> str:
        assert self.server is not None
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/v1/chat/completions"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            await self.script(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            self._handlers.discard(task)

    async def read_request(self, reader: asyncio.StreamReader) -> bytes:
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        body = await reader.readexactly(length)
        self.requests.append(head + body)
        return body


def answer(body: bytes, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n" % (len(body), extra) + body


async def post(client: HttpClient, url: str, **kw: object) -> tuple[int, bytes]:
    response = await client.request(
        "POST", url, headers={"Content-Type": "application/json"}, body=b"{}", **kw
    )
    async with response:
        return response.status, await response.read()


async def test_keep_alive_reuses_one_connection() -> None:
    async with HttpClient(connect_timeout=2) as client:

        async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while True:
                body = await server.read_request(reader)
                writer.write(answer(b'{"echo": ' + body + b"}"))
                await writer.drain()

        async with Scripted(script) as server:
            for _ in range(3):
                assert await post(client, server.url) == (200, b'{"echo": {}}')
            assert server.connections == 1
            request = server.requests[0]
            assert request.startswith(b"POST /v1/chat/completions HTTP/1.1\r\n")
            assert b"\r\nHost: 127.0.0.1:" in request and b"\r\nContent-Length: 2\r\n" in request


async def test_chunked_body_split_anywhere() -> None:
    async with HttpClient(connect_timeout=2) as client:
        wire = b"4\r\nWiki\r\n7;ext=1\r\npedia i\r\nB\r\nn \r\nchunks.\r\n0\r\nTrailer: x\r\n\r\n"

        async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await server.read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            for byte in range(len(wire)):  # one byte per write: every split point
                writer.write(wire[byte : byte + 1])
                await writer.drain()
                await asyncio.sleep(0)
            await reader.read()  # keep the connection open: the body ends by its framing

        async with Scripted(script) as server:
            response = await client.request("POST", server.url, headers={}, body=b"{}")
            pieces = [piece async for piece in response.chunks()]
            assert b"".join(pieces) == b"Wikipedia in \r\nchunks."
            response.close()


async def test_body_until_close_and_connection_close() -> None:
    async with HttpClient(connect_timeout=2) as client:

        async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await server.read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall of it")
            await writer.drain()

        async with Scripted(script) as server:
            assert await post(client, server.url) == (200, b"all of it")
            assert await post(client, server.url) == (200, b"all of it")
            assert server.connections == 2  # a closed connection is never reused


async def test_interim_answer_and_empty_bodies() -> None:
    async with HttpClient(connect_timeout=2) as client:

        async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await server.read_request(reader)
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n")
            await server.read_request(reader)
            writer.write(answer(b""))
            await reader.read()

        async with Scripted(script) as server:
            assert await post(client, server.url) == (204, b"")
            assert await post(client, server.url) == (200, b"")
            assert server.connections == 1


async def test_refused_connection_is_connect_failed() -> None:
    async with HttpClient(connect_timeout=2) as client:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        with pytest.raises(ConnectFailed):
            await post(client, f"http://127.0.0.1:{port}/v1")


@pytest.mark.parametrize(
    "wire",
    [
        b"",  # closed without any answer
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this",  # a body cut short
    ],
)
async def test_a_connection_closed_too_early_is_disconnected(wire: bytes) -> None:
    async with HttpClient(connect_timeout=2) as client:

        async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await server.read_request(reader)
            writer.write(wire)
            await writer.drain()

        async with Scripted(script) as server:
            with pytest.raises(Disconnected):
                await post(client, server.url)


@pytest.mark.parametrize(
    "wire",
    [
        b"SSH-2.0-OpenSSH\r\n\r\n",
        b"HTTP/1.1 abc OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n" + b"X-Long: " + b"a" * 70_000,
    ],
)
async def test_not_http_is_a_protocol_error(wire: bytes) -> None:
    async with HttpClient(connect_timeout=2) as client:

        async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await server.read_request(reader)
            writer.write(wire)
            await writer.drain()
            await reader.read()

        async with Scripted(script) as server:
            with pytest.raises(ProtocolError):
                await post(client, server.url)


async def test_timeouts_bound_the_head_and_each_wait() -> None:
    async with HttpClient(connect_timeout=2) as client:

        async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await server.read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n")
            await writer.drain()
            await reader.read()  # then silence

        async with Scripted(script) as server:
            response = await client.request(
                "POST", server.url, headers={}, body=b"{}", read_timeout=0.2
            )
            with pytest.raises(TimeoutError):
                async with response:
                    await response.read()
            with pytest.raises(TimeoutError):  # a whole answer due within 0.2 s
                await post(client, server.url, timeout=0.2)
            assert server.connections == 2  # the stuck connection was not reused


async def test_a_huge_body_is_read_with_back_pressure() -> None:
    async with HttpClient(connect_timeout=2) as client:
        size = 8 * 1024 * 1024
        block = b"x" * 65536

        async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await server.read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
            for _ in range(size // len(block)):
                writer.write(block)
                await writer.drain()
            await reader.read()

        async with Scripted(script) as server:
            response = await client.request("POST", server.url, headers={}, body=b"{}")
            received = 0
            most_buffered = 0
            async for piece in response.chunks():
                received += len(piece)
                assert len(piece) <= MAX_PIECE
                most_buffered = max(most_buffered, response.buffered)
                await asyncio.sleep(0.005)  # a slow reader
            assert received == size
            assert most_buffered < 2 * PAUSE_ABOVE  # reading paused: memory stays bounded


async def test_header_values_cannot_inject_lines() -> None:
    async with HttpClient(connect_timeout=2) as client:

        async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read()

        async with Scripted(script) as server:
            with pytest.raises(ValueError, match="line break"):
                await client.request("GET", server.url, headers={"X-A": "1\r\nX-B: 2"})


def test_split_url() -> None:
    target, path = split_url("https://api.example.org/v1/chat?x=1")
    assert (target.host, target.port, target.tls, path) == (
        "api.example.org",
        443,
        True,
        "/v1/chat?x=1",
    )
    assert target.host_header == "api.example.org"
    target, path = split_url("http://[::1]:8000")
    assert (target.host_header, path) == ("[::1]:8000", "/")
    with pytest.raises(ValueError):
        split_url("ftp://example.org/")


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for localhost, made with the openssl command."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is not installed")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        [
            *(openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost"),
            *("-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
    )
    return key, cert


async def test_https_upstreams_are_verified(
    certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    key, cert = certificate
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            await reader.readexactly(int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0]))
            writer.write(answer(b'{"over": "tls"}'))
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=context)
    port = server.sockets[0].getsockname()[1]
    try:
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # the client trusts this one
        async with HttpClient(connect_timeout=2) as client:
            assert await post(client, f"https://localhost:{port}/v1") == (200, b'{"over": "tls"}')
        monkeypatch.delenv("SSL_CERT_FILE")
        monkeypatch.setenv("SSL_CERT_DIR", str(cert.parent / "none"))
        async with HttpClient(connect_timeout=2) as client:  # an unknown issuer: refused
            with pytest.raises(ConnectFailed):
                await post(client, f"https://localhost:{port}/v1")
    finally:
        server.close()
        await server.wait_closed()
