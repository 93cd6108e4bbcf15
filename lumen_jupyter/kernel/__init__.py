"""The kernel side of lumen-jupyter: a client, the ``%lumen`` magics, openai clients.

Split by job: :mod:`.client` talks to the gateway, :mod:`.magics` runs ``%lumen``
and ``%%lumen``, :mod:`.display` renders what they show.  Importing this package is
cheap; each name is imported on first use::

    from lumen_jupyter.kernel import LumenClient, AsyncLumenClient, LumenAPIError
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "LumenClient": "client.lumen_client",
    "AsyncLumenClient": "client.async_client",
    "LumenAPIError": "client.errors",
    "Connection": "client.connection",
    "RawKey": "client.connection",
    "discover": "client.connection",
    "LumenMagics": "magics.lumen_magics",
    "load_ipython_extension": "magics.lumen_magics",
    "unload_ipython_extension": "magics.lumen_magics",
    "openai_client": "client.openai_clients",
    "async_openai_client": "client.openai_clients",
    "SESSION": "client.tally",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)
