"""Lumen on a real JupyterHub: nothing a user does in their own server changes money or identity.

One hub for the module (see ``conftest.py``): the npm proxy, PostgreSQL, the lumen
service with two workers, and the servers of alice (whose own config names bob),
bob and carol (a hub admin who also holds ``custom:lumen:admin``).  Every credential
alice can hold is tried: her browser (the Lab page's token and her cookies), her
kernel's credential, her server's hub token, an API token, and her personal key.

The last test stops the hub with SIGTERM, so this module must run in file order.
"""

from __future__ import annotations

import asyncio
import html
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from lumen_jupyter.core.ledger import ledger_matches_balance
from lumen_jupyter.core.tokens import count_text_tokens
from lumen_jupyter.store import Store
from lumen_jupyter.store.schema import accounts, instances, requests_log
from tests.hub.hub import (
    CACHE_SECONDS,
    CLASS,
    DEFAULT_MAX,
    SERVICE,
    STAFF,
    STAFF_MAX,
    Hub,
    Kernel,
    children,
    proc_environ,
    start_kernel,
)

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

MESSAGES = [{"role": "user", "content": "Tell me a story"}]
SPOOF_HEADERS = {
    "X-Lumen-User": "bob",
    "X-Forwarded-User": "bob",
    "X-Remote-User": "bob",
    "X-JupyterHub-User": "bob",
    "Remote-User": "bob",
}
SPOOF_QUERY = {"user": "bob", "username": "bob", "as": "bob"}
COIN = 1_000_000  # micro-coins


# -- credentials --------------------------------------------------------------------------


@dataclass
class Lane:
    """One credential and where it is used: ``base`` is where ``api/`` and ``v1/`` start."""

    name: str
    base: str
    headers: dict[str, str] = field(default_factory=dict)
    client: httpx.Client | None = None  # a browser's cookies
    personal_key: bool = False
    changes: bool = True  # False: the service's login cookie, which changes nothing

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {**self.headers, **kwargs.pop("headers", {})}
        if self.client is not None:
            if method != "GET":
                headers["X-XSRFToken"] = xsrf_cookie(self.client, self.base)
            return self.client.request(method, self.base + path, headers=headers, **kwargs)
        return httpx.request(method, self.base + path, headers=headers, timeout=60, **kwargs)

    def profile(self, **kwargs: Any) -> dict[str, Any]:
        answer = self.request("GET", "api/profile", **kwargs)
        assert answer.status_code == 200, (self.name, answer.status_code, answer.text)
        return dict(answer.json())

    def chat(self, model: str = "demo-pro", **body: Any) -> httpx.Response:
        payload = {"model": model, "messages": MESSAGES, "max_tokens": 16, **body}
        return self.request("POST", "v1/chat/completions", json=payload)


def xsrf_cookie(client: httpx.Client, url: str) -> str:
    """The ``_xsrf`` cookie a browser would send to ``url`` (the hub sets its own too)."""
    path = httpx.URL(url).path
    for cookie in client.cookies.jar:
        if cookie.name == "_xsrf" and path.startswith(cookie.path) and cookie.path != "/hub/":
            return str(cookie.value)
    return ""


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def page_token(browser: httpx.Client, user: str) -> str:
    """The token JupyterLab's page hands the browser for the user's server (a visitor to
    a shared server first authorizes it, as on the hub's page)."""
    page = browser.get(f"/user/{user}/lab")
    if page.url.path.endswith("/oauth2/authorize"):
        hidden = r'<input type="hidden" name="(_xsrf|scopes)" value="([^"]*)"'
        form: dict[str, list[str]] = {}
        for name, value in re.findall(hidden, page.text):
            form.setdefault(name, []).append(html.unescape(value))
        page = browser.post(str(page.url), data=form)
    assert page.status_code == 200, page.text[:300]
    found = re.search(r'"token":\s*"([^"]+)"', page.text)
    assert found, "no token in the Lab page config"
    return found.group(1)


@dataclass
class User:
    name: str
    lanes: dict[str, Lane]
    kernel: Kernel
    kernel_pid: int


