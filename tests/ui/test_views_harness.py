"""The built widget bundle in a blank page, with a stand-in widget model: render
timing of 1,000 keys with 200 models (best of several runs), the windowed key
table, the avatar fallback, and exact coin formatting - without Jupyter.
"""

from __future__ import annotations

import functools
import http.server
import json
import shutil
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

from lumen_jupyter.core.paging import name_order
from tests.widgets.fake_source import FakeSource

from .conftest import REPO

STATIC = REPO / "lumen_jupyter" / "widgets" / "static"
BUDGET_MS = 200.0

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><link rel="stylesheet" href="profile.css"></head>
<body style="margin:0"><div id="host" style="width: 1100px"></div>
<script type="module">
import widget from './profile.js';
const params = new URLSearchParams(location.search);
const state = await (await fetch(params.get('state') || 'state.json')).json();
const handlers = {};
window.sent = [];
const model = {
  get: key => state[key],
  on: (event, callback) => { (handlers[event] ||= []).push(callback); },
  off: () => {},
  send: content => window.sent.push(content),
};
window.setState = patch => {
  Object.assign(state, patch);
  for (const key of Object.keys(patch)) (handlers['change:' + key] || []).forEach(cb => cb());
};
window.reply = (content, buffers) =>
  (handlers['msg:custom'] || []).forEach(cb => cb(content, buffers));
