"""The gateway's Prometheus metrics: calls, coins, refusals, upstream errors, latency.

Two hosts, two stores:

* **The Jupyter server extension** is one process: the metrics live in prometheus_client's
  default ``REGISTRY``, so jupyter_server's own ``/metrics`` shows them next to its own.
* **The standalone service** runs N forked workers: its supervisor sets
  ``PROMETHEUS_MULTIPROC_DIR`` to a private directory before forking, every worker writes
  its values to files there, and :func:`render_metrics` sums the files of all workers
  (those that died included, so counters never go back) on every scrape, whichever worker
  serves it.  The in-flight gauge counts live workers only: :func:`forget_worker` drops a
  dead worker's share.

prometheus_client chooses between in-memory and file-backed values once, when it is
first imported, and a process may well have imported it before its supervisor set the
variable: the recorder makes that choice again when it is created, so create it in the
worker (after the fork), never in the supervisor.

A call costs about a millisecond of CPU in all, so the recorder keeps its own dict of the
labelled series it has used (prometheus_client's ``labels()`` validates and converts its
arguments on every call): one :meth:`CallMetrics.finished` costs 1.8 µs with in-memory
values (4 µs through ``labels()``) and 4.5 µs with file-backed ones (Python 3.11,
prometheus_client 0.26, best of 5 × 100,000 on a shared 2-core machine).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal, TypeVar

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)
from prometheus_client.metrics import MetricWrapperBase

from ..core.money import MICRO

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

CallStatus = Literal["ok", "partial", "aborted", "error", "refused"]
"""How a model call ended: answered in full (``ok``), a stream the upstream broke off
(``partial``) or the client left (``aborted``), both billed for what was delivered, failed
upstream before any answer (``error``), or refused by the gateway before any upstream call
(``refused``: no budget, no consent, rate limited ...)."""

LATENCY_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    20.0,
    30.0,
    60.0,
    120.0,
    300.0,
)
"""Seconds: a refusal or an embedding in milliseconds, a long generation in minutes."""

Family = TypeVar("Family", bound=MetricWrapperBase)


@dataclass(frozen=True)
class _Families:
    calls: Counter
    coins: Counter
    refusals: Counter
    upstream_errors: Counter
    latency: Histogram
    in_flight: Gauge


_created: dict[object, _Families] = {}


def multiprocess_dir() -> str | None:
    """The directory the workers' metrics are written to, None in a single process."""
    return os.environ.get(MULTIPROC_ENV) or None


