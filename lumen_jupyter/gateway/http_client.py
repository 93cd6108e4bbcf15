"""The HTTP/1.1 client of the upstream calls: keep-alive pools and streamed bodies.

Every model call makes one upstream request.  aiohttp spent ~0.39 ms of CPU on
each (request objects, cookie jar, tracing hooks, stream readers), a third of
the gateway's whole cost per call, where the same exchange over a plain asyncio
protocol takes ~0.12 ms.  The gateway needs little of HTTP: POST or GET a JSON
body, read a head, then a body framed by Content-Length, chunked encoding or the
end of the connection, either whole or piece by piece as it arrives.  That is
what this module does, with connect and read timeouts, TLS for ``https``
upstreams, back-pressure on huge streams, and connections kept alive per host.

Errors say whether anything reached the upstream: :class:`ConnectFailed` (no
connection, so another endpoint may be tried), :class:`Disconnected` (the
upstream closed the connection), :class:`ProtocolError` (not HTTP/1.1 as we know
it); timeouts raise :class:`TimeoutError`.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

MAX_HEAD = 64 * 1024
"""Longest response head accepted (status line and headers)."""

PAUSE_ABOVE = 256 * 1024
RESUME_BELOW = 64 * 1024
"""Buffered bytes at which reading from the upstream pauses, and resumes."""

MAX_PIECE = 64 * 1024
"""Most body bytes handed out at once: the relay parses a piece without yielding."""


class UpstreamError(Exception):
    """The upstream exchange failed."""


class ConnectFailed(UpstreamError):
    """No connection could be made: nothing was sent."""


class Disconnected(UpstreamError):
    """The upstream closed the connection before the answer was complete."""


class ProtocolError(UpstreamError):
    """The upstream did not answer in HTTP/1.1 as this client understands it."""


@dataclass(frozen=True)
class Target:
    """Where a URL's requests go: one pool of connections per target."""

    host: str
    port: int
    tls: bool

    @property
    def host_header(self) -> str:
        default = 443 if self.tls else 80
        name = f"[{self.host}]" if ":" in self.host else self.host
        return name if self.port == default else f"{name}:{self.port}"


def split_url(url: str) -> tuple[Target, str]:
    """The target and the request path (with its query) of an ``http(s)`` URL."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {url!r}")
    tls = parts.scheme == "https"
    port = parts.port or (443 if tls else 80)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return Target(parts.hostname, port, tls), path


class _Connection(asyncio.Protocol):
    """One TCP (or TLS) connection, read into a buffer the response parser consumes."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.closed = False
        self.paused = False
        self.idle_since = 0.0
        self._waiter: asyncio.Future[None] | None = None

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) > PAUSE_ABOVE and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        return False  # close the transport; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._wake()

    # -- for the response parser -----------------------------------------------------------

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def consumed(self, count: int) -> None:
        del self.buffer[:count]
        if self.paused and len(self.buffer) < RESUME_BELOW and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()

    async def more(self, deadline: float | None) -> None:
        """Wait for more bytes (or the end of the connection) until ``deadline``."""
        if self.closed:
            raise Disconnected("the upstream closed the connection")
        waiter = self._waiter = self.loop.create_future()
        timer = None
        if deadline is not None:
            timer = self.loop.call_at(deadline, _expire, waiter)
        try:
            await waiter
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()
        self._wake()


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError("the upstream did not answer in time"))


