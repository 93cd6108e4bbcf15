"""The service in hub mode: who is calling comes from the hub, rights from custom scopes.

The standalone service runs in this process (``tests/hosts/standalone.py``) with the
environment JupyterHub gives a managed service, pointed at a fake hub
(``fake_hub.py``) that answers what a real one does.  The hub's users
(``hub_setup.py``):

* alice, in hub group ``class-a``; erin, in ``class-b``;
* bob, who may grant to ``class-a`` (``custom:lumen:grant!group=class-a``);
* carol, a hub admin with ``custom:lumen:admin`` (only on tokens that carry it);
* dave, a hub admin (``admin: true``) without any lumen scope.

The YAML gives everyone a 20-coin pool, and hub group ``staff`` a 500-coin one.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from lumen_jupyter.core.accounts import Identity
from lumen_jupyter.core.service import LumenService
from lumen_jupyter.demo.backend import DemoBackend
from lumen_jupyter.server.runtime import LumenRuntime
from lumen_jupyter.service.app import LumenServe
from tests.hosts.standalone import served, serving
from tests.service.fake_hub import ACCESS, LOGIN_COOKIE, FakeHub
from tests.service.hub_setup import ADMIN_SCOPE, GRANT_CLASS_A, PREFIX, lumen_config, populate

CACHE_SECONDS = 1.0
MESSAGES = [{"role": "user", "content": "Say something short"}]


@pytest.fixture
def fake_hub(jp_asyncio_loop: asyncio.AbstractEventLoop) -> Iterator[FakeHub]:
    hub = populate(FakeHub(page_limit=2))  # three groups: the group list comes in two pages
    hub.start()
    yield hub
    jp_asyncio_loop.run_until_complete(hub.stop())


@dataclass
class Service:
    root: str
    runtime: LumenRuntime
    http: httpx.AsyncClient
    hub: FakeHub
    tmp_path: Path

    @property
    def lumen(self) -> LumenService:
        return self.runtime.service

    @property
    def api(self) -> str:
        return f"{self.root}lumen/api/"

    async def get(self, path: str, token: str | None = None, **options: Any) -> httpx.Response:
        headers = dict(options.pop("headers", {}))
        if token is not None:
            headers["Authorization"] = f"token {token}"
        return await self.http.get(f"{self.api}{path}", headers=headers, **options)

    async def admin(
        self, method: str, command: str, body: Any = None, token: str | None = None
    ) -> httpx.Response:
        """An ``api/admin`` command as the holder of ``token`` (default: the admin token)."""
        bearer = token or (self.tmp_path / "admin" / "token").read_text().strip()
        return await self.http.request(
            method,
            f"{self.api}admin/{command}",
            json=body,
            headers={"Authorization": f"Bearer {bearer}"},
        )

    def balance(self, username: str, groups: frozenset[str] = frozenset()) -> int:
        who = Identity(username=username, display_name=username, groups=groups)
        return int(self.lumen.pool_state(who)["balance"]["micro"])


@pytest.fixture
def service(
    fake_hub: FakeHub,
    demo: DemoBackend,
    tmp_path: Path,
    jp_asyncio_loop: asyncio.AbstractEventLoop,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Service]:
    for name, value in fake_hub.environ(PREFIX).items():
        monkeypatch.setenv(name, value)
    app = LumenServe(config=lumen_config(tmp_path, demo.base_url, CACHE_SECONDS))
    assert app.hub_mode()
    http = httpx.AsyncClient(timeout=30)
    with serving(app, jp_asyncio_loop) as (port, runtime):
        fake_hub.service_origin = f"http://127.0.0.1:{port}"
        try:
            yield Service(f"http://127.0.0.1:{port}{PREFIX}", runtime, http, fake_hub, tmp_path)
        finally:
            jp_asyncio_loop.run_until_complete(http.aclose())


async def use(service: Service, *names: str) -> None:
    """Each user calls the service once (their account exists from then on)."""
    for name in names:
        answer = await service.get("profile", service.hub.token(name))
        assert answer.status_code == 200, answer.text


async def pool_max(service: Service, token: str) -> int:
    answer = await service.get("profile", token)
    assert answer.status_code == 200, answer.text
    return int(answer.json()["pool"]["max"]["micro"]) // 1_000_000


async def becomes(service: Service, token: str, coins: int) -> None:
    """The pool's max becomes ``coins`` within the cache time."""
    changed_at = time.monotonic()
    while (now := await pool_max(service, token)) != coins:
        assert time.monotonic() - changed_at < CACHE_SECONDS + 1.0, f"still {now}"
        await asyncio.sleep(0.05)


