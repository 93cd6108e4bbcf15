"""The Profile widget in JupyterLab against a real server (REST source in the kernel).

One page for the module; the tests run in order and build on each other (seeded
usage -> tiles; create, discard, revoke keys; consent; theme last).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser, Locator, Page, expect

from .conftest import LabServer
from .lab import SETUP, column_texts, open_and_run, read_notebook, save_notebook, shot, tile

NOTEBOOK = "profile.ipynb"
KEY_RE = re.compile(r"^sk_[A-Za-z0-9_-]{43}$")


@pytest.fixture(scope="module")
def page(browser: Browser, seeded: LabServer) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, locale="en-US")
    origin = seeded.url.split("/lumen-ui/")[0]
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=origin)
    page = context.new_page()
    yield page
    context.close()


@pytest.fixture(scope="module")
def view(page: Page, seeded: LabServer) -> Locator:
    seeded.write_notebook(
        NOTEBOOK,
        [
            SETUP
            + "source = RestSource.from_environment()\n"
            + "profile = widgets.Profile(source, refresh_interval=0)\nprofile"
        ],
    )
    return open_and_run(page, seeded, NOTEBOOK)


def test_profile_card_and_six_tiles(view: Locator, seeded: LabServer) -> None:
    api = seeded.api("GET", "profile")
    expect(view.locator(".lumen-display-name")).to_have_text("Ada Lovelace")
    expect(view.locator(".lumen-email")).to_have_text("ada@example.org")
    # No network to Gravatar here: initials on a colour, never a broken image.
    expect(view.locator(".lumen-avatar-initials")).to_have_text("AL")
    expect(view.locator(".lumen-avatar img")).to_have_count(0, timeout=15_000)
    labels = view.locator(".lumen-tile-label").all_inner_texts()
    assert [t.lower() for t in labels] == [
        "groups",
        "coins used",
        "tokens used",
        "favorite model",
        "coins available",
        "refill rate",
    ]
    expect(tile(view, "groups")).to_contain_text("research")
    expect(tile(view, "coins-used").locator(".lumen-tile-value")).to_have_text(
        api["tiles"]["coins_used"]["text"]
    )
    expect(tile(view, "tokens-used").locator(".lumen-tile-value")).to_have_text(
        f"{api['tiles']['tokens_used']:,}"
    )
    expect(tile(view, "favorite-model")).to_contain_text(api["tiles"]["favorite_model"])
    available = tile(view, "coins-available")
    expect(available.locator(".lumen-balance")).to_have_text(api["pool"]["balance"]["text"])
    expect(available.locator(".lumen-balance-max")).to_have_text(" / 20")
    bar = available.get_by_role("progressbar")
    expect(bar).to_have_attribute("aria-valuemax", "100")
    assert 95 <= int(bar.get_attribute("aria-valuenow") or "0") <= 100
    expect(tile(view, "refill-rate").locator(".lumen-refill-rate")).to_have_text("+1/hr")
    expect(tile(view, "refill-rate").locator(".lumen-countdown")).to_have_text(
        re.compile(r"^\d{1,2}:\d\d$")
    )


def test_countdown_ticks_every_second(view: Locator) -> None:
    countdown = view.locator(".lumen-countdown")

    def seconds() -> int:
        minutes, secs = countdown.inner_text().split(":")
        return int(minutes) * 60 + int(secs)

    first = seconds()
    time.sleep(2.2)
    second = seconds()
    assert 1 <= first - second <= 3, (first, second)


def test_web_chat_row(view: Locator, seeded: LabServer) -> None:
    chat = seeded.api("GET", "profile")["web_chat"]
    row = view.locator(".lumen-webchat-table")
    headers = [h.strip().lower() for h in row.locator("th").all_inner_texts()]
    assert headers == ["conversations", "requests", "tokens", "coins", "last used"]
    expect(row.locator("td[data-column='conversations']")).to_have_text(str(chat["conversations"]))
    expect(row.locator("td[data-column='requests']")).to_have_text(str(chat["requests"]))
    expect(row.locator("td[data-column='tokens']")).to_have_text(f"{chat['tokens']:,}")
    expect(row.locator("td[data-column='last-used'] time")).to_have_text(
        re.compile(r"^(just now|\d+ min ago)$")
    )


def revoked_count(server: LabServer) -> int:
    keys = server.api("GET", "keys?include_revoked=true")["keys"]
    return sum(1 for k in keys if k["status"] == "revoked")


def test_keys_table_columns_sorting_and_deleted(view: Locator, seeded: LabServer) -> None:
    table = view.locator(".lumen-keys-table")
    headers = [h.strip().lower() for h in table.locator("thead th").all_inner_texts()]
    assert headers == [
        "name",
        "hint",
        "requests",
        "tokens",
        "coins",
        "budget",
        "expires",
        "last used",
        "actions",
    ]
    assert column_texts(table, "name") == ["ci-runner", "my-research-script"]
    hint = column_texts(table, "hint")[0]
    assert re.fullmatch(r"sk_.…....", hint), hint
    requests = table.locator("th[data-column='requests']")
    requests.get_by_role("button").click()
    expect(requests).to_have_attribute("aria-sort", "descending")
    assert column_texts(table, "name") == ["my-research-script", "ci-runner"]
    requests.get_by_role("button").click()
    expect(requests).to_have_attribute("aria-sort", "ascending")
    assert column_texts(table, "name") == ["ci-runner", "my-research-script"]
    # Keyboard: Tab to a header button, Enter sorts.
    last_used = table.locator("th[data-column='last_used'] button")
    last_used.focus()
    last_used.press("Enter")
    expect(table.locator("th[data-column='last_used']")).to_have_attribute(
        "aria-sort", "descending"
    )
    assert column_texts(table, "name")[0] == "my-research-script"  # never-used keys last
    table.locator("th[data-column='name'] button").click()
    # Show deleted keys: the revoked key, struck through.
    view.get_by_label("Show deleted keys").check()
    expect(table.locator("tr.lumen-revoked")).to_have_count(revoked_count(seeded))
    revoked = table.locator("tr.lumen-revoked", has_text="old-laptop")
    expect(revoked).to_have_count(1)
    decoration = revoked.locator("td[data-column='name']").evaluate(
        "e => getComputedStyle(e).textDecorationLine"
    )
    assert "line-through" in decoration
    expect(revoked.locator("td[data-column='actions']")).to_have_text("Revoked")
    view.get_by_label("Show deleted keys").uncheck()
    expect(table.locator("tr.lumen-revoked")).to_have_count(0)


def test_new_key_is_shown_once_and_never_saved(
    view: Locator, page: Page, seeded: LabServer
) -> None:
    view.get_by_role("button", name="+ New API Key").click()
    dialog = page.get_by_role("dialog", name="New API Key")
    expect(dialog).to_be_visible()
    field = dialog.get_by_label("Your new key")
    raw = field.input_value()
    assert KEY_RE.match(raw), raw
    expect(field).to_have_attribute("readonly", "")
    dialog.get_by_role("button", name="Copy").click()
    expect(dialog.locator(".lumen-copy-status")).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == raw
    # Escape does not throw the key away; Save Key needs a name.
    page.keyboard.press("Escape")
    expect(dialog).to_be_visible()
    dialog.get_by_role("button", name="Save Key").click()
    expect(dialog.get_by_role("alert")).to_contain_text("name")
    dialog.get_by_label("Name").fill("ui-test-key")
    # A budget and an expiry of its own, checked before anything is sent.
    dialog.get_by_label("Budget (coins, optional)").fill("lots")
    dialog.get_by_role("button", name="Save Key").click()
    expect(dialog.get_by_role("alert")).to_contain_text("number of coins")
    dialog.get_by_label("Budget (coins, optional)").fill("0.5")
    dialog.get_by_label("Expires").select_option(label="7 days")
    dialog.get_by_role("button", name="Save Key").click()
    expect(dialog).to_have_count(0)
    table = view.locator(".lumen-keys-table")
    expect(table.locator("td[data-column='name']", has_text="ui-test-key")).to_have_count(1)
    row = table.locator("tr", has=page.locator("td", has_text="ui-test-key"))
    expect(row.locator("td[data-column='hint']")).to_have_text(f"{raw[:4]}…{raw[-4:]}")
    expect(row.locator("td[data-column='budget']")).to_have_text("0.5 left of 0.5")
    expect(row.locator("td[data-column='expires']")).not_to_have_text("Never")
    saved = next(k for k in seeded.api("GET", "keys")["keys"] if k["name"] == "ui-test-key")
    assert saved["budget"] == "0.5" and saved["expires_at"]
    assert raw not in page.content()
    # The key works at the gateway: it is the real one.
    assert seeded.chat("demo-free", auth=f"Bearer {raw}") == 200

    save_notebook(page)
    text, notebook = read_notebook(seeded, NOTEBOOK)
    state = notebook["metadata"]["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    assert any("ui-test-key" in str(model["state"].get("api_keys")) for model in state.values())
    assert raw not in text

    page.reload()
    page.locator(".lumen-profile").first.wait_for(timeout=60_000)
    expect(
        page.locator(".lumen-keys-table td[data-column='name']", has_text="ui-test-key")
    ).to_have_count(1)
    expect(page.get_by_role("dialog")).to_have_count(0)
    assert raw not in page.content()
    seeded.extra["ui_key"] = raw


def test_discard_stores_nothing(view: Locator, page: Page, seeded: LabServer) -> None:
    view = page.locator(".lumen-profile").first
    before = seeded.api("GET", "keys?include_revoked=true")["keys"]
    view.get_by_role("button", name="+ New API Key").click()
    dialog = page.get_by_role("dialog", name="New API Key")
    raw = dialog.get_by_label("Your new key").input_value()
    dialog.get_by_role("button", name="Discard").click()
    expect(dialog).to_have_count(0)
    after = seeded.api("GET", "keys?include_revoked=true")["keys"]
    assert [k["id"] for k in after] == [k["id"] for k in before]
    assert seeded.chat("demo-free", auth=f"Bearer {raw}") == 401


def test_revoke_asks_first(page: Page, seeded: LabServer) -> None:
    view = page.locator(".lumen-profile").first
    table = view.locator(".lumen-keys-table")
    row = table.locator("tr", has=page.locator("td[data-column='name']", has_text="ci-runner"))
    row.get_by_role("button", name=re.compile("Revoke")).click()
    confirm = page.get_by_role("dialog", name="Revoke API key?")
    expect(confirm).to_contain_text("ci-runner")
    expect(confirm.get_by_role("button", name="Cancel")).to_be_focused()
    confirm.get_by_role("button", name="Cancel").click()
    expect(confirm).to_have_count(0)
    expect(row).to_have_count(1)
    row.get_by_role("button", name=re.compile("Revoke")).click()
    page.get_by_role("dialog", name="Revoke API key?").get_by_role("button", name="Revoke").click()
    expect(table.locator("td[data-column='name']", has_text="ci-runner")).to_have_count(0)
    keys = {k["name"]: k for k in seeded.api("GET", "keys?include_revoked=true")["keys"]}
    assert keys["ci-runner"]["status"] == "revoked"
    view.get_by_label("Show deleted keys").check()
    expect(table.locator("tr.lumen-revoked")).to_have_count(revoked_count(seeded))
    expect(table.locator("tr.lumen-revoked", has_text="ci-runner")).to_have_count(1)
    view.get_by_label("Show deleted keys").uncheck()


def test_model_table_badges_search_and_detail(page: Page) -> None:
    view = page.locator(".lumen-profile").first
    table = view.locator(".lumen-models-table")
    headers = [h.strip().lower() for h in table.locator("thead th").all_inner_texts()]
    assert headers == ["model", "requests", "tokens", "coins", "last used", "access", "status"]
    assert column_texts(table, "model") == ["demo-free", "demo-pro", "demo-restricted"]
    assert column_texts(table, "access") == ["Allowed", "Allowed", "Need Consent"]
    assert column_texts(table, "status") == ["ok", "ok", "ok"]
    table.locator("th[data-column='coins'] button").click()
    assert column_texts(table, "model")[0] == "demo-pro"
    table.locator("th[data-column='model'] button").click()
    search = view.get_by_label("Search models by name")
    search.fill("PRO")
    assert column_texts(table, "model") == ["demo-pro"]
    search.fill("")
    expect(table.locator("tbody tr")).to_have_count(3)
    # The model's detail, from its name.
    table.get_by_role("button", name="demo-pro").click()
    detail = page.get_by_role("dialog", name="demo-pro")
    expect(detail).to_contain_text("A priced demo model")
    expect(detail).to_contain_text("50 coins / 1M tokens")
    expect(detail).to_contain_text("150 coins / 1M tokens")
    expect(detail).to_contain_text("32,768 tokens")
    capability = detail.get_by_role("row", name="Function calling")
    expect(capability.get_by_role("cell")).to_have_text("Yes")
    page.keyboard.press("Escape")
    expect(detail).to_have_count(0)
    expect(table.get_by_role("button", name="demo-pro")).to_be_focused()


def test_consent_flips_the_row_in_place(page: Page, seeded: LabServer) -> None:
    view = page.locator(".lumen-profile").first
    table = view.locator(".lumen-models-table")
    badge = table.get_by_role("button", name="Need Consent")
    badge.focus()
    badge.press("Enter")
    notice = page.get_by_role("dialog", name="Notice for demo-restricted")
    expect(notice).to_contain_text("demo-restricted stands for a model with terms of use")
    notice.get_by_role("button", name="Cancel").click()
    expect(notice).to_have_count(0)
    assert column_texts(table, "access")[2] == "Need Consent"
    table.get_by_role("button", name="Need Consent").click()
    page.get_by_role("dialog", name="Notice for demo-restricted").get_by_role(
        "button", name="Accept"
    ).click()
    expect(table.locator("tr[data-model='demo-restricted'] td[data-column='access']")).to_have_text(
        "Consented"
    )
    assert column_texts(table, "model") == ["demo-free", "demo-pro", "demo-restricted"]
    models = {m["name"]: m for m in seeded.api("GET", "models")["models"]}
    assert models["demo-restricted"]["access"] == "consented"


def test_spending_chart(page: Page) -> None:
    view = page.locator(".lumen-profile").first
    spending = view.locator(".lumen-spending")
    chart = spending.locator("svg.lumen-chart")
    expect(chart).to_have_attribute("role", "img")
    assert "stacked by model" in (chart.get_attribute("aria-label") or "")
    # Coins: only demo-pro costs anything (demo-free is free).
    assert chart.locator("rect").count() >= 1
    legend = spending.locator(".lumen-legend li")
    names = [n.strip() for n in legend.locator(".lumen-legend-name").all_inner_texts()]
    assert names == ["demo-pro"]
    assert chart.locator("text").count() > 4  # axis labels
    expect(spending.get_by_role("button", name="Month")).to_have_attribute("aria-pressed", "true")
    spending.get_by_role("button", name="Week").click()
    expect(spending.get_by_role("button", name="Week")).to_have_attribute("aria-pressed", "true")
    expect(spending.locator(".lumen-spending-summary")).to_contain_text("The last 7 days")
    assert chart.count() == 1
    spending.get_by_role("button", name="Tokens").click()
    expect(spending.get_by_role("button", name="Tokens")).to_have_attribute("aria-pressed", "true")
    expect(spending.locator("svg.lumen-chart")).to_have_attribute(
        "aria-label", re.compile("^Tokens per day")
    )
    names = [n.strip() for n in legend.locator(".lumen-legend-name").all_inner_texts()]
    assert sorted(names) == ["demo-free", "demo-pro"]
    assert spending.locator("svg.lumen-chart rect").count() >= 2
    spending.get_by_role("button", name="Coins").click()
    spending.get_by_role("button", name="Month").click()
    expect(spending.locator(".lumen-spending-summary")).to_contain_text("The last 30 days")


def test_screenshot_light(page: Page) -> None:
    view = page.locator(".lumen-profile").first
    path = shot(view, "profile-widget-light.png", tall=2300)
    assert path.stat().st_size > 10_000


def test_notify_call_refreshes_the_widget(page: Page, seeded: LabServer) -> None:
    view = page.locator(".lumen-profile").first
    before = view.locator("[data-tile='tokens-used'] .lumen-tile-value").inner_text()
    seeded.chat("demo-free")
    # A model call in the kernel reports itself; here we call the hook directly.
    cell_code = "widgets.notify_call('demo-free')"
    page.locator(".jp-Notebook .jp-Cell").last.locator(".cm-content").click()
    page.keyboard.press("Escape")
    page.keyboard.press("b")
    page.keyboard.press("Enter")
    page.keyboard.type(cell_code)
    page.keyboard.press("Shift+Enter")
    expect(view.locator("[data-tile='tokens-used'] .lumen-tile-value")).not_to_have_text(
        before, timeout=15_000
    )


def test_dark_theme(page: Page, seeded: LabServer) -> None:
    save_notebook(page)
    seeded.set_theme("JupyterLab Dark")
    try:
        page.reload()
        view = page.locator(".lumen-profile").first
        view.wait_for(timeout=60_000)
        expect(page.locator("body")).to_have_attribute(
            "data-jp-theme-light", "false", timeout=30_000
        )
        rgb = view.locator(".lumen-card").evaluate("e => getComputedStyle(e).backgroundColor")
        channels = [int(c) for c in re.findall(r"\d+", rgb)[:3]]
        assert sum(channels) / 3 < 80, rgb
        text = view.locator(".lumen-display-name").evaluate("e => getComputedStyle(e).color")
        assert sum(int(c) for c in re.findall(r"\d+", text)[:3]) / 3 > 150, text
        shot(view, "profile-widget-dark.png", tall=2300)
    finally:
        seeded.set_theme("JupyterLab Light")


def test_widget_state_keeps_no_raw_key(seeded: LabServer) -> None:
    raw: Any = seeded.extra.get("ui_key")
    assert raw
    text, _ = read_notebook(seeded, NOTEBOOK)
    assert raw not in text
    assert raw not in seeded.log_path.read_text(errors="replace")
