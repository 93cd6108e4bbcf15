"""The HTTP client of the upstream calls: aiohttp, tuned for a gateway.

Every model call makes one upstream request, so this client must be fast, but
above all it must not trust the upstream: a paid provider, a model server or a
forward proxy on an institutional network may send anything.  The wire protocol
is aiohttp's (its C parser is llhttp, Node.js's well-kept parser, which refuses
bad chunk sizes, bad or doubled lengths and over-long heads); this module only
chooses its settings and adds what a gateway needs on top:

* one session for the whole server, without cookie jar or redirects, keep-alive
  pools per host that drop idle connections after :data:`KEEPALIVE_SECONDS`
  (below the 5 s after which uvicorn, vLLM's server, closes them);
* a connection on which bytes arrive while it sits idle is closed, never reused:
  those bytes would otherwise be read as the next call's answer;
* a reused connection that the upstream closes before the first byte of the
  answer is retried once on a new connection (nothing was produced upstream, so
  nothing can be billed twice);
* proxies from the environment (``HTTPS_PROXY``, ``HTTP_PROXY``, ``NO_PROXY``,
  read as ``requests`` reads them) or per endpoint, HTTPS through ``CONNECT``;
  CA bundle, ``verify`` and client certificate per endpoint;
* a size limit on whole answers, compressed answers decoded, and errors that
  say whether anything reached the upstream: :class:`ConnectFailed` (nothing was
  sent, another endpoint may be tried), :class:`Disconnected` (the upstream
  closed the connection, or the answer ended before its framing said),
  :class:`ProtocolError` (not HTTP/1.1 as it must be), :class:`TooLarge`;
  timeouts raise :class:`TimeoutError`.

No URL with a password (a proxy's ``user:pass@``) ever appears in a message.
"""

from __future__ import annotations

import contextvars
import functools
import logging
import re
import ssl
import urllib.request
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

import aiohttp
from aiohttp.client_proto import ResponseHandler
from aiohttp.http_exceptions import HttpProcessingError

from .._version import __version__

log = logging.getLogger("lumen_jupyter.gateway")

KEEPALIVE_SECONDS = 2.0
"""An idle connection is not reused after this, and is closed within twice this:
below the 5 s keep-alive of uvicorn (vLLM) and most servers' defaults."""

MAX_LINE = 8190
"""Longest status or header line accepted (aiohttp's default)."""

MAX_HEADERS = 100
"""Most header lines accepted in an answer: with :data:`MAX_LINE`, bounds a head."""

MAX_ANSWER = 64 * 1024 * 1024
"""Default limit of a whole (non-streamed) answer, after decompression."""

READ_BUFFER = 64 * 1024
"""Bytes aiohttp buffers from one connection before it pauses reading."""

MAX_CONNECTIONS = 512
"""Connections open at once to all upstreams together; more calls wait for one."""


class UpstreamError(Exception):
    """The upstream exchange failed."""


class ConnectFailed(UpstreamError):
    """No connection could be made (or the proxy refused the tunnel): nothing was sent."""


class Disconnected(UpstreamError):
    """The upstream closed the connection before the answer was complete."""


class ProtocolError(UpstreamError):
    """The upstream did not answer in HTTP/1.1 as it must be spoken."""


class TooLarge(UpstreamError):
    """The answer is larger than the limit the caller set."""


_CREDENTIALS = re.compile(r"(?<=//)[^/@\s]*@")


def without_secrets(text: str) -> str:
    """``text`` with any ``user:password@`` of a URL left out."""
    return _CREDENTIALS.sub("***@", text)


def describe(error: BaseException) -> str:
    """A short, secret-free account of ``error`` for logs and health reports."""
    detail = " ".join(str(error).split()) or type(error).__name__
    return without_secrets(f"{type(error).__name__}: {detail}")[:300]


# -- TLS and proxies ------------------------------------------------------------------------


