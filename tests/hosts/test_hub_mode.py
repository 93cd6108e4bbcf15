"""A user's server on JupyterHub: lumen forwarded to the hub's lumen service, for its owner only.

ada's Jupyter server runs the extension in hub mode (``LUMEN_SERVICE_URL`` set, no
store) and forwards to the standalone service in this process, which knows users
by their hub token only (``hub_service.py``).  To show that nothing on ada's side
names anyone, her server is also configured with ``LumenJupyter.username = "bob"``
and finds a YAML of her own in ``LUMEN_CONFIG``; both must change nothing.

Visitors of a shared server are JupyterHub users too: the server's identity
provider here gives sessions JupyterHub's own user class (with its ``hub_user``
model), as the hub's single-user extension does.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from jupyter_server.auth import IdentityProvider
from jupyterhub.singleuser.extension import JupyterHubUser
from sqlalchemy import select

from lumen_jupyter.core.accounts import Identity
from lumen_jupyter.core.money import call_cost, coins_to_micro
from lumen_jupyter.core.redact import redact
from lumen_jupyter.core.tokens import TokenCounter
from lumen_jupyter.demo.backend import DemoBackend, DemoReply
from lumen_jupyter.store.schema import requests_log
from tests.hosts.conftest import Host
from tests.hosts.hub_service import HUB_TOKENS, RunningService

MESSAGES = [{"role": "user", "content": "Tell me a long story about gateways and coins"}]
ADA = Identity(username="ada", display_name="ada")
BOB = Identity(username="bob", display_name="bob")

SESSION_TOKENS = {
    "hub-session-of-ada": {"kind": "user", "name": "ada"},
    "hub-session-of-bob": {"kind": "user", "name": "bob"},
    "hub-session-of-a-service": {"kind": "service", "name": "ada"},
}
"""Browser sessions of the server, as JupyterHub's identity provider resolves them."""


class HubSessions(IdentityProvider):
    """Sessions known to the hub become JupyterHub users, as on a real single-user server;
    the test's Jupyter token still works as the server's own."""

    async def get_user(self, handler: Any) -> Any:
        scheme, _, token = handler.request.headers.get("Authorization", "").partition(" ")
        model = SESSION_TOKENS.get(token.strip()) if scheme.lower() == "token" else None
        if model is not None:
            handler._token_authenticated = True  # as HubAuth marks a token: no XSRF check
            return JupyterHubUser({**model, "scopes": [], "groups": []})
        found = super().get_user(handler)
        return await found if inspect.isawaitable(found) else found


@pytest.fixture(params=["hub"])
def host_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def own_yaml(tmp_path: Path) -> Path:
    """A YAML of the user's own, with a model and a provider key, that hub mode ignores."""
    path = tmp_path / "users-own" / "lumen.yaml"
    path.parent.mkdir()
    own = {
        "models": [
            {
                "name": "users-own-model",
                "endpoints": [{"url": "http://127.0.0.1:9/v1", "api_key": "sk-proj-" + "u" * 40}],
            }
        ]
    }
    path.write_text(yaml.safe_dump(own), encoding="utf-8")
    return path


@pytest.fixture
def jp_server_config(
    hub_service: RunningService, own_yaml: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, Any]:
    monkeypatch.setenv("LUMEN_CONFIG", str(own_yaml))
    redact.discard(HUB_TOKENS["ada"])  # the server must register it itself
    return {
        "ServerApp": {
            "jpserver_extensions": {"lumen_jupyter": True},
            "identity_provider_class": HubSessions,
        },
        "LumenJupyter": {"username": "bob"},
    }


def session_of(name: str) -> dict[str, str]:
    return {"Authorization": f"token hub-session-of-{name}"}


async def chat(host: Host, headers: dict[str, str], **body: Any) -> httpx.Response:
    payload = {"model": "demo-pro", "messages": MESSAGES, "max_tokens": 5, **body}
    return await host.http.post(f"{host.v1}/chat/completions", json=payload, headers=headers)


def calls(host: Host) -> list[Any]:
    with host.service.store.read() as conn:
        return list(conn.execute(select(requests_log).order_by(requests_log.c.id)))


def account_of(host: Host, username: str) -> int | None:
    return host.service.known_account(username)


# -- who the forwarder acts for -------------------------------------------------------------


