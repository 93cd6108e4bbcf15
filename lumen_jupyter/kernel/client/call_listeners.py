"""What refreshes after a model call made from this kernel: the live profile widgets.

The client calls :func:`notify_call` after every model call; a widget registers
itself here when shown.  The registry lives with the client (the widgets build on
the client, not the other way round) and imports nothing, so the call costs
nothing when no widget is shown.
"""

from __future__ import annotations

import threading
import weakref
from typing import Protocol


class Refreshable(Protocol):
    def refresh_soon(self) -> None: ...


_live: weakref.WeakSet[Refreshable] = weakref.WeakSet()
_lock = threading.Lock()


def register(widget: Refreshable) -> None:
    with _lock:
        _live.add(widget)


def unregister(widget: Refreshable) -> None:
    with _lock:
        _live.discard(widget)


def live_widgets() -> list[Refreshable]:
    with _lock:
        return list(_live)


def notify_call(model: str | None = None) -> None:
    """Tell every live profile widget in this kernel that a model call was made.

    Each refreshes shortly after, off the caller's thread (calls made in a burst
    cause one refresh). ``model`` is informational.
    """
    del model
    for widget in live_widgets():
        widget.refresh_soon()
