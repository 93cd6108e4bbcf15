"""Shared plumbing of the benchmarks: processes, ports, a throwaway PostgreSQL,
a Jupyter server with lumen-jupyter, /proc readings, percentiles, machine facts.

Not a benchmark itself; ``bench_*.py`` import it from this folder.  Every
process started here runs in its own session and is killed (whole process
group) at exit, also on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import platform
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results"
PG_BIN = Path(os.environ.get("LUMEN_BENCH_PG_BIN", "/usr/lib/postgresql/15/bin"))

_children: list[subprocess.Popen[bytes]] = []
_temp_dirs: list[Path] = []
_cleanups: list[Any] = []


# -- cleanup ----------------------------------------------------------------------------


def _kill_group(proc: subprocess.Popen[bytes], grace: float = 3.0) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(grace)


def cleanup() -> None:
    """Stop every child (newest first), run registered cleanups, remove temp dirs."""
    while _children:
        _kill_group(_children.pop())
    while _cleanups:
        fn = _cleanups.pop()
        with contextlib.suppress(Exception):
            fn()
    while _temp_dirs:
        shutil.rmtree(_temp_dirs.pop(), ignore_errors=True)


def _on_signal(signum: int, _frame: Any) -> None:
    cleanup()
    sys.exit(128 + signum)


atexit.register(cleanup)
signal.signal(signal.SIGTERM, _on_signal)
signal.signal(signal.SIGHUP, _on_signal)


def on_cleanup(fn: Any) -> None:
    _cleanups.append(fn)


def temp_dir(prefix: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    _temp_dirs.append(path)
    return path


def spawn(
    argv: Sequence[str],
    *,
    cpus: str | None = None,
    env: dict[str, str] | None = None,
    log: Path | None = None,
    stdout_pipe: bool = False,
) -> subprocess.Popen[bytes]:
    """Start a child in its own process group, optionally pinned with taskset."""
    command = list(argv)
    if cpus is not None and shutil.which("taskset"):
        command = ["taskset", "-c", cpus, *command]
    out: Any = subprocess.PIPE if stdout_pipe else (open(log, "wb") if log else subprocess.DEVNULL)  # noqa: SIM115
    proc = subprocess.Popen(
        command,
        stdout=out,
        stderr=subprocess.STDOUT if (log or stdout_pipe) else subprocess.DEVNULL,
        env=env,
        start_new_session=True,
    )
    _children.append(proc)
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    _kill_group(proc)
    with contextlib.suppress(ValueError):
        _children.remove(proc)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(
    url: str,
    timeout: float,
    proc: subprocess.Popen[bytes] | None = None,
    headers: dict[str, str] | None = None,
) -> None:
    """Poll ``url`` until it answers (any status below 500)."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process {proc.args!r} exited with {proc.returncode}")
        try:
            request = urllib.request.Request(url, headers=headers or {})
            with urllib.request.urlopen(request, timeout=2) as response:
                if response.status < 500:
                    return
        except urllib.error.HTTPError as exc:
            if exc.code < 500:
                return
            last = exc
        except (OSError, urllib.error.URLError) as exc:
            last = exc
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f} s ({last})")


def http_json(
    method: str,
    url: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
    timeout: float = 30,
) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if data is not None:
        request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read() or b"null")


# -- /proc ------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def memory_kb(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS since start) of a process, in kB."""
    found: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = int(value.split()[0])
    return found


def loadavg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def descendants(pid: int) -> list[int]:
    """``pid`` and its descendants (to find the real server under a ``taskset`` wrapper)."""
    out = [pid]
    with contextlib.suppress(OSError):
        for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
            out.extend(descendants(int(child)))
    return out


def python_child(pid: int) -> int:
    """The first python process at or below ``pid`` (taskset execs, so usually ``pid``)."""
    for candidate in descendants(pid):
        with contextlib.suppress(OSError):
            cmd = Path(f"/proc/{candidate}/cmdline").read_bytes().split(b"\0")[0]
            if b"python" in Path(cmd.decode()).name.encode() or b"python" in cmd:
                return candidate
    return pid