async def test_profile_keys_consent_and_usage_act_for_the_owner(host: Host) -> None:
    profile = (await host.rest("GET", "profile")).json()
    assert profile["user"]["username"] == "ada"  # not the configured "bob"
    key_id, _ = await host.key("from-the-server")
    assert [k["id"] for k in host.service.list_keys(ADA)] == [key_id]
    consented = await host.rest("POST", "models/demo-restricted/consent", {})
    assert consented.status_code == 200, consented.text
    assert host.service.model_detail(ADA, "demo-restricted")["access"] == "consented"
    assert (await chat(host, host.session)).status_code == 200
    await host.settled()
    usage = (await host.rest("GET", "usage?period=week")).json()
    assert usage["totals"]["demo-pro"]["requests"] == 1
    assert host.service.known_account("bob") is None  # nothing ever reached bob
    listed = (await host.http.get(f"{host.v1}/models", headers=host.session)).json()
    assert "users-own-model" not in {m["id"] for m in listed["data"]}  # the YAML is not read


async def test_a_kernel_call_and_a_session_call_are_billed_to_the_owner(
    host: Host, jp_serverapp: Any
) -> None:
    kernel = await host.http.post(
        f"{host.root}api/kernels", json={"name": "python3"}, headers=host.session
    )
    assert kernel.status_code == 201, kernel.text
    kernel_id = kernel.json()["id"]
    try:
        environment = kernel_environment(jp_serverapp, kernel_id)
        credential = environment["LUMEN_KERNEL_TOKEN"]
        assert credential.startswith("lkt_")
        assert environment["LUMEN_JUPYTER_URL"] == host.root
        # JupyterHub gives kernels the server's environment, hub token included (it only
        # identifies the owner); lumen adds no copy of it anywhere.
        hub_token = HUB_TOKENS["ada"]
        holders = {name for name, value in environment.items() if hub_token in value}
        assert holders <= {"JUPYTERHUB_API_TOKEN", "JPY_API_TOKEN"}

        before = host.balance("ada")
        by_kernel = await chat(
            host,
            {"Authorization": f"Bearer {credential}", "X-Lumen-Notebook": "work/a.ipynb"},
        )
        by_session = await chat(host, host.session)
        assert (by_kernel.status_code, by_session.status_code) == (200, 200), by_kernel.text
        await host.settled()
    finally:
        await host.http.delete(f"{host.root}api/kernels/{kernel_id}", headers=host.session)
    rows = calls(host)
    ada = account_of(host, "ada")
    assert [(r.account_id, r.source, r.status) for r in rows] == [
        (ada, "kernel", "ok"),
        (ada, "session", "ok"),
    ]
    assert rows[0].notebook == "work/a.ipynb"  # a label, passed on as such
    assert host.balance("ada") == before - sum(r.coins_micro for r in rows)
    # The kernel's credential dies with its kernel.
    gone = await chat(host, {"Authorization": f"Bearer {credential}"})
    assert gone.status_code == 401


def kernel_environment(serverapp: Any, kernel_id: str) -> dict[str, str]:
    process = serverapp.kernel_manager.get_kernel(kernel_id).provisioner.process
    raw = Path(f"/proc/{process.pid}/environ").read_bytes()
    pairs = (entry.split(b"=", 1) for entry in raw.split(b"\0") if b"=" in entry)
    return {name.decode(): value.decode("utf-8", "replace") for name, value in pairs}


async def test_a_personal_key_is_passed_on_and_bills_its_owner(
    host: Host, hub_service: RunningService
) -> None:
    key_id, key = await host.key()
    # bob made a key on the service himself (with his own hub token).
    bobs = await host.http.post(
        f"{hub_service.url}lumen/api/keys",
        json={"name": "bobs"},
        headers={"Authorization": f"token {HUB_TOKENS['bob']}"},
    )
    assert bobs.status_code == 201, bobs.text
    for credential in (key, bobs.json()["key"]):
        answer = await chat(host, {"Authorization": f"Bearer {credential}"})
        assert answer.status_code == 200, answer.text
    await host.settled()
    rows = calls(host)
    assert [(r.account_id, r.key_id, r.source) for r in rows] == [
        (account_of(host, "ada"), key_id, "api"),
        (account_of(host, "bob"), bobs.json()["id"], "api"),
    ]