# -- identity ---------------------------------------------------------------------------------


async def test_identity_comes_from_the_hub_token_only(service: Service) -> None:
    alice = service.hub.token("alice")
    bob = service.hub.token("bob")
    profile = await service.get("profile", alice)
    assert profile.status_code == 200, profile.text
    user = profile.json()["user"]
    assert (user["username"], user["display_name"]) == ("alice", "Alice Liddell")

    spoofs = {"X-Lumen-User": "bob", "X-Forwarded-User": "bob", "X-Remote-User": "bob"}
    spoofed = await service.get("profile?user=bob&username=bob", alice, headers=spoofs)
    assert spoofed.json()["user"]["username"] == "alice"
    for path in ("users/bob/profile", "profile/bob"):
        assert (await service.get(path, alice)).status_code == 404

    # a header naming someone is not a credential, and a token is never read from the query
    assert (await service.get("profile", headers=spoofs)).status_code == 401
    in_query = await service.get(f"profile?token={bob}")
    assert in_query.status_code == 401, in_query.text
    # an unknown or revoked token is no one
    assert (await service.get("profile", "not-a-hub-token")).status_code == 401
    service.hub.revoke(bob)
    await asyncio.sleep(CACHE_SECONDS + 0.2)
    assert (await service.get("profile", bob)).status_code == 401


async def test_lumens_own_credentials_are_never_sent_to_the_hub(service: Service) -> None:
    asked = service.hub.asked["user"]
    for token in ("sk_" + "x" * 40, "lat_" + "y" * 40, "lkt_" + "z" * 40):
        answer = await service.get("profile", headers={"Authorization": f"token {token}"})
        assert answer.status_code == 401, answer.text
    assert service.hub.asked["user"] == asked


async def test_a_token_without_access_to_the_service_is_refused(service: Service) -> None:
    narrow = service.hub.token("alice", {"read:users:name!user=alice"})
    answer = await service.get("profile", narrow)
    assert answer.status_code == 403
    assert answer.json()["error"]["code"] == "missing_scope"
    other = service.hub.token("alice", {"access:services!service=another"})
    assert (await service.get("profile", other)).status_code == 403
    every_service = service.hub.token("alice", {"access:services"})
    assert (await service.get("profile", every_service)).status_code == 200
    a_service = service.hub.token("tester", {"access:services"}, kind="service")
    refused = await service.get("profile", a_service)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "not_a_user"


async def test_the_hub_is_asked_once_per_token_within_the_cache_time(service: Service) -> None:
    token = service.hub.token("alice")
    before = service.hub.asked["user"]
    answers = await asyncio.gather(*(service.get("profile", token) for _ in range(10)))
    assert {a.status_code for a in answers} == {200}
    assert service.hub.asked["user"] == before + 1


async def test_a_group_change_at_the_hub_changes_the_pool_within_the_cache_time(
    service: Service,
) -> None:
    token = service.hub.token("alice")
    assert await pool_max(service, token) == 20
    service.hub.users["alice"].groups.add("staff")
    await becomes(service, token, 500)
    assert "staff" in (await service.get("profile", token)).json()["tiles"]["groups"]