# -- statistics -------------------------------------------------------------------------


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile of already sorted values (q in 0..100)."""
    if not sorted_values:
        return float("nan")
    if len(sorted_values) == 1:
        return float(sorted_values[0])
    pos = (len(sorted_values) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(sorted_values) - 1)
    return float(sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (pos - low))


def summary_ms(values_s: Iterable[float]) -> dict[str, float]:
    """p50/p90/p95/p99/max/mean in milliseconds of durations given in seconds."""
    values = sorted(v * 1000 for v in values_s)
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "p50": round(percentile(values, 50), 3),
        "p90": round(percentile(values, 90), 3),
        "p95": round(percentile(values, 95), 3),
        "p99": round(percentile(values, 99), 3),
        "max": round(values[-1], 3),
        "mean": round(sum(values) / len(values), 3),
    }


def median(values: Sequence[float]) -> float:
    return percentile(sorted(values), 50)


# -- machine facts ----------------------------------------------------------------------


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10)
    except OSError:
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def machine_facts(extra_versions: dict[str, str | None] | None = None) -> dict[str, Any]:
    mem_kb = 0
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem_kb = int(line.split()[1])
    versions = {
        name: _version(name)
        for name in (
            "tornado",
            "jupyter_server",
            "SQLAlchemy",
            "aiohttp",
            "psycopg",
        )
    }
    versions.update(extra_versions or {})
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "host_cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "cpu_model": _cpu_model(),
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "versions": versions,
        "lumen_jupyter_commit": _git("rev-parse", "--short", "HEAD"),
        "lumen_jupyter_changed_files": [
            line[3:]
            for line in (_git("status", "--porcelain", "--", "lumen_jupyter") or "").splitlines()
            if line.strip()
        ],
        "loadavg_at_start": loadavg(),
    }


def write_results(name: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS / f"{name}-{stamp}.json"
    text = json.dumps(data, indent=2, default=str)
    path.write_text(text)
    (RESULTS / f"{name}-latest.json").write_text(text)
    return path


# -- PostgreSQL -------------------------------------------------------------------------


def postgres_unavailable() -> str | None:
    missing = [n for n in ("initdb", "pg_ctl") if not (PG_BIN / n).is_file()]
    if missing:
        return f"PostgreSQL binaries not found in {PG_BIN} ({', '.join(missing)})"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no 'postgres' user to run PostgreSQL"
        if shutil.which("runuser") is None:
            return "running as root and runuser is not installed"
    return None


def _as_postgres(argv: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


@dataclass
class Postgres:
    """A throwaway cluster on a free loopback port, removed at exit."""

    root: Path
    port: int
    dbname: str = "lumen_bench"
    _stopped: bool = field(default=False)

    @property
    def libpq(self) -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname={self.dbname}"

    @property
    def sqlalchemy_url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{self.dbname}"

    def url_of(self, dbname: str) -> str:
        """The SQLAlchemy URL of another database on this server (made if missing)."""
        import psycopg

        with psycopg.connect(
            f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres", autocommit=True
        ) as conn:
            found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,))
            if found.fetchone() is None:
                conn.execute(f'CREATE DATABASE "{dbname}"')
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{dbname}"

    @property
    def pid(self) -> int:
        """The postmaster's pid (its descendants are the backends)."""
        return int((self.root / "data" / "postmaster.pid").read_text().split()[0])

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        subprocess.run(
            _as_postgres(
                [str(PG_BIN / "pg_ctl"), "-D", str(self.root / "data"), "-m", "fast", "-w", "stop"]
            ),
            capture_output=True,
            timeout=60,
            check=False,
        )


