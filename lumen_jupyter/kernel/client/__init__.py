"""Talking to the gateway from a kernel: where it is, what to send, what comes back.

The HTTP clients (:class:`~.lumen_client.LumenClient`, :class:`~.async_client.AsyncLumenClient`)
and what they are made of: finding the gateway and the credential (:mod:`.connection`),
stamping each request with its notebook and cell (:mod:`.attribution`), one error type
(:mod:`.errors`), chat bodies and streamed answers (:mod:`.chat`), prices and estimates
(:mod:`.pricing`) and this session's own usage (:mod:`.tally`); and the same gateway
handed to other clients: ``openai`` (:mod:`.openai_clients`) and litellm
(:mod:`.litellm_setup`).  Nothing here displays anything.

Importing this package is cheap; the two clients are imported on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .async_client import AsyncLumenClient
    from .lumen_client import LumenClient

_EXPORTS = {"LumenClient": "lumen_client", "AsyncLumenClient": "async_client"}

__all__ = ["AsyncLumenClient", "LumenClient"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)