class CallMetrics:
    """Records the gateway's calls.

    Every ``started()`` is matched by exactly one ``finished()``, whatever the outcome
    (a call refused after it started is finished with status ``refused`` and 0 coins);
    ``refused(reason)`` also counts why, and is the only record of a request refused
    before it was a call (a bad API key).

    ``registry`` is where the metrics are registered in a single process (default:
    prometheus_client's ``REGISTRY``); with ``PROMETHEUS_MULTIPROC_DIR`` set the files
    there are the store and ``registry`` is not used.  Any number of recorders may be
    created: they share one set of metrics per registry (per process with files).
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self._families = _families(REGISTRY if registry is None else registry)
        self._in_flight = self._families.in_flight
        self._calls: dict[tuple[str, str], Counter] = {}
        self._coins: dict[str, Counter] = {}
        self._latency: dict[str, Histogram] = {}
        self._refusals: dict[str, Counter] = {}
        self._upstream_errors: dict[tuple[str, str], Counter] = {}

    def started(self) -> None:
        """A call is in flight."""
        self._in_flight.inc()

    def finished(
        self,
        model: str,
        status: CallStatus,
        seconds: float,
        coins_micro: int,
        *,
        endpoint: str,
    ) -> None:
        """The call that ``started()`` ended: ``seconds`` since it started, ``coins_micro``
        charged for it, ``endpoint`` its kind (``chat``, ``completions``, ``embeddings``)."""
        self._in_flight.dec()
        calls = self._calls.get((model, status))
        if calls is None:
            calls = self._calls[model, status] = self._families.calls.labels(model, status)
        calls.inc()
        if coins_micro:
            coins = self._coins.get(model)
            if coins is None:
                coins = self._coins[model] = self._families.coins.labels(model)
            coins.inc(coins_micro / MICRO)
        latency = self._latency.get(endpoint)
        if latency is None:
            latency = self._latency[endpoint] = self._families.latency.labels(endpoint)
        latency.observe(seconds)

    def refused(self, reason: str) -> None:
        """A request refused by the gateway; ``reason`` is the error code
        (``insufficient_budget``, ``consent_required``, ``rate_limited``,
        ``invalid_api_key`` ...)."""
        refusals = self._refusals.get(reason)
        if refusals is None:
            refusals = self._refusals[reason] = self._families.refusals.labels(reason)
        refusals.inc()

    def upstream_error(self, model: str, kind: str) -> None:
        """An upstream attempt for ``model`` failed (``kind``: timeout, connect, status
        5xx ...); one call may record several (a failover tries the next endpoint)."""
        errors = self._upstream_errors.get((model, kind))
        if errors is None:
            errors = self._families.upstream_errors.labels(model, kind)
            self._upstream_errors[model, kind] = errors
        errors.inc()


def render_metrics(registry: CollectorRegistry | None = None) -> tuple[bytes, str]:
    """``(body, content type)`` of a scrape: the sum over every worker's files with
    ``PROMETHEUS_MULTIPROC_DIR`` set, else ``registry`` (default ``REGISTRY``)."""
    directory = multiprocess_dir()
    if directory is not None:
        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged, path=directory)  # type: ignore[no-untyped-call]
        return generate_latest(merged), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY if registry is None else registry), CONTENT_TYPE_LATEST


def forget_worker(pid: int) -> None:
    """A worker died: drop its share of the in-flight gauge (its counters stay summed)."""
    directory = multiprocess_dir()
    if directory is not None:
        multiprocess.mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]


def _families(registry: CollectorRegistry) -> _Families:
    directory = multiprocess_dir()
    key: object = ("files", directory, os.getpid()) if directory else registry
    families = _created.get(key)
    if families is None:
        if directory is not None:
            _use_file_values()
        target = None if directory else registry
        families = _created[key] = _Families(
            calls=_family(
                target,
                Counter,
                "lumen_model_calls",
                "Model calls by how they ended (ok, partial, aborted, error, refused)",
                ("model", "status"),
            ),
            coins=_family(
                target, Counter, "lumen_coins_charged", "Coins charged for model calls", ("model",)
            ),
            refusals=_family(
                target,
                Counter,
                "lumen_refusals",
                "Requests refused by the gateway, by error code",
                ("reason",),
            ),
            upstream_errors=_family(
                target,
                Counter,
                "lumen_upstream_errors",
                "Failed attempts to reach a model's upstream endpoint",
                ("model", "kind"),
            ),
            latency=_family(
                target,
                Histogram,
                "lumen_call_duration_seconds",
                "Model call duration, from the request to its last byte",
                ("endpoint",),
                buckets=LATENCY_BUCKETS,
            ),
            in_flight=_family(
                target,
                Gauge,
                "lumen_calls_in_flight",
                "Model calls in progress",
                (),
                multiprocess_mode="livesum",
            ),
        )
    return families


def _family(
    registry: CollectorRegistry | None,
    kind: type[Family],
    name: str,
    documentation: str,
    labels: tuple[str, ...],
    **options: object,
) -> Family:
    """The metric ``name`` of ``registry``: the one registered already if this module was
    imported twice (by two names, or reloaded), else a new one."""
    if registry is not None:
        # prometheus_client has no public lookup by name; this is its registry's own index.
        known: dict[str, object] = getattr(registry, "_names_to_collectors", {})
        found = known.get(name)
        if isinstance(found, kind):
            return found
    # ``options`` are the keywords of ``kind`` only (buckets, multiprocess_mode).
    return kind(name, documentation, labels, registry=registry, **options)  # type: ignore[arg-type]


def _use_file_values() -> None:
    """Make the metrics created from now on in this process file-backed."""
    if not getattr(values.ValueClass, "_multiprocess", False):
        values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]
