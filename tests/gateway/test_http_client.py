"""The upstream HTTP client against scripted servers on loopback: framing, reuse, failures,
TLS with a CA of our own, and proxies from the environment."""

from __future__ import annotations

import asyncio
import gzip
import socket
import ssl
import time
from pathlib import Path
from typing import Any

import pytest
import trustme

from lumen_jupyter.gateway.http_client import (
    ConnectFailed,
    Disconnected,
    HttpClient,
    ProtocolError,
    TLSSettings,
    TooLarge,
    UpstreamError,
    environment_proxy,
    without_secrets,
)

from .scripted import Scripted, answer, chunked

Reader = asyncio.StreamReader
Writer = asyncio.StreamWriter


async def post(client: HttpClient, url: str, **kw: Any) -> tuple[int, bytes]:
    response = await client.request(
        "POST", url, headers={"Content-Type": "application/json"}, body=b"{}", **kw
    )
    async with response:
        return response.status, await response.read()


async def test_keep_alive_reuses_one_connection() -> None:
    async def script(server: Scripted, reader: Reader, writer: Writer) -> None:
        while True:
            body = await server.read_request(reader)
            writer.write(answer(b'{"echo": ' + body + b"}"))
            await writer.drain()

    async with HttpClient(connect_timeout=2) as client, Scripted(script) as server:
        for _ in range(3):
            assert await post(client, server.url) == (200, b'{"echo": {}}')
        assert server.connections == 1
        request = server.requests[0]
        assert request.startswith(b"POST /v1/chat/completions HTTP/1.1\r\n")
        assert b"\r\nHost: 127.0.0.1:" in request and b"\r\nContent-Length: 2\r\n" in request
        assert b"Cookie" not in request


async def test_chunked_body_split_anywhere() -> None:
    wire = b"4\r\nWiki\r\n7;ext=1\r\npedia i\r\nB\r\nn \r\nchunks.\r\n0\r\nTrailer: x\r\n\r\n"

    async def script(server: Scripted, reader: Reader, writer: Writer) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for byte in range(len(wire)):  # one byte per write: every split point
            writer.write(wire[byte : byte + 1])
            await writer.drain()
            await asyncio.sleep(0)
        await reader.read()

    async with HttpClient(connect_timeout=2) as client, Scripted(script) as server:
        response = await client.request("POST", server.url, headers={}, body=b"{}")
        pieces = [piece async for piece in response.chunks()]
        assert b"".join(pieces) == b"Wikipedia in \r\nchunks."
        response.close()


async def test_body_until_close_and_connection_close() -> None:
    async def script(server: Scripted, reader: Reader, writer: Writer) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall of it")
        await writer.drain()

    async with HttpClient(connect_timeout=2) as client, Scripted(script) as server:
        assert await post(client, server.url) == (200, b"all of it")
        assert await post(client, server.url) == (200, b"all of it")
        assert server.connections == 2  # a closed connection is never reused


async def test_interim_answer_and_empty_bodies() -> None:
    async def script(server: Scripted, reader: Reader, writer: Writer) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n")
        await server.read_request(reader)
        writer.write(answer(b""))
        await reader.read()

    async with HttpClient(connect_timeout=2) as client, Scripted(script) as server:
        assert await post(client, server.url) == (204, b"")
        assert await post(client, server.url) == (200, b"")
        assert server.connections == 1


async def test_refused_connection_is_connect_failed() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with HttpClient(connect_timeout=2) as client:
        with pytest.raises(ConnectFailed):
            await post(client, f"http://127.0.0.1:{port}/v1")


@pytest.mark.parametrize(
    "wire",
    [
        b"",  # closed without any answer (on a new connection: not retried)
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this",  # a body cut short
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
    ],
)
async def test_a_connection_closed_too_early_is_disconnected(wire: bytes) -> None:
    async def script(server: Scripted, reader: Reader, writer: Writer) -> None:
        await server.read_request(reader)
        writer.write(wire)
        await writer.drain()

    async with HttpClient(connect_timeout=2) as client, Scripted(script) as server:
        with pytest.raises(Disconnected):
            await post(client, server.url)
        assert len(server.requests) == 1


