"""``%lumen keys new`` in JupyterLab: the key shows in the widget view, never in the file.

The notebook is saved while the key is on screen (the save that used to keep it).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, expect

from .conftest import LabServer
from .lab import read_notebook, run_all, save_notebook, wait_kernel_idle

NOTEBOOK = "magic-key.ipynb"
KEY_RE = re.compile(r"^sk_[A-Za-z0-9_-]{43}$")


@pytest.fixture(scope="module")
def page(browser: Browser, lab_server: LabServer) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, locale="en-US")
    page = context.new_page()
    yield page
    context.close()


def test_new_key_magic_shows_the_key_in_the_widget_only(page: Page, lab_server: LabServer) -> None:
    lab_server.write_notebook(NOTEBOOK, ["%load_ext lumen_jupyter\n%lumen keys new lab-magic"])
    page.goto(lab_server.page_url(f"lab/workspaces/magic-key/tree/{NOTEBOOK}?reset"))
    page.locator(".jp-Notebook .jp-Cell").first.wait_for(timeout=60_000)
    wait_kernel_idle(page)
    run_all(page)
    field = page.locator(".lumen-new-key input")
    field.wait_for(timeout=60_000)
    raw = field.input_value()
    assert KEY_RE.match(raw), raw
    expect(page.locator(".lumen-new-key")).to_contain_text("lab-magic")
    # The fallback text is not what Lab shows: the widget view is.
    expect(page.get_by_text("If no widget shows it here")).to_have_count(0)
    assert lab_server.chat("demo-free", auth=f"Bearer {raw}") == 200  # the real key

    save_notebook(page)
    text, notebook = read_notebook(lab_server, NOTEBOOK)
    outputs = notebook["cells"][0]["outputs"]
    assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in outputs)
    assert "lab-magic" in text
    assert raw not in text and raw[3:20] not in text
    # Leave the shared server's key list as the other browser tests expect it.
    keys = lab_server.api("GET", "keys")["keys"]
    lab_server.api("DELETE", f"keys/{next(k['id'] for k in keys if k['name'] == 'lab-magic')}")