def user_lanes(hub: Hub, name: str) -> User:
    browser = hub.browser(name)
    api_token = hub.api_token(name)
    kernel = start_kernel(hub, name, api_token)
    kernel_pid = int(kernel.execute("import os; print(os.getpid())").strip())
    kernel_env = proc_environ(kernel_pid)
    on_server = hub.user_url(name, "lumen/")
    service = hub.lumen_url
    key = hub.lumen_admin("new-key", user=name, name="script", create=True)["key"]["key"]
    browser_token = {"Authorization": f"token {page_token(browser, name)}"}
    login = browser.get(f"/services/{SERVICE}/admin/")  # the service's own hub login
    assert login.status_code in (200, 403), login.text[:300]
    assert any(c.path.startswith(f"/services/{SERVICE}") for c in browser.cookies.jar)
    lanes = [
        Lane("browser page token", on_server, browser_token),
        Lane("browser cookies", on_server, client=browser),
        Lane("browser at the service", service, client=browser, changes=False),
        Lane("kernel", on_server, bearer(kernel_env["LUMEN_KERNEL_TOKEN"])),
        Lane("server token", hub.lumen_direct, bearer(hub.server_token(name))),
        Lane("API token via server", on_server, bearer(api_token)),
        Lane("API token", service, bearer(api_token)),
        Lane("personal key", service, bearer(key), personal_key=True),
    ]
    return User(name, {lane.name: lane for lane in lanes}, kernel, kernel_pid)


ALICE_LANES = [
    "browser page token",
    "browser cookies",
    "browser at the service",
    "kernel",
    "server token",
    "API token via server",
    "API token",
    "personal key",
]


@pytest.fixture(scope="module")
def people(hub: Hub) -> Iterator[dict[str, User]]:
    """alice, bob and carol with their servers running and every credential of theirs.

    alice's own server config names bob: in hub mode it must change nothing."""
    config = hub.home("alice") / ".jupyter" / "jupyter_server_config.py"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text("c.LumenJupyter.username = 'bob'\nc.LumenJupyter.groups = ['staff']\n")
    names = ("alice", "bob", "carol")
    for name in names:  # start all three, then wait: they come up side by side
        httpx.post(
            f"{hub.url}/hub/api/users/{name}/server",
            headers={"Authorization": f"token {hub.tester_token}"},
            timeout=60,
        )
    for name in names:
        hub.start_server(name)
    yield {name: user_lanes(hub, name) for name in names}


@pytest.fixture(scope="module")
def alice(people: dict[str, User]) -> User:
    return people["alice"]


def books(hub: Hub, user: str) -> dict[str, Any]:
    """``user``'s calls as the database holds them, and the ledger invariant for everyone."""
    store = Store(hub.database.url)
    try:
        with store.read() as conn:
            ids = [int(i) for i in conn.execute(select(accounts.c.id)).scalars()]
            account = conn.execute(
                select(accounts.c.id).where(accounts.c.username == user)
            ).scalar_one()
            rows = conn.execute(
                select(requests_log, instances.c.pid)
                .select_from(
                    requests_log.outerjoin(instances, instances.c.id == requests_log.c.instance_id)
                )
                .where(requests_log.c.account_id == account)
                .order_by(requests_log.c.id)
            ).all()
            charged = conn.execute(
                select(func.coalesce(func.sum(requests_log.c.coins_micro), 0)).where(
                    requests_log.c.account_id == account
                )
            ).scalar_one()
            return {
                "ledger_ok": all(ledger_matches_balance(conn, acct) for acct in ids),
                "rows": rows,
                "charged": int(charged),
                "pending": sum(1 for row in rows if row.status == "pending"),
            }
    finally:
        store.dispose()


