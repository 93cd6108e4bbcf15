"""The README's first command on a fresh machine: ``pip install . && jupyter lab``.

A new virtual environment (no system packages) gets the package from this checkout
the way a new user installs it; ``jupyter lab`` then has to start from that environment
alone, serve the Lab page with the front-end extension in it, and answer the profile
API from the embedded default - which also creates the database, privately.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import time
import uuid
import venv
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def clean_env(home: Path, bin_dir: Path) -> dict[str, str]:
    """The caller's environment without anything that would leak this checkout or the
    caller's Python tools in: on PATH only the new environment, Node and the system."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("LUMEN_", "JUPYTER_", "JPY_", "PYTHON", "VIRTUAL_ENV", "PYENV"))
    }
    node = shutil.which("node")
    assert node is not None, "the README asks for Node.js"
    path = [str(bin_dir), str(Path(node).parent), "/usr/bin", "/bin"]
    env["PATH"] = os.pathsep.join(dict.fromkeys(path))
    for name in ("config", "data", "runtime"):
        (home / name).mkdir(parents=True, exist_ok=True)
    env.update(
        {
            "JUPYTER_CONFIG_DIR": str(home / "config"),
            "JUPYTER_DATA_DIR": str(home / "data"),
            "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
            "JUPYTER_PLATFORM_DIRS": "1",
            "IPYTHONDIR": str(home / "ipython"),
        }
    )
    return env


def test_pip_install_then_jupyter_lab(tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True, system_site_packages=False)
    bin_dir = env_dir / ("Scripts" if sys.platform == "win32" else "bin")
    env = clean_env(tmp_path / "home", bin_dir)

    install = subprocess.run(
        ["pip", "install", "-q", "--disable-pip-version-check", "."],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert install.returncode == 0, install.stdout + install.stderr
    assert (bin_dir / "jupyter-lab").exists(), "JupyterLab is not installed with the package"

    root = tmp_path / "root"
    root.mkdir()
    port, token = free_port(), uuid.uuid4().hex
    log_path = tmp_path / "lab.log"
    with open(log_path, "wb") as log:
        lab = subprocess.Popen(
            [
                "jupyter",
                "lab",
                "--allow-root",
                "--no-browser",
                "--ip=127.0.0.1",
                f"--port={port}",
                "--ServerApp.port_retries=0",
                f"--IdentityProvider.token={token}",
                f"--ServerApp.root_dir={root}",
            ],
            cwd=root,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}/"
    headers = {"Authorization": f"token {token}"}
    try:
        deadline = time.monotonic() + 120
        while True:
            assert lab.poll() is None, log_path.read_text(errors="replace")
            try:
                if httpx.get(base + "api/status", headers=headers, timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, log_path.read_text(errors="replace")
            time.sleep(0.25)

        page = httpx.get(base + "lab", headers=headers, timeout=30)
        assert page.status_code == 200
        config = re.search(r'id="jupyter-config-data"[^>]*>(.*?)</script>', page.text, re.S)
        assert config is not None and '"lumen-jupyter"' in config.group(1)

        profile = httpx.get(base + "lumen/api/profile", headers=headers, timeout=30)
        assert profile.status_code == 200, profile.text
        body = profile.json()
        assert body["pool"]["balance"]["text"] == "20"

        extension = httpx.get(
            base + "lab/extensions/lumen-jupyter/package.json", headers=headers, timeout=30
        )
        assert extension.status_code == 200 and extension.json()["name"] == "lumen-jupyter"

        # The embedded default keeps its database in the Jupyter data directory,
        # readable by its owner only.
        db = tmp_path / "home" / "data" / "lumen" / "lumen.db"
        assert db.exists(), sorted(p.name for p in db.parent.parent.iterdir())
        assert stat.S_IMODE(db.stat().st_mode) == 0o600
        assert stat.S_IMODE(db.parent.stat().st_mode) & 0o077 == 0
    finally:
        lab.terminate()
        try:
            lab.wait(timeout=30)
        except subprocess.TimeoutExpired:
            lab.kill()
            lab.wait()