const t0 = performance.now();
window.cleanup = widget.render({ model, el: document.getElementById('host') });
// the skeleton first, the state once that frame is painted
await new Promise(resolve => requestAnimationFrame(() => setTimeout(resolve, 0)));
await new Promise(resolve => setTimeout(resolve, 0));
void document.body.offsetHeight;
window.mountMs = performance.now() - t0;
window.ready = true;
</script></body></html>
"""


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass


def _state(source: FakeSource, **extra: Any) -> dict[str, Any]:
    return {
        "profile": source.profile(),
        "api_keys": source.keys(include_revoked=True),
        "models": source.models(),
        "usage": source.usage(),
        "period": "month",
        "loading": False,
        "error": "",
        "section": "profile",
        **extra,
    }


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if not (STATIC / "profile.js").exists():
        pytest.skip("the widget bundle is not built")
    root = tmp_path_factory.mktemp("harness")
    for name in ("profile.js", "profile.css"):
        shutil.copy(STATIC / name, root / name)
    (root / "index.html").write_text(PAGE, encoding="utf-8")
    big = FakeSource(keys=1000, models=200)
    (root / "state.json").write_text(json.dumps(_state(big)), encoding="utf-8")
    small = FakeSource(keys=3, models=4)
    profile = small.profile()
    profile["user"]["avatar_url"] = "/missing-avatar.png"
    profile["pool"]["balance"] = {"micro": 1_234_567_890_123, "text": "1234567.890123"}
    profile["pool"]["max"] = {"micro": 2_000_000_000_000, "text": "2000000"}
    profile["tiles"]["coins_used"] = {"micro": 1, "text": "0.000001"}
    (root / "broken-avatar.json").write_text(
        json.dumps({**_state(small), "profile": profile}), encoding="utf-8"
    )
    # The first screen of the big account: the first 40 active keys and 40 models, in the
    # server's order, with their totals (what a host sends before the whole lists).
    active = [k for k in big.keys(include_revoked=True) if k["status"] == "active"]
    models = big.models()
    first = {
        **_state(big),
        "api_keys": sorted(active, key=lambda k: name_order(k["name"]))[:40],
        "keys_total": len(active),
        "models": sorted(models, key=lambda m: name_order(m["name"]))[:40],
        "models_total": len(models),
    }
    (root / "first-page.json").write_text(json.dumps(first), encoding="utf-8")
    (root / "whole.json").write_text(
        json.dumps({"api_keys": big.keys(include_revoked=True), "models": models}),
        encoding="utf-8",
    )
    good = json.loads(json.dumps(profile))
    good["user"]["avatar_url"] = "/avatar.svg"
    (root / "avatar.svg").write_text(
        '<svg xmlns="http://www.w3.org/2000/svg" width="80" height="80">'
        '<rect width="80" height="80" fill="#c0392b"/></svg>',
        encoding="utf-8",
    )
    (root / "good-avatar.json").write_text(
        json.dumps({**_state(small), "profile": good}), encoding="utf-8"
    )
    handler = functools.partial(_Quiet, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/"
    finally:
        server.shutdown()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1200, "height": 900}, locale="en-US")
    page = context.new_page()
    yield page
    context.close()


def mount(page: Page, url: str) -> None:
    page.goto(url)
    page.wait_for_function("window.ready === true", timeout=30_000)


def test_render_1000_keys_200_models_under_budget(
    page: Page, site: str, record_property: Any
) -> None:
    mounts, renders = [], []
    for _ in range(7):
        mount(page, site + "index.html")
        mounts.append(page.evaluate("window.mountMs"))
        renders.append(
            float(page.locator(".lumen-profile").get_attribute("data-render-ms") or "nan")
        )
    table = page.locator(".lumen-keys-table")
    expect(table).to_have_attribute(
        "data-rows", str(1000 - sum(1 for i in range(1000) if i % 7 == 3))
    )
    toggles = []
    for _ in range(3):
        toggles.append(
            page.evaluate(
                """() => {
                const box = [...document.querySelectorAll('label.lumen-check')]
                  .find(l => l.textContent.includes('Show deleted keys')).querySelector('input');
                const t0 = performance.now();
                box.click();
                void document.body.offsetHeight;
                return performance.now() - t0;
            }"""
            )
        )
    sorts = []
    for column in ("coins", "requests", "last_used", "name"):
        sorts.append(
            page.evaluate(
                """(column) => {
                const button = document.querySelector(
                    `.lumen-keys-table th[data-column='${column}'] button`);
                const t0 = performance.now();
                button.click();
                void document.body.offsetHeight;
                return performance.now() - t0;
            }""",
                column,
            )
        )
    figure = (
        f"1000 keys + 200 models, whole page mounted: best {min(mounts):.1f} ms "
        f"(runs {', '.join(f'{m:.0f}' for m in mounts)}); view render best {min(renders):.1f} ms; "
        f"Show deleted keys best {min(toggles):.1f} ms; sort best {min(sorts):.1f} ms"
    )
    print("\n" + figure)
    record_property("render_timing", figure)
    assert min(mounts) < BUDGET_MS
    assert min(toggles) < BUDGET_MS
    assert min(sorts) < BUDGET_MS


def test_windowed_table_scrolls_to_every_row(page: Page, site: str) -> None:
    mount(page, site + "index.html")
    wrap = page.locator(".lumen-keys .lumen-table-wrap")
    table = page.locator(".lumen-keys-table")
    total = int(table.get_attribute("data-rows") or "0")
    assert table.locator("tbody tr[data-row-key]").count() < 120
    wrap.evaluate("e => { e.scrollTop = e.scrollHeight; }")
    last = table.locator(f"tbody tr[aria-rowindex='{total + 1}']")
    expect(last).to_have_count(1, timeout=5_000)
    expect(last).to_be_in_viewport()
    wrap.evaluate("e => { e.scrollTop = e.scrollHeight / 2; }")
    middle = total // 2
    page.wait_for_function(
        """([middle]) => {
            const rows = [...document.querySelectorAll('.lumen-keys-table tbody tr[data-row-key]')];
            const first = Number(rows[0].getAttribute('aria-rowindex'));
            const last = Number(rows[rows.length - 1].getAttribute('aria-rowindex'));
            return first < middle && middle < last;
        }""",
        arg=[middle],
        timeout=5_000,
    )
    # The spacers keep the scroll height of all rows.
    height = wrap.evaluate("e => e.scrollHeight")
    row = table.locator("tbody tr[data-row-key]").first.evaluate(
        "r => r.getBoundingClientRect().height"
    )
    assert abs(height - (total + 1) * row) < 3 * row


def test_avatar_never_shows_a_broken_image(page: Page, site: str) -> None:
    mount(page, site + "index.html?state=broken-avatar.json")
    avatar = page.locator(".lumen-avatar")
    expect(avatar.locator("img")).to_have_count(0, timeout=5_000)
    expect(avatar.locator(".lumen-avatar-initials")).to_be_visible()
    expect(avatar).to_have_text("GH")
    mount(page, site + "index.html?state=good-avatar.json")
    expect(page.locator(".lumen-avatar")).to_have_class(
        "lumen-avatar lumen-avatar-loaded", timeout=5_000
    )
    assert page.locator(".lumen-avatar img").evaluate("i => getComputedStyle(i).opacity") == "1"


def test_coins_are_formatted_exactly_from_micro_coins(page: Page, site: str) -> None:
    mount(page, site + "index.html?state=broken-avatar.json")
    available = page.locator("[data-tile='coins-available']")
    expect(available.locator(".lumen-balance")).to_have_text("1,234,567.890123")
    expect(available.locator(".lumen-balance-max")).to_have_text(" / 2,000,000")
    expect(page.locator("[data-tile='coins-used'] .lumen-tile-value")).to_have_text("0.000001")
    expect(available.get_by_role("progressbar")).to_have_attribute("aria-valuenow", "62")


def test_intents_are_custom_messages_and_the_key_comes_as_a_buffer(page: Page, site: str) -> None:
    mount(page, site + "index.html?state=broken-avatar.json")
    page.get_by_role("button", name="+ New API Key").click()
    sent = page.evaluate("window.sent")
    assert sent[-1]["type"] == "intent" and sent[-1]["method"] == "create_key"
    request_id = sent[-1]["request_id"]
    page.evaluate(
        """(id) => window.reply(
            {type: 'reply', request_id: id, ok: true,
             data: {id: 99, hint: 'sk_a…wxyz', name: '', status: 'draft'}},
            [new TextEncoder().encode('sk_a' + 'b'.repeat(38) + 'wxyz').buffer])""",
        request_id,
    )
    dialog = page.get_by_role("dialog", name="New API Key")
    expect(dialog.get_by_label("Your new key")).to_have_value("sk_a" + "b" * 38 + "wxyz")
    dialog.get_by_role("button", name="Discard").click()
    sent = page.evaluate("window.sent")
    assert sent[-1]["method"] == "discard_key" and sent[-1]["args"] == {"id": 99}
    page.evaluate(
        "(id) => window.reply({type: 'reply', request_id: id, ok: true, data: null}, [])",
        sent[-1]["request_id"],
    )
    expect(dialog).to_have_count(0)
    # A failed intent shows its message where it came from.
    page.get_by_role("button", name="+ New API Key").click()
    failed = page.evaluate("window.sent")[-1]["request_id"]
    page.evaluate(
        "(id) => window.reply({type: 'reply', request_id: id, ok: false, error: 'no pool'}, [])",
        failed,
    )
    expect(page.locator(".lumen-keys .lumen-inline-error")).to_have_text(
        "Could not create a key: no pool"
    )


def test_bundle_fetches_nothing_at_run_time() -> None:
    text = (STATIC / "profile.js").read_text(encoding="utf-8")
    assert "import(" not in text
    assert "https://" not in text
    assert "fetch(" not in text


HEADERS_CUT = """() => [...document.querySelectorAll('.lumen-table th')]
  .filter(th => th.offsetParent !== null && th.scrollWidth > th.clientWidth + 0.5)
  .map(th => th.closest('table').className.split(' ').pop() + ': ' + th.textContent.trim())"""


@pytest.mark.parametrize("width", [1100, 600])
def test_no_column_header_is_cut_off(page: Page, site: str, width: int) -> None:
    """Every header of the keys and models tables shows whole ("REQUESTS", not
    "REQUESTS."), also at the tables' narrowest (a panel narrower than the table)."""
    mount(page, site + "?state=broken-avatar.json")
    page.evaluate(f"document.getElementById('host').style.width = '{width}px'")
    headers = page.locator(".lumen-keys-table th, .lumen-models-table th")
    expect(headers.first).to_be_visible()
    assert headers.count() >= 14
    cut = page.evaluate(HEADERS_CUT)
    assert cut == [], cut