def settled(hub: Hub, user: str, timeout: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    state = books(hub, user)
    while state["pending"] and time.monotonic() < deadline:
        time.sleep(0.1)
        state = books(hub, user)
    assert state["pending"] == 0, state["rows"][-5:]
    return state


# -- identity -----------------------------------------------------------------------------


@pytest.mark.parametrize("lane", ALICE_LANES)
def test_identity_cannot_be_spoofed(hub: Hub, alice: User, lane: str) -> None:
    """Headers, query parameters and alice's own server config naming bob: still alice."""
    config = hub.home("alice") / ".jupyter" / "jupyter_server_config.py"
    assert "'bob'" in config.read_text()
    credential = alice.lanes[lane]
    assert credential.profile()["user"]["username"] == "alice"
    spoofed = credential.profile(headers=SPOOF_HEADERS, params=SPOOF_QUERY)
    assert spoofed["user"]["username"] == "alice"
    assert STAFF not in spoofed["tiles"]["groups"]  # nor the groups her config claims
    bob_before = hub.balance("bob")
    alice_before = hub.balance("alice")
    answer = credential.chat(headers=SPOOF_HEADERS, params=SPOOF_QUERY)
    assert hub.balance("bob") == bob_before
    if credential.changes:
        assert answer.status_code == 200, answer.text
        assert hub.balance("alice") < alice_before
    else:  # without the admin page's XSRF token, which alice's page never shows her
        assert answer.status_code == 403, answer.text
        assert hub.balance("alice") == alice_before


def test_the_kernel_spends_as_alice(hub: Hub, alice: User) -> None:
    """openai_client() in alice's kernel, as a notebook would: billed to alice, not bob."""
    bob_before, alice_before = hub.balance("bob"), hub.balance("alice")
    printed = alice.kernel.execute(
        "import lumen_jupyter\n"
        "client = lumen_jupyter.openai_client()\n"
        "reply = client.chat.completions.create(model='demo-pro', max_tokens=16,\n"
        "    messages=[{'role': 'user', 'content': 'Say hello'}])\n"
        "print('SPENT', reply.usage.total_tokens)\n"
    )
    assert printed.startswith("SPENT"), printed
    assert hub.balance("bob") == bob_before
    assert hub.balance("alice") < alice_before


# -- isolation ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bobs_key(hub: Hub, people: dict[str, User]) -> dict[str, Any]:
    return dict(hub.lumen_admin("new-key", user="bob", name="bob's", create=True)["key"])


@pytest.mark.parametrize("lane", ALICE_LANES)
def test_alice_cannot_reach_bob(
    hub: Hub, people: dict[str, User], bobs_key: dict[str, Any], lane: str
) -> None:
    """bob's profile, usage and keys answer 403/404 to each of alice's credentials, and
    bob's balance does not move."""
    credential = people["alice"].lanes[lane]
    bob_before = hub.balance("bob")
    not_hers = {
        "revoke bob's key": credential.request("DELETE", f"api/keys/{bobs_key['id']}"),
        "rename bob's key": credential.request(
            "PATCH", f"api/keys/{bobs_key['id']}", json={"name": "mine now"}
        ),
    }
    for what, answer in not_hers.items():
        assert answer.status_code in (403, 404), (what, answer.status_code, answer.text)
    refused = {
        "bob's usage": credential.request("GET", "api/admin/usage", params={"user": "bob"}),
        "bob's keys": credential.request("GET", "api/admin/keys", params={"user": "bob"}),
        "bob's pool": credential.request("GET", "api/admin/pool", params={"user": "bob"}),
        "every user": credential.request("GET", "api/admin/users"),
        "a key for bob": credential.request(
            "POST", "api/admin/new-key", json={"user": "bob", "name": "x", "create": True}
        ),
    }
    for what, answer in refused.items():
        assert answer.status_code in refusals(credential), (what, answer.status_code, answer.text)
    usage = credential.request("GET", "api/usage", params={"user": "bob"})
    assert usage.status_code == 200
    assert "bob" not in json.dumps(usage.json())
    keys = hub.lumen_admin("keys", user="bob")["keys"]
    mine = [key for key in keys if key["id"] == bobs_key["id"]]
    assert mine and mine[0]["status"] == "active" and mine[0]["name"] == "bob's"
    assert hub.balance("bob") == bob_before


def test_bobs_balance_is_untouched_by_alice(
    hub: Hub, people: dict[str, User], bobs_key: dict[str, Any]
) -> None:
    """After everything alice tried above (and her calls), bob's books are his own."""
    state = settled(hub, "bob")
    assert state["rows"] == []  # not one call was billed to bob
    assert hub.balance("bob") == DEFAULT_MAX * COIN
    assert state["ledger_ok"]


def test_a_visitor_on_a_shared_server_never_sees_the_owners_coins(
    hub: Hub, people: dict[str, User]
) -> None:
    """alice shares her server with bob (JupyterHub's sharing): bob may open her Lab, but
    her lumen - coins, keys, usage, model calls - answers him 403."""
    hub.api("POST", "shares/alice/", {"user": "bob"})
    browser = people["bob"].lanes["browser cookies"].client
    assert browser is not None
    visitor = Lane("bob on alice's server", hub.user_url("alice", "lumen/"))
    visitor.headers = {"Authorization": f"token {page_token(browser, 'alice')}"}
    by_cookie = Lane("bob's cookies on alice's server", visitor.base, client=browser)
    before = hub.balance("alice")
    for lane in (visitor, by_cookie):
        for method, path in (("GET", "api/profile"), ("GET", "api/usage"), ("GET", "api/keys")):
            answer = lane.request(method, path)
            assert answer.status_code == 403, (lane.name, path, answer.text)
            assert answer.json()["error"]["code"] == "not_server_owner", answer.text
        called = lane.chat()
        assert called.status_code == 403, called.text
    assert hub.balance("alice") == before


# -- admin rights -------------------------------------------------------------------------


def grant(lane: Lane, user: str, coins: str = "5") -> httpx.Response:
    return lane.request("POST", "api/admin/grant", json={"user": user, "coins": coins})


def refusals(lane: Lane) -> tuple[int, ...]:
    """What refusing an admin command may answer: on the service 401 or 403 (a 404 there
    would mean the test missed the route); a user's server may also not route it."""
    on_service = "/services/" in lane.base
    return (401, 403) if on_service else (401, 403, 404)


@pytest.mark.parametrize("lane", ALICE_LANES)
def test_alice_cannot_grant_herself_coins(hub: Hub, alice: User, lane: str) -> None:
    credential = alice.lanes[lane]
    before = hub.balance("alice")
    answer = grant(credential, "alice")
    assert answer.status_code in refusals(credential), (answer.status_code, answer.text)
    pool = {"user": "alice", "max": "9999"}
    answer = credential.request("POST", "api/admin/pool", json=pool)
    assert answer.status_code in refusals(credential), answer.text
    assert hub.balance("alice") == before


def test_an_admins_server_and_kernel_cannot_mint_coins(hub: Hub, people: dict[str, User]) -> None:
    """carol is a hub admin and holds custom:lumen:admin, but her server's token and her
    kernel's credential carry neither right: only her own API token does."""
    carol = people["carol"]
    before = hub.balance("alice")
    for lane in ("server token", "kernel", "browser page token", "API token via server"):
        answer = grant(carol.lanes[lane], "alice")
        assert answer.status_code in refusals(carol.lanes[lane]), (lane, answer.text)
    assert hub.balance("alice") == before
    carols_token = hub.token("carol", ["custom:lumen:admin", "access:services!service=lumen"])
    answer = grant(Lane("carol's API token", hub.lumen_url, bearer(carols_token)), "alice")
    assert answer.status_code == 200, answer.text
    assert hub.balance("alice") == before + 5 * COIN


def test_a_delegated_grant_reaches_only_its_group(hub: Hub, people: dict[str, User]) -> None:
    """bob holds custom:lumen:grant!group=class-a: alice (a member) yes, dave no."""
    bob = Lane("bob's API token", hub.lumen_url, bearer(hub.token("bob")))
    alice_before, dave_before = hub.balance("alice"), hub.balance("dave")
    refused = grant(bob, "dave")
    assert refused.status_code == 403, refused.text
    assert grant(bob, "bob").status_code == 403  # bob is not in class-a himself
    accepted = grant(bob, "alice", "2")
    assert accepted.status_code == 200, accepted.text
    assert hub.balance("alice") == alice_before + 2 * COIN
    assert hub.balance("dave") == dave_before


# -- secrets ------------------------------------------------------------------------------


def test_no_secret_reaches_a_users_processes_or_files(hub: Hub, alice: User) -> None:
    secrets = hub.secrets()
    server_pid = hub.server_pid("alice")
    pids = {server_pid, alice.kernel_pid, *children(server_pid)}
    leaks = []
    for pid in pids:
        for part in ("environ", "cmdline"):
            with_secret = Path(f"/proc/{pid}/{part}").read_bytes()
            leaks += [(pid, part, name) for name, s in secrets.items() if s.encode() in with_secret]
    env = proc_environ(server_pid)
    assert "LUMEN_DATABASE_URL" not in env and "LUMEN_CONFIG" not in env
    home = hub.home("alice")
    for path in home.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            leaks += [(path, "file", name) for name, s in secrets.items() if s.encode() in data]
    assert leaks == []
    # nothing of the service's on alice's side: no store, no key secret in her data dir
    assert not list(home.rglob("lumen.sqlite*")), "her server opened a store of its own"
    assert not (home / ".local" / "share" / "jupyter" / "lumen" / "secret").exists()


def test_the_kernel_cannot_open_the_database(hub: Hub, alice: User) -> None:
    db = hub.database
    if not db.password_required:
        pytest.skip("the PostgreSQL server was given (LUMEN_TEST_POSTGRES_URL) and trusts all")
    code = (
        "import psycopg\n"
        "try:\n"
        f"    psycopg.connect(host={db.host!r}, port={db.port}, dbname={db.name!r}, "
        f"user={db.role!r}, connect_timeout=5).close()\n"
        "    print('connected')\n"
        "except psycopg.OperationalError as exc:\n"
        "    print('refused:', exc)\n"
    )
    printed = alice.kernel.execute(code)
    assert printed.startswith("refused:"), printed
    assert "password" in printed


def test_the_services_own_files_are_its_alone(hub: Hub) -> None:
    """The key secret and the admin token the service creates are 0600, and another Unix
    user cannot read them (a user's kernel, under a spawner with real Unix users)."""
    for name in ("secret", "admin_token"):
        path = hub.secrets_dir / name
        assert path.stat().st_mode & 0o777 == 0o600, (name, oct(path.stat().st_mode))
    if os.geteuid() != 0 or shutil.which("runuser") is None:
        pytest.skip("reading as another Unix user needs root and runuser")
    for name in ("secret", "admin_token", "lumen.yaml", "jupyter_lumen_config.py"):
        done = subprocess.run(
            ["runuser", "-u", "nobody", "--", "cat", str(hub.secrets_dir / name)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert done.returncode != 0 and "Permission denied" in done.stderr, (name, done)


def test_the_admin_command_line_reaches_the_service(hub: Hub) -> None:
    """``jupyter lumen --url … --token-file admin_token`` on the service's machine."""
    done = subprocess.run(
        [
            *(sys.executable, "-m", "lumen_jupyter.cli", "--url", hub.service_direct),
            *("--token-file", str(hub.secrets_dir / "admin_token"), "--json"),
            *("grant", "dave", "3", "--create"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["amount"]["micro"] == 3 * COIN


# -- money --------------------------------------------------------------------------------


def test_concurrent_calls_on_both_workers_never_overspend(hub: Hub, alice: User) -> None:
    """60 dear calls at once, half through alice's server and half with her key through
    the proxy: some are refused, the balance never goes below zero and the books add up.

    Which worker accepts a connection is the kernel's race (and the proxy and the
    forwarder reuse their connections), so a burst now and then lands on one worker
    only: bursts repeat, each checked in full, until one has run on both (at most 5)."""
    lanes = [alice.lanes["API token via server"], alice.lanes["personal key"]]
    workers: set[int] = set()
    for _burst in range(5):
        current = hub.balance("alice") or 0
        topped_up = 120 * COIN  # enough for about half the calls: each reserves ~5 coins
        hub.lumen_admin("grant", user="alice", coins=str((topped_up - current) / COIN))
        start = hub.balance("alice")
        assert start == topped_up
        first_row = len(books(hub, "alice")["rows"])
        statuses = asyncio.run(_burst_of_dear_calls(lanes, 60))
        assert set(statuses) <= {200, 429}, statuses
        assert statuses.count(200) > 0 and statuses.count(429) > 0, statuses
        state = settled(hub, "alice")
        rows = state["rows"][first_row:]
        charged = sum(row.coins_micro for row in rows)
        after = hub.balance("alice")
        assert after is not None and after >= 0
        assert start - after == charged
        assert state["ledger_ok"]
        workers = {row.pid for row in rows if row.pid}
        if len(workers) == 2:
            break
    assert len(workers) == 2, "five bursts, each served by one worker"


async def _burst_of_dear_calls(lanes: list[Lane], count: int) -> list[int]:
    limits = httpx.Limits(max_connections=count)
    async with httpx.AsyncClient(timeout=120, limits=limits) as http:

        async def one(lane: Lane) -> int:
            body = {"model": "demo-dear", "messages": MESSAGES, "max_tokens": 20}
            answer = await http.post(
                lane.base + "v1/chat/completions", json=body, headers=lane.headers
            )
            return answer.status_code

        return await asyncio.gather(*(one(lanes[i % len(lanes)]) for i in range(count)))


def _stream(lane: Lane, stop_after: int | None = None) -> dict[str, Any]:
    body = {"model": "demo-slow", "messages": MESSAGES, "max_tokens": 40, "stream": True}
    started = time.monotonic()
    first: float | None = None
    events: list[dict[str, Any]] = []
    with (
        httpx.Client(timeout=60) as http,
        http.stream(
            "POST", lane.base + "v1/chat/completions", json=body, headers=lane.headers
        ) as answer,
    ):
        assert answer.status_code == 200, answer.read()
        for line in answer.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            if first is None:
                first = time.monotonic() - started
            events.append(json.loads(line[6:]))
            if stop_after is not None and len(events) >= stop_after:
                break
    text = "".join(
        (event["choices"][0].get("delta") or {}).get("content") or ""
        for event in events
        if event.get("choices")
    )
    return {"first": first, "total": time.monotonic() - started, "text": text}


@pytest.mark.parametrize("lane", ["API token via server", "personal key"])
def test_streams_flow_through_the_proxy(hub: Hub, alice: User, lane: str) -> None:
    """The first chunk arrives long before the stream ends (the upstream waits 40 ms
    between chunks), through the proxy and, for her server, through its forwarder."""
    whole = _stream(alice.lanes[lane])
    assert whole["first"] is not None
    assert whole["total"] > 0.5
    assert whole["first"] < whole["total"] / 3, whole


def test_an_aborted_stream_is_billed_for_what_was_delivered(hub: Hub, alice: User) -> None:
    lane = alice.lanes["API token via server"]
    full = _stream(lane)
    settled(hub, "alice")
    rows_before = len(books(hub, "alice")["rows"])
    cut = _stream(lane, stop_after=4)
    state = settled(hub, "alice")
    row = state["rows"][rows_before]
    assert row.status == "aborted", row
    assert 0 < row.output_tokens < count_text_tokens(full["text"])
    assert row.output_tokens >= count_text_tokens(cut["text"])
    assert 0 < row.coins_micro < row.reserved_micro
    assert state["ledger_ok"]


def test_a_personal_key_works_from_outside_and_is_revoked_at_once(hub: Hub, alice: User) -> None:
    """A key made in alice's Lab (through her server) calls https://hub/services/lumen/v1,
    billed to her; revoked there, every worker refuses it on the next call."""
    lab = alice.lanes["browser page token"]
    created = lab.request("POST", "api/keys", json={"name": "laptop"})
    assert created.status_code == 201, created.text
    key = created.json()
    outside = Lane("alice's laptop", hub.service_url, bearer(key["key"]), personal_key=True)
    before = hub.balance("alice")
    assert outside.chat().status_code == 200
    assert hub.balance("alice") < before
    revoked = lab.request("DELETE", f"api/keys/{key['id']}")
    assert revoked.status_code == 200 and revoked.json()["result"] == "revoked", revoked.text
    for _ in range(6):  # fresh connections, so both workers are asked
        with httpx.Client(timeout=60, headers={"Connection": "close"}) as fresh:
            body = {"model": "demo-pro", "messages": MESSAGES, "max_tokens": 16}
            answer = fresh.post(
                f"{outside.base}v1/chat/completions", json=body, headers=outside.headers
            )
        assert answer.status_code == 401, answer.text


# -- the hub changes ----------------------------------------------------------------------


def pool_max(lane: Lane) -> int:
    return int(lane.profile()["pool"]["max"]["micro"]) // COIN


def becomes(lane: Lane, coins: int) -> None:
    """The pool's max becomes ``coins`` within the hub's cache time (and a little)."""
    started = time.monotonic()
    while (now := pool_max(lane)) != coins:
        assert time.monotonic() - started < CACHE_SECONDS + 5, f"still {now}"
        time.sleep(0.2)


def test_a_group_change_in_the_hub_changes_the_pool(hub: Hub) -> None:
    """dave joins the hub group ``staff`` (a YAML group with a bigger pool), then leaves."""
    dave = Lane("dave's API token", hub.lumen_url, bearer(hub.api_token("dave")))
    assert pool_max(dave) == DEFAULT_MAX
    hub.add_to_group(STAFF, "dave")
    becomes(dave, STAFF_MAX)
    assert STAFF in dave.profile()["tiles"]["groups"]
    hub.remove_from_group(STAFF, "dave")
    becomes(dave, DEFAULT_MAX)
    assert CLASS not in dave.profile()["tiles"]["groups"]


def test_a_stopped_servers_token_is_refused_within_the_cache_time(hub: Hub) -> None:
    """The hub revokes a server's token when the server stops; lumen, which keeps the
    hub's answers for ``hub_cache_seconds``, refuses it from then on."""
    hub.start_server("dave")
    server = Lane("dave's server token", hub.lumen_direct, bearer(hub.server_token("dave")))
    assert server.profile()["user"]["username"] == "dave"
    hub.stop_server("dave")
    stopped = time.monotonic()
    while (answer := server.request("GET", "api/profile")).status_code == 200:
        assert time.monotonic() - stopped < CACHE_SECONDS + 5, "the old token still works"
        time.sleep(0.2)
    assert answer.status_code == 401, answer.text
    assert "dave" not in answer.text


def test_lumen_settings_kept_on_a_hub_group_reach_its_members(hub: Hub) -> None:
    """A hub administrator keeps a pool on the hub group ``physics`` (unknown to the
    YAML); dave joins it: his pool follows the group's properties, and a change of them."""
    dave = Lane("dave's API token", hub.lumen_url, bearer(hub.api_token("dave")))
    hub.api("POST", "groups/physics")
    hub.set_group_properties("physics", {"lumen": {"tokens": {"max": 77, "starting": 77}}})
    try:
        assert pool_max(dave) == DEFAULT_MAX
        hub.add_to_group("physics", "dave")
        becomes(dave, 77)
        assert dave.profile()["pool"]["source"] == "group:physics"
        hub.set_group_properties("physics", {"lumen": {"tokens": {"max": 33, "starting": 33}}})
        becomes(dave, 33)
        hub.set_group_properties("physics", {"lumen": {"tokens": {"max": "a lot"}}})  # ignored
        becomes(dave, DEFAULT_MAX)
        answer = dave.chat()
        assert answer.status_code == 200, answer.text  # a wrong setting stops no call
    finally:
        hub.api("DELETE", "groups/physics")


# -- last: the hub stops ------------------------------------------------------------------


def test_after_sigterm_to_the_hub_no_lumen_process_remains(hub: Hub, people: Any) -> None:
    assert len(hub.lumen_processes()) == 3  # the supervisor and two workers
    stopped = hub.stop()
    assert stopped["exit"] == 0, hub.log()[-3000:]
    assert stopped["lumen_left"] == []
    assert stopped["others_left"] == []  # nor the proxy, a server or a kernel
    assert stopped["ports_busy"] == []
    assert stopped["seconds"] < 30, stopped
