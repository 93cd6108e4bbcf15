"""Two real Unix users: a user's kernel cannot read what the lumen service holds.

The hub runs as root; the lumen service as a Unix user of its own, with its files 0600
in a 0700 directory; a user's server (and so their kernel) as the Unix user of their
name (LocalProcessSpawner).  The end-to-end tests in ``test_hub_e2e.py`` run every
process as one user, so they show what the service accepts; this shows what the
operating system keeps apart.  It needs root, ``useradd`` and ``unshare``.
"""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests import pg
from tests.hub.hub import (
    Hub,
    drop_unix_user,
    ensure_chp,
    running_hub,
    start_kernel,
    unix_user,
)

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

SERVICE_USER = "lumen-e2e-svc"
USER = "lumen-e2e-erin"
SERVICE_FILES = ("lumen.yaml", "jupyter_lumen_config.py", "secret", "admin_token")


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "needs root (to create Unix users and run the hub as root)"
    for tool in ("useradd", "userdel", "unshare"):
        if shutil.which(tool) is None:
            return f"needs {tool}"
    return None


@pytest.fixture(scope="module")
def os_hub(postgres_server: pg.PostgresServer) -> Iterator[Hub]:
    reason = _missing()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"CI runs as root and must prove OS isolation: {reason}", pytrace=False)
        pytest.skip(reason)
    ensure_chp()
    root = Path(tempfile.mkdtemp(prefix="lumen-hub-os-"))
    try:
        (root / "home").mkdir()
        root.chmod(0o755)
        unix_user(SERVICE_USER, root / "home" / SERVICE_USER)
        unix_user(USER, root / "home" / USER)
        with running_hub(root, postgres_server, (USER,), SERVICE_USER) as hub:
            yield hub
            stopped = hub.stop()
        left = stopped["lumen_left"] + stopped["others_left"]
        assert left == [] and stopped["ports_busy"] == [], stopped
    finally:
        for name in (USER, SERVICE_USER):
            drop_unix_user(name)
        shutil.rmtree(root, ignore_errors=True)


def owner(pid: int) -> int:
    return os.stat(f"/proc/{pid}").st_uid


def test_a_users_kernel_cannot_read_the_services_files(os_hub: Hub) -> None:
    hub = os_hub
    user_uid, service_uid = pwd.getpwnam(USER).pw_uid, pwd.getpwnam(SERVICE_USER).pw_uid
    hub.start_server(USER)
    assert owner(hub.server_pid(USER)) == user_uid
    service_pids = hub.lumen_processes()
    assert len(service_pids) == 3 and {owner(pid) for pid in service_pids} == {service_uid}
    for name in SERVICE_FILES:
        info = (hub.secrets_dir / name).stat()
        assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (service_uid, 0o600), name

    token = hub.api_token(USER)
    kernel = start_kernel(hub, USER, token)
    targets = [
        str(hub.secrets_dir),
        *(str(hub.secrets_dir / name) for name in SERVICE_FILES),
        *(f"/proc/{pid}/environ" for pid in service_pids),
    ]
    printed = kernel.execute(
        "import os\n"
        "print('uid', os.getuid())\n"
        f"for path in {targets!r}:\n"
        "    try:\n"
        "        os.listdir(path) if os.path.isdir(path) else open(path, 'rb').read()\n"
        "        print('READ', path)\n"
        "    except PermissionError:\n"
        "        print('DENIED', path)\n"
    )
    lines = printed.splitlines()
    assert lines[0] == f"uid {user_uid}", printed
    assert lines[1:] == [f"DENIED {path}" for path in targets], printed

    # and lumen works for the user all the same: their server forwards to the service
    profile = httpx.get(
        hub.user_url(USER, "lumen/api/profile"),
        headers={"Authorization": f"token {token}"},
        timeout=60,
    )
    assert profile.status_code == 200, profile.text
    assert profile.json()["user"]["username"] == USER
