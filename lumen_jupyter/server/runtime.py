"""Everything a running lumen holds, built the same way by both hosts.

:func:`start_runtime` turns the settings (:class:`~.settings.Lumen`) into the
store, the service, the accountant, the event hub and the gateway - plus the demo
backend when no models are configured - and :meth:`LumenRuntime.close` releases
them in order.  The hosts add only what is theirs: the Jupyter extension its
user and kernel credentials, the standalone service its authenticators and ports.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy

from ..core.accounts import Identity
from ..core.catalog import Catalog
from ..core.config import load_config_file, resolve_database_url
from ..core.defaults import embedded_default
from ..core.errors import ConfigError
from ..core.keys import load_or_create_secret
from ..core.redact import install_log_filter, redact
from ..core.service import LumenService
from ..core.wire import Pool
from ..gateway.gateway import Gateway, GatewaySettings
from ..gateway.http_client import TLSSettings
from ..gateway.traffic import recent_calls
from ..store import Store, make_private_dir, sqlite_url
from ..store.accountant import Accountant
from ..store.notify import PoolListener
from .events import EventHub
from .instance import InstanceKeeper
from .settings import Lumen

log = logging.getLogger("lumen_jupyter.runtime")

SQLITE_DB_THREADS = 2
"""Database threads on SQLite unless ``db_threads`` is set (see bench_panel_overlap.py)."""


@dataclass
class LumenRuntime:
    """The parts of a running lumen, in the order they are stopped (reversed)."""

    settings: Lumen
    store: Store
    service: LumenService
    executor: ThreadPoolExecutor
    accountant: Accountant
    events: EventHub
    instance_keeper: InstanceKeeper
    gateway: Gateway | None = None
    demo: Any = None
    log: logging.Logger = field(default=log)
    pool_listener: PoolListener | None = None

    async def read_pool(self, identity: Identity) -> Pool:
        """The pool tiles of ``identity``, read off the event loop (for the event stream)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, self.service.pool_state, identity)

    def make_gateway(self) -> Gateway:
        """A gateway over this runtime's service (what a restarted server builds)."""
        s = self.settings
        settings = GatewaySettings(
            upstream_timeout=s.upstream_timeout,
            upstream_connect_timeout=s.upstream_connect_timeout,
            max_request_bytes=s.max_request_bytes,
            health_interval=s.health_interval,
            tls=TLSSettings(
                validate_cert=s.validate_cert,
                ca_certs=s.ca_certs or None,
                client_cert=s.client_cert or None,
                client_key=s.client_key or None,
            ),
            max_upstream_answer_bytes=s.max_upstream_answer_bytes,
            upstream_keepalive=s.upstream_keepalive,
        )
        gateway = Gateway(settings, self.service, self.accountant, self.events.publish)
        self.service.status_provider = gateway.upstreams.status
        seeded = gateway.upstreams.seed_traffic(recent_calls(self.store, self.service.clock.now()))
        if seeded:
            self.log.info("lumen: %d model call(s) of the last day counted from the log", seeded)
        return gateway

    def start_background(self) -> None:
        """Health probes, heartbeats and, on PostgreSQL, the pool changes of other
        processes (so a coin meter moves whichever process settled the call)."""
        if self.gateway is not None:
            self.gateway.start_background_tasks()
        self.instance_keeper.run_in_background(self.accountant, self.executor)
        if self.store.dialect == "postgresql" and self.pool_listener is None:
            events, service = self.events, self.service
            self.pool_listener = PoolListener(
                self.store.url,
                lambda account: events.pool_changed(account, service.cached_account),
                on_reconnect=lambda: events.publish("usage", {}, None),
            )
            self.pool_listener.start()

    async def close(self) -> None:
        """Release what was started, in order; never raises."""
        for name, stop in _STOPS:
            part = getattr(self, name, None)
            if part is None:
                continue
            try:
                result = stop(part)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                self.log.exception("lumen: stopping the %s failed", name)
        self.events.close()


_STOPS: tuple[tuple[str, Callable[[Any], Any]], ...] = (
    ("pool_listener", lambda listener: listener.stop()),
    ("gateway", lambda gateway: gateway.close()),
    ("instance_keeper", lambda keeper: keeper.stop()),
    ("demo", lambda demo: demo.stop()),
    ("accountant", lambda accountant: accountant.close()),
    ("executor", lambda executor: executor.shutdown(wait=False)),
    ("store", lambda store: store.dispose()),
)


def load_catalog(settings: Lumen, demo_url: str | None) -> Catalog:
    """The YAML's catalog (or the embedded default), with the demo models if they run."""
    base = embedded_default(demo_url) if demo_url else Catalog()
    if not settings.config_file:
        return base
    return load_config_file(Path(settings.config_file).expanduser(), base=base)


def wants_demo(settings: Lumen) -> bool:
    if settings.demo_backend == "on":
        return True
    if settings.demo_backend == "off":
        return False
    if not settings.config_file:
        return True
    return not load_config_file(Path(settings.config_file).expanduser()).models


