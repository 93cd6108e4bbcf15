"""The same views in other hosts: the widget in Notebook 7, and the Lab panel
("Lumen: Open Profile") fed from the REST API.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, expect

from .conftest import LabServer
from .lab import SETUP, column_texts, open_and_run, shot, tile


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, locale="en-US")
    page = context.new_page()
    yield page
    context.close()


@pytest.mark.skipif(
    importlib.util.find_spec("notebook") is None, reason="Notebook 7 is not installed"
)
def test_notebook7_renders_the_same_widget(page: Page, seeded: LabServer) -> None:
    seeded.write_notebook(
        "nb7.ipynb",
        [
            SETUP
            + "source = RestSource.from_environment()\n"
            + "profile = widgets.Profile(source, refresh_interval=0)\nprofile"
        ],
    )
    view = open_and_run(page, seeded, "nb7.ipynb", app="notebook")
    assert page.url.split("?")[0].endswith("/notebooks/nb7.ipynb")
    api = seeded.api("GET", "profile")
    expect(view.locator(".lumen-tile")).to_have_count(6)
    expect(tile(view, "coins-available").locator(".lumen-balance")).to_have_text(
        api["pool"]["balance"]["text"]
    )
    expect(tile(view, "refill-rate").locator(".lumen-countdown")).to_have_text(
        re.compile(r"^\d{1,2}:\d\d$")
    )
    assert column_texts(view.locator(".lumen-models-table"), "model") == [
        "demo-free",
        "demo-pro",
        "demo-restricted",
    ]
    expect(view.locator(".lumen-keys-table")).to_have_count(1)
    expect(view.locator("svg.lumen-chart")).to_have_count(1)
    # An intent round trip in this host too.
    view.locator(".lumen-models-table").get_by_role("button", name="demo-free").click()
    expect(page.get_by_role("dialog", name="demo-free")).to_contain_text("A free demo model")
    page.keyboard.press("Escape")
    view.get_by_role("button", name="Refresh the profile").click()
    expect(view).to_have_attribute("aria-busy", "false")
    shot(view, "profile-notebook7.png", tall=2300)


def test_lab_panel_from_rest(page: Page, seeded: LabServer) -> None:
    page.goto(seeded.page_url("lab/workspaces/panel?reset"))
    page.locator("#jp-main-dock-panel").wait_for(timeout=60_000)
    page.locator("#jp-MainMenu").wait_for(timeout=60_000)
    page.wait_for_timeout(1500)
    palette = page.locator(".lm-CommandPalette-input:visible")
    for _attempt in range(3):
        page.locator("#jp-MainMenu").get_by_text("View", exact=True).click()
        page.locator(".lm-Menu:visible").get_by_text(re.compile("Command Palette")).click()
        try:
            palette.wait_for(timeout=5_000)
            break
        except Exception:
            page.keyboard.press("Escape")
    palette.fill("Lumen: Open Profile")
    item = page.locator(".lm-CommandPalette-item", has_text="Lumen: Open Profile")
    expect(item).to_have_count(1)
    item.click()
    panel = page.locator(".lumen-panel .lumen-profile")
    expect(panel).to_be_visible(timeout=30_000)
    expect(page.locator(".lm-TabBar-tab", has_text="Lumen Profile")).to_have_count(1)
    api = seeded.api("GET", "profile")
    expect(tile(panel, "coins-available").locator(".lumen-balance")).to_have_text(
        api["pool"]["balance"]["text"]
    )
    expect(tile(panel, "groups")).to_contain_text("research")
    keys = {k["name"] for k in seeded.api("GET", "keys")["keys"]}
    expect(panel.locator(".lumen-keys-table")).to_have_attribute("data-rows", str(len(keys)))
    # The same dialogs, over REST: create a key, see it once, name it.
    panel.get_by_role("button", name="+ New API Key").click()
    dialog = page.get_by_role("dialog", name="New API Key")
    raw = dialog.get_by_label("Your new key").input_value()
    assert re.fullmatch(r"sk_[A-Za-z0-9_-]{43}", raw)
    dialog.get_by_label("Name").fill("panel-key")
    dialog.get_by_role("button", name="Save Key").click()
    expect(dialog).to_have_count(0)
    expect(
        panel.locator(".lumen-keys-table td[data-column='name']", has_text="panel-key")
    ).to_have_count(1)
    assert raw not in page.content()
    names = {k["name"] for k in seeded.api("GET", "keys")["keys"]}
    assert "panel-key" in names
    # Revoke it again, with confirmation.
    row = panel.locator(
        ".lumen-keys-table tr", has=page.locator("td[data-column='name']", has_text="panel-key")
    )
    row.get_by_role("button", name=re.compile("Revoke")).click()
    page.get_by_role("dialog", name="Revoke API key?").get_by_role("button", name="Revoke").click()
    expect(
        panel.locator(".lumen-keys-table td[data-column='name']", has_text="panel-key")
    ).to_have_count(0)
    shot(page, "profile-lab-panel.png")
