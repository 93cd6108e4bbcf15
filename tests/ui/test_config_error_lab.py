"""JupyterLab on a server whose lumen could not load its configuration.

The status bar says "Lumen: configuration error" with the reason on hover, a click
(or "Lumen: Show Configuration Error" in the palette) shows the whole message, and
a notification says it once - the page never looks like a working lumen.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, expect

from .conftest import LabServer, start_lab
from .test_lab_plugin import run_command

METER = ".lumen-status-item"
BROKEN = """
version: 2
rate_limiting:
  limit: 100 per hour
"""
REASON = "rate_limiting.limit: '100 per hour' cannot be honoured here"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabServer]:
    yield from start_lab(
        tmp_path_factory, lumen_yaml=BROKEN, ready_status=503, checkout_frontend=True
    )


@pytest.fixture(scope="module")
def page(browser: Browser, server: LabServer) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, locale="en-US")
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(server.page_url("lab/workspaces/config-error?reset"))
    page.locator("#jp-main-statusbar").wait_for(timeout=60_000)
    yield page
    context.close()
    assert not errors, errors


def test_the_status_bar_says_configuration_error(page: Page, server: LabServer) -> None:
    status, body = server.request("GET", "lumen/api/profile")
    assert status == 503 and REASON in body["error"]["message"]

    meter = page.locator(METER)
    expect(meter).to_have_attribute("data-level", "config-error", timeout=30_000)
    expect(meter.locator(".lumen-status-coins")).to_have_text("Lumen: configuration error")
    assert REASON in (meter.get_attribute("title") or "")
    toast = page.locator(".Toastify__toast", has_text=REASON)
    expect(toast).to_be_visible(timeout=10_000)

    meter.click()
    dialog = page.locator(".jp-Dialog")
    expect(dialog).to_be_visible(timeout=10_000)
    expect(dialog.locator(".jp-Dialog-header")).to_have_text("Lumen: configuration error")
    expect(dialog.locator(".lumen-config-error")).to_contain_text(REASON)
    dialog.get_by_role("button", name="Close").click()
    expect(dialog).to_have_count(0)

    run_command(page, "Lumen: Show Configuration Error")
    expect(page.locator(".jp-Dialog .lumen-config-error")).to_contain_text(REASON)
