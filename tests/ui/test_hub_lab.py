"""JupyterLab under a real JupyterHub: alice's coin meter, and carol granting her coins.

The hub is the end-to-end tests' (``tests/hub/hub.py``): the npm proxy, the lumen
service with two workers on PostgreSQL, alice's server in hub mode.  alice logs in
through the hub's login page and sees her meter; carol logs in to the service's admin
page and grants alice coins; alice's meter moves within 2 s, its event coming from the
service (from whichever worker serves her stream) through her server.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, expect

from tests import pg
from tests.hub.hub import DEFAULT_MAX, Hub, hub_for_tests

from .conftest import write_setting
from .lab import shot

pytestmark = pytest.mark.postgres

METER = ".lumen-status-item"
COIN = 1_000_000


@pytest.fixture(scope="module")
def hub(postgres_server: pg.PostgresServer) -> Iterator[Hub]:
    with hub_for_tests(postgres_server, "lumen-hub-ui-") as running:
        settings = running.home("alice") / ".jupyter" / "lab" / "user-settings"
        news = {"fetchNews": "false", "checkForUpdates": False}
        write_setting(settings, "@jupyterlab/apputils-extension", "notification", news)
        running.start_server("alice")
        yield running


@contextlib.contextmanager
def logged_in(browser: Browser, hub: Hub, user: str, next_path: str) -> Iterator[Page]:
    """A browser of its own, logged in to the hub as ``user`` on its login page."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, locale="en-US")
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{hub.url}/hub/login?next={next_path}")
    page.locator("input[name=username]").fill(user)
    page.locator("input[name=password]").fill("any password")
    page.locator("input[name=password]").press("Enter")
    try:
        yield page
    finally:
        context.close()
    assert not errors, errors


def micro(page: Page) -> int:
    return int(page.locator(METER).get_attribute("data-micro") or "0")


def grant_on_admin_page(page: Page, user: str, coins: int) -> None:
    """carol's admin page: the user's Grant button, the amount, Grant."""
    page.get_by_role("button", name=f"Grant {user}", exact=True).click(timeout=30_000)
    dialog = page.get_by_role("dialog", name="Grant coins")
    dialog.locator("input[name=coins]").fill(str(coins))
    dialog.get_by_role("button", name="Grant", exact=True).click()
    expect(dialog).to_be_hidden(timeout=10_000)


def test_carol_grants_on_the_admin_page_and_alices_meter_moves(browser: Browser, hub: Hub) -> None:
    with logged_in(browser, hub, "alice", "/user/alice/lab") as alice:
        alice.locator("#jp-main-statusbar").wait_for(timeout=60_000)
        meter = alice.locator(METER)
        expect(meter).to_be_visible(timeout=30_000)
        expect(meter).to_have_attribute("data-connected", "true", timeout=15_000)
        expect(meter.locator(".lumen-status-coins")).to_have_text(f"{DEFAULT_MAX} / {DEFAULT_MAX}")
        shot(alice, "hub-lab-status-bar.png")
        before = micro(alice)
        with logged_in(browser, hub, "carol", "/services/lumen/admin/") as carol:
            grant_on_admin_page(carol, "alice", 7)
            granted = time.monotonic()
            shot(carol, "hub-admin-page.png")
            expect(meter).to_have_attribute("data-micro", str(before + 7 * COIN), timeout=2_000)
            assert time.monotonic() - granted < 2.0
        assert hub.balance("alice") == before + 7 * COIN
