"""Driving JupyterLab and Notebook 7 pages: open a notebook, run it, wait for the widget."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

from playwright.sync_api import Locator, Page, expect

from .conftest import SCREENSHOTS, LabServer

SETUP = (
    "import sys\n"
    "from rest_source import RestSource\n"
    "from fake_source import FakeSource\n"
    "from lumen_jupyter import widgets\n"
)


def run_all(page: Page, app: str = "lab") -> None:
    """Run every cell through the Run menu (the same in Lab and Notebook 7)."""
    menu = page.locator("#jp-MainMenu, #jp-menu-panel, .lm-MenuBar").first
    menu.get_by_text("Run", exact=True).first.click()
    page.locator(".lm-Menu:visible").get_by_text("Run All Cells", exact=True).click()


def wait_kernel_idle(page: Page, app: str = "lab", timeout: float = 60_000) -> None:
    if app == "lab":
        page.get_by_text(re.compile(r"Python 3 \(ipykernel\) \| Idle")).wait_for(timeout=timeout)
    else:
        page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']").first.wait_for(
            state="attached", timeout=timeout
        )
        time.sleep(2)


def open_and_run(
    page: Page, server: LabServer, name: str, *, app: str = "lab", expect_count: int = 1
) -> Locator:
    """Open ``name``, run all cells, and return the first rendered profile view."""
    # Its own workspace (reset), so no other notebook is restored beside it.
    workspace = re.sub(r"[^A-Za-z0-9_-]", "-", name)
    path = f"lab/workspaces/{workspace}/tree/{name}?reset" if app == "lab" else f"notebooks/{name}"
    page.goto(server.page_url(path))
    page.locator(".jp-Notebook .jp-Cell").first.wait_for(timeout=60_000)
    wait_kernel_idle(page, app)
    views = page.locator(".lumen-profile")
    for _attempt in range(3):
        run_all(page, app)
        try:
            views.nth(expect_count - 1).wait_for(timeout=30_000)
            break
        except Exception:
            time.sleep(1)
    else:
        raise AssertionError(f"the widget did not render in {name}")
    first = views.first
    expect(first).to_have_attribute("aria-busy", "false", timeout=30_000)
    return first


def save_notebook(page: Page) -> None:
    # Focus may be in a profile view (a dialog gives it back to its opener), where
    # notebook shortcuts are suppressed: the shortcut goes to the notebook.
    page.evaluate("() => document.activeElement && document.activeElement.blur()")
    page.keyboard.press("Control+s")
    time.sleep(1.5)


def read_notebook(server: LabServer, name: str) -> tuple[str, dict[str, Any]]:
    text = (server.root / name).read_text(encoding="utf-8")
    return text, json.loads(text)


def shot(target: Page | Locator, name: str, *, tall: int = 0) -> Path:
    """Save a screenshot in docs/screenshots. ``tall``: first grow the viewport so a
    long widget is not clipped by the notebook's scroll area."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / name
    page = target if isinstance(target, Page) else target.page
    size = page.viewport_size
    if tall and size:
        page.set_viewport_size({"width": size["width"], "height": tall})
        time.sleep(0.8)
    try:
        if isinstance(target, Locator):
            target.scroll_into_view_if_needed()
            time.sleep(0.3)
        target.screenshot(path=str(path), animations="disabled")
    finally:
        if tall and size:
            page.set_viewport_size(size)
    return path


def tile(view: Locator, name: str) -> Locator:
    return view.locator(f"[data-tile='{name}']")


def column_texts(table: Locator, column: str) -> list[str]:
    return [t.strip() for t in table.locator(f"tbody td[data-column='{column}']").all_inner_texts()]
