"""The Jupyter server extension: configuration, start-up, and the route table.

``LumenJupyter`` reads its traitlets (``c.LumenJupyter.*``) and the optional
Lumen-style YAML file, opens the store, starts the demo backend when no
models are configured (the embedded default), gives kernels their credential,
and mounts the REST API and the OpenAI-compatible gateway.
"""

from __future__ import annotations

import asyncio
import gc
import getpass
import inspect
import logging
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import sqlalchemy
from jupyter_core.paths import jupyter_data_dir
from jupyter_server.extension.application import ExtensionApp
from traitlets import Bool, Enum, Float, Int, List, Unicode, default

from .._version import __version__
from ..core.accounts import Identity
from ..core.catalog import Catalog
from ..core.config import load_config_file, resolve_database_url
from ..core.defaults import embedded_default
from ..core.errors import ConfigError
from ..core.keys import load_or_create_secret
from ..core.redact import install_log_filter, redact
from ..core.service import LumenService
from ..core.wire import Pool
from ..store import Store, make_private_dir, sqlite_url
from .accountant import Accountant
from .auth import DEFAULT_MAX_BODY_BYTES
from .credentials import KERNEL_TOKEN_ENV, KernelCredentials
from .events import EventHub
from .handlers import api_routes, unavailable_routes
from .instance import InstanceKeeper

SQLITE_DB_THREADS = 2
"""Database threads on SQLite unless ``db_threads`` is set (see bench_panel_overlap.py)."""

KERNEL_URL_ENV = "LUMEN_JUPYTER_URL"
KERNEL_ROOT_ENV = "LUMEN_JUPYTER_ROOT"


