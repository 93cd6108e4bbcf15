"""The Jupyter server extension: configuration, start-up, and the route table.

``LumenJupyter`` reads its settings (``c.Lumen.*`` or ``c.LumenJupyter.*``, see
:mod:`.settings`) and the optional Lumen-style YAML file, starts lumen's runtime
(:mod:`.runtime`: the store, the service, the demo backend when no models are
configured), gives kernels their credential, and mounts the REST API and the
OpenAI-compatible model API for the server's one user.

On a JupyterHub user's server whose environment names the hub's lumen service
(see :mod:`.hub_mode`), it starts none of that: the same URLs are forwarded to
the service (:mod:`.forwarder`).
"""

from __future__ import annotations

import gc
import getpass
import logging
import os
from datetime import datetime, timezone
from typing import Any

from jupyter_server.extension.application import ExtensionApp
from traitlets import List, Unicode, default

from .._version import __version__
from ..core.accounts import Identity
from ..core.errors import ConfigError
from ..core.redact import install_log_filter, redact
from .credentials import KERNEL_TOKEN_ENV, KernelCredentials
from .forwarder import ServiceLink, forward_routes
from .hub_mode import HUB_TOKEN_ENV, HubCallers, HubLink, hub_service_url
from .jupyter_host import JupyterAuthenticator, jupyter_routes
from .rest import unavailable_routes
from .routes import lumen_routes
from .runtime import LumenRuntime, start_runtime
from .settings import Lumen

KERNEL_URL_ENV = "LUMEN_JUPYTER_URL"
KERNEL_ROOT_ENV = "LUMEN_JUPYTER_ROOT"


class LumenJupyter(Lumen, ExtensionApp):
    """lumen-jupyter: an AI gateway with coin budgets inside the Jupyter server."""

    name = "lumen_jupyter"
    version = __version__
    load_other_extensions = True

    username = Unicode(
        "", config=True, help="Account name; default: JUPYTERHUB_USER, else the login name."
    )
    display_name = Unicode("", config=True, help="Name shown on the profile card.")
    email = Unicode("", config=True, help="Email for the profile card and Gravatar.")
    groups = List(Unicode(), config=True, help="Groups this user belongs to (besides YAML).")

    @default("username")
    def _default_username(self) -> str:
        return os.environ.get("JUPYTERHUB_USER") or getpass.getuser()

    #: Why lumen could not start (shown by every lumen route as a 503), or ``None``.
    config_error: str | None = None
    gateway: Any = None
    demo: Any = None
    runtime: LumenRuntime
    #: In hub mode, the link to the hub's lumen service (else ``None``).
    service_link: ServiceLink | None = None

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
        # On JupyterHub the server's hub token names its owner: never shown in a log or error.
        redact.add([os.environ.get(HUB_TOKEN_ENV, "")])
        manager = getattr(self.serverapp, "kernel_manager", None)
        if manager is not None:
            self.kernel_credentials.attach(manager)
        service_url = hub_service_url(self)
        if service_url is not None:
            try:
                self._initialize_hub_mode(service_url)
            except ConfigError as exc:
                self._fail(f"lumen configuration error: {exc.message}")
            return
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
                "lumen_authenticator": JupyterAuthenticator(None, self.kernel_credentials),
                "lumen_app": self,
            }
        )
        self._publish_kernel_environment()

    def _initialize_hub_mode(self, service_url: str) -> None:
        """Forward lumen's URLs to the hub's service: no store, no YAML, no secret here."""
        hub = HubLink.from_environment(service_url)
        loggers = (self.log, *((self.serverapp.log,) if self.serverapp is not None else ()))
        install_log_filter(
            [*loggers, logging.getLogger("lumen_jupyter"), logging.getLogger("tornado.access")]
        )
        if self.username != hub.owner:
            self.log.warning(
                "lumen: LumenJupyter.username (%s) is ignored on a JupyterHub server: the hub "
                "says who the user is (%s)",
                self.username,
                hub.owner,
            )
        if self.config_file:
            self.log.warning(
                "lumen: the YAML file %s is not read on a JupyterHub server: the lumen "
                "service's configuration applies",
                self.config_file,
            )
        self.service_link = ServiceLink(hub, connect_timeout=self.upstream_connect_timeout)
        self.settings.update(
            {
                "lumen_service_link": self.service_link,
                "lumen_kernel_credentials": self.kernel_credentials,
                "lumen_authenticator": HubCallers(hub, self.kernel_credentials),
                "lumen_app": self,
            }
        )
        self._publish_kernel_environment()
        self.log.info(
            "lumen: on JupyterHub: lumen/api and lumen/v1 forwarded to the lumen service at %s "
            "for %s",
            hub.service_url,
            hub.owner,
        )

    def _initialize_lumen(self) -> None:
        runtime = self.runtime = start_runtime(
            self,
            self.started_at,
            adapt_catalog=lambda catalog: catalog.for_user(self.username, self.email or None),
            loggers=(self.log, *((self.serverapp.log,) if self.serverapp is not None else ())),
            logger=self.log,
        )
        self.store, self.service, self.demo = runtime.store, runtime.service, runtime.demo
        self.gateway = runtime.gateway
        user_spec = runtime.service.catalog.user(self.username)
        self.identity = Identity(
            username=self.username,
            display_name=self.display_name or user_spec.display_name or self.username,
            email=self.email or user_spec.email or None,
            groups=frozenset(self.groups),
        )
        self.settings.update(
            {
                "lumen_service": runtime.service,
                "lumen_executor": runtime.executor,
                "lumen_accountant": runtime.accountant,
                "lumen_identity": self.identity,
                "lumen_kernel_credentials": self.kernel_credentials,
                "lumen_authenticator": JupyterAuthenticator(self.identity, self.kernel_credentials),
                "lumen_max_body_bytes": self.max_body_bytes,
                "lumen_events": runtime.events,
                "lumen_gateway": runtime.gateway,
                "lumen_app": self,
            }
        )
        self._publish_kernel_environment()
        self.log.info(
            "lumen: %d model(s), store %s, user %s%s",
            len(runtime.service.catalog.models),
            runtime.store.dialect,
            self.username,
            " (demo backend on loopback)" if runtime.demo else "",
        )

    def _make_gateway(self) -> Any:
        """A new gateway over the running service (what a restarted server builds)."""
        gateway = self.runtime.make_gateway()
        self.runtime.gateway = gateway
        self.settings["lumen_gateway"] = gateway
        return gateway

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
        runtime = getattr(self, "runtime", None)  # absent when the start-up failed
        if runtime is not None:
            runtime.start_background()
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
            self.handlers.extend(jupyter_routes(unavailable_routes("lumen")))
            return
        if self.service_link is not None:
            self.handlers.extend(jupyter_routes(forward_routes("lumen")))
            return
        routes = lumen_routes("lumen", model_api=self.gateway is not None)
        self.handlers.extend(jupyter_routes(routes))

    async def stop_extension(self) -> None:
        """Release what was started, in order; never raises, so the server always stops
        (also after a start-up that failed half way)."""
        if self.service_link is not None:
            try:
                await self.service_link.close()
            except Exception:
                self.log.exception("lumen: closing the link to the lumen service failed")
        runtime = getattr(self, "runtime", None)
        if runtime is not None:
            runtime.gateway = self.gateway  # the one serving now
            await runtime.close()


def _serves_lumen(rule: Any) -> bool:
    """Whether a host rule of the tornado application holds lumen's handlers."""
    inner = getattr(rule.target, "rules", None) or []
    return any(
        getattr(getattr(each, "target", None), "__module__", "").startswith("lumen_jupyter.")
        for each in inner
    )
