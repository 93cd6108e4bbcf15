"""A real forward proxy for tests: tinyproxy on loopback, with a password.

On clusters whose only way out is a forward proxy, every model call goes through
one; tests use tinyproxy (installed by ``tests/run``) to check the gateway's proxy
support end to end, HTTPS through ``CONNECT`` included.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

PASSWORD = "s3cr3t-proxy-pw"


class TinyProxy:
    """A tinyproxy on loopback that wants a password; its log says what it forwarded."""

    def __init__(self, directory: Path) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.log = directory / "tinyproxy.log"
        config = directory / "tinyproxy.conf"
        config.write_text(
            f"Port {self.port}\nListen 127.0.0.1\nTimeout 30\nLogLevel Connect\n"
            f"MaxClients 50\nAllow 127.0.0.1\nBasicAuth lumen {PASSWORD}\n",
            encoding="utf-8",
        )
        binary = shutil.which("tinyproxy")
        assert binary is not None
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [binary, "-d", "-c", str(config)], stdout=out, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError(self.log.read_text(errors="replace")) from None
                time.sleep(0.05)

    def url(self, password: str = PASSWORD) -> str:
        return f"http://lumen:{password}@127.0.0.1:{self.port}"

    def forwarded(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)