async def test_nothing_a_caller_sends_names_another_user(host: Host) -> None:
    spoofing = {
        **host.session,
        "X-Lumen-User": "bob",
        "X-Forwarded-User": "bob",
        "X-Remote-User": "bob",
        "X-Forwarded-For": "10.0.0.66",
        "Cookie": "jupyterhub-user-bob=forged",
    }
    profile = await host.http.get(
        f"{host.root}lumen/api/profile?user=bob&username=bob&account=2", headers=spoofing
    )
    assert profile.status_code == 200, profile.text
    assert profile.json()["user"]["username"] == "ada"
    answer = await chat(host, spoofing, user="bob")
    assert answer.status_code == 200, answer.text
    # bob's own hub token sent to ada's server is no credential there at all (a fresh
    # client: the test's own holds the owner's login cookie by now).
    async with httpx.AsyncClient() as fresh:
        stolen = await fresh.get(
            f"{host.root}lumen/api/profile",
            headers={"Authorization": f"token {HUB_TOKENS['bob']}"},
        )
    assert stolen.status_code == 403
    await host.settled()
    assert {r.account_id for r in calls(host)} == {account_of(host, "ada")}
    assert host.service.known_account("bob") is None


async def test_a_visitor_of_a_shared_server_is_refused(host: Host) -> None:
    own = await host.http.get(f"{host.root}lumen/api/profile", headers=session_of("ada"))
    assert own.status_code == 200 and own.json()["user"]["username"] == "ada"
    for visitor in ("bob", "a-service"):
        headers = session_of(visitor)
        for path in ("lumen/api/profile", "lumen/api/usage", "lumen/api/events"):
            refused = await host.http.get(f"{host.root}{path}", headers=headers)
            assert refused.status_code == 403, (visitor, path, refused.text)
            error = refused.json()["error"]
            assert error["code"] == "not_server_owner", (visitor, path, error)
            assert "belongs to ada" in error["message"]
        spent = await chat(host, headers)
        assert spent.status_code == 403
        assert spent.json()["error"]["code"] == "not_server_owner"
    assert calls(host) == []


# -- streams ----------------------------------------------------------------------------------