class Response:
    """A response whose head has arrived; the body is read with :meth:`read` or
    :meth:`chunks`, and the connection goes back to the pool once it is complete."""

    def __init__(
        self,
        client: HttpClient,
        target: Target,
        conn: _Connection,
        status: int,
        headers: dict[str, str],
        *,
        has_body: bool,
        read_timeout: float | None,
        deadline: float | None,
    ) -> None:
        self._client = client
        self._target = target
        self._conn: _Connection | None = conn
        self.status = status
        self.headers = headers
        self._read_timeout = read_timeout
        self._deadline = deadline
        self._keep_alive = headers.get("connection", "").lower() != "close"
        self._complete = not has_body
        self._chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        self._remaining: int | None = None  # of a Content-Length body, or of the current chunk
        self._chunk_state = "size"  # size | data | crlf | trailer
        if not has_body:
            self._remaining = 0
        elif not self._chunked:
            length = headers.get("content-length")
            if length is not None:
                if not length.isdigit():
                    raise ProtocolError(f"invalid Content-Length {length!r}")
                self._remaining = int(length)
            else:
                self._keep_alive = False  # the body ends with the connection
        if self._complete:
            self._release()

    @property
    def buffered(self) -> int:
        """Bytes received from the upstream and not handed out yet."""
        return len(self._conn.buffer) if self._conn is not None else 0

    async def __aenter__(self) -> Response:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    async def read(self) -> bytes:
        """The whole body."""
        pieces = [piece async for piece in self.chunks()]
        return b"".join(pieces)

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives: each piece is what is available at that moment, up to
        :data:`MAX_PIECE` bytes."""
        while not self._complete:
            conn = self._conn
            if conn is None:
                raise Disconnected("the response was closed")
            data = self._take(conn)
            if data:
                yield data
                continue
            if self._complete:
                break
            if conn.closed:
                if self._remaining is None and not self._chunked:
                    self._complete = True  # read-until-close body: this is its end
                    break
                raise Disconnected("the upstream closed the connection during the answer")
            await conn.more(self._wait_deadline())
        self._release()

    def close(self) -> None:
        """Abandon the response: an incomplete body closes the connection."""
        if self._conn is None:
            return
        if self._complete:
            self._release()
        else:
            self._conn.abort()
            self._conn = None

    def _wait_deadline(self) -> float | None:
        loop_now = self._client.loop.time()
        candidates = [d for d in (self._deadline,) if d is not None]
        if self._read_timeout is not None:
            candidates.append(loop_now + self._read_timeout)
        return min(candidates) if candidates else None

    def _take(self, conn: _Connection) -> bytes:
        """Parse what the buffer holds; return the body bytes it completes."""
        buffer = conn.buffer
        if not self._chunked:
            if self._remaining is None:
                data = bytes(buffer[:MAX_PIECE])
            else:
                data = bytes(buffer[: min(self._remaining, MAX_PIECE)])
                self._remaining -= len(data)
                self._complete = self._remaining == 0
            conn.consumed(len(data))
            return data
        out = bytearray()
        position = 0
        while True:
            if self._chunk_state == "size":
                end = buffer.find(b"\r\n", position)
                if end < 0:
                    if len(buffer) - position > 1024:
                        raise ProtocolError("chunk size line too long")
                    break
                size_text = bytes(buffer[position:end]).split(b";", 1)[0].strip()
                try:
                    size = int(size_text, 16)
                except ValueError:
                    raise ProtocolError(f"invalid chunk size {size_text!r}") from None
                position = end + 2
                self._remaining = size
                self._chunk_state = "data" if size else "trailer"
            elif self._chunk_state == "data":
                assert self._remaining is not None
                take = min(self._remaining, len(buffer) - position, MAX_PIECE - len(out))
                if take == 0:
                    break
                out += buffer[position : position + take]
                position += take
                self._remaining -= take
                if self._remaining == 0:
                    self._chunk_state = "crlf"
            elif self._chunk_state == "crlf":
                if len(buffer) - position < 2:
                    break
                if buffer[position : position + 2] != b"\r\n":
                    raise ProtocolError("chunk not followed by CRLF")
                position += 2
                self._chunk_state = "size"
            else:  # trailer: header lines until an empty one
                end = buffer.find(b"\r\n", position)
                if end < 0:
                    break
                empty = end == position
                position = end + 2
                if empty:
                    self._complete = True
                    break
        conn.consumed(position)
        return bytes(out)

    def _release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if self._keep_alive and not conn.closed and not conn.buffer:
            self._client._give_back(self._target, conn)
        else:
            conn.abort()


class HttpClient:
    """Keep-alive connection pools per upstream host, for the whole server."""

    def __init__(
        self,
        *,
        connect_timeout: float,
        keepalive_seconds: float = 30.0,
        max_idle_per_host: int = 256,
    ) -> None:
        self.connect_timeout = connect_timeout
        self.keepalive_seconds = keepalive_seconds
        self.max_idle_per_host = max_idle_per_host
        self._idle: dict[Target, deque[_Connection]] = {}
        self._tls: ssl.SSLContext | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.closed = False

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    async def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        body: bytes = b"",
        timeout: float | None = None,
        read_timeout: float | None = None,
    ) -> Response:
        """Send a request; returns once the response head has arrived.

        ``timeout`` bounds the whole exchange, head and body; ``read_timeout`` bounds
        each wait for more bytes (what a stream needs).
        """
        if self.closed:
            raise UpstreamError("the HTTP client is closed")
        target, path = split_url(url)
        deadline = None if timeout is None else self.loop.time() + timeout
        conn = await self._connection(target)
        lines = [f"{method} {path} HTTP/1.1", f"Host: {target.host_header}"]
        for name, value in headers.items():
            if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
                raise ValueError(f"header {name!r} contains a line break")
            lines.append(f"{name}: {value}")
        if body or method in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {len(body)}")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        assert conn.transport is not None
        conn.transport.write(head + body if body else head)
        try:
            status, response_headers = await self._read_head(conn, deadline, read_timeout)
        except BaseException:
            conn.abort()
            raise
        has_body = method != "HEAD" and status not in (204, 304)
        return Response(
            self,
            target,
            conn,
            status,
            response_headers,
            has_body=has_body,
            read_timeout=read_timeout,
            deadline=deadline,
        )

    async def __aenter__(self) -> HttpClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the idle connections; responses still being read keep theirs."""
        self.closed = True
        for pool in self._idle.values():
            for conn in pool:
                conn.abort()
        self._idle.clear()

    # -- connections ----------------------------------------------------------------------

    async def _connection(self, target: Target) -> _Connection:
        pool = self._idle.get(target)
        now = time.monotonic()
        while pool:
            conn = pool.pop()  # the most recently used is the least likely to be stale
            if not conn.closed and now - conn.idle_since < self.keepalive_seconds:
                return conn
            conn.abort()
        loop = self.loop
        tls = None
        if target.tls:
            if self._tls is None:
                self._tls = ssl.create_default_context()
            tls = self._tls
        try:
            _transport, conn = await asyncio.wait_for(
                loop.create_connection(
                    lambda: _Connection(loop),
                    target.host,
                    target.port,
                    ssl=tls,
                    server_hostname=target.host if tls else None,
                ),
                self.connect_timeout,
            )
        except (OSError, asyncio.TimeoutError, ssl.SSLError) as error:
            raise ConnectFailed(f"cannot connect: {type(error).__name__}") from None
        return conn

    def _give_back(self, target: Target, conn: _Connection) -> None:
        if self.closed:
            conn.abort()
            return
        pool = self._idle.setdefault(target, deque())
        if len(pool) >= self.max_idle_per_host:
            conn.abort()
            return
        conn.idle_since = time.monotonic()
        pool.append(conn)

    async def _read_head(
        self, conn: _Connection, deadline: float | None, read_timeout: float | None
    ) -> tuple[int, dict[str, str]]:
        while True:
            end = conn.buffer.find(b"\r\n\r\n")
            if end >= 0:
                raw = bytes(conn.buffer[:end])
                conn.consumed(end + 4)
                status, headers = _parse_head(raw)
                if 100 <= status < 200:
                    continue  # an interim answer (100 Continue): the real one follows
                return status, headers
            if len(conn.buffer) > MAX_HEAD:
                raise ProtocolError("response head too long")
            if conn.closed:
                raise Disconnected("the upstream closed the connection without answering")
            wait_until = deadline
            if read_timeout is not None:
                by_read = self.loop.time() + read_timeout
                wait_until = by_read if wait_until is None else min(wait_until, by_read)
            await conn.more(wait_until)


def _parse_head(raw: bytes) -> tuple[int, dict[str, str]]:
    lines = raw.split(b"\r\n")
    status_line = lines[0].split(b" ", 2)
    if len(status_line) < 2 or not status_line[0].startswith(b"HTTP/1."):
        raise ProtocolError("not an HTTP/1.x response")
    try:
        status = int(status_line[1])
    except ValueError:
        raise ProtocolError("invalid status code") from None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep:
            raise ProtocolError("malformed header line")
        key = name.strip().lower().decode("latin-1")
        text = value.strip().decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    if status_line[0] == b"HTTP/1.0" and headers.get("connection", "").lower() != "keep-alive":
        headers["connection"] = "close"
    return status, headers


__all__: list[Any] = [
    "ConnectFailed",
    "Disconnected",
    "HttpClient",
    "ProtocolError",
    "Response",
    "UpstreamError",
    "split_url",
]