async def test_a_personal_key_is_billed_with_its_owners_hub_groups(service: Service) -> None:
    service.hub.users["alice"].groups.add("staff")
    created = await service.http.post(
        f"{service.api}keys",
        json={"name": "script"},
        headers={"Authorization": f"token {service.hub.token('alice')}"},
    )
    assert created.status_code in (200, 201), created.text
    key = created.json()["key"]
    profile = await service.get("profile", headers={"Authorization": f"Bearer {key}"})
    assert profile.json()["pool"]["max"]["micro"] == 500_000_000
    answer = await service.http.post(
        f"{service.root}lumen/v1/chat/completions",
        json={"model": "demo-pro", "messages": MESSAGES, "max_tokens": 5},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert answer.status_code == 200, answer.text
    # a user the hub no longer knows cannot spend with an old key
    del service.hub.users["alice"]
    await asyncio.sleep(CACHE_SECONDS + 0.2)
    gone = await service.get("profile", headers={"Authorization": f"Bearer {key}"})
    assert gone.status_code == 401 and gone.json()["error"]["code"] == "unknown_user"


async def test_a_hub_that_cannot_be_reached_is_a_503(service: Service) -> None:
    token = service.hub.token("alice")
    await service.hub.stop()
    answer = await service.get("profile", token)
    assert answer.status_code == 503
    assert answer.json()["error"]["code"] == "hub_unavailable"


# -- rights -----------------------------------------------------------------------------------


async def test_the_custom_admin_scope_may_do_everything(service: Service) -> None:
    await use(service, "alice", "erin")
    carol = service.hub.token("carol", {ACCESS, ADMIN_SCOPE})
    before = service.balance("alice", frozenset({"class-a"}))
    granted = await service.admin("POST", "grant", {"user": "alice", "coins": "5"}, carol)
    assert granted.status_code == 200, granted.text
    assert service.balance("alice", frozenset({"class-a"})) == before + 5_000_000
    users = await service.admin("GET", "users", token=carol)
    assert {u["username"] for u in users.json()["result"]["users"]} >= {"alice", "erin"}
    pool = await service.admin("POST", "pool", {"user": "erin", "max": "3"}, carol)
    assert pool.status_code == 200, pool.text
    keys = await service.admin("GET", "keys?user=erin", token=carol)
    assert keys.status_code == 200, keys.text


async def test_the_hub_admin_flag_gives_no_lumen_rights(service: Service) -> None:
    """dave is a hub admin without a lumen scope, and carol's server or kernel token
    (which never carries custom scopes) is refused like anyone's."""
    await use(service, "alice")
    before = service.balance("alice", frozenset({"class-a"}))
    dave = service.hub.token("dave")
    carols_kernel = service.hub.token("carol", {ACCESS, "users:activity!user=carol"})
    alice = service.hub.token("alice")
    for token in (dave, carols_kernel, alice):
        refused = await service.admin("POST", "grant", {"user": "alice", "coins": "1000"}, token)
        assert refused.status_code == 403, refused.text
        assert refused.json()["error"]["code"] == "admin_only"
        assert (await service.admin("GET", "users", token=token)).status_code == 403
    assert service.balance("alice", frozenset({"class-a"})) == before


async def test_a_delegated_grant_reaches_only_its_group(service: Service) -> None:
    await use(service, "alice", "erin", "carol")
    bob = service.hub.token("bob", {ACCESS, GRANT_CLASS_A})
    before = service.balance("alice", frozenset({"class-a"}))
    granted = await service.admin("POST", "grant", {"user": "alice", "coins": "2"}, bob)
    assert granted.status_code == 200, granted.text
    assert service.balance("alice", frozenset({"class-a"})) == before + 2_000_000
    for outsider in ("erin", "carol", "ghost"):
        refused = await service.admin("POST", "grant", {"user": outsider, "coins": "2"}, bob)
        assert refused.status_code == 403, refused.text
        assert refused.json()["error"]["code"] == "not_in_your_groups"
    assert (await service.admin("GET", "pool?user=alice", token=bob)).status_code == 200
    assert (await service.admin("GET", "usage?user=alice", token=bob)).status_code == 200
    assert (await service.admin("GET", "pool?user=erin", token=bob)).status_code == 403
    for method, command, body in (
        ("POST", "pool", {"user": "alice", "max": "1000"}),
        ("POST", "revoke", {"user": "alice", "key_id": 1}),
        ("GET", "keys?user=alice", None),
    ):
        refused = await service.admin(method, command, body, bob)
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "not_allowed"
    listed = await service.admin("GET", "users", token=bob)
    assert [u["username"] for u in listed.json()["result"]["users"]] == ["alice"]
    # the hub changes the class: bob's reach follows within the cache time
    service.hub.users["erin"].groups.add("class-a")
    await asyncio.sleep(CACHE_SECONDS + 0.2)
    late = await service.admin("POST", "grant", {"user": "erin", "coins": "1"}, bob)
    assert late.status_code == 200, late.text


async def test_the_admin_token_still_works(service: Service) -> None:
    await use(service, "alice")
    granted = await service.admin("POST", "grant", {"user": "alice", "coins": "1"})
    assert granted.status_code == 200, granted.text
    token = (service.tmp_path / "admin" / "token").read_text().strip()
    refused = await service.get("profile", headers={"Authorization": f"Bearer {token}"})
    assert refused.status_code == 403


async def test_the_admin_api_describes_targets_with_their_hub_groups(service: Service) -> None:
    """A grant to a staff member keeps the staff pool: the service asked the hub."""
    service.hub.users["alice"].groups.add("staff")
    await use(service, "alice")
    pool = await service.admin("GET", "pool?user=alice")
    assert pool.json()["result"]["pool"]["max"]["micro"] == 500_000_000
    users = (await service.admin("GET", "users")).json()["result"]["users"]
    assert [u["max"]["micro"] for u in users if u["username"] == "alice"] == [500_000_000]


# -- settings kept on the hub's groups (properties.lumen) --------------------------------------


async def test_a_hub_groups_properties_give_its_members_a_pool(service: Service) -> None:
    alice = service.hub.token("alice")
    assert await pool_max(service, alice) == 20
    service.hub.group_properties["class-a"] = {"lumen": {"tokens": {"max": 80, "starting": 80}}}
    await becomes(service, alice, 80)
    profile = (await service.get("profile", alice)).json()
    assert "class-a" in profile["tiles"]["groups"]
    assert profile["pool"]["source"] == "group:class-a"
    pool = await service.admin("GET", "pool?user=alice")  # the admin API sees it too
    assert pool.json()["result"]["pool"]["max"]["micro"] == 80_000_000
    service.hub.group_properties["class-a"]["lumen"]["tokens"]["max"] = 120
    await becomes(service, alice, 120)
    assert await pool_max(service, service.hub.token("erin")) == 20  # class-b: no such settings
    del service.hub.group_properties["class-a"]
    await becomes(service, alice, 20)


async def test_a_hub_groups_properties_apply_to_its_members_personal_keys(
    service: Service,
) -> None:
    service.hub.group_properties["class-a"] = {
        "lumen": {"tokens": {"max": 80, "starting": 80}, "models": {"demo-pro": "blocked"}}
    }
    created = await service.http.post(
        f"{service.api}keys",
        json={"name": "script"},
        headers={"Authorization": f"token {service.hub.token('alice')}"},
    )
    assert created.status_code in (200, 201), created.text
    key = {"Authorization": f"Bearer {created.json()['key']}"}
    profile = await service.get("profile", headers=key)
    assert profile.json()["pool"]["max"]["micro"] == 80_000_000
    answer = await service.http.post(
        f"{service.root}lumen/v1/chat/completions",
        json={"model": "demo-pro", "messages": MESSAGES, "max_tokens": 5},
        headers=key,
    )
    assert answer.status_code == 403, answer.text
    assert answer.json()["error"]["code"] == "model_blocked"


async def test_the_configuration_file_has_the_last_word_over_a_hub_group(
    service: Service, caplog: pytest.LogCaptureFixture
) -> None:
    service.hub.users["alice"].groups.add("staff")
    service.hub.group_properties["staff"] = {"lumen": {"tokens": {"max": 5, "starting": 5}}}
    assert await pool_max(service, service.hub.token("alice")) == 500  # the YAML's staff pool
    assert "the configuration file defines this group" in caplog.text


async def test_wrong_settings_on_a_hub_group_are_skipped_and_calls_go_on(
    service: Service, caplog: pytest.LogCaptureFixture
) -> None:
    service.hub.group_properties["class-a"] = {"lumen": {"tokens": {"max": "plenty"}}}
    service.hub.group_properties["class-b"] = {"lumen": {"tokens": {"max": 70, "starting": 70}}}
    service.hub.group_properties["teachers"] = {
        "lumen": {"members": ["alice"], "tokens": {"max": 900}}
    }
    service.hub.group_properties["nobody"] = {"lumen": ["not", "a", "mapping"]}
    assert await pool_max(service, service.hub.token("erin")) == 70  # the good group applies
    assert await pool_max(service, service.hub.token("alice")) == 20  # the bad one does not
    assert await pool_max(service, service.hub.token("bob")) == 20
    for group in ("class-a", "teachers", "nobody"):
        assert f"hub group {group!r}: properties.lumen ignored" in caplog.text
    assert "a hub group's members are the hub's" in caplog.text


async def test_a_group_list_it_cannot_read_keeps_the_last_settings(
    service: Service, caplog: pytest.LogCaptureFixture
) -> None:
    alice = service.hub.token("alice")
    service.hub.group_properties["class-a"] = {"lumen": {"tokens": {"max": 80, "starting": 80}}}
    assert await pool_max(service, alice) == 80
    service.hub.service_token = "another-token"  # the service's role no longer reads groups
    await asyncio.sleep(CACHE_SECONDS + 0.1)
    asked = service.hub.asked["groups"]
    for _ in range(20):
        assert await pool_max(service, alice) == 80  # served, with the settings it had
    assert service.hub.asked["groups"] - asked <= 2  # asked again per cache time, not per call
    assert "group settings kept at the hub (properties.lumen) stay as they were" in caplog.text


# -- the admin page ---------------------------------------------------------------------------


async def login(service: Service, name: str, client: httpx.AsyncClient) -> httpx.Response:
    """Open the admin page as ``name`` (signed in at the hub) and follow the login."""
    client.cookies.set(LOGIN_COOKIE, name)
    page = await client.get(f"{service.root}admin/")
    for _ in range(4):
        if page.status_code != 302:
            break
        page = await client.get(httpx.URL(str(page.url)).join(page.headers["Location"]))
    return page


async def test_the_admin_page_requires_a_hub_login(service: Service) -> None:
    async with httpx.AsyncClient(timeout=30) as browser:
        first = await browser.get(f"{service.root}admin/")
        assert first.status_code == 302
        target = urlsplit(first.headers["Location"])
        assert f"{target.scheme}://{target.netloc}{target.path}" == (
            f"{service.hub.url}/hub/api/oauth2/authorize"
        )
        query = parse_qs(target.query)
        assert query["code_challenge_method"] == ["S256"] and query["code_challenge"]
        assert query["redirect_uri"] == [f"{PREFIX}oauth_callback"]
        # the hub's Services menu links to the prefix
        menu = await browser.get(service.root)
        assert menu.status_code == 302 and menu.headers["Location"] == f"{PREFIX}admin/"

        page = await login(service, "carol", browser)
        assert page.status_code == 200, page.text
        assert 'data-user="carol"' in page.text and "static/admin.js" in page.text
        assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
        cookie = next(c for c in browser.cookies.jar if c.name == service.hub.client_id)
        assert cookie.path == PREFIX and cookie.has_nonstandard_attr("HttpOnly")

    async with httpx.AsyncClient(timeout=30) as browser:
        page = await login(service, "alice", browser)
        assert page.status_code == 403 and "without lumen admin rights" in page.text
    async with httpx.AsyncClient(timeout=30) as browser:
        page = await login(service, "dave", browser)  # a hub admin, no lumen scope
        assert page.status_code == 403


async def test_a_login_whose_state_was_not_started_here_is_refused(service: Service) -> None:
    async with httpx.AsyncClient(timeout=30) as browser:
        browser.cookies.set(LOGIN_COOKIE, "carol")
        first = await browser.get(f"{service.root}admin/")
        to_hub = httpx.URL(first.headers["Location"])
        back = await browser.get(to_hub)
        callback = httpx.URL(back.headers["Location"])
        # another browser (no state cookie) with the same code and state
        async with httpx.AsyncClient(timeout=30) as other:
            stolen = await other.get(callback)
        assert stolen.status_code == 403
        forged = callback.copy_set_param("state", "forged")
        assert (await browser.get(forged)).status_code == 403


async def test_the_admin_page_refuses_cross_site_posts(service: Service) -> None:
    await use(service, "alice")
    before = service.balance("alice", frozenset({"class-a"}))
    async with httpx.AsyncClient(timeout=30) as browser:
        page = await login(service, "carol", browser)
        xsrf = re.search(r'data-xsrf="([^"]+)"', page.text)
        assert xsrf is not None
        url = f"{service.api}admin/grant"
        body = {"user": "alice", "coins": "3"}
        # what a page elsewhere can make the browser send: the cookie, no token
        forged = await browser.post(url, json=body)
        assert forged.status_code == 403 and forged.json()["error"]["code"] == "xsrf_missing"
        wrong = await browser.post(url, json=body, headers={"X-XSRFToken": "guess"})
        assert wrong.status_code == 403
        cross = await browser.post(
            url, json=body, headers={"X-XSRFToken": xsrf[1], "Sec-Fetch-Site": "cross-site"}
        )
        assert cross.status_code == 403 and cross.json()["error"]["code"] == "cross_site"
        assert service.balance("alice", frozenset({"class-a"})) == before
        # reads need no token; the page's own POST goes through
        listed = await browser.get(f"{service.api}admin/users")
        assert listed.status_code == 200, listed.text
        done = await browser.post(url, json=body, headers={"X-XSRFToken": xsrf[1]})
        assert done.status_code == 200, done.text
    assert service.balance("alice", frozenset({"class-a"})) == before + 3_000_000


async def test_a_login_started_on_one_worker_finishes_on_another(
    service: Service, demo: DemoBackend, tmp_path: Path
) -> None:
    """Workers share nothing in memory: the OAuth state is in a signed cookie and the
    PKCE verifier is derived from it, under the service's secret."""
    other = LumenServe(config=lumen_config(tmp_path, demo.base_url, CACHE_SECONDS))
    async with httpx.AsyncClient(timeout=30) as browser:
        browser.cookies.set(LOGIN_COOKIE, "carol")
        first = await browser.get(f"{service.root}admin/")
        back = await browser.get(httpx.URL(first.headers["Location"]))
        callback = httpx.URL(back.headers["Location"])
        async with served(other) as (port, _):
            there = callback.copy_with(port=port)
            finished = await browser.get(there)
            assert finished.status_code == 302, finished.text
            page = await browser.get(
                httpx.URL(str(there)).join(finished.headers["Location"]).copy_with(port=port)
            )
            assert page.status_code == 200 and 'data-user="carol"' in page.text
        # and the cookie set by the second worker is good on the first
        again = await browser.get(f"{service.root}admin/")
        assert again.status_code == 200


async def test_a_service_without_its_hub_role_says_which_scopes_it_needs(
    service: Service,
) -> None:
    await use(service, "alice")
    service.hub.service_token = "another-token"  # the service's own token no longer reads users
    await asyncio.sleep(CACHE_SECONDS + 0.1)  # the group list read before is kept until then
    answer = await service.admin("GET", "users")
    assert answer.status_code == 503
    assert "read:users, read:groups and list:groups" in answer.json()["error"]["message"]


def test_hub_mode_follows_the_environment_unless_forced(
    fake_hub: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("JUPYTERHUB_API_URL", "JUPYTERHUB_API_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    assert not LumenServe().hub_mode()
    assert LumenServe(hub_auth="on").hub_mode()  # and start() refuses without the hub's variables
    for name, value in fake_hub.environ(PREFIX).items():
        monkeypatch.setenv(name, value)
    assert LumenServe().hub_mode()
    assert not LumenServe(hub_auth="off").hub_mode()
    replaced = LumenServe()
    replaced.session_authenticator = object()  # type: ignore[assignment]
    assert not replaced.hub_mode()


def test_forwarded_headers_are_believed_behind_the_hub_only(
    fake_hub: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("JUPYTERHUB_API_URL", "JUPYTERHUB_API_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    assert not LumenServe().trusts_xheaders()  # nothing in front: a caller could write them
    assert LumenServe(trust_xheaders="on").trusts_xheaders()  # a proxy of the operator's
    for name, value in fake_hub.environ(PREFIX).items():
        monkeypatch.setenv(name, value)
    assert LumenServe().trusts_xheaders()  # the hub's proxy sets them
    assert not LumenServe(trust_xheaders="off").trusts_xheaders()