@dataclass(frozen=True)
class TLSSettings:
    """How an ``https`` upstream is verified, and how this client proves itself to it.

    Named like jupyter_server's own gateway client: ``validate_cert`` (verify the
    upstream's certificate), ``ca_certs`` (a CA bundle to trust instead of the
    system's), ``client_cert`` and ``client_key`` (a client certificate, PEM).
    """

    validate_cert: bool = True
    ca_certs: str | None = None
    client_cert: str | None = None
    client_key: str | None = None

    def override(
        self,
        *,
        validate_cert: bool | None = None,
        ca_certs: str | None = None,
        client_cert: str | None = None,
        client_key: str | None = None,
    ) -> TLSSettings:
        """These settings with the given fields replaced (``None`` keeps a field)."""
        return TLSSettings(
            self.validate_cert if validate_cert is None else validate_cert,
            ca_certs or self.ca_certs,
            client_cert or self.client_cert,
            client_key or self.client_key,
        )


@functools.lru_cache(maxsize=64)
def ssl_context(settings: TLSSettings) -> ssl.SSLContext:
    """One context per distinct setting (a context is costly to build and to load)."""
    context = ssl.create_default_context(cafile=settings.ca_certs)
    if not settings.validate_cert:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if settings.client_cert:
        context.load_cert_chain(settings.client_cert, settings.client_key)
    return context


def environment_proxy(url: str) -> str | None:
    """The proxy the environment names for ``url``, as ``requests`` reads it.

    ``HTTPS_PROXY`` for https URLs, ``HTTP_PROXY`` for http ones (either case;
    ``ALL_PROXY`` for both), unless ``NO_PROXY`` lists the host.
    """
    proxies = urllib.request.getproxies_environment()
    parts = urlsplit(url)
    host = parts.hostname or ""
    host_port = f"{host}:{parts.port}" if parts.port else host
    bypass = urllib.request.proxy_bypass_environment  # type: ignore[attr-defined]
    if proxies.get("no") and (bypass(host_port, proxies) or bypass(host, proxies)):
        return None
    found = proxies.get(parts.scheme) or proxies.get("all")
    if found and "://" not in found:
        found = "http://" + found
    return found or None


# -- connections ----------------------------------------------------------------------------


@dataclass
class _Attempt:
    """What the connector tells :meth:`HttpClient.request` about the connection it gave."""

    protocol: _GuardedHandler | None = None
    reused: bool = False


_attempt: contextvars.ContextVar[_Attempt | None] = contextvars.ContextVar(
    "lumen_upstream_attempt", default=None
)


class _GuardedHandler(ResponseHandler):
    """aiohttp's connection protocol, told when it sits idle in the pool.

    Bytes that arrive on an idle connection belong to no request: the connection
    is closed at once, so the pool cannot hand it to the next call.
    """

    idle = False
    received = 0  # bytes since the connection was last handed to a request
    uses = 0

    def data_received(self, data: bytes) -> None:
        if self.idle:
            if data and self.transport is not None:
                log.warning("lumen: an upstream sent %d bytes on an idle connection", len(data))
                self.transport.abort()
            return
        self.received += len(data)
        super().data_received(data)

    def set_exception(self, exc: BaseException, *cause: Any) -> None:
        # A body that turns invalid (a bad chunk size after good ones) sets the error on
        # the connection only, and drops the read timeout: a reader waiting for the body
        # would wait for the total timeout, or forever.  Hand the error to the body too.
        super().set_exception(exc, *cause)
        payload = getattr(self, "_payload", None)
        if isinstance(exc, HttpProcessingError) and payload is not None and not payload.is_eof():
            payload.set_exception(aiohttp.ClientPayloadError(f"broken answer: {describe(exc)}"))


class _GuardedConnector(aiohttp.TCPConnector):
    """A connector whose connections are :class:`_GuardedHandler`.

    aiohttp has no public hook for a connection going idle and coming back, so
    this uses three of its internals (the protocol factory, ``_release`` and the
    protocol's ``_payload``); the client's tests fail if a new aiohttp changes them.
    """

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._factory = functools.partial(_GuardedHandler, loop=self._loop)  # type: ignore[assignment]

    def _release(self, key: Any, protocol: ResponseHandler, *, should_close: bool = False) -> None:
        if isinstance(protocol, _GuardedHandler):
            protocol.idle = True
        super()._release(key, protocol, should_close=should_close)

    async def connect(self, req: Any, traces: Any, timeout: Any) -> Any:
        while True:
            connection = await super().connect(req, traces, timeout)
            protocol = connection.protocol
            if not isinstance(protocol, _GuardedHandler):
                return connection
            if protocol.idle and (protocol.should_close or not protocol.is_connected()):
                connection.close()  # something arrived while it was idle: never reuse it
                continue
            protocol.idle = False
            protocol.received = 0
            protocol.uses += 1
            attempt = _attempt.get()
            if attempt is not None:
                attempt.protocol = protocol
                attempt.reused = protocol.uses > 1
            return connection