class LumenJupyter(ExtensionApp):
    """lumen-jupyter: an AI gateway with coin budgets inside the Jupyter server."""

    name = "lumen_jupyter"
    version = __version__
    load_other_extensions = True

    database_url = Unicode(
        "",
        config=True,
        help="SQLAlchemy URL of the store; empty means SQLite in the Jupyter data dir. "
        "Also read from LUMEN_DATABASE_URL.",
    )
    config_file = Unicode(
        "",
        config=True,
        help="Path of a Lumen-style YAML file (models, defaults, groups, users). "
        "Also read from LUMEN_CONFIG. Empty means the embedded default.",
    )
    secret_file = Unicode(
        "",
        config=True,
        help="File holding the secret that keys are hashed under (created 0600 on first "
        "use). Rotating it invalidates every personal key. Default: in the data dir.",
    )
    username = Unicode(
        "", config=True, help="Account name; default: JUPYTERHUB_USER, else the login name."
    )
    display_name = Unicode("", config=True, help="Name shown on the profile card.")
    email = Unicode("", config=True, help="Email for the profile card and Gravatar.")
    groups = List(Unicode(), config=True, help="Groups this user belongs to (besides YAML).")
    billing_mode = Enum(
        ["strict", "soft"],
        "strict",
        config=True,
        help="strict: reserve the worst-case cost before each call (never overspends). "
        "soft: Lumen's behaviour - admit any positive balance, charge after.",
    )
    demo_backend = Enum(
        ["auto", "on", "off"],
        "auto",
        config=True,
        help="Serve the demo models in-process. auto: when no models are configured.",
    )
    upstream_timeout = Float(300.0, config=True, help="Seconds an upstream call may take in total.")
    upstream_connect_timeout = Float(10.0, config=True, help="Seconds to connect upstream.")
    validate_cert = Bool(
        True,
        config=True,
        help="Verify the certificates of https upstreams (an endpoint's 'verify' overrides).",
    )
    ca_certs = Unicode(
        "",
        config=True,
        help="CA bundle (PEM) trusted for https upstreams instead of the system's; empty: "
        "the system's (SSL_CERT_FILE applies). An endpoint's 'ca_certs' overrides.",
    )
    client_cert = Unicode(
        "", config=True, help="Client certificate (PEM) presented to https upstreams."
    )
    client_key = Unicode("", config=True, help="Key of client_cert, if not in the same file.")
    upstream_keepalive = Float(
        2.0,
        config=True,
        help="Seconds an idle upstream connection may be reused (it is closed within twice "
        "that). Keep it below the upstream servers' own keep-alive (uvicorn, vLLM's server: "
        "5 s); a remote https provider may allow more, saving TLS handshakes.",
    )
    max_upstream_answer_bytes = Int(
        64 * 1024 * 1024,
        config=True,
        help="Largest non-streamed upstream answer accepted (a larger one is a 502).",
    )
    health_interval = Float(60.0, config=True, help="Seconds between endpoint health probes.")
    heartbeat_interval = Float(
        5.0,
        config=True,
        help="Seconds between this server's heartbeats in the store. Servers sharing a "
        "store settle a server's open calls once it has missed six (or, on the same "
        "host, once its process is gone).",
    )
    max_request_bytes = Int(
        10 * 1024 * 1024, config=True, help="Largest model request body accepted (413 above)."
    )
    max_body_bytes = Int(
        DEFAULT_MAX_BODY_BYTES,
        config=True,
        help="Largest REST request body accepted under lumen/api (413 above).",
    )
    idle_connection_timeout = Float(
        300.0,
        config=True,
        help="Seconds the server waits for the next request on an open HTTP connection "
        "before closing it (applies to the whole Jupyter server; 0: tornado's 1 hour).",
    )
    body_timeout = Float(
        120.0,
        config=True,
        help="Seconds a request body may take to arrive before the connection is closed "
        "(applies to the whole Jupyter server; 0: no limit).",
    )
    default_max_output_tokens = Int(
        4096,
        config=True,
        help="Output tokens reserved when a caller sets no max_tokens and the model "
        "declares no limit.",
    )
    rate_limit_per_minute = Int(
        0, config=True, help="Calls per minute allowed for each personal key (0: no limit)."
    )
    rate_limit_sessions = Bool(
        False, config=True, help="Apply the rate limit to the Jupyter session and kernels too."
    )
    db_threads = Int(
        4,
        config=True,
        help="Threads for database work off the event loop. Unless set explicitly, SQLite "
        "uses two: its readers run in parallel (WAL), and more threads would only compete "
        "for the GIL with the event loop (model calls' p99).",
    )

    @default("username")
    def _default_username(self) -> str:
        return os.environ.get("JUPYTERHUB_USER") or getpass.getuser()

    @default("database_url")
    def _default_database_url(self) -> str:
        return os.environ.get("LUMEN_DATABASE_URL", "")

    @default("config_file")
    def _default_config_file(self) -> str:
        return os.environ.get("LUMEN_CONFIG", "")

    def lumen_dir(self) -> Path:
        """Where the SQLite store and the key secret live: ``<jupyter data dir>/lumen``."""
        return Path(jupyter_data_dir()) / "lumen"

    #: Why lumen could not start (shown by every lumen route as a 503), or ``None``.
    config_error: str | None = None
    gateway: Any = None
    demo: Any = None

    def load_catalog(self, demo_url: str | None) -> Catalog:
        base = embedded_default(demo_url) if demo_url else Catalog()
        if not self.config_file:
            return base
        catalog = load_config_file(Path(self.config_file).expanduser(), base=base)
        return catalog

    def _wants_demo(self) -> bool:
        if self.demo_backend == "on":
            return True
        if self.demo_backend == "off":
            return False
        if not self.config_file:
            return True
        probe = load_config_file(Path(self.config_file).expanduser())
        return not probe.models

    def initialize_settings(self) -> None:
        """Start lumen; a configuration that fails to load leaves it loudly unavailable.

        Jupyter then runs on, every lumen route answers 503 with the reason, and
        the kernels and the status bar say so - never a server that looks fine but
        enforces nothing.
        """
        self.started_at = datetime.now(timezone.utc)
        # Kernels get their credential even when lumen fails to start: it is how they
        # learn why (a 503 with the reason) instead of a bare refusal.
        self.kernel_credentials = KernelCredentials()
        os.environ.pop(KERNEL_TOKEN_ENV, None)  # never inherited from whoever started us
        manager = getattr(self.serverapp, "kernel_manager", None)
        if manager is not None:
            self.kernel_credentials.attach(manager)
        try:
            self._initialize_lumen()
        except ConfigError as exc:
            self._fail(f"lumen configuration error: {exc.message}")
        except Exception as exc:  # a database that cannot be opened, a bad secret file ...
            self.log.exception("lumen: could not start")
            self._fail(f"lumen could not start: {type(exc).__name__} (see the server log)")

    def _fail(self, message: str) -> None:
        self.config_error = message
        self.gateway = None
        self.log.error("%s; every lumen route answers 503 until the server restarts", message)
        self.settings.update(
            {
                "lumen_config_error": message,
                "lumen_kernel_credentials": self.kernel_credentials,
                "lumen_app": self,
            }
        )
        self._publish_kernel_environment()

    def _yaml_database_url(self) -> str:
        """``app.database.url`` of the YAML file, when no trait or variable names a store."""
        if not self.config_file:
            return ""
        path = Path(self.config_file).expanduser()
        url = load_config_file(path).database_url
        return resolve_database_url(url, path.parent) if url else ""

    def _initialize_lumen(self) -> None:
        from ..gateway.demo_backend import DemoBackend

        from_yaml = "" if self.database_url else self._yaml_database_url()
        if not self.database_url or not self.secret_file:
            make_private_dir(self.lumen_dir())
        url = self.database_url or from_yaml or sqlite_url(self.lumen_dir() / "lumen.db")
        self.store = Store(url)
        if from_yaml:
            _refuse_a_lumen_database(self.store)
        self.store.migrate()
        secret_path = Path(self.secret_file) if self.secret_file else self.lumen_dir() / "secret"
        secret = load_or_create_secret(secret_path)
        self.demo: DemoBackend | None = None
        demo_url = None
        if self._wants_demo():
            self.demo = DemoBackend(enable_control=False)
            self.demo.listen()
            demo_url = self.demo.base_url
        catalog = self.load_catalog(demo_url).for_user(self.username, self.email or None)
        if catalog.unused_keys:
            self.log.info(
                "lumen: configuration keys read but not used here: %s",
                ", ".join(catalog.unused_keys),
            )
        configured = self.config.get(type(self).__name__) or {}
        if catalog.rate_limit_per_minute is not None and "rate_limit_per_minute" not in configured:
            self.rate_limit_per_minute = catalog.rate_limit_per_minute
        self.service = LumenService(
            self.store, catalog, secret, strict_billing=self.billing_mode == "strict"
        )
        user_spec = catalog.user(self.username)
        self.identity = Identity(
            username=self.username,
            display_name=self.display_name or user_spec.display_name or self.username,
            email=self.email or user_spec.email or None,
            groups=frozenset(self.groups),
        )
        self.instance_keeper = InstanceKeeper(
            self.service, heartbeat_seconds=self.heartbeat_interval
        )
        self.instance_keeper.start(self.started_at)
        # Reads run in parallel on SQLite too (WAL: readers never wait for the writer, and
        # the books of model calls have the accountant's own thread). Two threads, unless
        # ``db_threads`` is configured: the REST API's reads are mostly Python, and more
        # threads competing for the GIL lengthen the model calls' tail while a panel loads.
        sqlite_default = self.store.dialect == "sqlite" and "db_threads" not in configured
        threads = SQLITE_DB_THREADS if sqlite_default else self.db_threads
        self.executor = ThreadPoolExecutor(threads, thread_name_prefix="lumen-db")
        self.accountant = Accountant(self.store)
        self._guard_secrets(catalog)
        self.settings.update(
            {
                "lumen_service": self.service,
                "lumen_executor": self.executor,
                "lumen_accountant": self.accountant,
                "lumen_identity": self.identity,
                "lumen_kernel_credentials": self.kernel_credentials,
                "lumen_max_body_bytes": self.max_body_bytes,
                "lumen_events": EventHub(self._read_pool),
                "lumen_app": self,
            }
        )
        self._publish_kernel_environment()
        self.gateway = self._make_gateway()
        self.log.info(
            "lumen: %d model(s), store %s, user %s%s",
            len(catalog.models),
            self.store.dialect,
            self.username,
            " (demo backend on loopback)" if self.demo else "",
        )

    async def _read_pool(self, identity: Identity) -> Pool:
        """The pool tiles of ``identity``, read off the event loop (for the event stream)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, self.service.pool_state, identity)

    def _make_gateway(self) -> Any:
        from ..gateway.http_client import TLSSettings
        from ..gateway.proxy import Gateway
        from ..gateway.traffic import recent_calls

        gateway = Gateway(self)
        gateway.upstreams.configure_transport(
            TLSSettings(
                validate_cert=self.validate_cert,
                ca_certs=self.ca_certs or None,
                client_cert=self.client_cert or None,
                client_key=self.client_key or None,
            ),
            max_answer_bytes=self.max_upstream_answer_bytes,
            keepalive_seconds=self.upstream_keepalive,
        )
        seeded = gateway.upstreams.seed_traffic(recent_calls(self.store, self.service.clock.now()))
        if seeded:
            self.log.info("lumen: %d model call(s) of the last day counted from the log", seeded)
        self.settings["lumen_gateway"] = gateway
        return gateway

    def _guard_secrets(self, catalog: Catalog) -> None:
        """Mask the upstream keys in errors and logs."""
        redact.add(
            endpoint.api_key.reveal()
            for model in catalog.models.values()
            for endpoint in model.endpoints
            if endpoint.api_key
        )
        loggers = [
            self.log,
            logging.getLogger("lumen_jupyter"),
            logging.getLogger("tornado.access"),
            logging.getLogger("tornado.application"),
            logging.getLogger("tornado.general"),
        ]
        if self.serverapp is not None:
            loggers.append(self.serverapp.log)
        loggers += [
            logging.getLogger(name)
            for name in list(logging.root.manager.loggerDict)
            if name.startswith("lumen_jupyter.")
        ]
        install_log_filter(loggers)

    def _apply_connection_timeouts(self) -> None:
        """Close connections that send nothing, or send a body too slowly.

        jupyter_server builds its HTTP server without tornado's timeouts (an idle
        connection is kept an hour, a slow body forever); the server reads them
        from its connection parameters for every new connection, so they are set
        there once it exists.
        """
        server = getattr(self.serverapp, "http_server", None)
        params = getattr(server, "conn_params", None)
        if params is None:
            return
        if self.idle_connection_timeout > 0:
            params.header_timeout = self.idle_connection_timeout
        if self.body_timeout > 0:
            params.body_timeout = self.body_timeout

    def _publish_kernel_environment(self) -> None:
        """Tell kernels started by this server where the gateway is.

        The credential is not here: each kernel gets its own in the environment
        it is started with (see :mod:`.credentials`), so the server's environment,
        which terminals inherit, holds none.
        """
        server = self.serverapp
        assert server is not None
        host = (
            server.ip if server.ip not in ("", "0.0.0.0", "::", "*", "localhost") else "127.0.0.1"
        )
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        scheme = "https" if server.certfile else "http"
        url = f"{scheme}://{host}:{server.port}{server.base_url}"
        os.environ[KERNEL_URL_ENV] = url
        # Lets kernels report notebook paths relative to the server's root, as Jupyter shows them.
        os.environ[KERNEL_ROOT_ENV] = str(server.root_dir)

    async def _start_jupyter_server_extension(self, serverapp: Any) -> None:
        await super()._start_jupyter_server_extension(serverapp)  # type: ignore[no-untyped-call]
        self._publish_kernel_environment()  # the port is final once the server listens
        self._apply_connection_timeouts()
        self._route_first()
        if self.gateway is not None:
            self.gateway.start_background_tasks()
        keeper = getattr(self, "instance_keeper", None)  # absent when the start-up failed
        if keeper is not None:
            keeper.run_in_background(self.accountant, self.executor)
        # Move everything alive after start-up out of the collector's reach: a full
        # collection of the running server then takes ~1.5 ms instead of ~190 ms.
        gc.collect()
        gc.freeze()

    def _route_first(self) -> None:
        """Let tornado try lumen's routes before those of the other extensions.

        tornado tries the extensions' rules in the order they were added, each a
        regular expression: a model call went through the rules of every extension
        loaded before this one (~4 % of its CPU).  Every lumen pattern starts with
        ``<base_url>lumen/``, so trying them first takes no route from anyone.
        """
        server = self.serverapp
        assert server is not None
        rules = server.web_app.default_router.rules
        ours = [rule for rule in rules if _serves_lumen(rule)]
        if ours:
            rules[:] = ours + [rule for rule in rules if rule not in ours]

    def initialize_handlers(self) -> None:
        # jupyter_server prefixes every pattern with base_url.
        if self.config_error is not None:
            self.handlers.extend(unavailable_routes("lumen"))
            return
        self.handlers.extend(api_routes("lumen/api"))
        if self.gateway is not None:
            self.handlers.extend(self.gateway.routes("lumen/v1"))

    async def stop_extension(self) -> None:
        """Release what was started, in order; never raises, so the server always stops
        (also after a start-up that failed half way)."""
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
        events = self.settings.get("lumen_events")
        if events is not None:
            events.close()


_STOPS: tuple[tuple[str, Callable[[Any], Any]], ...] = (
    ("gateway", lambda gateway: gateway.close()),
    ("instance_keeper", lambda keeper: keeper.stop()),
    ("demo", lambda demo: demo.stop()),
    ("accountant", lambda accountant: accountant.close()),
    ("executor", lambda executor: executor.shutdown(wait=False)),
    ("store", lambda store: store.dispose()),
)


def _refuse_a_lumen_database(store: Store) -> None:
    """A database of Lumen itself is not ours to migrate: its tables would clash with ours."""
    names = set(sqlalchemy.inspect(store.engine).get_table_names())
    if {"model_configs", "entities"} & names:
        store.dispose()
        raise ConfigError(
            "app.database.url names a database that holds Lumen's own tables; give "
            "lumen-jupyter a database of its own (c.LumenJupyter.database_url)"
        )


def _serves_lumen(rule: Any) -> bool:
    """Whether a host rule of the tornado application holds lumen's handlers."""
    inner = getattr(rule.target, "rules", None) or []
    return any(
        getattr(getattr(each, "target", None), "__module__", "").startswith("lumen_jupyter.")
        for each in inner
    )
