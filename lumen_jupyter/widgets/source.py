"""Where the profile widgets get their data: any object with these methods.

The widgets are views (DESIGN.md, principle 4): they never make HTTP calls of
their own. The kernel-side client (``lumen_jupyter.kernel.client.LumenClient``)
is the usual source; a test or another host can pass anything that fits
:class:`ProfileSource`. Every method returns the JSON of the profile REST API
(``lumen_jupyter/server/openapi.py``).

A source may also have ``key_page(include_revoked=False, *, limit, offset=0)`` and
``model_page(*, limit, offset=0)``, answering ``{"keys"|"models": [...], "total": n}``
as ``GET keys`` / ``GET models`` do with ``limit`` and ``offset``: the widgets then show
the first screen's rows before fetching the whole lists (the kernel client has both).
"""

from __future__ import annotations

import os
import threading
from typing import Any, Protocol, cast, runtime_checkable


@runtime_checkable
class ProfileSource(Protocol):
    """The data and actions behind the profile widgets."""

    def profile(self) -> dict[str, Any]:
        """``{user, tiles, pool, web_chat, server_time}``."""
        ...

    def keys(self, include_revoked: bool = False) -> list[dict[str, Any]]:
        """The personal API keys (never the raw keys)."""
        ...

    def create_key(self, name: str | None = None) -> dict[str, Any]:
        """A new key; the dict carries the raw ``"key"``, shown once. No name: a draft."""
        ...

    def save_key(self, id: int, name: str, **limits: Any) -> dict[str, Any]:
        """Name a key; a draft becomes active, with its ``budget`` and expiry if given."""
        ...

    def revoke_key(self, id: int) -> dict[str, Any]:
        """Revoke an active key (history kept) or discard a draft."""
        ...

    def models(self) -> list[dict[str, Any]]:
        """Model Access rows: usage, access, status, notice, notice_digest."""
        ...

    def consent(self, name: str, notice_digest: str | None = None) -> dict[str, Any]:
        """Acknowledge a model's notice; returns the model's updated row."""
        ...

    def usage(
        self, period: str = "month", bucket: str | None = None, group_by: str = "model"
    ) -> dict[str, Any]:
        """Spending history: ``{period, bucket, group_by, series, buckets, totals}``."""
        ...


_shared: dict[tuple[str, ...], ProfileSource] = {}
_shared_lock = threading.Lock()


def default_source() -> ProfileSource:
    """The kernel's own client of the gateway, when one is available.

    One client per kernel (per gateway and credential in the environment): every widget
    shares its connections instead of setting up an HTTP client of its own.
    """
    try:
        from ..kernel.client import connection
        from ..kernel.client.lumen_client import LumenClient  # type: ignore[import-not-found,unused-ignore]
    except ImportError as exc:
        raise RuntimeError(
            "The profile widgets need a data source: pass one, e.g. "
            "Profile(source), where source has the methods of "
            "lumen_jupyter.widgets.ProfileSource"
        ) from exc
    names = (
        connection.KERNEL_URL_ENV,
        connection.KERNEL_TOKEN_ENV,
        connection.BASE_URL_ENV,
        connection.API_KEY_ENV,
    )
    key = tuple(os.environ.get(name, "") for name in names)
    with _shared_lock:
        client = _shared.get(key)
        if client is None:
            factory = getattr(LumenClient, "from_environment", None)
            client = cast(ProfileSource, factory() if callable(factory) else LumenClient())
            _shared[key] = client
        return client