# -- responses ------------------------------------------------------------------------------


def _payload_error(error: aiohttp.ClientError) -> UpstreamError:
    if isinstance(error, aiohttp.ClientPayloadError):
        return Disconnected(f"the answer ended before its framing said: {describe(error)}")
    if isinstance(error, aiohttp.ClientResponseError):
        return ProtocolError(describe(error))
    return Disconnected(describe(error))


class Response:
    """A response whose head has arrived; the body is read with :meth:`read` or
    :meth:`chunks`, and the connection goes back to the pool once it is complete."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self.status = response.status
        self.headers = response.headers

    async def __aenter__(self) -> Response:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    async def read(self, limit: int | None = None) -> bytes:
        """The whole body; more than ``limit`` bytes (decoded) raises :class:`TooLarge`."""
        declared = self._response.content_length
        plain = "Content-Encoding" not in self.headers  # else the decoded size may be larger
        if declared is not None and plain and (limit is None or declared <= limit):
            try:  # framed by Content-Length: aiohttp reads no further
                return await self._response.read()
            except TimeoutError:
                self.close()
                raise TimeoutError("the upstream stopped sending") from None
            except aiohttp.ClientError as error:
                self.close()
                raise _payload_error(error) from None
            except RuntimeError as error:
                self.close()
                raise Disconnected(f"the connection closed during the answer: {error}") from None
        body = bytearray()
        async for piece in self.chunks():
            body += piece
            if limit is not None and len(body) > limit:
                self.close()
                raise TooLarge(f"the answer is larger than {limit} bytes")
        return bytes(body)

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives, in the pieces that arrive."""
        content = self._response.content
        try:
            while True:
                piece = await content.readany()
                if not piece:
                    break
                yield piece
        except TimeoutError:
            self.close()
            raise TimeoutError("the upstream stopped sending") from None
        except aiohttp.ClientError as error:
            self.close()
            raise _payload_error(error) from None
        except RuntimeError as error:  # aiohttp's word for a body read after the close
            self.close()
            raise Disconnected(f"the connection closed during the answer: {error}") from None

    def close(self) -> None:
        """Done with the response: an incomplete body closes the connection."""
        self._response.release()


# -- the client -----------------------------------------------------------------------------


class BodySource(Protocol):
    """A request body sent as it arrives (a forwarded upload), not held in memory whole."""

    def open(self) -> AsyncIterable[bytes] | None:
        """The body from its first byte, for one attempt; ``None`` when it cannot be
        sent again (a retry then fails instead of sending half a body)."""


