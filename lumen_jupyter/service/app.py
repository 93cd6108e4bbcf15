"""``jupyter lumen serve``: lumen as a service of its own, without a Jupyter server.

The same ``lumen/api/*`` and ``lumen/v1/*`` as the server extension, under a
configurable prefix (JupyterHub gives ``/services/lumen/``), built from the same
settings (``c.Lumen.*`` in ``jupyter_lumen_config.py``, the command line, the
environment) and the same YAML.  It serves many users: each caller is who its
credential says (see :mod:`lumen_jupyter.server.service_auth`).  With
``--workers N`` a parent process forks N workers on one port; they share the
pools through PostgreSQL.

Run by JupyterHub as a managed service (``JUPYTERHUB_API_TOKEN`` and
``JUPYTERHUB_API_URL`` in its environment), it takes every caller's identity from
the hub (:mod:`lumen_jupyter.server.hub_auth`) and serves the admin page at
``<prefix>admin/`` with the hub's login; ``--hub-auth on|off`` forces either way.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from jupyter_core.application import JupyterApp
from sqlalchemy.engine import make_url
from tornado import web
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets
from traitlets import Enum, Float, Int, Unicode, default, validate
from traitlets.config import Application
from traitlets.config.loader import ConfigFileNotFound

from .._version import __version__
from ..core.redact import redact_uri
from ..server.admin import admin_routes
from ..server.admin_page import admin_page_routes
from ..server.hub_auth import HubSessions, HubSettings, hub_environment
from ..server.ops import ops_routes
from ..server.routes import Routes, lumen_routes
from ..server.runtime import LumenRuntime, database_url, start_runtime
from ..server.service_auth import (
    ServiceAuthenticator,
    SessionAuthenticator,
    load_or_create_admin_token,
)
from ..server.settings import Lumen
from .access_log import AccessLog, open_access_log

log = logging.getLogger("lumen_jupyter.service")


class LumenServe(Lumen, JupyterApp):
    """The standalone lumen service."""

    name = "jupyter-lumen-serve"
    version = __version__
    description = (
        "Serve lumen's model API (lumen/v1) and REST API (lumen/api) without a Jupyter "
        "server, for many users, optionally in several worker processes."
    )
    aliases = {  # noqa: RUF012 (traitlets reads them from the class)
        "ip": "LumenServe.ip",
        "port": "LumenServe.port",
        "prefix": "LumenServe.prefix",
        "workers": "LumenServe.workers",
        "admin-token-file": "LumenServe.admin_token_file",
        "hub-auth": "LumenServe.hub_auth",
        "hub-cache-seconds": "LumenServe.hub_cache_seconds",
        "database-url": "Lumen.database_url",
        "lumen-config": "Lumen.config_file",
        "secret-file": "Lumen.secret_file",
        "billing-mode": "Lumen.billing_mode",
        "demo-backend": "Lumen.demo_backend",
        "config": "LumenServe.python_config_file",
        "log-level": "Application.log_level",
        "access-log": "LumenServe.access_log",
        "trust-xheaders": "LumenServe.trust_xheaders",
    }
    flags: dict[str, Any] = {}  # noqa: RUF012

    ip = Unicode("127.0.0.1", config=True, help="Address to listen on.")
    port = Int(8090, config=True, help="Port to listen on (0: any free port, printed).")
    prefix = Unicode(
        "/",
        config=True,
        help="URL prefix of every route (JupyterHub gives /services/lumen/). Also read "
        "from JUPYTERHUB_SERVICE_PREFIX.",
    )
    workers = Int(
        1,
        config=True,
        help="Worker processes serving the port; more than 1 needs PostgreSQL.",
    )
    admin_token_file = Unicode(
        "",
        config=True,
        help="File holding the admin token of api/admin (created 0600 on first use). "
        "Default: admin_token in the lumen data dir.",
    )
    access_log = Unicode(
        "-",
        config=True,
        help="Where the access log goes: - (standard error), a file to append to, or an "
        "empty string for none. Lines are written in batches, at most a second late.",
    )
    trust_xheaders = Enum(
        ["auto", "on", "off"],
        "auto",
        config=True,
        help="Take the client's address and scheme from X-Real-Ip / X-Forwarded-For / "
        "X-Forwarded-Proto (set by a proxy in front: the hub's). auto: in hub mode only. "
        "Without a proxy a caller could write them: the links in its answers and the "
        "address in error logs would believe them.",
    )
    shutdown_grace = Float(
        10.0, config=True, help="Seconds running calls may take to finish after SIGTERM."
    )

    hub_auth = Enum(
        ["auto", "on", "off"],
        "auto",
        config=True,
        help="Identify callers through JupyterHub (their hub tokens and the admin page's "
        "login). auto: when run as a hub service (JUPYTERHUB_API_TOKEN and "
        "JUPYTERHUB_API_URL are set).",
    )
    hub_cache_seconds = Float(
        60.0,
        config=True,
        help="Seconds the hub's answers (a token's owner, groups and scopes) are kept: "
        "how long a group change or a revoked token may take to reach lumen.",
    )

    access: AccessLog | None = None
    """This worker's access log (made in :meth:`start_server`)."""
    session_authenticator: SessionAuthenticator | None = None
    """Who a caller without a lumen credential is; set, it replaces the hub's."""
    hub: HubSessions | None = None
    """The hub's sessions and directory of this worker, in hub mode."""

    def trusts_xheaders(self) -> bool:
        """Whether a proxy in front says who the client is (see ``trust_xheaders``)."""
        return self.trust_xheaders == "on" or (self.trust_xheaders == "auto" and self.hub_mode())

    def hub_mode(self) -> bool:
        """Whether callers are identified by the hub."""
        if self.session_authenticator is not None or self.hub_auth == "off":
            return False
        return self.hub_auth == "on" or hub_environment(os.environ)

    python_config_file = Unicode(
        "",
        config=True,
        help="A Python config file to read instead of jupyter_lumen_config.py on the "
        "Jupyter config path (--config). config_file is lumen's YAML, as on the extension.",
    )

    def load_config_file(self, suppress_errors: bool = True) -> None:  # type: ignore[override]
        """``jupyter_config`` and ``jupyter_lumen_config`` from the config path, or
        ``--config FILE``.  JupyterApp would take ``config_file`` - here the YAML - for
        the Python config file."""
        paths = self.config_file_paths
        wanted = [("jupyter_config", paths)]
        if self.python_config_file:
            folder, name = os.path.split(os.path.abspath(self.python_config_file))
            if not os.path.isfile(self.python_config_file):
                raise SystemExit(f"lumen: no config file {self.python_config_file}")
            wanted.append((name, [folder]))
        else:
            wanted.append((self.config_file_name, paths))
        for name, where in wanted:
            try:
                Application.load_config_file(self, name, path=where)
            except ConfigFileNotFound:
                self.log.debug("Config file not found, skipping: %s", name)
            except Exception:
                if not suppress_errors or self.raise_config_file_errors:
                    raise
                self.log.warning("Error loading config file: %s", name, exc_info=True)

    @default("config_file_name")
    def _default_config_file_name(self) -> str:
        return "jupyter_lumen_config"

    @default("prefix")
    def _default_prefix(self) -> str:
        return os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/")

    @validate("prefix")
    def _valid_prefix(self, proposal: Any) -> str:
        value = str(proposal["value"]).strip() or "/"
        return "/" + value.strip("/") + "/" if value.strip("/") else "/"

    @validate("workers")
    def _valid_workers(self, proposal: Any) -> int:
        if int(proposal["value"]) < 1:
            raise ValueError("workers must be at least 1")
        return int(proposal["value"])

    def admin_token_path(self) -> Path:
        if self.admin_token_file:
            return Path(self.admin_token_file).expanduser()
        return self.lumen_dir() / "admin_token"

    # -- start ----------------------------------------------------------------------------

    def start(self) -> None:
        level = int(self.log_level)  # type: ignore[call-overload]
        logging.basicConfig(level=level, format="[%(levelname)s %(name)s] %(message)s")
        url = database_url(self)
        if self.workers > 1 and make_url(url).get_backend_name() == "sqlite":
            self.log.critical(
                "lumen: --workers %d needs PostgreSQL (--database-url postgresql://…): "
                "SQLite serves one process",
                self.workers,
            )
            self.exit(2)
        load_or_create_admin_token(self.admin_token_path())  # before forking: one file
        if self.hub_mode() and not hub_environment(os.environ):
            self.log.critical(
                "lumen: --hub-auth on needs JUPYTERHUB_API_URL and JUPYTERHUB_API_TOKEN "
                "(the hub sets them for a service it manages)"
            )
            self.exit(2)
        listening = listening_sockets(self.ip, self.port, self.workers)
        port = listening[0][0].getsockname()[1]
        self.log.info(
            "lumen: serving http://%s:%d%s (store %s, %d worker%s)",
            self.ip,
            port,
            self.prefix,
            redact_uri(url.split("://", 1)[0] + "://…"),
            self.workers,
            "" if self.workers == 1 else "s",
        )
        if self.hub_mode():
            self.log.info(
                "lumen: callers are identified by the hub at %s (answers kept %gs); "
                "admin page at %sadmin/",
                os.environ["JUPYTERHUB_API_URL"],
                self.hub_cache_seconds,
                self.prefix,
            )
        print(f"lumen: listening on port {port}", flush=True)
        forked = self.workers > 1
        sys.exit(self._serve_forked(listening) if forked else self.serve(listening[0], 0))

    def _serve_forked(self, listening: list[list[Any]]) -> int:
        from .workers import serve_forked

        metrics_dir = tempfile.mkdtemp(prefix="lumen-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
        try:
            return serve_forked(
                list({id(sock): sock for own in listening for sock in own}.values()),
                self.workers,
                lambda index: self._worker(listening, index),
                log=self.log,
                on_worker_exit=_forget_worker,
            )
        finally:
            _remove_tree(metrics_dir)

    def _worker(self, listening: list[list[Any]], index: int) -> None:
        own = listening[index]
        for other in listening:
            if other is not own:  # the supervisor keeps them for the workers it restarts
                for sock in other:
                    sock.close()
        code = self.serve(own, index)
        if code:
            raise SystemExit(code)

    def serve(self, sockets: list[Any], index: int) -> int:
        """One worker: run the service on ``sockets`` until SIGTERM or SIGINT."""
        return int(asyncio.run(self._serve(sockets, index)))

    async def _serve(self, sockets: list[Any], index: int) -> int:
        runtime, server = self.start_server(sockets)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        self.log.info("lumen: worker %d (pid %d) ready", index, os.getpid())
        await stop.wait()
        server.stop()  # no new connections; running calls may finish
        await self._drain(runtime)
        await asyncio.wait_for(server.close_all_connections(), self.shutdown_grace)
        await runtime.close()
        if self.hub is not None:
            await self.hub.close()
        if self.access is not None:
            self.access.close()
        return 0

    def start_server(self, sockets: list[Any]) -> tuple[LumenRuntime, HTTPServer]:
        """The runtime and an HTTP server on ``sockets``, serving on the running loop."""
        runtime = start_runtime(self, datetime.now(timezone.utc), loggers=(self.log,))
        self.access = open_access_log(self.access_log)
        application = web.Application(self.routes(), **self.tornado_settings(runtime))
        server = HTTPServer(
            application,
            idle_connection_timeout=self.idle_connection_timeout or None,
            body_timeout=self.body_timeout or None,
            max_body_size=max(self.max_request_bytes, self.max_body_bytes) * 2,
            xheaders=self.trusts_xheaders(),
        )
        server.add_sockets(sockets)
        runtime.start_background()
        return runtime, server

    async def _drain(self, runtime: LumenRuntime) -> None:
        deadline = time.monotonic() + self.shutdown_grace
        gateway = runtime.gateway
        while gateway is not None and gateway.in_flight and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    def routes(self) -> Routes:
        prefix = self.prefix
        # The same routes as a user's server (<prefix>lumen/v1), and the short form a
        # service's users expect (https://hub/services/lumen/v1).
        return [
            *lumen_routes(f"{prefix}lumen"),
            *admin_routes(f"{prefix}lumen/api/admin"),
            *lumen_routes(prefix.rstrip("/")),
            *admin_routes(f"{prefix}api/admin"),
            *ops_routes(prefix),
            *(admin_page_routes(prefix) if self.hub_mode() else []),
        ]

    def tornado_settings(self, runtime: LumenRuntime) -> dict[str, Any]:
        sessions = self.session_authenticator
        hub_settings: dict[str, Any] = {}
        if self.hub_mode():
            settings = HubSettings.from_environ(self.prefix, self.hub_cache_seconds)
            self.hub = sessions = HubSessions(
                settings, runtime.service.secret, service=runtime.service
            )
            hub_settings = self.hub.tornado_settings()
        return {
            "lumen_service": runtime.service,
            "lumen_executor": runtime.executor,
            "lumen_accountant": runtime.accountant,
            "lumen_events": runtime.events,
            "lumen_gateway": runtime.gateway,
            "lumen_authenticator": ServiceAuthenticator(
                load_or_create_admin_token(self.admin_token_path()), sessions, self.hub
            ),
            "lumen_max_body_bytes": self.max_body_bytes,
            "lumen_base_url": self.prefix,
            "log_function": self.access or _no_access_log,
            **hub_settings,
        }


def listening_sockets(ip: str, port: int, workers: int) -> list[list[socket.socket]]:
    """The listening sockets of each worker, all on one port.

    On Linux several workers get a socket each (``SO_REUSEPORT``), and the kernel spreads
    new connections over them by a hash of their addresses.  On one shared socket, the
    first worker to wake takes every connection waiting (tornado accepts in a loop), so a
    client that opens its connection pool at once lands on one worker.  A worker's socket
    outlives the worker (the supervisor holds it): connections that wait in it while the
    worker is restarted are served by its successor, not reset.  Elsewhere ``SO_REUSEPORT``
    does not spread connections, and the workers share one socket.
    """
    if workers == 1 or not sys.platform.startswith("linux"):
        return [bind_sockets(port, ip)] * workers
    first = bind_sockets(port, ip, reuse_port=True)
    port = first[0].getsockname()[1]
    return [first, *(bind_sockets(port, ip, reuse_port=True) for _ in range(workers - 1))]


def _no_access_log(handler: web.RequestHandler) -> None:
    """``c.LumenServe.access_log = ""``: no line per request."""


def _forget_worker(pid: int) -> None:
    from ..gateway.metrics import forget_worker

    forget_worker(pid)


def _remove_tree(path: str) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    """``jupyter lumen serve`` / ``python -m lumen_jupyter.service``."""
    LumenServe.launch_instance(argv)
    return 0
