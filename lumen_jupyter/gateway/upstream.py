"""Upstream endpoints: one pooled HTTP client, round-robin routing, health probes.

One long-lived HTTP client with keep-alive pools serves every call (building a
client per call is what made other gateways slow).  Endpoints are picked round-robin among the
healthy ones; a connection failure marks an endpoint down until the next probe
sees it answer ``GET /models``.  Credentials are sent upstream and nowhere else.

Why an endpoint was marked down (refused, TLS, proxy, an HTTP status) is logged
once per change, without secrets, so "No healthy endpoint" always has a cause in
the server's log.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from ..core.catalog import Catalog, EndpointSpec, ModelSpec
from .http_client import (
    MAX_ANSWER,
    HttpClient,
    Response,
    TLSSettings,
    UpstreamError,
    describe,
    without_secrets,
)

log = logging.getLogger("lumen_jupyter.gateway")


@dataclass
class EndpointHealth:
    healthy: bool = True  # optimistic until a probe or a call says otherwise
    checked_at: float | None = None
    failures: int = 0
    reason: str | None = None  # why it was last marked down, without secrets


@dataclass
class ModelTraffic:
    """Recent request times of one model, for ``requests.last_minute/hour/day``."""

    times: deque[float] = field(default_factory=deque)

    def add(self, now: float) -> None:
        self.times.append(now)
        self.trim(now)

    def trim(self, now: float) -> None:
        while self.times and self.times[0] < now - 86400:
            self.times.popleft()

    def counts(self, now: float) -> dict[str, int]:
        self.trim(now)
        return {
            "last_minute": sum(1 for t in self.times if t >= now - 60),
            "last_hour": sum(1 for t in self.times if t >= now - 3600),
            "last_day": len(self.times),
        }


class Upstreams:
    """Routing and health for every configured endpoint."""

    def __init__(
        self,
        catalog: Catalog,
        *,
        total_timeout: float,
        connect_timeout: float,
        probe_timeout: float = 5.0,
    ) -> None:
        self.catalog = catalog
        self.total_timeout = total_timeout
        self.connect_timeout = connect_timeout
        self.probe_timeout = probe_timeout
        self.health: dict[EndpointSpec, EndpointHealth] = {}
        self.traffic: dict[str, ModelTraffic] = {}
        self._cursors: dict[str, itertools.count[int]] = {}
        self._headers: dict[EndpointSpec, dict[str, str]] = {}
        self.client = HttpClient(connect_timeout=connect_timeout)
        self.max_answer_bytes = MAX_ANSWER

    def configure_transport(
        self, tls: TLSSettings, *, max_answer_bytes: int, keepalive_seconds: float
    ) -> None:
        """The server-wide TLS settings, answer size limit and keep-alive (before the
        first call)."""
        self.client.tls = tls
        self.client.keepalive_seconds = keepalive_seconds
        self.max_answer_bytes = max_answer_bytes

    def tls(self, endpoint: EndpointSpec) -> TLSSettings | None:
        """The server's TLS settings with the endpoint's own on top (None: plain http)."""
        if not endpoint.url.startswith("https://"):
            return None
        return self.client.tls.override(
            validate_cert=endpoint.verify,
            ca_certs=endpoint.ca_certs,
            client_cert=endpoint.client_cert,
            client_key=endpoint.client_key,
        )

    async def request(
        self,
        endpoint: EndpointSpec,
        method: str,
        path: str,
        *,
        body: bytes = b"",
        timeout: float | None = None,
        read_timeout: float | None = None,
    ) -> Response:
        """A request to ``<endpoint url>/<path>`` with its credential, proxy and TLS."""
        return await self.client.request(
            method,
            f"{endpoint.url}/{path}",
            headers=self.headers(endpoint),
            body=body,
            timeout=timeout,
            read_timeout=read_timeout,
            proxy=endpoint.proxy.reveal() or None,
            tls=self.tls(endpoint),
        )

    def _health(self, endpoint: EndpointSpec) -> EndpointHealth:
        found = self.health.get(endpoint)
        if found is None:
            found = self.health[endpoint] = EndpointHealth()
        return found

    def candidates(self, model: ModelSpec) -> list[EndpointSpec]:
        """Healthy endpoints in round-robin order, starting at the next one."""
        healthy = [e for e in model.endpoints if self._health(e).healthy]
        if not healthy:
            return []
        cursor = self._cursors.setdefault(model.name, itertools.count())
        start = next(cursor) % len(healthy)
        return healthy[start:] + healthy[:start]

    def mark_failed(self, endpoint: EndpointSpec, reason: str) -> None:
        state = self._health(endpoint)
        self._note_down(endpoint, state, reason)
        state.healthy = False
        state.failures += 1

    def mark_ok(self, endpoint: EndpointSpec) -> None:
        state = self._health(endpoint)
        if not state.healthy:
            log.info("lumen: upstream %s is healthy again", self.where(endpoint))
        state.healthy = True
        state.reason = None

    @staticmethod
    def where(endpoint: EndpointSpec) -> str:
        """The endpoint as logs name it: its URL without credentials, and its proxy's host."""
        text = without_secrets(endpoint.url)
        proxy = endpoint.proxy.reveal()
        if proxy:
            text += f" (via proxy {without_secrets(proxy)})"
        return text

    def _note_down(self, endpoint: EndpointSpec, state: EndpointHealth, reason: str) -> None:
        reason = without_secrets(reason)
        if state.healthy or state.reason != reason:
            log.warning("lumen: upstream %s is down: %s", self.where(endpoint), reason)
        state.reason = reason

    def status(self, model: ModelSpec) -> tuple[str, int, int]:
        configured = len(model.endpoints)
        healthy = sum(1 for e in model.endpoints if self._health(e).healthy)
        if not model.active:
            return "disabled", configured, healthy
        if healthy == 0:
            return "down", configured, healthy
        return ("ok" if healthy == configured else "degraded"), configured, healthy

    def record_request(self, model: str) -> None:
        self.traffic.setdefault(model, ModelTraffic()).add(time.monotonic())

    def seed_traffic(self, calls: Iterable[tuple[str, float]]) -> int:
        """Count calls made before this server started: ``(model, seconds ago)``, oldest
        first (from the request log), so the per-minute/hour/day counts of ``/v1/models``
        survive a restart.  Returns how many were counted."""
        clock = time.monotonic()
        seeded = 0
        for model, age in calls:
            if 0 <= age <= 86400:
                self.traffic.setdefault(model, ModelTraffic()).times.append(clock - age)
                seeded += 1
        for traffic in self.traffic.values():
            traffic.trim(clock)
        return seeded

    def request_counts(self, model: str) -> dict[str, int]:
        traffic = self.traffic.get(model)
        if traffic is None:
            return {"last_minute": 0, "last_hour": 0, "last_day": 0}
        return traffic.counts(time.monotonic())

    def headers(self, endpoint: EndpointSpec) -> dict[str, str]:
        """The request headers for ``endpoint``, its credential included (built once)."""
        found = self._headers.get(endpoint)
        if found is None:
            # identity: streams flow at once; an upstream that compresses anyway is decoded.
            found = {"Content-Type": "application/json", "Accept-Encoding": "identity"}
            if endpoint.api_key:
                found["Authorization"] = f"Bearer {endpoint.api_key.reveal()}"
            self._headers[endpoint] = found
        return found

    async def probe(self, endpoint: EndpointSpec) -> bool:
        """One health check: ``GET <url>/models`` answers 200."""
        state = self._health(endpoint)
        reason = None
        try:
            response = await self.request(endpoint, "GET", "models", timeout=self.probe_timeout)
            async with response:
                await response.read(limit=self.max_answer_bytes)
            if response.status != 200:
                reason = f"GET /models answered {response.status}"
        except TimeoutError:
            reason = f"GET /models did not answer within {self.probe_timeout:g} s"
        except (UpstreamError, OSError, ValueError) as error:
            reason = describe(error)
        if reason is None:
            self.mark_ok(endpoint)
        else:
            self._note_down(endpoint, state, reason)
            state.healthy = False
        state.checked_at = time.time()
        return state.healthy

    def endpoints(self) -> Iterable[EndpointSpec]:
        seen: set[EndpointSpec] = set()
        for model in self.catalog.models.values():
            for endpoint in model.endpoints:
                if endpoint not in seen:
                    seen.add(endpoint)
                    yield endpoint

    async def probe_all(self) -> None:
        await asyncio.gather(*(self.probe(e) for e in self.endpoints()))

    async def probe_forever(self, interval: float) -> None:
        while True:
            try:
                await self.probe_all()
            except Exception:  # a probe must never kill the loop
                log.exception("lumen: health probe failed")
            await asyncio.sleep(interval)

    async def close(self) -> None:
        await self.client.close()
