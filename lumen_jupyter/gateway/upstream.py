"""Upstream endpoints: one pooled HTTP client, round-robin routing, health probes.

One long-lived HTTP client with keep-alive pools serves every call (building a
client per call is what made other gateways slow).  Endpoints are picked round-robin among the
healthy ones; a connection failure marks an endpoint down until the next probe
sees it answer ``GET /models``.  Credentials are sent upstream and nowhere else.
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
from .http_client import HttpClient, UpstreamError

log = logging.getLogger("lumen_jupyter.gateway")


@dataclass
class EndpointHealth:
    healthy: bool = True  # optimistic until a probe or a call says otherwise
    checked_at: float | None = None
    failures: int = 0


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

    def mark_failed(self, endpoint: EndpointSpec) -> None:
        state = self._health(endpoint)
        state.healthy = False
        state.failures += 1

    def mark_ok(self, endpoint: EndpointSpec) -> None:
        state = self._health(endpoint)
        state.healthy = True

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
            found = {"Content-Type": "application/json", "Accept-Encoding": "identity"}
            if endpoint.api_key:
                found["Authorization"] = f"Bearer {endpoint.api_key.reveal()}"
            self._headers[endpoint] = found
        return found

    async def probe(self, endpoint: EndpointSpec) -> bool:
        """One health check: ``GET <url>/models`` answers 200."""
        state = self._health(endpoint)
        try:
            response = await self.client.request(
                "GET",
                f"{endpoint.url}/models",
                headers=self.headers(endpoint),
                timeout=self.probe_timeout,
            )
            async with response:
                await response.read()
                state.healthy = response.status == 200
        except (UpstreamError, TimeoutError, OSError, ValueError):
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
