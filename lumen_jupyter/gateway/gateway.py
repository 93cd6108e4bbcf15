"""The gateway's shared state: upstreams and their health, rate limits, running streams.

One :class:`Gateway` serves every model call of a process.  It is built from
plain :class:`GatewaySettings` (not from a host application), so the Jupyter
server extension and the standalone service build it the same way; it reads the
service but never changes it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..core.catalog import ModelSpec
from ..core.money import micro_to_coins
from ..core.service import LumenService
from ..store.accountant import Accountant
from .http_client import TLSSettings
from .metrics import CallMetrics
from .upstream import Upstreams

if TYPE_CHECKING:
    from .call import ModelCall

Publish = Callable[[str, Mapping[str, Any], "str | None"], None]
"""Tells open event streams (the coin meter) that something happened to a user."""


@dataclass(frozen=True)
class GatewaySettings:
    """What the gateway needs to know from its host's configuration."""

    upstream_timeout: float = 300.0
    upstream_connect_timeout: float = 10.0
    max_request_bytes: int = 10 * 1024 * 1024
    health_interval: float = 60.0
    tls: TLSSettings = field(default_factory=TLSSettings)
    max_upstream_answer_bytes: int = 64 * 1024 * 1024
    upstream_keepalive: float = 2.0


def _nobody_listens(kind: str, data: Mapping[str, Any], username: str | None) -> None:
    return None


class Gateway:
    """Routing, health and rate limits shared by every model call of this process."""

    def __init__(
        self,
        settings: GatewaySettings,
        service: LumenService,
        accountant: Accountant,
        publish: Publish = _nobody_listens,
    ) -> None:
        self.settings = settings
        self.service = service
        self.accountant = accountant
        self.publish = publish
        self.upstreams = Upstreams(
            service.catalog,
            total_timeout=settings.upstream_timeout,
            connect_timeout=settings.upstream_connect_timeout,
        )
        self.upstreams.configure_transport(
            settings.tls,
            max_answer_bytes=settings.max_upstream_answer_bytes,
            keepalive_seconds=settings.upstream_keepalive,
        )
        self.started = int(time.time())
        self.in_flight = 0
        self.metrics = CallMetrics()
        """Model calls running now (a worker stopping waits for them)."""
        self._tasks: list[asyncio.Task[None]] = []
        self._calls_by_key: dict[int, set[ModelCall]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        service.revocation_listeners.append(self._key_revoked)

    @property
    def max_request_bytes(self) -> int:
        return self.settings.max_request_bytes

    def track(self, key_id: int, call: ModelCall) -> None:
        """Remember a running call made with a personal key, to stop it on revocation."""
        self._loop = asyncio.get_running_loop()
        self._calls_by_key.setdefault(key_id, set()).add(call)

    def untrack(self, key_id: int, call: ModelCall) -> None:
        running = self._calls_by_key.get(key_id)
        if running is not None:
            running.discard(call)
            if not running:
                del self._calls_by_key[key_id]

    def _key_revoked(self, key_id: int) -> None:
        """Called from the thread that revoked the key: stop its streams on the loop."""
        loop = self._loop
        if loop is not None and key_id in self._calls_by_key:
            loop.call_soon_threadsafe(self._stop_calls_of, key_id)

    def _stop_calls_of(self, key_id: int) -> None:
        for call in list(self._calls_by_key.get(key_id, ())):
            call.stop_stream("revoked")

    def start_background_tasks(self) -> None:
        interval = self.settings.health_interval
        if interval > 0 and not self._tasks:
            task = asyncio.ensure_future(self.upstreams.probe_forever(interval))
            self._tasks.append(task)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        self._tasks.clear()
        await self.upstreams.close()

    def model_object(self, model: ModelSpec) -> dict[str, Any]:
        """An OpenAI model object with Lumen's extra fields (unknown ones omitted)."""
        status, configured, healthy = self.upstreams.status(model)
        data: dict[str, Any] = {
            "id": model.name,
            "object": "model",
            "created": self.started,
            "owned_by": "lumen",
            "status": status,
            "input_cost_per_million": float(micro_to_coins(model.input_price_micro)),
            "output_cost_per_million": float(micro_to_coins(model.output_price_micro)),
            "instances": {"configured": configured, "healthy": healthy},
            "requests": self.upstreams.request_counts(model.name),
        }
        optional = {
            "max_model_len": model.max_model_len,
            "description": model.description,
            "max_output_tokens": model.max_output_tokens,
            "supports_function_calling": model.supports_function_calling,
            "supports_reasoning": model.supports_reasoning,
            "knowledge_cutoff": model.knowledge_cutoff,
            "input_modalities": list(model.input_modalities) if model.input_modalities else None,
            "output_modalities": list(model.output_modalities) if model.output_modalities else None,
        }
        data.update({k: v for k, v in optional.items() if v is not None})
        return data
