"""A real JupyterHub with lumen as its service, for the end-to-end tests.

:func:`running_hub` writes a ``jupyterhub_config.py`` like the one in
``examples/jupyterhub/`` (free ports, the npm configurable-http-proxy, the
DummyAuthenticator, SimpleLocalProcessSpawner, the lumen service with two workers on
PostgreSQL) and starts ``jupyterhub`` as a subprocess in a session of its own, so
its signals are its own (a hub started from a shell script ignores SIGINT).  The
hub is driven through its REST API with the token of a ``tester`` service.

Stopping is the hub's own: SIGTERM, after which the hub stops the users' servers,
the proxy and the lumen service; :meth:`Hub.stop` then reports what is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import yaml
from psycopg import sql

from tests import pg
from tests.service.service_proc import demo_upstream

REPO = Path(__file__).resolve().parents[2]
CHP_DIR = REPO / ".cache" / "node"
CHP = CHP_DIR / "node_modules" / ".bin" / "configurable-http-proxy"
SERVICE = "lumen"
TESTER_SERVICE = "tester"
USERS = ("alice", "bob", "carol", "dave")
HUB_ADMIN = "carol"
DELEGATE = "bob"  # may grant to members of CLASS only
CLASS = "class-a"
STAFF = "staff"  # a hub group whose name selects a YAML pool
DEFAULT_MAX = 20
STAFF_MAX = 500
CACHE_SECONDS = 2.0  # how long the service trusts what the hub said about a token
SERVER_TOKEN_SCOPES = [
    "users:activity!user",
    "access:servers!server",
    f"access:services!service={SERVICE}",
]


def ensure_chp() -> Path:
    """The npm configurable-http-proxy in ``.cache/node`` (installed once, git-ignored).

    The Python port of the proxy buffers whole responses, so streaming cannot be
    tested through it."""
    if CHP.exists():
        return CHP
    if shutil.which("npm") is None:
        raise RuntimeError("npm is needed to install configurable-http-proxy")
    CHP_DIR.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["npm", "install", "--no-audit", "--no-fund", "--silent", "configurable-http-proxy"],
        cwd=CHP_DIR,
        check=True,
        timeout=300,
        capture_output=True,
    )
    return CHP


def free_ports(count: int) -> list[int]:
    """``count`` distinct free loopback ports (held open together while chosen)."""
    socks = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            socks.append(sock)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for sock in socks:
            sock.close()


def port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def write_private(path: Path, text: str) -> Path:
    """A file only its owner may read (0600), as the service's secrets must be."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(text)
    return path


# -- the database the service owns -------------------------------------------------------


@dataclass
class ServiceDatabase:
    url: str  # the service's SQLAlchemy URL, password included
    name: str
    role: str
    password: str
    host: str
    port: int
    password_required: bool  # whether the server refuses a connection without it


@contextlib.contextmanager
def service_database(server: pg.PostgresServer) -> Iterator[ServiceDatabase]:
    """A database owned by a role with a password; on a server the tests started, the
    server also requires that password for this database (the rest stays ``trust``)."""
    name = f"hub_{secrets.token_hex(5)}"
    role = f"lumen_{secrets.token_hex(4)}"
    password = secrets.token_urlsafe(18)
    info = psycopg.conninfo.conninfo_to_dict(server.admin_url)
    host, port = str(info.get("host") or "127.0.0.1"), int(info.get("port") or 5432)
    with server.connect_admin() as conn:
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(role), sql.Literal(password)
            )
        )
        owned = sql.SQL("CREATE DATABASE {} OWNER {}")
        conn.execute(owned.format(sql.Identifier(name), sql.Identifier(role)))
    required = False
    if server.owned_dir is not None:
        _require_password(server, name)
        required = True
    url = pg.to_sqlalchemy(
        psycopg.conninfo.make_conninfo(
            host=host, port=port, dbname=name, user=role, password=password
        )
    )
    try:
        yield ServiceDatabase(url, name, role, password, host, port, required)
    finally:
        with contextlib.suppress(Exception), server.connect_admin() as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def _require_password(server: pg.PostgresServer, database: str) -> None:
    assert server.owned_dir is not None
    hba = server.owned_dir / "data" / "pg_hba.conf"
    rules = "".join(
        f"{kind} {database} all {where} scram-sha-256\n"
        for kind, where in (("local", ""), ("host", "127.0.0.1/32"), ("host", "::1/128"))
    )
    hba.write_text(rules + hba.read_text())
    with server.connect_admin() as conn:
        conn.execute("SELECT pg_reload_conf()")


