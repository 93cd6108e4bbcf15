"""lumen's configuration surface, the same for both hosts.

:class:`Lumen` holds every setting of the store, the YAML file, billing, the
upstreams and the limits.  The Jupyter server extension (``LumenJupyter``) and the
standalone service (``LumenServe``) both derive from it, so a setting has one
name, one help text and one default wherever lumen runs: ``c.Lumen.*`` in any
config file applies to both, and each host also reads its own section.
"""

from __future__ import annotations

import os
from pathlib import Path

from jupyter_core.paths import jupyter_data_dir
from traitlets import Bool, Enum, Float, Int, Unicode, default
from traitlets.config import Configurable

from .base import DEFAULT_MAX_BODY_BYTES


class Lumen(Configurable):
    """Settings shared by every host of lumen."""

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

    @default("database_url")
    def _default_database_url(self) -> str:
        return os.environ.get("LUMEN_DATABASE_URL", "")

    @default("config_file")
    def _default_config_file(self) -> str:
        return os.environ.get("LUMEN_CONFIG", "")

    def lumen_dir(self) -> Path:
        """Where the SQLite store and the key secret live: ``<jupyter data dir>/lumen``."""
        return Path(jupyter_data_dir()) / "lumen"
