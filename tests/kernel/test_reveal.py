"""A secret is shown once, then replaced: by the next cell, or by a timer."""

from __future__ import annotations

import threading

from lumen_jupyter.kernel.display.render import Notice, View
from lumen_jupyter.kernel.display.reveal import OneTimeDisplays


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, bool]] = []
        self.updated = threading.Event()

    def __call__(self, view: View, display_id: str, update: bool) -> None:
        self.calls.append((view.text(), display_id, update))
        if update:
            self.updated.set()


def test_the_next_cell_replaces_the_secret() -> None:
    shown = Recorder()
    displays = OneTimeDisplays(shown)
    displays.show(Notice("sk_secret"), Notice("hint only"), "d1", seconds=60)
    assert shown.calls == [("i sk_secret", "d1", False)]
    displays.hide_all()
    assert shown.calls[-1] == ("i hint only", "d1", True)
    assert displays.pending == 0
    displays.hide_all()  # nothing left to replace
    assert len(shown.calls) == 2


def test_the_timer_replaces_it_and_the_next_cell_confirms() -> None:
    shown = Recorder()
    displays = OneTimeDisplays(shown)
    displays.show(Notice("sk_secret"), Notice("hint only"), "d2", seconds=0.05)
    assert shown.updated.wait(5)
    assert shown.calls[-1] == ("i hint only", "d2", True)
    assert displays.pending == 1  # sent again with the next cell, for front ends that missed it
    displays.hide_all()
    assert [c[2] for c in shown.calls] == [False, True, True]
    assert displays.pending == 0


def test_no_timer_with_zero_seconds() -> None:
    shown = Recorder()
    displays = OneTimeDisplays(shown)
    displays.show(Notice("sk_secret"), Notice("hint"), "d3", seconds=0)
    assert not shown.updated.wait(0.1)
    displays.hide_all()
    assert shown.calls[-1][2] is True