# -- the hub ------------------------------------------------------------------------------


@dataclass
class Hub:
    root: Path
    url: str  # the proxy's public URL, no trailing slash
    ports: dict[str, int]
    proc: subprocess.Popen[bytes]
    tester_token: str
    database: ServiceDatabase
    secrets_dir: Path
    upstream: str
    slow_upstream: str
    log_path: Path
    stopped: dict[str, Any] | None = None
    _tokens: dict[tuple[str, str], str] = field(default_factory=dict)

    # -- paths and URLs --

    @property
    def service_url(self) -> str:
        """The service through the proxy (as a browser or a script outside sees it)."""
        return f"{self.url}/services/{SERVICE}/"

    @property
    def service_direct(self) -> str:
        """The service's own port (as users' servers reach it)."""
        return f"http://127.0.0.1:{self.ports['service']}/services/{SERVICE}/"

    @property
    def lumen_url(self) -> str:
        """Where the service's ``api/`` and ``v1/`` start, through the proxy (the short
        form, ``https://hub/services/lumen/v1``, that scripts are told to use)."""
        return self.service_url

    @property
    def lumen_direct(self) -> str:
        """The same routes on the service's own port, as users' servers call them."""
        return f"{self.service_direct}lumen/"

    def user_url(self, user: str, path: str = "") -> str:
        return f"{self.url}/user/{user}/{path}"

    def home(self, user: str) -> Path:
        return self.root / "home" / user

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def secrets(self) -> dict[str, str]:
        """Every secret the service holds, by name (for scanning users' processes)."""
        found = {
            "database password": self.database.password,
            "provider key": PROVIDER_KEY_PREFIX + self.root.name,
            "admin token": (self.secrets_dir / "admin_token").read_text().strip(),
            "key secret": (self.secrets_dir / "secret").read_text().strip(),
            "tester token": self.tester_token,
        }
        return {name: value for name, value in found.items() if value}

    # -- the hub's REST API --

    def api(self, method: str, path: str, body: Any = None, token: str | None = None) -> Any:
        answer = httpx.request(
            method,
            f"{self.url}/hub/api/{path}",
            json=body,
            headers={"Authorization": f"token {token or self.tester_token}"},
            timeout=60,
        )
        if answer.status_code >= 400:
            raise AssertionError(f"{method} /hub/api/{path}: {answer.status_code} {answer.text}")
        return answer.json() if answer.content else None

    def user(self, name: str) -> dict[str, Any]:
        return dict(self.api("GET", f"users/{name}"))

    def token(self, user: str, scopes: list[str] | None = None, note: str = "") -> str:
        """A new API token of ``user``'s (all their permissions unless ``scopes``)."""
        body: dict[str, Any] = {"note": note or f"test {uuid.uuid4().hex[:6]}", "expires_in": 7200}
        if scopes is not None:
            body["scopes"] = scopes
        return str(self.api("POST", f"users/{user}/tokens", body)["token"])

    def api_token(self, user: str) -> str:
        """One API token per user for the whole run (all of the user's permissions)."""
        if (user, "api") not in self._tokens:
            self._tokens[(user, "api")] = self.token(user, note="api")
        return self._tokens[(user, "api")]

    def add_to_group(self, group: str, user: str) -> None:
        self.api("POST", f"groups/{group}/users", {"users": [user]})

    def remove_from_group(self, group: str, user: str) -> None:
        self.api("DELETE", f"groups/{group}/users", {"users": [user]})

    def set_group_properties(self, group: str, properties: dict[str, Any]) -> None:
        """What a hub administrator keeps on a group (``PUT groups/NAME/properties``)."""
        self.api("PUT", f"groups/{group}/properties", properties)

    def start_server(self, user: str, timeout: float = 90.0) -> dict[str, Any]:
        """Start ``user``'s server (if not running) and wait until it is ready."""
        model = self.user(user)
        if not model["servers"].get("", {}).get("ready"):
            answer = httpx.post(
                f"{self.url}/hub/api/users/{user}/server",
                headers={"Authorization": f"token {self.tester_token}"},
                timeout=60,
            )
            assert answer.status_code in (201, 202, 400), answer.text
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            server = self.user(user)["servers"].get("", {})
            if server.get("ready"):
                return dict(server)
            time.sleep(0.25)
        raise AssertionError(f"{user}'s server did not start:\n{self.log()[-4000:]}")

    def stop_server(self, user: str, timeout: float = 60.0) -> None:
        httpx.delete(
            f"{self.url}/hub/api/users/{user}/server",
            headers={"Authorization": f"token {self.tester_token}"},
            timeout=60,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.user(user)["servers"]:
                return
            time.sleep(0.25)
        raise AssertionError(f"{user}'s server did not stop")

    def server_pid(self, user: str) -> int:
        state = self.user(user)["servers"][""].get("state") or {}
        return int(state["pid"])

    def server_environ(self, user: str) -> dict[str, str]:
        return proc_environ(self.server_pid(user))

    def server_token(self, user: str) -> str:
        """The hub token of ``user``'s server (and of its kernels)."""
        return self.server_environ(user)["JUPYTERHUB_API_TOKEN"]

    # -- browsers --

    def browser(self, user: str) -> httpx.Client:
        """An HTTP client logged in to the hub as ``user`` (cookies, like a browser)."""
        client = httpx.Client(base_url=self.url, follow_redirects=True, timeout=60)
        client.get("/hub/login")
        xsrf = client.cookies.get("_xsrf", "")
        answer = client.post(
            "/hub/login", data={"username": user, "password": "any", "_xsrf": xsrf}
        )
        assert answer.status_code == 200, answer.text[:500]
        return client

    # -- lumen --

    def admin_token(self) -> str:
        return (self.secrets_dir / "admin_token").read_text().strip()

    def lumen_admin(self, command: str, **fields: Any) -> Any:
        """A ``jupyter lumen`` command through the service's admin API, with its admin token."""
        method = "POST" if command in ("grant", "revoke", "new-key") or "max" in fields else "GET"
        url = f"{self.lumen_direct}api/admin/{command}"
        headers = {"Authorization": f"Bearer {self.admin_token()}"}
        if method == "GET":
            answer = httpx.get(url, params=fields, headers=headers, timeout=60)
        else:
            answer = httpx.post(url, json=fields, headers=headers, timeout=60)
        assert answer.status_code == 200, answer.text
        return answer.json()["result"]

    def balance(self, user: str) -> int | None:
        """``user``'s balance in micro-coins, as the service's own admin sees it (``None``
        before the user's first use of lumen)."""
        url = f"{self.lumen_direct}api/admin/pool"
        headers = {"Authorization": f"Bearer {self.admin_token()}"}
        answer = httpx.get(url, params={"user": user}, headers=headers, timeout=60)
        if answer.status_code == 400 and "no account named" in answer.text:
            return None
        assert answer.status_code == 200, answer.text
        return int(answer.json()["result"]["pool"]["balance"]["micro"])

    def lumen_processes(self) -> list[int]:
        """Every process of this hub's lumen service (the supervisor and its workers)."""
        marker = f"--port\0{self.ports['service']}\0".encode()
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                cmdline = (entry / "cmdline").read_bytes()
                status = (entry / "stat").read_text().split()[2]
            except OSError:
                continue
            if b"lumen_jupyter.service" in cmdline and marker in cmdline and status != "Z":
                found.append(int(entry.name))
        return found

    # -- lifecycle --

    def stop(self, timeout: float = 60.0) -> dict[str, Any]:
        """SIGTERM to the hub; returns how long it took and what was left behind."""
        if self.stopped is not None:
            return self.stopped
        lumen_before = self.lumen_processes()
        started = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code: int | None = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            code = None
        seconds = time.monotonic() - started
        deadline = time.monotonic() + 10  # children end after the hub: a moment more
        while self.processes() and time.monotonic() < deadline:
            time.sleep(0.1)
        left = self.lumen_processes()
        others = [pid for pid in self.processes() if pid not in left]
        busy = [name for name, port in self.ports.items() if not port_is_free(port)]
        self.stopped = {
            "exit": code,
            "seconds": seconds,
            "lumen_before": lumen_before,
            "lumen_left": left,
            "others_left": others,  # the proxy, users' servers, kernels
            "ports_busy": busy,
        }
        if code is None:
            self.proc.kill()
            self.proc.wait(10)
        for pid in [*left, *others]:  # never leave them running; the test still sees them
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return self.stopped

    def processes(self) -> list[int]:
        """Every live process this hub started: the proxy (its port on its command line)
        and whatever got the hub's API URL (users' servers, kernels, services)."""
        proxy = f"--port\0{self.ports['proxy']}\0".encode()
        hub_api = f"127.0.0.1:{self.ports['hub']}/".encode()
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == self.proc.pid:
                continue
            try:
                if (entry / "stat").read_text().split()[2] == "Z":
                    continue
                cmdline = (entry / "cmdline").read_bytes()
                environ = (entry / "environ").read_bytes()
            except OSError:
                continue
            if proxy in cmdline or b"JUPYTERHUB_API_URL=http://" + hub_api in environ:
                found.append(int(entry.name))
        return found


PROVIDER_KEY_PREFIX = "sk-provider-secret-"


def proc_environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    return {k.decode(errors="replace"): v.decode(errors="replace") for k, v in pairs}


def children(pid: int) -> list[int]:
    """Every descendant of ``pid``."""
    found: list[int] = []
    todo = [pid]
    while todo:
        current = todo.pop()
        path = Path(f"/proc/{current}/task/{current}/children")
        with contextlib.suppress(OSError):
            kids = [int(p) for p in path.read_text().split()]
            found += kids
            todo += kids
    return found


def lumen_yaml(upstream: str, slow_upstream: str, provider_key: str) -> dict[str, Any]:
    def model(name: str, url: str, price: float) -> dict[str, Any]:
        return {
            "name": name,
            "input_cost_per_million": price,
            "output_cost_per_million": price,
            "endpoints": [{"url": url, "model": "demo-pro", "api_key": provider_key}],
        }

    return {
        "models": [
            model("demo-pro", upstream, 50),
            model("demo-dear", slow_upstream, 100_000),  # 150 ms each: calls overlap
            model("demo-slow", slow_upstream, 50),  # 40 ms between chunks
        ],
        "defaults": {
            "models": "allowed",
            "tokens": {"max": DEFAULT_MAX, "starting": DEFAULT_MAX},
        },
        "groups": {STAFF: {"tokens": {"max": STAFF_MAX, "starting": STAFF_MAX}}},
    }


def hub_config(
    hub_dir: Path,
    ports: dict[str, int],
    secrets_dir: Path,
    tester_token: str,
    service_user: str | None = None,
) -> str:
    """The hub's config; with ``service_user``, the service runs as that Unix user and the
    users' servers as theirs (LocalProcessSpawner), else everything as the hub's user."""
    if service_user is None:
        spawner = [
            'c.JupyterHub.spawner_class = "simple"',
            "c.SimpleLocalProcessSpawner.home_dir_template = "
            + repr(str(hub_dir / "home" / "{username}")),
        ]
    else:  # each user's server as that Unix user
        spawner = ['c.JupyterHub.spawner_class = "localprocess"']
    service_cmd = [
        sys.executable,
        *("-m", "lumen_jupyter.service", "--workers", "2"),
        *("--ip", "127.0.0.1", "--port", str(ports["service"])),
    ]
    bin_dir = Path(sys.executable).parent
    return textwrap.dedent(
        f"""\
        # Written by tests/hub/hub.py: examples/jupyterhub/jupyterhub_config.py with test ports.
        c = get_config()  # noqa: F821
        c.JupyterHub.ip = "127.0.0.1"
        c.JupyterHub.port = {ports["proxy"]}
        c.JupyterHub.hub_ip = "127.0.0.1"
        c.JupyterHub.hub_port = {ports["hub"]}
        c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{ports["proxy_api"]}"
        c.ConfigurableHTTPProxy.command = [{str(ensure_chp())!r}]
        c.ConfigurableHTTPProxy.pid_file = {str(hub_dir / "proxy.pid")!r}
        c.JupyterHub.pid_file = {str(hub_dir / "hub.pid")!r}
        c.JupyterHub.db_url = {"sqlite:///" + str(hub_dir / "jupyterhub.sqlite")!r}
        c.JupyterHub.cookie_secret_file = {str(hub_dir / "cookie_secret")!r}

        c.JupyterHub.authenticator_class = "dummy"
        c.Authenticator.allow_all = True
        c.Authenticator.admin_users = {{{HUB_ADMIN!r}}}

        {(chr(10) + " " * 8).join(spawner)}
        c.Spawner.cmd = [{str(bin_dir / "jupyterhub-singleuser")!r}]
        c.Spawner.args = ["--allow-root"]
        c.Spawner.default_url = "/lab"
        c.Spawner.start_timeout = 90
        c.Spawner.http_timeout = 90
        c.Spawner.environment = {{
            "LUMEN_SERVICE_URL": "http://127.0.0.1:{ports["service"]}/services/{SERVICE}/",
        }}
        c.Spawner.server_token_scopes = {SERVER_TOKEN_SCOPES!r}
        c.Spawner.oauth_client_allowed_scopes = ["access:services!service={SERVICE}"]
        c.JupyterHub.extra_user_scopes = ["access:services!service={SERVICE}"]

        c.JupyterHub.custom_scopes = {{
            "custom:lumen:admin": {{"description": "Administer lumen for every user"}},
            "custom:lumen:grant": {{"description": "Grant coins to members of a group"}},
        }}
        c.JupyterHub.load_groups = {{
            {CLASS!r}: {{"users": ["alice"]}},
            {STAFF!r}: {{"users": []}},
        }}
        c.JupyterHub.services = [
            {{
                "name": {SERVICE!r},
                "url": "http://127.0.0.1:{ports["service"]}",
                "command": {service_cmd!r},
                "environment": {{
                    # jupyter_lumen_config.py (0600) there holds the database URL and
                    # names the YAML, the key secret and the admin token
                    "JUPYTER_CONFIG_DIR": {str(secrets_dir)!r},
                    "JUPYTER_DATA_DIR": {str(secrets_dir / "data")!r},
                }},
                "oauth_no_confirm": True,
                "display": True,
                "oauth_client_allowed_scopes": ["custom:lumen:admin", "custom:lumen:grant"],
                {f'"user": {service_user!r},' if service_user else ""}
            }},
            {{"name": {TESTER_SERVICE!r}, "api_token": {tester_token!r}}},
        ]
        c.JupyterHub.load_roles = [
            {{
                "name": "lumen-service",
                "services": [{SERVICE!r}],
                "scopes": ["read:users", "list:users", "read:groups", "list:groups"],
            }},
            {{"name": "lumen-admin", "users": [{HUB_ADMIN!r}], "scopes": ["custom:lumen:admin"]}},
            {{
                "name": "lumen-grant-{CLASS}",
                "users": [{DELEGATE!r}],
                "scopes": ["custom:lumen:grant!group={CLASS}"],
            }},
            {{
                "name": "tester",
                "services": [{TESTER_SERVICE!r}],
                "scopes": [
                    "admin:users", "admin:servers", "admin:server_state", "admin:groups",
                    "tokens", "access:servers", "access:services", "read:users", "list:users",
                    "shares",
                ],
            }},
        ]
        """
    )


@contextlib.contextmanager
def running_hub(
    root: Path,
    postgres: pg.PostgresServer,
    users: tuple[str, ...] = USERS,
    service_user: str | None = None,
) -> Iterator[Hub]:
    """A JupyterHub with the lumen service, ready, with ``users`` created; stopped at the end.

    With ``service_user`` (a Unix user; the hub must run as root), the service runs as
    that user, its files are its own (0600 in a 0700 directory), and users' servers run
    as the Unix users of their names."""
    root.mkdir(parents=True, exist_ok=True)
    secrets_dir = root / "lumen"
    secrets_dir.mkdir(mode=0o700)
    if service_user is not None:
        root.chmod(0o755)  # users' homes are under it
    ports = dict(zip(("proxy", "proxy_api", "hub", "service"), free_ports(4), strict=True))
    tester_token = secrets.token_hex(32)
    with (
        service_database(postgres) as database,
        demo_upstream() as upstream,
        demo_upstream(chunk_delay_ms=40, latency_ms=150) as slow_upstream,
    ):
        provider_key = PROVIDER_KEY_PREFIX + root.name
        write_private(
            secrets_dir / "lumen.yaml",
            yaml.safe_dump(lumen_yaml(upstream, slow_upstream, provider_key)),
        )
        write_private(
            secrets_dir / "jupyter_lumen_config.py",
            "".join(
                f"c.{name} = {value!r}\n"
                for name, value in (
                    ("Lumen.database_url", database.url),
                    ("Lumen.config_file", str(secrets_dir / "lumen.yaml")),
                    ("Lumen.secret_file", str(secrets_dir / "secret")),
                    ("LumenServe.admin_token_file", str(secrets_dir / "admin_token")),
                    ("LumenServe.hub_cache_seconds", CACHE_SECONDS),
                )
            ),
        )
        if service_user is not None:
            entry = pwd.getpwnam(service_user)
            for path in (secrets_dir, *secrets_dir.iterdir()):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        config = root / "jupyterhub_config.py"
        config.write_text(hub_config(root, ports, secrets_dir, tester_token, service_user))
        log_path = root / "hub.log"
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("JUPYTER", "LUMEN_", "IPYTHON", "PYTEST"))
        }
        env["PYTHONPATH"] = os.pathsep.join(
            [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]
        )
        with log_path.open("wb") as log_file:
            hub_cmd = [sys.executable, "-m", "jupyterhub", "-f", str(config)]
            proc = subprocess.Popen(
                hub_cmd if service_user is None else [*ROOT_OPENED, str(root), *hub_cmd],
                cwd=root,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        hub = Hub(
            root=root,
            url=f"http://127.0.0.1:{ports['proxy']}",
            ports=ports,
            proc=proc,
            tester_token=tester_token,
            database=database,
            secrets_dir=secrets_dir,
            upstream=upstream,
            slow_upstream=slow_upstream,
            log_path=log_path,
        )
        try:
            _wait_ready(hub)
            for name in users:
                with contextlib.suppress(AssertionError):
                    hub.api("POST", f"users/{name}")
            yield hub
        finally:
            hub.stop()


ROOT_OPENED = [
    "unshare",
    "--mount",
    "--propagation",
    "private",
    "bash",
    "-euc",
    # In a mount namespace of its own (nothing changes outside it): /root as a copy that
    # others may enter, each of its entries mounted back from the real one, so that
    # processes of other Unix users can run the interpreter installed under /root.
    """
    real=$1/.root
    shift
    mkdir "$real"
    mount --bind /root "$real"
    mount -t tmpfs -o mode=0755 tmpfs /root
    for entry in "$real"/.[!.]* "$real"/*; do
      [ -e "$entry" ] || continue
      target=/root/${entry##*/}
      if [ -d "$entry" ]; then mkdir "$target"; else touch "$target"; fi
      mount --bind "$entry" "$target"
    done
    exec "$@"
    """,
    "root-opened",
]
# followed by a directory for the view of the real /root, then the command
"""A prefix for the hub's command when users' processes run as other Unix users: the
Python here may live under /root (mode 0700), which no other user may enter."""


def unix_user(name: str, home: Path) -> int:
    """A fresh Unix user ``name`` with ``home`` (one left by an earlier run is replaced);
    returns its uid.  :func:`drop_unix_user` removes it."""
    drop_unix_user(name)
    subprocess.run(
        ["useradd", "--create-home", "--home-dir", str(home), "--shell", "/bin/sh", name],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return pwd.getpwnam(name).pw_uid


def drop_unix_user(name: str) -> None:
    with contextlib.suppress(KeyError):
        pwd.getpwnam(name)
        subprocess.run(["userdel", name], check=True, capture_output=True, timeout=60)


def _wait_ready(hub: Hub, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    checks = {
        "hub": f"{hub.url}/hub/api/",
        "service": f"{hub.service_url}health?ready=1",
    }
    for name, url in checks.items():
        while True:
            if hub.proc.poll() is not None:
                raise RuntimeError(f"jupyterhub exited ({hub.proc.returncode}):\n{hub.log()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url, timeout=5).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"the {name} did not answer at {url}:\n{hub.log()[-6000:]}")
            time.sleep(0.2)


# -- kernels ------------------------------------------------------------------------------


@dataclass
class Kernel:
    """A kernel in a user's server, reached over its websocket through the proxy."""

    hub: Hub
    user: str
    token: str
    kernel_id: str

    def execute(self, code: str, timeout: float = 60.0) -> str:
        """Run ``code``; returns what it printed (an error's traceback raises)."""
        return asyncio.run(self._execute(code, timeout))

    async def _execute(self, code: str, timeout: float) -> str:
        from tornado.httpclient import HTTPRequest
        from tornado.websocket import websocket_connect

        url = self.hub.user_url(self.user, f"api/kernels/{self.kernel_id}/channels")
        request = HTTPRequest(
            url.replace("http://", "ws://", 1),
            headers={"Authorization": f"token {self.token}"},
        )
        conn = await websocket_connect(request)
        msg_id = uuid.uuid4().hex
        message = {
            "header": {
                "msg_id": msg_id,
                "msg_type": "execute_request",
                "username": self.user,
                "session": uuid.uuid4().hex,
                "version": "5.3",
                "date": "",
            },
            "parent_header": {},
            "metadata": {},
            "content": {"code": code, "silent": False, "store_history": False},
            "buffers": [],
            "channel": "shell",
        }
        await conn.write_message(json.dumps(message))
        out: list[str] = []
        error: str | None = None
        done = {"idle": False, "reply": False}
        deadline = time.monotonic() + timeout
        try:
            while not all(done.values()):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"the kernel did not finish: {''.join(out)}")
                raw = await asyncio.wait_for(conn.read_message(), left)
                if raw is None:
                    raise ConnectionError("the kernel's websocket closed")
                reply = json.loads(raw)
                if reply.get("parent_header", {}).get("msg_id") != msg_id:
                    continue
                kind = reply["header"]["msg_type"]
                content = reply["content"]
                if kind == "stream":
                    out.append(content["text"])
                elif kind == "error":
                    error = "\n".join(content.get("traceback", [])) or content.get("evalue")
                elif kind == "status" and content["execution_state"] == "idle":
                    done["idle"] = True
                elif kind == "execute_reply":
                    done["reply"] = True
        finally:
            conn.close()
        if error is not None:
            raise RuntimeError(f"the kernel raised:\n{error}\n{''.join(out)}")
        return "".join(out)


def start_kernel(hub: Hub, user: str, token: str) -> Kernel:
    answer = httpx.post(
        hub.user_url(user, "api/kernels"),
        json={"name": "python3"},
        headers={"Authorization": f"token {token}"},
        timeout=60,
    )
    assert answer.status_code == 201, answer.text
    kernel = Kernel(hub, user, token, answer.json()["id"])
    kernel.execute("pass", timeout=60)  # ready
    return kernel


@contextlib.contextmanager
def hub_for_tests(postgres: pg.PostgresServer, prefix: str) -> Iterator[Hub]:
    """A running hub for a test fixture: skipped without the npm proxy (a failure under
    ``CI``), in a temporary directory removed afterwards (kept with ``LUMEN_HUB_KEEP=1``),
    and checked at the end to have left no process and no busy port."""
    try:
        ensure_chp()
    except Exception as exc:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the hub tests: {exc}", pytrace=False)
        pytest.skip(f"no configurable-http-proxy: {exc}")
    root = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        with running_hub(root, postgres) as running:
            yield running
            stopped = running.stop()
        left = stopped["lumen_left"] + stopped["others_left"]
        assert left == [] and stopped["ports_busy"] == [], stopped
    finally:
        if os.environ.get("LUMEN_HUB_KEEP"):
            print(f"\nthe hub's directory is kept: {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
