"""Profile widgets for notebooks: views of the gateway's profile data.

``Profile(source)`` shows the whole page; ``BalanceCard``, ``KeysTable``,
``ModelTable`` and ``SpendingChart`` show one part each. ``source`` is any
object with the methods of :class:`ProfileSource` (normally the kernel client).
:func:`notify_call` makes live widgets refresh after a model call.

The widget classes are imported on first use, so the kernel client can import
:func:`notify_call` without loading anywidget.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..kernel.client.call_listeners import notify_call
from .source import ProfileSource

if TYPE_CHECKING:
    from .profile import BalanceCard, KeysTable, ModelTable, Profile, SpendingChart

__all__ = [
    "BalanceCard",
    "KeysTable",
    "ModelTable",
    "Profile",
    "ProfileSource",
    "SpendingChart",
    "notify_call",
]

_WIDGETS = {"BalanceCard", "KeysTable", "ModelTable", "Profile", "SpendingChart"}


def __getattr__(name: str) -> Any:
    if name in _WIDGETS:
        from . import profile

        return getattr(profile, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
