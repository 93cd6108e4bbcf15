"""A virtual environment with lumen-jupyter, jupyter-ai 3 and the third-party clients.

The clients of docs/api.md's table and jupyter-ai bring some 240 packages (litellm,
langchain, boto3 ...) with pins of their own; installed into the test environment
they would change what every other test runs against, and jupyter-ai's server
extensions would load into every test server.  So they live in an environment of
their own, built with ``uv`` from ``requirements.in`` and pinned by
``requirements.lock``, plus lumen-jupyter's dependencies from ``pyproject.toml``;
lumen-jupyter itself is this checkout, put on the path by a ``.pth`` file (no build
of the front end is needed to run the server and kernels).

The environment is kept in ``.cache/`` at the top of the checkout (git-ignored),
named after the digest of what it was built from, and reused while that is
unchanged.  Building it takes about 15 s on two cores with uv's download cache warm;
most of that is compiling the byte code at once, which the tests' many processes
(two servers, kernels, a script per client) would otherwise each do as they import.

To change a client's version: edit ``requirements.in``, then
``uv pip compile requirements.in ../../pyproject.toml --universal
--python-version 3.11 -o requirements.lock --no-header`` in this directory.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
REQUIREMENTS = HERE / "requirements.in"
LOCK = HERE / "requirements.lock"
CACHE = REPO / ".cache"

MIN_PYTHON = (3, 11)
"""langchain-openai 1.x, as pinned, needs Python 3.11."""


class ClientEnvUnavailable(RuntimeError):
    """The environment cannot be built here (the reason is the message)."""


def _digest() -> str:
    parts = [
        REQUIREMENTS.read_bytes(),
        LOCK.read_bytes(),
        (REPO / "pyproject.toml").read_bytes(),
        sys.version.encode(),
        sys.executable.encode(),
    ]
    return hashlib.sha256(b"\0".join(parts)).hexdigest()[:16]


def _uv() -> str:
    try:
        from uv import find_uv_bin
    except ImportError:
        found = shutil.which("uv")
        if found is None:
            raise ClientEnvUnavailable(
                "uv is not installed (it is in the test extra: pip install -e '.[test]')"
            ) from None
        return found
    return str(find_uv_bin())


def _bin(env: Path, name: str) -> Path:
    return env / ("Scripts" if sys.platform == "win32" else "bin") / name


def client_env() -> Path:
    """The environment's directory, built on first use."""
    if sys.version_info < MIN_PYTHON:
        raise ClientEnvUnavailable(
            "the client tests need Python %d.%d or newer" % MIN_PYTHON  # noqa: UP031
        )
    target = CACHE / f"client-env-{_digest()}"
    done = target / "complete"
    if done.exists():
        return target
    CACHE.mkdir(exist_ok=True)
    with open(CACHE / "client-env.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another run may be building it
        if done.exists():
            return target
        for old in CACHE.glob("client-env-*"):  # half-built, or built from older files
            if old.is_dir():
                shutil.rmtree(old, ignore_errors=True)
        try:
            _build(target)
        except BaseException:
            shutil.rmtree(target, ignore_errors=True)
            raise
        done.write_text(_digest() + "\n", encoding="utf-8")
    return target


def _build(target: Path) -> None:
    uv = _uv()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "UV_"))}
    env["UV_NO_PROGRESS"] = "1"
    _run([uv, "venv", "-q", "--python", sys.executable, str(target)], env)
    python = _bin(target, "python")
    install = ["pip", "install", "-q", "--compile-bytecode", "--python", str(python)]
    sources = ["-r", str(REPO / "pyproject.toml"), "-r", str(REQUIREMENTS), "-c", str(LOCK)]
    _run([uv, *install, *sources], env)
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    Path(site, "lumen_jupyter_checkout.pth").write_text(str(REPO) + "\n", encoding="utf-8")


def client_python() -> Path:
    """The environment's Python."""
    return _bin(client_env(), "python")


def _run(argv: list[str], env: dict[str, str]) -> None:
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise ClientEnvUnavailable(
            f"{' '.join(argv[:3])} failed ({done.returncode}):\n{done.stdout}{done.stderr}"
        )


__all__ = ["REPO", "ClientEnvUnavailable", "client_env", "client_python"]
