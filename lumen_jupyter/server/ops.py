"""``<prefix>health`` and ``<prefix>metrics``: what an operator's probes and Prometheus read.

``health`` answers 200 while the process serves (liveness); ``health?ready=1``
also checks that the database answers (readiness: 503 with the reason if not).
``metrics`` is the Prometheus text format - calls, coins charged, refusals by
reason, upstream errors, call latency, calls in flight - summed over every worker
of the service.  Neither needs a credential and neither says anything about a user.
"""

from __future__ import annotations

import asyncio
import json

from sqlalchemy import text
from tornado import web

from ..gateway.metrics import render_metrics
from ..store import Store
from .routes import Routes


class HealthHandler(web.RequestHandler):
    def set_default_headers(self) -> None:
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")

    async def get(self) -> None:
        if self.get_query_argument("ready", "") in ("", "0", "false"):
            self.finish(json.dumps({"status": "ok"}))
            return
        store: Store = self.settings["lumen_service"].store
        loop_executor = self.settings["lumen_executor"]
        try:
            await asyncio.get_running_loop().run_in_executor(loop_executor, _ping, store)
        except Exception as exc:
            self.set_status(503)
            reason = f"database unreachable: {type(exc).__name__}"
            self.finish(json.dumps({"status": "unavailable", "reason": reason}))
            return
        self.finish(json.dumps({"status": "ok", "database": "ok"}))


def _ping(store: Store) -> None:
    with store.read() as conn:
        conn.execute(text("SELECT 1"))


class MetricsHandler(web.RequestHandler):
    def get(self) -> None:
        body, content_type = render_metrics()
        self.set_header("Content-Type", content_type)
        self.set_header("Cache-Control", "no-store")
        self.finish(body)


def ops_routes(prefix: str) -> Routes:
    """``prefix`` ends with ``/`` (the service's URL prefix)."""
    return [(f"{prefix}health", HealthHandler), (f"{prefix}metrics", MetricsHandler)]