BROKEN = {
    "not http": b"SSH-2.0-OpenSSH\r\n\r\n",
    "bad status": b"HTTP/1.1 abc OK\r\n\r\n",
    "no colon": b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
    "bad chunk size": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    "negative chunk": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nA\r\n-6\r\n",
    "length abc": b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\nhello",
    "length -5": b"HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\nhello",
    "length xb2": b"HTTP/1.1 200 OK\r\nContent-Length: \xb2\r\n\r\nhello",
    "two lengths": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    "length and chunked": (
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
        + chunked(b"hello")
    ),
    "head of 70 kB in one piece": b"HTTP/1.1 200 OK\r\nX-Long: " + b"a" * 70_000 + b"\r\n\r\n",
    "too many headers": b"HTTP/1.1 200 OK\r\n" + b"X-A: b\r\n" * 200 + b"\r\n",
}


@pytest.mark.parametrize("wire", BROKEN.values(), ids=BROKEN.keys())
async def test_broken_answers_are_refused_and_their_connection_closed(wire: bytes) -> None:
    async def script(server: Scripted, reader: Reader, writer: Writer) -> None:
        await server.read_request(reader)
        writer.write(wire)
        await writer.drain()
        await reader.read()  # until the client closes its side

    async with HttpClient(connect_timeout=2) as client, Scripted(script) as server:
        for _ in range(20):
            with pytest.raises((ProtocolError, Disconnected)):
                await post(client, server.url)
        deadline = time.monotonic() + 2
        while server.open_connections and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert server.connections == 20 and server.open_connections == 0  # nothing leaked


