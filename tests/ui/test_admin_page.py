"""The service's admin page in a browser, behind the hub's login (a fake hub).

carol (``custom:lumen:admin``) grants coins, sets a pool and revokes a key on the
page; bob (``custom:lumen:grant!group=class-a``) sees and grants to his class only;
the page's own requests carry its XSRF token, and nothing fails in the console.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from tests.service.fake_hub import LOGIN_COOKIE
from tests.service.hub_setup import ThreadedService, service_in_thread

from .lab import shot


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedService]:
    with service_in_thread(tmp_path_factory.mktemp("hub-admin-page")) as running:
        for name in ("alice", "erin", "carol"):  # accounts appear on first use
            answer = httpx.get(
                f"{running.root}lumen/api/profile",
                headers={"Authorization": f"token {running.hub.token(name)}"},
            )
            assert answer.status_code == 200, answer.text
        yield running


def admin(service: ThreadedService, method: str, command: str, body: Any = None) -> Any:
    answer = httpx.request(
        method,
        f"{service.root}lumen/api/admin/{command}",
        json=body,
        headers={"Authorization": f"Bearer {service.admin_token}"},
    )
    assert answer.status_code == 200, answer.text
    return answer.json()["result"]


def balance(service: ThreadedService, user: str) -> int:
    return int(admin(service, "GET", f"pool?user={user}")["pool"]["balance"]["micro"])


def signed_in(browser: Browser, service: ThreadedService, name: str) -> tuple[Page, list[str]]:
    """A page of the admin page as ``name``, who is signed in at the hub."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, locale="en-US")
    context.add_cookies([{"name": LOGIN_COOKIE, "value": name, "url": service.hub.url}])
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.goto(service.root)  # where the hub's Services menu links
    expect(page.locator("table.lumen-admin-table tbody tr[data-row-key]").first).to_be_visible()
    return page, problems


def row(page: Page, user: str) -> Any:
    return page.locator(f'table.lumen-admin-table tbody tr[data-row-key="{user}"]')


def test_an_admin_grants_sets_a_pool_and_revokes_a_key(
    browser: Browser, service: ThreadedService
) -> None:
    page, problems = signed_in(browser, service, "carol")
    assert page.url == f"{service.root}admin/"
    expect(page.get_by_text("Signed in as carol, who administers everyone.")).to_be_visible()
    before = balance(service, "alice")
    expect(row(page, "alice").locator('td[data-column="balance"]')).to_have_text(
        f"{before // 1_000_000} / 20"
    )

    row(page, "alice").get_by_role("button", name="Grant alice").click()
    dialog = page.get_by_role("dialog", name="Grant coins")
    dialog.get_by_role("textbox", name="Coins", exact=True).fill("7")
    dialog.get_by_role("textbox", name="Note (kept in the ledger)").fill("for the project")
    dialog.get_by_role("button", name="Grant", exact=True).click()
    expect(page.locator(".lumen-admin-status")).to_contain_text("alice: granted 7 coins")
    assert balance(service, "alice") == before + 7_000_000
    expect(row(page, "alice").locator('td[data-column="balance"]')).to_have_text(
        f"{before // 1_000_000 + 7} / 20"
    )

    row(page, "erin").get_by_role("button", name="Pool erin").click()
    dialog = page.get_by_role("dialog", name="Pool of erin")
    expect(dialog.locator(".lumen-tile")).to_contain_text("Coins Available")
    dialog.get_by_role("textbox", name="Max coins", exact=True).fill("50")
    dialog.get_by_role("button", name="Set pool").click()
    expect(row(page, "erin").locator('td[data-column="pool"]')).to_have_text("user")
    assert admin(service, "GET", "pool?user=erin")["own_pool"]["max"]["micro"] == 50_000_000

    created = httpx.post(
        f"{service.root}lumen/api/keys",
        json={"name": "leaked"},
        headers={"Authorization": f"token {service.hub.token('erin')}"},
    )
    key = created.json()["key"]
    row(page, "erin").get_by_role("button", name="Keys erin").click()
    keys = page.get_by_role("dialog", name="Keys of erin")
    keys.get_by_role("button", name="Revoke key leaked").click()
    page.get_by_role("dialog", name="Revoke this key?").get_by_role("button", name="Revoke").click()
    expect(keys.locator('td[data-column="revoke"]')).to_have_text("Revoked")
    shot(page, "admin-page-keys.png")
    answer = httpx.get(
        f"{service.root}lumen/api/profile", headers={"Authorization": f"Bearer {key}"}
    )
    assert answer.status_code == 401
    assert problems == []
    page.context.close()


def test_a_delegated_granter_sees_and_grants_to_their_class_only(
    browser: Browser, service: ThreadedService
) -> None:
    # bob's login token carries his grant scope (the service's allowed OAuth scopes)
    page, problems = signed_in(browser, service, "bob")
    expect(page.get_by_text("grants coins to group class-a")).to_be_visible()
    expect(page.locator("table.lumen-admin-table tbody tr[data-row-key]")).to_have_count(1)
    expect(row(page, "alice").get_by_role("button", name="Keys alice")).to_have_count(0)
    before = balance(service, "alice")
    row(page, "alice").get_by_role("button", name="Grant alice").click()
    dialog = page.get_by_role("dialog", name="Grant coins")
    dialog.get_by_role("textbox", name="Coins", exact=True).fill("2")
    dialog.get_by_role("button", name="Grant", exact=True).click()
    expect(page.locator(".lumen-admin-status")).to_contain_text("alice: granted 2 coins")
    assert balance(service, "alice") == before + 2_000_000

    erin = balance(service, "erin")
    page.get_by_role("button", name="Grant to a user…").click()
    dialog = page.get_by_role("dialog", name="Grant coins")
    dialog.get_by_role("textbox", name="User", exact=True).fill("erin")
    dialog.get_by_role("textbox", name="Coins", exact=True).fill("2")
    dialog.get_by_role("button", name="Grant", exact=True).click()
    expect(dialog.locator(".lumen-dialog-error")).to_contain_text("do not reach 'erin'")
    assert balance(service, "erin") == erin
    shot(page, "admin-page-delegate.png")
    # the 403 of the refused grant is the only console complaint
    assert [p for p in problems if "403" not in p] == []
    page.context.close()


def test_a_user_without_lumen_rights_is_told_so(browser: Browser, service: ThreadedService) -> None:
    context = browser.new_context()
    context.add_cookies([{"name": LOGIN_COOKIE, "value": "dave", "url": service.hub.url}])
    page = context.new_page()
    response = page.goto(f"{service.root}admin/")
    assert response is not None and response.status == 403
    expect(page.get_by_text("without lumen admin rights")).to_be_visible()
    context.close()
