"""lumen-jupyter: a Jupyter-native AI gateway with coin budgets.

The server extension holds the keys, proxies OpenAI-compatible calls and does
the accounting; kernels and browsers see only their own credential.

In a notebook: ``%load_ext lumen_jupyter`` (magics), ``lumen_jupyter.client()``
(the profile API), ``lumen_jupyter.openai_client()`` (an ``openai`` client for the
gateway), ``lumen_jupyter.Profile()`` (the whole profile page as a widget) and its parts
``BalanceCard``, ``KeysTable``, ``ModelTable`` and ``SpendingChart``.  These import
their dependencies on first use, so importing this package in a kernel stays cheap
and never imports jupyter_server (nor anywidget until a widget is asked for).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._version import __version__

if TYPE_CHECKING:
    import openai

    from .kernel.client.lumen_client import LumenClient
    from .widgets import BalanceCard, KeysTable, ModelTable, Profile, SpendingChart

__all__ = [
    "BalanceCard",
    "KeysTable",
    "ModelTable",
    "Profile",
    "SpendingChart",
    "__version__",
    "async_openai_client",
    "client",
    "load_ipython_extension",
    "openai_client",
    "unload_ipython_extension",
]


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    from .server.app import LumenJupyter

    return [{"module": "lumen_jupyter", "app": LumenJupyter}]


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    return [{"src": "labextension", "dest": "lumen-jupyter"}]


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext lumen_jupyter``: the ``%lumen`` and ``%%lumen`` magics."""
    from .kernel.magics.lumen_magics import load_ipython_extension as load

    load(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    from .kernel.magics.lumen_magics import unload_ipython_extension as unload

    unload(ipython)


def client(base_url: str | None = None, api_key: str | None = None, **kwargs: Any) -> LumenClient:
    """A :class:`~lumen_jupyter.kernel.client.lumen_client.LumenClient` for the gateway.

    With no arguments it finds the gateway by itself: in a kernel started by the
    Jupyter server, else from ``LUMEN_BASE_URL`` and ``LUMEN_API_KEY``.
    """
    from .kernel.client.lumen_client import LumenClient

    return LumenClient(base_url, api_key, **kwargs)


def openai_client(
    base_url: str | None = None, api_key: str | None = None, **kwargs: Any
) -> openai.OpenAI:
    """An ``openai.OpenAI`` client configured for the gateway."""
    from .kernel.client.openai_clients import openai_client as make

    return make(base_url, api_key, **kwargs)


def async_openai_client(
    base_url: str | None = None, api_key: str | None = None, **kwargs: Any
) -> openai.AsyncOpenAI:
    """An ``openai.AsyncOpenAI`` client configured for the gateway."""
    from .kernel.client.openai_clients import async_openai_client as make

    return make(base_url, api_key, **kwargs)


# The widgets load anywidget on first use only (PEP 562), so ``import lumen_jupyter``
# stays cheap in a kernel that never shows one.
_WIDGETS = frozenset({"BalanceCard", "KeysTable", "ModelTable", "Profile", "SpendingChart"})


def __getattr__(name: str) -> Any:
    if name in _WIDGETS:
        from . import widgets

        return getattr(widgets, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | _WIDGETS)