def yaml_database_url(settings: Lumen) -> str:
    """``app.database.url`` of the YAML file, when no trait or variable names a store."""
    if not settings.config_file:
        return ""
    path = Path(settings.config_file).expanduser()
    url = load_config_file(path).database_url
    return resolve_database_url(url, path.parent) if url else ""


def database_url(settings: Lumen) -> str:
    """The store's URL: the trait (or ``LUMEN_DATABASE_URL``), the YAML's, else SQLite."""
    url = settings.database_url or yaml_database_url(settings)
    if url:
        return url
    make_private_dir(settings.lumen_dir())
    return sqlite_url(settings.lumen_dir() / "lumen.db")


def open_store(settings: Lumen) -> Store:
    from_yaml = "" if settings.database_url else yaml_database_url(settings)
    store = Store(database_url(settings))
    if from_yaml:
        refuse_a_lumen_database(store)
    store.migrate()
    return store


def start_runtime(
    settings: Lumen,
    started_at: datetime,
    *,
    adapt_catalog: Callable[[Catalog], Catalog] = lambda catalog: catalog,
    loggers: tuple[logging.Logger, ...] = (),
    logger: logging.Logger = log,
) -> LumenRuntime:
    """Open the store, load the configuration and build the gateway (raises
    :class:`ConfigError` for a configuration that cannot be used)."""
    from ..demo.backend import DemoBackend

    store = open_store(settings)
    try:
        if not settings.secret_file:
            make_private_dir(settings.lumen_dir())
        secret_path = (
            Path(settings.secret_file) if settings.secret_file else settings.lumen_dir() / "secret"
        )
        secret = load_or_create_secret(secret_path)
        demo: DemoBackend | None = None
        demo_url = None
        if wants_demo(settings):
            demo = DemoBackend(enable_control=False)
            demo.listen()
            demo_url = demo.base_url
        catalog = adapt_catalog(load_catalog(settings, demo_url))
    except BaseException:
        store.dispose()
        raise
    if catalog.unused_keys:
        logger.info(
            "lumen: configuration keys read but not used here: %s", ", ".join(catalog.unused_keys)
        )
    configured = _configured(settings)
    if catalog.rate_limit_per_minute is not None and "rate_limit_per_minute" not in configured:
        settings.rate_limit_per_minute = catalog.rate_limit_per_minute
    service = LumenService(
        store,
        catalog,
        secret,
        strict_billing=settings.billing_mode == "strict",
        default_output_cap=settings.default_max_output_tokens,
        rate_limit_per_minute=settings.rate_limit_per_minute,
        rate_limit_sessions=settings.rate_limit_sessions,
    )
    keeper = InstanceKeeper(service, heartbeat_seconds=settings.heartbeat_interval)
    keeper.start(started_at)
    # Reads run in parallel on SQLite too (WAL: readers never wait for the writer, and
    # the books of model calls have the accountant's own thread). Two threads, unless
    # ``db_threads`` is configured: the REST API's reads are mostly Python, and more
    # threads competing for the GIL lengthen the model calls' tail while a panel loads.
    sqlite_default = store.dialect == "sqlite" and "db_threads" not in configured
    threads = SQLITE_DB_THREADS if sqlite_default else settings.db_threads
    executor = ThreadPoolExecutor(threads, thread_name_prefix="lumen-db")
    guard_secrets(catalog, loggers)
    runtime = LumenRuntime(
        settings=settings,
        store=store,
        service=service,
        executor=executor,
        accountant=Accountant(store),
        events=EventHub(lambda identity: runtime.read_pool(identity)),
        instance_keeper=keeper,
        demo=demo,
        log=logger,
    )
    runtime.gateway = runtime.make_gateway()
    return runtime


def _configured(settings: Lumen) -> set[str]:
    """The names of the settings given explicitly, in any section the host reads."""
    names: set[str] = set()
    for section in type(settings).section_names():
        names.update(settings.config.get(section) or {})
    return names


def guard_secrets(catalog: Catalog, loggers: tuple[logging.Logger, ...]) -> None:
    """Mask the upstream keys in errors and logs."""
    redact.add(
        endpoint.api_key.reveal()
        for model in catalog.models.values()
        for endpoint in model.endpoints
        if endpoint.api_key
    )
    every = [
        *loggers,
        logging.getLogger("lumen_jupyter"),
        logging.getLogger("tornado.access"),
        logging.getLogger("tornado.application"),
        logging.getLogger("tornado.general"),
    ]
    every += [
        logging.getLogger(name)
        for name in list(logging.root.manager.loggerDict)
        if name.startswith("lumen_jupyter.")
    ]
    install_log_filter(every)


def refuse_a_lumen_database(store: Store) -> None:
    """A database of Lumen itself is not ours to migrate: its tables would clash with ours."""
    names = set(sqlalchemy.inspect(store.engine).get_table_names())
    if {"model_configs", "entities"} & names:
        store.dispose()
        raise ConfigError(
            "app.database.url names a database that holds Lumen's own tables; give "
            "lumen-jupyter a database of its own (c.Lumen.database_url)"
        )