async def test_a_stream_arrives_piece_by_piece_through_the_forwarder(
    host: Host, demo: DemoBackend
) -> None:
    demo.state.set_fault("slow_chunks", latency_ms=150)
    body = {"model": "demo-pro", "messages": MESSAGES, "max_tokens": 12, "stream": True}
    started = time.monotonic()
    arrivals: list[float] = []
    async with host.http.stream(
        "POST", f"{host.v1}/chat/completions", json=body, headers=host.session
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        async for line in response.aiter_lines():
            if line.startswith("data: ") and '"content"' in line:
                arrivals.append(time.monotonic() - started)
    ended = time.monotonic() - started
    assert len(arrivals) >= 5
    # The first piece came long before the stream ended: nothing waited for the whole.
    assert arrivals[0] < ended - 0.5, (arrivals, ended)
    assert arrivals[-1] - arrivals[0] > 0.5
    await host.settled()


def _tokens(texts: list[str]) -> int:
    counter = TokenCounter()
    for text in texts:
        counter.add(text)
    return counter.tokens


async def test_an_aborted_stream_is_billed_for_what_was_delivered(
    host: Host, demo: DemoBackend
) -> None:
    demo.state.set_fault("slow_chunks", latency_ms=150)
    body = {"model": "demo-pro", "messages": MESSAGES, "stream": True}
    before = host.balance("ada")
    read: list[dict[str, Any]] = []
    async with host.http.stream(
        "POST", f"{host.v1}/chat/completions", json=body, headers=host.session
    ) as response:
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                read.append(json.loads(line[6:]))
                if len(read) == 3:
                    break
    # Leaving the block closed the connection to ada's server with the stream unfinished.
    deadline = time.monotonic() + 10
    while demo.state.streams_aborted < 1:
        assert time.monotonic() < deadline, "the service's upstream stream was never closed"
        await asyncio.sleep(0.02)
    await host.settled()
    assert demo.state.streams_completed == 0
    (row,) = calls(host)
    assert (row.status, row.estimated) == ("aborted", True)
    reply = [w.text for w in DemoReply(MESSAGES[0]["content"], None).words()]
    # What ada read, at most a word or two more (in flight when she left through the
    # forwarder), far less than the whole reply.
    assert _tokens(reply[:2]) <= row.output_tokens <= _tokens(reply[:5])
    assert row.output_tokens < _tokens(reply) / 2
    assert row.coins_micro == call_cost(
        row.input_tokens, row.output_tokens, coins_to_micro(50), coins_to_micro(150)
    )
    assert host.balance("ada") == before - row.coins_micro


async def test_the_coin_meters_events_come_from_the_service(host: Host) -> None:
    events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def listen() -> None:
        async with host.http.stream(
            "GET", f"{host.root}lumen/api/events", headers=host.session, timeout=None
        ) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            async for line in response.aiter_lines():
                if line.startswith("data: "):
                    await events.put(json.loads(line[6:]))

    listener = asyncio.ensure_future(listen())
    try:
        first = await asyncio.wait_for(events.get(), 10)
        start = first["balance"]["micro"]
        assert (await chat(host, host.session)).status_code == 200
        moved = await asyncio.wait_for(events.get(), 5)
        assert moved["balance"]["micro"] < start
        assert moved["balance"]["micro"] == host.balance("ada")
    finally:
        listener.cancel()
        await asyncio.gather(listener, return_exceptions=True)
    await host.settled()


# -- what the user's server holds, and what it never says -------------------------------------


async def test_the_users_server_holds_no_store_and_no_secret(
    host: Host, jp_serverapp: Any, jp_data_dir: Path, jp_runtime_dir: Path, jp_root_dir: Path
) -> None:
    await host.key()
    assert (await chat(host, host.session)).status_code == 200
    await host.settled()
    settings = jp_serverapp.web_app.settings
    for name in ("lumen_service", "lumen_gateway", "lumen_accountant", "lumen_events"):
        assert name not in settings
    extension = settings["lumen_app"]
    assert getattr(extension, "runtime", None) is None and extension.demo is None
    assert not (jp_data_dir / "lumen").exists()
    home = Path(os.environ["HOME"])
    for folder in {jp_data_dir, jp_runtime_dir, jp_root_dir, home}:
        for path in folder.rglob("*"):
            assert not path.name.endswith((".db", ".sqlite")), path
            assert path.name not in ("secret", "admin_token", "token"), path


async def test_the_service_down_is_a_clear_503_without_the_token(
    host: Host,
    hub_service: RunningService,
    jp_serverapp: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("DEBUG")
    assert (await host.rest("GET", "profile")).status_code == 200
    await hub_service.stop()
    for method, path in (("GET", "api/profile"), ("GET", "api/events"), ("POST", "v1/embeddings")):
        answer = await host.http.request(
            method,
            f"{host.root}lumen/{path}",
            headers=host.session,
            json={"model": "demo-pro", "input": "x"} if method == "POST" else None,
        )
        assert answer.status_code == 503, (path, answer.text)
        error = answer.json()["error"]
        assert error["code"] == "lumen_service_unreachable"
        assert "cannot be reached" in error["message"]
        assert HUB_TOKENS["ada"] not in answer.text
    assert HUB_TOKENS["ada"] not in caplog.text
    # Whatever might carry it is masked: text through the redaction, the link's repr.
    assert redact(f"the hub said {HUB_TOKENS['ada']}.") == "the hub said [redacted]."
    link = jp_serverapp.web_app.settings["lumen_service_link"]
    assert HUB_TOKENS["ada"] not in repr(link.hub)


async def test_admin_routes_and_dot_segments_are_not_forwarded(host: Host) -> None:
    for path in (
        "lumen/api/admin/users",
        "lumen/api/%61dmin/users",
        "lumen/api/%2e%2e/%2e%2e/health",
        "lumen/v1/%2E%2E/api/profile",
    ):
        answer = await host.http.get(f"{host.root}{path}", headers=host.session)
        assert answer.status_code == 404, (path, answer.text)
        assert answer.json()["error"]["code"] == "not_found"


def test_latency_added_by_the_forwarder(
    host: Host, hub_service: RunningService, jp_asyncio_loop: asyncio.AbstractEventLoop
) -> None:
    """The hop costs little: the median of a REST read and of a small model call, each
    straight to the service and through ada's server (all in this one process)."""

    async def median_ms(url: str, headers: dict[str, str], body: Any = None) -> float:
        times = []
        async with httpx.AsyncClient() as client:
            for index in range(60):
                started = time.perf_counter()
                if body is None:
                    answer = await client.get(url, headers=headers)
                else:
                    answer = await client.post(url, headers=headers, json=body)
                assert answer.status_code == 200, answer.text
                if index >= 10:
                    times.append(time.perf_counter() - started)
        times.sort()
        return 1000 * times[len(times) // 2]

    direct = {"Authorization": f"token {HUB_TOKENS['ada']}"}
    model = {"model": "demo-free", "messages": MESSAGES, "max_tokens": 3}
    figures = {}
    for label, path, body in (
        ("profile", "lumen/api/profile", None),
        ("chat", "lumen/v1/chat/completions", model),
    ):
        straight = jp_asyncio_loop.run_until_complete(
            median_ms(hub_service.url + path, direct, body)
        )
        forwarded = jp_asyncio_loop.run_until_complete(
            median_ms(host.root + path, host.session, body)
        )
        figures[label] = (straight, forwarded)
    print("median ms (straight, forwarded):", figures)
    for straight, forwarded in figures.values():
        assert forwarded - straight < 25, figures
