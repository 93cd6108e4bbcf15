"""A throwaway PostgreSQL server for the test suite, and one fresh database per test.

Order of preference:

1. ``LUMEN_TEST_POSTGRES_URL`` names a server (its user must be allowed to create databases);
2. else the PostgreSQL binaries (``LUMEN_TEST_POSTGRES_BIN``, default
   ``/usr/lib/postgresql/15/bin``) start a private cluster on a free loopback port, in a
   temporary directory that is removed afterwards.  PostgreSQL refuses to run as root, so as
   root the binaries run as the ``postgres`` user (``runuser``);
3. else there is no PostgreSQL: :func:`unavailable_reason` says why.

The conftest turns "no PostgreSQL" into a skip, or into a failure when ``CI`` is set.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg import errors, sql
from sqlalchemy.engine import URL

ENV_URL = "LUMEN_TEST_POSTGRES_URL"
ENV_BIN = "LUMEN_TEST_POSTGRES_BIN"
DEFAULT_BIN = "/usr/lib/postgresql/15/bin"
SERVER_USER = "postgres"


def binaries() -> Path:
    return Path(os.environ.get(ENV_BIN, DEFAULT_BIN))


def unavailable_reason() -> str | None:
    """Why no PostgreSQL can be had here, or ``None`` when one can."""
    if os.environ.get(ENV_URL):
        return None
    bin_dir = binaries()
    missing = [n for n in ("initdb", "pg_ctl") if not (bin_dir / n).is_file()]
    if missing:
        return (
            f"PostgreSQL tests need {ENV_URL} or the PostgreSQL binaries "
            f"({', '.join(missing)} not found in {bin_dir}; set {ENV_BIN})"
        )
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(SERVER_USER)
        except KeyError:
            return f"running as root but there is no {SERVER_USER!r} user to run PostgreSQL"
        if shutil.which("runuser") is None:
            return "running as root but runuser is not installed"
    return None


def libpq_url(url: str) -> str:
    """A URL psycopg accepts (no SQLAlchemy driver suffix)."""
    for prefix in ("postgresql+psycopg://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql://" + url[len(prefix) :]
    return url


def with_database(url: str, database: str) -> str:
    """``url`` pointing at another database on the same server."""
    info = psycopg.conninfo.conninfo_to_dict(libpq_url(url))
    info["dbname"] = database
    return psycopg.conninfo.make_conninfo(**info)


def to_sqlalchemy(conninfo: str, **query: str) -> str:
    """A ``postgresql+psycopg://`` URL from a libpq conninfo string."""
    info = psycopg.conninfo.conninfo_to_dict(conninfo)
    port = info.get("port")
    url = URL.create(
        "postgresql+psycopg",
        username=info.get("user"),
        password=info.get("password"),
        host=info.get("host"),
        port=int(port) if port else None,
        database=info.get("dbname"),
        query=query,
    )
    return url.render_as_string(hide_password=False)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class PostgresServer:
    """A server the tests may create and drop databases on."""

    admin_url: str  # libpq URL of a maintenance database (``postgres``)
    owned_dir: Path | None = None  # set when we started the server ourselves
    _created: set[str] = field(default_factory=set)
    _schemas: set[str] = field(default_factory=set)
    _template: str | None = None

    def connect_admin(self) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(self.admin_url, autocommit=True, connect_timeout=10)

    def create_database(self, *, migrated: bool = False) -> tuple[str, str]:
        """A fresh database: returns (name, SQLAlchemy URL).

        Empty, or with ``migrated`` already at the latest schema (cloned from a template
        database migrated once per session, which is faster than migrating each time).
        A server we may not create databases on (a shared ``LUMEN_TEST_POSTGRES_URL``)
        gets a fresh schema instead, selected through the connection's ``search_path``.
        """
        name = f"test_{secrets.token_hex(6)}"
        statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        try:
            if migrated:
                statement += sql.SQL(" TEMPLATE {}").format(
                    sql.Identifier(self._migrated_template())
                )
            with self.connect_admin() as conn:
                conn.execute(statement)
        except errors.InsufficientPrivilege:
            with self.connect_admin() as conn:
                conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
            self._schemas.add(name)
            url = to_sqlalchemy(self.admin_url, options=f"-csearch_path={name}")
            if migrated:
                _migrate(url)
            return name, url
        self._created.add(name)
        return name, to_sqlalchemy(with_database(self.admin_url, name))

    def _migrated_template(self) -> str:
        if self._template is None:
            name, url = self.create_database()
            _migrate(url)
            self._template = name  # dropped with the others at the end
        return self._template

    def drop_database(self, name: str) -> None:
        with self.connect_admin() as conn:
            if name in self._schemas:
                conn.execute(
                    sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name))
                )
                self._schemas.discard(name)
                return
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
        self._created.discard(name)

    @contextlib.contextmanager
    def database(self, *, migrated: bool = False) -> Iterator[str]:
        name, url = self.create_database(migrated=migrated)
        try:
            yield url
        finally:
            self.drop_database(name)


def _migrate(url: str) -> None:
    from lumen_jupyter.store import Store

    store = Store(url)
    try:
        store.migrate()
    finally:
        store.dispose()


def _as_server_user(argv: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", SERVER_USER, "--", *argv]
    return argv


def _run(argv: list[str]) -> None:
    done = subprocess.run(
        _as_server_user(argv), capture_output=True, text=True, timeout=120, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
        )


def start_throwaway(attempts: int = 3, *, durable: bool = False) -> PostgresServer:
    """initdb + pg_ctl start on a free loopback port in a new temporary directory.

    Commits are not flushed to disk (fast tests) unless ``durable``, as in production
    (for benchmarks of what a commit costs)."""
    bin_dir = binaries()
    root = Path(tempfile.mkdtemp(prefix="lumen-pg-"))
    try:
        if os.geteuid() == 0:
            entry = pwd.getpwnam(SERVER_USER)
            os.chown(root, entry.pw_uid, entry.pw_gid)
        data = root / "data"
        _run([str(bin_dir / "initdb"), "-A", "trust", "-U", SERVER_USER, "-D", str(data)])
        last_error: Exception | None = None
        for _ in range(attempts):  # the port may be taken between probing and binding
            port = free_port()
            options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c max_connections=200"
            if not durable:
                options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            try:
                _run(
                    [
                        str(bin_dir / "pg_ctl"),
                        "-D",
                        str(data),
                        "-l",
                        str(root / "server.log"),
                        "-o",
                        options,
                        "-w",
                        "-t",
                        "60",
                        "start",
                    ]
                )
            except RuntimeError as exc:
                last_error = exc
                continue
            url = f"postgresql://{SERVER_USER}@127.0.0.1:{port}/postgres"
            return PostgresServer(admin_url=url, owned_dir=root)
        log = root / "server.log"
        detail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        raise RuntimeError(f"PostgreSQL did not start: {last_error}\n{detail}")
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise


def stop(server: PostgresServer) -> None:
    """Drop what the tests left behind; stop and delete a server we started."""
    if server.owned_dir is None:
        for name in [*server._schemas, *server._created]:
            with contextlib.suppress(Exception):
                server.drop_database(name)
        return
    data = server.owned_dir / "data"
    try:
        _run([str(binaries() / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"])
    finally:
        shutil.rmtree(server.owned_dir, ignore_errors=True)


def open_server() -> PostgresServer:
    """The server named by ``LUMEN_TEST_POSTGRES_URL``, else a throwaway one."""
    url = os.environ.get(ENV_URL)
    if url:
        return PostgresServer(admin_url=libpq_url(url))
    return start_throwaway()