def start_postgres(settings: dict[str, str] | None = None, cpus: str | None = None) -> Postgres:
    """initdb + pg_ctl start as the ``postgres`` user; server defaults unless ``settings``.

    ``cpus`` pins the server (and so every backend it forks) with taskset."""
    root = temp_dir("lumen-bench-pg-")
    if os.geteuid() == 0:
        entry = pwd.getpwnam("postgres")
        os.chown(root, entry.pw_uid, entry.pw_gid)
    data = root / "data"
    subprocess.run(
        _as_postgres([str(PG_BIN / "initdb"), "-A", "trust", "-U", "postgres", "-D", str(data)]),
        capture_output=True,
        timeout=120,
        check=True,
    )
    options = [f"-c {k}={v}" for k, v in (settings or {}).items()]
    for _ in range(3):
        port = free_port()
        opts = " ".join([f"-p {port}", f"-k {root}", "-c listen_addresses=127.0.0.1", *options])
        pin = ["taskset", "-c", cpus] if cpus is not None and shutil.which("taskset") else []
        done = subprocess.run(
            pin
            + _as_postgres(
                [
                    str(PG_BIN / "pg_ctl"),
                    "-D",
                    str(data),
                    "-l",
                    str(root / "server.log"),
                    "-o",
                    opts,
                    "-w",
                    "-t",
                    "60",
                    "start",
                ]
            ),
            capture_output=True,
            timeout=90,
            check=False,
        )
        if done.returncode == 0:
            server = Postgres(root, port)
            on_cleanup(server.stop)
            import psycopg

            with psycopg.connect(
                f"host=127.0.0.1 port={port} user=postgres dbname=postgres", autocommit=True
            ) as conn:
                conn.execute(f"CREATE DATABASE {server.dbname}")
            return server
    raise RuntimeError(f"could not start PostgreSQL: {done.stderr.decode(errors='replace')}")


# -- a Jupyter server with lumen-jupyter ------------------------------------------------


@dataclass
class JupyterServer:
    proc: subprocess.Popen[bytes]
    port: int
    token: str
    home: Path
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"token {self.token}"}

    @property
    def pid(self) -> int:
        return python_child(self.proc.pid)


def start_jupyter(
    lumen_traits: dict[str, Any],
    *,
    cpus: str | None = None,
    instrumented: bool = False,
    extra_args: Sequence[str] = (),
    timeout: float = 90,
) -> JupyterServer:
    """A ``jupyter server`` subprocess with lumen-jupyter from this working tree.

    ``instrumented`` starts it through ``_serve_instrumented.py`` (the same server, plus
    an opt-in event-loop monitor at ``/_bench/loop``).
    """
    home = temp_dir("lumen-bench-jp-")
    for sub in ("config", "data", "runtime", "ipython", "root"):
        (home / sub).mkdir()
    env = dict(os.environ)
    env.update(
        {
            "JUPYTER_CONFIG_DIR": str(home / "config"),
            "JUPYTER_DATA_DIR": str(home / "data"),
            "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
            "IPYTHONDIR": str(home / "ipython"),
            "JUPYTER_PLATFORM_DIRS": "1",
            "PYTHONPATH": os.pathsep.join(
                [str(REPO), *([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])]
            ),
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.pop("LUMEN_DATABASE_URL", None)
    env.pop("LUMEN_CONFIG", None)
    port = free_port()
    token = os.urandom(16).hex()
    entry = (
        [sys.executable, str(HERE / "_serve_instrumented.py")]
        if instrumented
        else [sys.executable, "-m", "jupyter_server"]
    )
    argv = [
        *entry,
        "--no-browser",
        "--allow-root",
        f"--port={port}",
        "--ip=127.0.0.1",
        "--ServerApp.port_retries=0",
        f"--ServerApp.token={token}",
        f"--ServerApp.root_dir={home / 'root'}",
        '--ServerApp.jpserver_extensions={"lumen_jupyter": True}',
        *(f"--LumenJupyter.{k}={v}" for k, v in lumen_traits.items()),
        *extra_args,
    ]
    log = home / "server.log"
    proc = spawn(argv, cpus=cpus, env=env, log=log)
    server = JupyterServer(proc, port, token, home, log)
    try:
        wait_http(f"{server.url}lumen/api/openapi.json", timeout, proc, headers=server.auth)
    except Exception:
        sys.stderr.write(log.read_text(errors="replace")[-4000:])
        raise
    return server