def test_a_first_page_shows_with_room_for_the_rest_and_waits_to_sort(page: Page, site: str) -> None:
    """The first 40 active keys of 857 show at once, the scroll bar already as long as
    all of them; sorting, "Show deleted keys" and the model search wait for the whole
    lists and then apply to all of them."""
    mount(page, site + "index.html?state=first-page.json")
    keys = page.locator(".lumen-keys-table")
    rows = keys.locator("tbody tr[data-row-key]")
    expect(keys).to_have_attribute("aria-busy", "true")
    expect(keys).to_have_attribute("aria-rowcount", "858")
    expect(keys).to_have_attribute("data-rows", "40")
    names = rows.evaluate_all("rs => rs.map(r => r.querySelector('td').textContent)")
    assert len(names) == 40
    assert names == sorted(names, key=name_order)
    wrap = page.locator(".lumen-keys .lumen-table-wrap")
    row = rows.first.evaluate("r => r.getBoundingClientRect().height")
    assert abs(wrap.evaluate("e => e.scrollHeight") - 858 * row) < 3 * row
    # Scrolled past what has arrived: room, no rows, nothing broken.
    wrap.evaluate("e => { e.scrollTop = e.scrollHeight / 2; }")
    page.wait_for_timeout(100)
    expect(keys.locator("tbody tr[data-row-key]")).to_have_count(0)
    wrap.evaluate("e => { e.scrollTop = 0; }")
    expect(rows).to_have_count(40)
    # Sorting now waits for every key.
    keys.locator("th[data-column='coins'] button").click()
    expect(keys.locator("th[data-column='coins']")).to_have_attribute("aria-sort", "descending")
    expect(keys.locator("tbody")).to_have_text("Sorting when all 857 rows have arrived…")
    models = page.locator(".lumen-models-table")
    page.get_by_label("Search models by name").fill("beta")
    expect(models.locator("tbody")).to_have_text("Loading all 200 models…")
    expect(page.locator(".lumen-models .lumen-count")).to_have_text("200 models (loading the list)")
    page.get_by_text("Show deleted keys").click()
    expect(keys.locator("tbody")).to_have_text("Loading the deleted keys…")
    # The whole lists arrive: the sort, the search and the box apply to all of them.
    page.evaluate(
        """async () => {
            const whole = await (await fetch('whole.json')).json();
            window.setState({...whole, keys_total: null, models_total: null});
        }"""
    )
    expect(keys).to_have_attribute("aria-busy", "false")
    expect(keys).to_have_attribute("data-rows", "1000")
    coins = keys.locator("tbody tr[data-row-key] td[data-column='coins']")
    expect(coins.first).to_be_visible()
    shown = coins.evaluate_all("cs => cs.map(c => Number(c.textContent.replace(/[^0-9.]/g, '')))")
    assert shown == sorted(shown, reverse=True) and shown[0] > 0
    matching = page.evaluate(
        """async () => (await (await fetch('whole.json')).json()).models
            .filter(m => m.name.toLowerCase().includes('beta') && m.active
                    && m.status !== 'disabled' && m.access !== 'blocked').length"""
    )
    expect(models).to_have_attribute("data-rows", str(matching))
    assert matching > 0
    page.get_by_text("Show deleted keys").click()
    expect(keys).to_have_attribute("data-rows", "857")
