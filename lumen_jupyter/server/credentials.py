"""One credential per kernel, valid exactly as long as that kernel is.

A kernel started by this server calls the gateway with an ``lkt_`` credential
it finds in its environment.  Each kernel gets its own, minted when the kernel
manager starts it and revoked when the manager forgets it (shut down, or dead
for good); a restart keeps the kernel's id and so its credential.  The server's
own environment never holds one, so terminals and other processes it starts do
not inherit a credential.

Only digests are kept: a credential is checked by looking its SHA-256 up, which
takes the same time whatever the guess.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import threading
from collections.abc import Callable
from typing import Any

KERNEL_TOKEN_PREFIX = "lkt_"
KERNEL_TOKEN_ENV = "LUMEN_KERNEL_TOKEN"

log = logging.getLogger("lumen_jupyter.credentials")


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


class KernelCredentials:
    """The live kernel credentials of this server, by kernel id."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_digest: dict[str, str] = {}
        self._by_kernel: dict[str, str] = {}

    def issue(self, kernel_id: str) -> str:
        """A new credential for ``kernel_id`` (replacing any it had)."""
        token = KERNEL_TOKEN_PREFIX + secrets.token_urlsafe(32)
        digest = _digest(token)
        with self._lock:
            old = self._by_kernel.pop(kernel_id, None)
            if old is not None:
                self._by_digest.pop(old, None)
            self._by_kernel[kernel_id] = digest
            self._by_digest[digest] = kernel_id
        return token  # its lkt_ shape is masked in errors and logs (core.redact)

    def revoke(self, kernel_id: str) -> bool:
        """Forget the credential of ``kernel_id``; whether it had one."""
        with self._lock:
            digest = self._by_kernel.pop(kernel_id, None)
            if digest is None:
                return False
            self._by_digest.pop(digest, None)
        return True

    def valid(self, token: str) -> bool:
        return _digest(token) in self._by_digest

    def kernel_of(self, token: str) -> str | None:
        return self._by_digest.get(_digest(token))

    def __len__(self) -> int:
        return len(self._by_kernel)

    def attach(self, kernel_manager: Any) -> None:
        """Give every kernel that ``kernel_manager`` starts its own credential.

        jupyter_client's multi-kernel manager picks the kernel's id in
        ``pre_start_kernel(kernel_name, kwargs)`` and then starts the kernel with
        those very ``kwargs``: the credential goes into their ``env`` there.
        ``remove_kernel`` is where a kernel leaves the manager, whether it was
        shut down or died without restarting.
        """
        if getattr(kernel_manager, "_lumen_credentials", None) is self:
            return
        pre_start: Callable[..., Any] = kernel_manager.pre_start_kernel
        remove: Callable[..., Any] = kernel_manager.remove_kernel

        def pre_start_kernel(kernel_name: str | None, kwargs: dict[str, Any]) -> Any:
            started = pre_start(kernel_name, kwargs)
            kernel_id = started[2]
            env = dict(kwargs.get("env") or os.environ)
            env[KERNEL_TOKEN_ENV] = self.issue(kernel_id)
            kwargs["env"] = env
            return started

        def remove_kernel(kernel_id: str) -> Any:
            if self.revoke(kernel_id):
                log.debug("lumen: credential of kernel %s revoked", kernel_id)
            return remove(kernel_id)

        kernel_manager.pre_start_kernel = pre_start_kernel
        kernel_manager.remove_kernel = remove_kernel
        kernel_manager._lumen_credentials = self