class HttpClient:
    """One aiohttp session for every upstream call of the server."""

    def __init__(
        self,
        *,
        connect_timeout: float,
        tls: TLSSettings | None = None,
        keepalive_seconds: float = KEEPALIVE_SECONDS,
        max_connections: int = MAX_CONNECTIONS,
        environment_proxies: bool = True,
    ) -> None:
        self.connect_timeout = connect_timeout
        self.tls = tls or TLSSettings()
        self.keepalive_seconds = keepalive_seconds
        self.max_connections = max_connections
        self.environment_proxies = environment_proxies
        self._session: aiohttp.ClientSession | None = None
        self._timeouts: dict[tuple[float | None, float | None], aiohttp.ClientTimeout] = {}
        self._proxies: dict[str, str | None] = {}  # by URL: a gateway calls a few
        self.closed = False

    def session(self) -> aiohttp.ClientSession:
        """The session, made on first use (it belongs to the running event loop)."""
        if self._session is None:
            connector = _GuardedConnector(
                limit=self.max_connections,
                keepalive_timeout=self.keepalive_seconds,
                ttl_dns_cache=60,
                # The system's resolver in a thread, whatever else is installed (with
                # aiodns present aiohttp would pick c-ares, whose channel holds sockets
                # of its own and resolves /etc/hosts differently).
                resolver=aiohttp.ThreadedResolver(),
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=True,
                trust_env=False,  # proxies are resolved here, and no ~/.netrc is read
                read_bufsize=READ_BUFFER,
                max_line_size=MAX_LINE,
                max_field_size=MAX_LINE,
                max_headers=MAX_HEADERS,
                headers={"User-Agent": f"lumen-jupyter/{__version__}"},
            )
        return self._session

    def _timeout(self, total: float | None, read: float | None) -> aiohttp.ClientTimeout:
        found = self._timeouts.get((total, read))
        if found is None:
            found = aiohttp.ClientTimeout(
                total=total, sock_connect=self.connect_timeout, sock_read=read
            )
            self._timeouts[(total, read)] = found
        return found

    def proxy_for(self, url: str, proxy: str | None) -> str | None:
        """``proxy`` if set, else the environment's proxy for ``url`` (read once per URL)."""
        if proxy or not self.environment_proxies:
            return proxy or None
        try:
            return self._proxies[url]
        except KeyError:
            found = self._proxies[url] = environment_proxy(url)
            return found

    async def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        body: bytes | BodySource = b"",
        timeout: float | None = None,
        read_timeout: float | None = None,
        proxy: str | None = None,
        tls: TLSSettings | None = None,
    ) -> Response:
        """Send a request; returns once the response head has arrived.

        ``timeout`` bounds the whole exchange, head and body; ``read_timeout`` bounds
        each wait for more bytes (what a stream needs).  ``proxy`` and ``tls`` replace
        the environment's proxy and the client's TLS settings for this request.  A
        :class:`BodySource` body is sent as it arrives (chunked, unless ``headers``
        declare its ``Content-Length``).
        """
        if self.closed:
            raise UpstreamError("the HTTP client is closed")
        if not url.startswith(("http://", "https://")):
            raise ValueError("not an http(s) URL")
        session = self.session()
        fixed = isinstance(body, bytes) and (body or method in ("POST", "PUT", "PATCH"))
        options: dict[str, Any] = {
            "data": body if fixed else None,
            "headers": headers,
            "timeout": self._timeout(timeout, read_timeout),
            "allow_redirects": False,
            "proxy": self.proxy_for(url, proxy),
        }
        if url.startswith("https://"):
            try:
                options["ssl"] = ssl_context(tls or self.tls)
            except (OSError, ssl.SSLError) as error:
                raise ConnectFailed(f"bad TLS settings: {describe(error)}") from None
        for retry in (False, True):
            if not isinstance(body, bytes):
                data = body.open()
                if data is None:
                    raise Disconnected("the upstream closed the connection during the request")
                options["data"] = data
            attempt = _Attempt()
            token = _attempt.set(attempt)
            try:
                response = await session.request(method, url, **options)
            except aiohttp.ClientHttpProxyError as error:
                raise ConnectFailed(f"the proxy refused the connection ({error.status})") from None
            except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as error:
                raise ConnectFailed(f"cannot connect: {describe(error)}") from None
            except (
                aiohttp.ServerDisconnectedError,
                aiohttp.ClientOSError,
                aiohttp.ClientConnectionResetError,
            ) as error:
                protocol = attempt.protocol
                if not retry and attempt.reused and protocol is not None and protocol.received == 0:
                    continue  # the pool's connection was closed under us: once more, afresh
                closed = f"the upstream closed the connection: {describe(error)}"
                raise Disconnected(closed) from None
            except TimeoutError:
                raise TimeoutError("the upstream did not answer in time") from None
            except aiohttp.ClientResponseError as error:
                raise ProtocolError(describe(error)) from None
            except aiohttp.ClientError as error:
                raise UpstreamError(describe(error)) from None
            finally:
                _attempt.reset(token)
            return Response(response)
        raise AssertionError("unreachable")

    async def __aenter__(self) -> HttpClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the session and its connections."""
        self.closed = True
        if self._session is not None:
            await self._session.close()
            self._session = None


__all__ = [
    "BodySource",
    "ConnectFailed",
    "Disconnected",
    "HttpClient",
    "ProtocolError",
    "Response",
    "TLSSettings",
    "TooLarge",
    "UpstreamError",
    "environment_proxy",
    "without_secrets",
]