@pytest.mark.parametrize(
    "late",
    [answer(b"injected"), b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\nX-Pad: "],
    ids=["a whole answer", "half a head"],
)
async def test_bytes_on_an_idle_connection_are_never_an_answer(late: bytes) -> None:
    async def script(server: Scripted, reader: Reader, writer: Writer) -> None:
        await server.read_request(reader)
        writer.write(answer(b"first"))
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(late)  # belongs to no request
        await writer.drain()
        await server.read_request(reader)
        writer.write(answer(b"wrong"))
        await reader.read()

    async with HttpClient(connect_timeout=2) as client:
        server = Scripted(script)
        await server.start()
        try:
            assert await post(client, server.url) == (200, b"first")
            await asyncio.sleep(0.2)
            assert await post(client, server.url) == (200, b"first")  # a new connection
            assert server.connections == 2
        finally:
            await server.stop()


async def test_a_reused_connection_closed_before_answering_is_retried_once() -> None:
    async def script(server: Scripted, reader: Reader, writer: Writer) -> None:
        await server.read_request(reader)
        writer.write(answer(b"one"))
        await writer.drain()
        await reader.read(1)  # the next request starts: close, as a server timing out would

    async with HttpClient(connect_timeout=2) as client, Scripted(script) as server:
        assert await post(client, server.url) == (200, b"one")
        assert await post(client, server.url) == (200, b"one")
        assert server.connections == 2
        assert len(server.requests) == 2  # each completed call reached the upstream once


async def test_a_retry_happens_once_only() -> None:
    async def script(server: Scripted, reader: Reader, writer: Writer) -> None:
        if server.connections == 1:
            await server.read_request(reader)
            writer.write(answer(b"one"))
            await writer.drain()
        await reader.read(1)  # every later request: closed before any answer byte

    async with HttpClient(connect_timeout=2) as client, Scripted(script) as server:
        assert await post(client, server.url) == (200, b"one")
        with pytest.raises(Disconnected):
            await post(client, server.url)
        assert server.connections == 2  # the first connection, then one retry


class OneShotBody:
    """A streamed body that can be sent once only (as a forwarded upload too large to keep)."""

    def __init__(self) -> None:
        self.opened = 0

    def open(self) -> Any:
        self.opened += 1
        if self.opened > 1:
            return None

        async def pieces() -> Any:
            yield b"{"
            yield b"}"

        return pieces()


async def test_a_streamed_body_is_not_retried_when_it_cannot_be_sent_again() -> None:
    async def script(server: Scripted, reader: Reader, writer: Writer) -> None:
        await server.read_request(reader)
        writer.write(answer(b"one"))
        await writer.drain()
        await reader.read(1)  # the next request starts: close, as a server timing out would

    async with HttpClient(connect_timeout=2) as client, Scripted(script) as server:
        assert await post(client, server.url) == (200, b"one")
        body = OneShotBody()
        with pytest.raises(Disconnected, match="during the request"):
            await client.request("POST", server.url, headers={}, body=body)
        assert body.opened == 2  # asked again, and it said it could not


async def test_idle_connections_are_dropped() -> None:
    closed_after: list[float] = []

    async def script(server: Scripted, reader: Reader, writer: Writer) -> None:
        await server.read_request(reader)
        writer.write(answer(b"ok"))
        await writer.drain()
        answered = time.monotonic()
        await reader.read()  # the client closes the idle connection
        closed_after.append(time.monotonic() - answered)

    client = HttpClient(connect_timeout=2, keepalive_seconds=0.3)
    async with client, Scripted(script) as server:
        assert await post(client, server.url) == (200, b"ok")
        await asyncio.sleep(0.4)
        assert await post(client, server.url) == (200, b"ok")
        assert server.connections == 2  # too old to be reused
        deadline = time.monotonic() + 3
        while len(closed_after) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
    assert len(closed_after) == 2 and max(closed_after) < 1.0


async def test_timeouts_bound_the_head_and_each_wait() -> None:
    async def script(server: Scripted, reader: Reader, writer: Writer) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n")
        await writer.drain()
        await reader.read()  # then silence

    async with HttpClient(connect_timeout=2) as client, Scripted(script) as server:
        response = await client.request(
            "POST", server.url, headers={}, body=b"{}", read_timeout=0.2
        )
        with pytest.raises(TimeoutError):
            async with response:
                await response.read()
        with pytest.raises(TimeoutError):  # a whole answer due within 0.2 s
            await post(client, server.url, timeout=0.2)
        assert server.connections == 2  # the stuck connection was not reused


async def test_a_whole_answer_has_a_size_limit() -> None:
    size = 8 * 1024 * 1024
    block = b"x" * 65536

    async def script(server: Scripted, reader: Reader, writer: Writer) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
        for _ in range(size // len(block)):
            writer.write(block)
            await writer.drain()
        await reader.read()

    async with HttpClient(connect_timeout=2) as client, Scripted(script) as server:
        response = await client.request("POST", server.url, headers={}, body=b"{}")
        with pytest.raises(TooLarge):
            await response.read(limit=1024 * 1024)
        response = await client.request("POST", server.url, headers={}, body=b"{}")
        received = 0
        async for piece in response.chunks():
            received += len(piece)
            assert len(piece) <= 4 * 65536  # reading pauses: pieces stay small
        assert received == size


async def test_a_gzip_answer_is_decoded() -> None:
    packed = gzip.compress(b'{"text": "' + b"z" * 10_000 + b'"}')

    async def script(server: Scripted, reader: Reader, writer: Writer) -> None:
        await server.read_request(reader)
        writer.write(answer(packed, b"Content-Encoding: gzip\r\n"))
        await writer.drain()
        await server.read_request(reader)
        writer.write(answer(b"not gzip at all", b"Content-Encoding: gzip\r\n"))
        await reader.read()

    async with HttpClient(connect_timeout=2) as client, Scripted(script) as server:
        status, body = await post(client, server.url)
        assert status == 200 and body == b'{"text": "' + b"z" * 10_000 + b'"}'
        with pytest.raises(UpstreamError):
            await post(client, server.url)


async def test_header_values_cannot_inject_lines() -> None:
    async def script(server: Scripted, reader: Reader, writer: Writer) -> None:
        await reader.read()

    async with HttpClient(connect_timeout=2) as client, Scripted(script) as server:
        with pytest.raises(ValueError, match="header injection"):
            await client.request("GET", server.url, headers={"X-A": "1\r\nX-B: 2"})


def test_secrets_are_left_out_of_urls() -> None:
    assert without_secrets("proxy http://ann:pw@proxy.example:3128 refused") == (
        "proxy http://***@proxy.example:3128 refused"
    )
    assert without_secrets("http://host/path") == "http://host/path"


def test_proxies_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    assert environment_proxy("https://api.example.org/v1") is None
    monkeypatch.setenv("HTTPS_PROXY", "http://ann:pw@proxy.example:3128")
    monkeypatch.setenv("http_proxy", "proxy.example:8080")
    monkeypatch.setenv("NO_PROXY", "localhost,.internal.example, 10.1.2.3")
    assert environment_proxy("https://api.example.org/v1") == "http://ann:pw@proxy.example:3128"
    assert environment_proxy("http://api.example.org/v1") == "http://proxy.example:8080"
    assert environment_proxy("https://vllm.internal.example:8000/v1") is None
    assert environment_proxy("http://10.1.2.3:8000/v1") is None
    assert environment_proxy("http://localhost:8000/v1") is None


def test_a_client_may_ignore_the_environments_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.example:3128")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    url = "http://lumen.internal:8090/services/lumen/"
    assert HttpClient(connect_timeout=1).proxy_for(url, None) == "http://proxy.example:3128"
    direct = HttpClient(connect_timeout=1, environment_proxies=False)
    assert direct.proxy_for(url, None) is None
    assert direct.proxy_for(url, "http://named.example:1") == "http://named.example:1"


# -- TLS with a CA of our own -----------------------------------------------------------------


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


async def tls_upstream(context: ssl.SSLContext) -> Scripted:
    async def script(server: Scripted, reader: Reader, writer: Writer) -> None:
        await server.read_request(reader)
        writer.write(answer(b'{"over": "tls"}'))
        await writer.drain()
        await reader.read()

    return await Scripted(script).start(ssl=context)


async def test_https_upstreams_are_verified(ca: trustme.CA, tmp_path: Path) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(context)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    server = await tls_upstream(context)
    url = f"https://localhost:{server.port}/v1"
    try:
        async with HttpClient(connect_timeout=2) as client:  # the system's CAs: refused
            with pytest.raises(ConnectFailed, match="certificate"):
                await post(client, url)
        async with HttpClient(connect_timeout=2, tls=TLSSettings(ca_certs=str(ca_file))) as client:
            assert await post(client, url) == (200, b'{"over": "tls"}')
            with pytest.raises(ConnectFailed):  # the name does not match
                await post(client, f"https://127.0.0.2:{server.port}/v1")
        async with HttpClient(connect_timeout=2) as client:  # per request, as per endpoint
            insecure = TLSSettings(validate_cert=False)
            assert await post(client, url, tls=insecure) == (200, b'{"over": "tls"}')
    finally:
        await server.stop()


async def test_a_client_certificate_is_presented(ca: trustme.CA, tmp_path: Path) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(context)
    ca.configure_trust(context)
    context.verify_mode = ssl.CERT_REQUIRED
    ca_file, client_file = tmp_path / "ca.pem", tmp_path / "client.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    ca.issue_cert("gateway@example.org").private_key_and_cert_chain_pem.write_to_path(
        str(client_file)
    )
    server = await tls_upstream(context)
    url = f"https://localhost:{server.port}/v1"
    try:
        tls = TLSSettings(ca_certs=str(ca_file))
        async with HttpClient(connect_timeout=2, tls=tls) as client:
            with pytest.raises(UpstreamError):  # no client certificate: refused
                await post(client, url)
            with_cert = tls.override(client_cert=str(client_file))
            assert await post(client, url, tls=with_cert) == (200, b'{"over": "tls"}')
    finally:
        await server.stop()


@pytest.mark.parametrize(
    "bad", [b"-6\r\n", b"zz\r\n", b"1\r\nAB\r\n"], ids=["negative", "not hex", "no CRLF"]
)
async def test_a_body_that_turns_invalid_fails_the_waiting_reader_at_once(bad: bytes) -> None:
    async def script(server: Scripted, reader: Reader, writer: Writer) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nA\r\n")
        await writer.drain()
        await asyncio.sleep(0.2)  # the reader waits for more
        writer.write(bad)
        await writer.drain()
        await reader.read()

    async with HttpClient(connect_timeout=2) as client, Scripted(script) as server:
        response = await client.request("POST", server.url, headers={}, body=b"{}")
        started = time.monotonic()
        with pytest.raises(Disconnected, match="broken answer"):
            await asyncio.wait_for(response.read(), 5)  # no timeout of the client's own
        assert time.monotonic() - started < 1.0


async def test_the_size_limit_counts_decoded_bytes() -> None:
    bomb = gzip.compress(b"0" * (4 * 1024 * 1024))  # ~4 kB on the wire

    async def script(server: Scripted, reader: Reader, writer: Writer) -> None:
        await server.read_request(reader)
        writer.write(answer(bomb, b"Content-Encoding: gzip\r\n"))
        await writer.drain()
        await reader.read()

    async with HttpClient(connect_timeout=2) as client, Scripted(script) as server:
        response = await client.request("POST", server.url, headers={}, body=b"{}")
        assert len(bomb) < 1024 * 1024
        with pytest.raises(TooLarge):
            await response.read(limit=1024 * 1024)
