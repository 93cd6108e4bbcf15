"""Widget state and the create / save / discard / revoke / consent / period round trips,
against a real server, with front-end messages simulated through ``_handle_msg``."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path
from typing import Any

import ipywidgets
import nbformat
import pytest

import lumen_jupyter
from lumen_jupyter import widgets
from lumen_jupyter.kernel.client import call_listeners as hooks

from .conftest import Sent, intent, run
from .fake_source import FakeSource
from .rest_source import RestSource


async def make(cls: type, source: Any, **kwargs: Any) -> Any:
    """A widget once its first load (done off the constructor's thread) has finished."""
    widget = await run(cls, source, refresh_interval=kwargs.pop("refresh_interval", 0), **kwargs)
    assert await run(widget.wait, 30)
    return widget


async def test_profile_loads_every_part(source: RestSource, sent: list[Sent]) -> None:
    profile = await make(widgets.Profile, source)
    assert profile.section == "profile"
    assert profile.profile["user"]["display_name"] == "Ada Lovelace"
    assert profile.profile["pool"]["state"] == "limited"
    assert profile.profile["pool"]["balance"] == {"micro": 20_000_000, "text": "20"}
    assert profile.api_keys == []
    assert [m["name"] for m in profile.models] == ["demo-free", "demo-pro", "demo-restricted"]
    assert profile.usage["period"] == "month" and profile.usage["group_by"] == "model"
    assert profile.loading is False and profile.error == ""
    assert isinstance(source, widgets.ProfileSource)
    assert repr(profile) == "<Profile of RestSource>"
    state = profile.get_state()
    for trait in (
        "profile",
        "api_keys",
        "models",
        "usage",
        "loading",
        "error",
        "period",
        "section",
    ):
        assert trait in state


async def test_the_widgets_at_the_package_top(source: RestSource) -> None:
    for name in ("Profile", "BalanceCard", "KeysTable", "ModelTable", "SpendingChart"):
        assert getattr(lumen_jupyter, name) is getattr(widgets, name)
        assert name in lumen_jupyter.__all__ and name in dir(lumen_jupyter)
    profile = await make(lumen_jupyter.Profile, source)
    assert profile.profile["pool"]["balance"]["text"] == "20"
    with pytest.raises(AttributeError, match="no attribute 'Profil'"):
        _ = lumen_jupyter.Profil  # type: ignore[attr-defined]


async def test_the_first_screen_comes_first_then_the_whole_lists(
    source: RestSource, sent: list[Sent]
) -> None:
    """45 keys (5 revoked): the front end gets the first 40 active keys with their total
    before it gets all of them; the totals go back to None once the lists are whole."""
    for i in range(45):
        created = await run(source.create_key, f"key {i}")
        if i % 9 == 4:
            await run(source.revoke_key, created["id"])
    profile = await make(widgets.Profile, source)
    updates = [
        m.data["state"]
        for m in sent
        if m.msg_type == "comm_msg" and m.data.get("method") == "update"
    ]
    keys = [(len(u["api_keys"]), u.get("keys_total", "unset")) for u in updates if "api_keys" in u]
    assert keys[0] == (40, 40), keys
    assert keys[-1] == (45, None), keys
    first_page = next(u["api_keys"] for u in updates if "api_keys" in u)
    assert all(k["status"] == "active" for k in first_page)
    assert [k["name"] for k in first_page[:3]] == ["key 0", "key 1", "key 2"]
    assert [k["name"] for k in first_page[-2:]] == ["key 43", "key 44"]
    assert profile.keys_total is None and profile.models_total is None
    assert len(profile.api_keys) == 45
    # The demo's three models fit the first page: no second request for them.
    assert [path for _, path in source.calls].count("models") == 1
    assert ("GET", "keys") in source.calls


@pytest.mark.parametrize(
    ("cls", "section", "calls"),
    [
        (widgets.BalanceCard, "balance", {"profile"}),
        (widgets.KeysTable, "keys", {"keys"}),
        (widgets.ModelTable, "models", {"models"}),
        (widgets.SpendingChart, "spending", {"usage"}),
    ],
)
async def test_parts_load_only_what_they_show(
    source: RestSource, sent: list[Sent], cls: type, section: str, calls: set[str]
) -> None:
    widget = await make(cls, source)
    assert widget.section == section
    assert {path.split("?")[0] for _, path in source.calls} == calls


async def test_new_key_reaches_the_front_end_once_and_never_the_state(
    source: RestSource, sent: list[Sent], jp_fetch: Any, tmp_path: Path
) -> None:
    profile = await make(widgets.Profile, source)
    reply, buffers = await intent(profile, sent, "create_key")
    assert reply["ok"] is True
    assert set(reply["data"]) == {"id", "name", "hint", "status"}
    assert reply["data"]["status"] == "draft"
    assert len(buffers) == 1
    raw = buffers[0].decode()
    assert raw.startswith("sk_") and len(raw) == 46
    assert reply["data"]["hint"] == f"{raw[:4]}…{raw[-4:]}"
    # Drafts are not listed; the dialog names it and saves it.
    assert profile.api_keys == []
    reply, buffers = await intent(
        profile, sent, "save_key", id=reply["data"]["id"], name="my-research-script"
    )
    assert reply["ok"] is True and buffers == []
    assert [k["name"] for k in profile.api_keys] == ["my-research-script"]
    assert profile.api_keys[0]["hint"] == f"{raw[:4]}…{raw[-4:]}"
    # The key works at the gateway, so it is the real one.
    response = await jp_fetch(
        "lumen", "v1", "models", headers={"Authorization": f"Bearer {raw}"}, raise_error=False
    )
    assert response.code == 200

    # Nowhere but in that one buffer: not in any JSON sent, not in state, not in a saved notebook.
    carrying = [m for m in sent if any(raw.encode() in b for b in m.buffers)]
    assert len(carrying) == 1 and carrying[0].data["content"]["type"] == "reply"
    assert all(raw not in m.text() for m in sent)
    assert raw not in json.dumps(profile.get_state(), default=str)
    assert raw not in repr(profile)
    path = save_notebook_with_widget_state(profile, tmp_path / "saved.ipynb")
    text = path.read_text(encoding="utf-8")
    assert "my-research-script" in text  # the widget state was saved ...
    assert raw not in text  # ... without the key


def save_notebook_with_widget_state(widget: Any, path: Path) -> Path:
    """What Jupyter saves: the widget's output and the widget state in the metadata."""
    data, _metadata = widget._repr_mimebundle_()
    notebook = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("widgets.Profile(client)")
    cell.outputs = [nbformat.v4.new_output("display_data", data=data)]
    notebook.cells = [cell]
    state = ipywidgets.Widget.get_manager_state(drop_defaults=False, widgets=[widget])
    notebook.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": state}
    nbformat.write(notebook, path)
    return path


async def test_discarding_a_new_key_stores_nothing(source: RestSource, sent: list[Sent]) -> None:
    keys = await make(widgets.KeysTable, source)
    reply, buffers = await intent(keys, sent, "create_key")
    raw = buffers[0].decode()
    reply, _ = await intent(keys, sent, "discard_key", id=reply["data"]["id"])
    assert reply["ok"] is True
    assert await run(source.keys, True) == []
    assert keys.api_keys == []
    del raw


async def test_revoke_keeps_the_key_struck_through(source: RestSource, sent: list[Sent]) -> None:
    created = await run(source.create_key, "ci-runner")
    keys = await make(widgets.KeysTable, source)
    assert [(k["name"], k["status"]) for k in keys.api_keys] == [("ci-runner", "active")]
    assert all("key" not in k for k in keys.api_keys)
    reply, _ = await intent(keys, sent, "revoke_key", id=created["id"])
    assert reply["ok"] is True
    # Revoked keys stay in the trait; "Show deleted keys" is a view filter.
    assert [(k["name"], k["status"]) for k in keys.api_keys] == [("ci-runner", "revoked")]
    assert keys.api_keys[0]["revoked_at"].endswith("Z")


async def test_consent_flips_the_row_in_place(source: RestSource, sent: list[Sent]) -> None:
    models = await make(widgets.ModelTable, source)
    before = [m["name"] for m in models.models]
    row = next(m for m in models.models if m["name"] == "demo-restricted")
    assert row["access"] == "needs_ack" and row["notice"]
    reply, _ = await intent(models, sent, "consent", name="demo-restricted", notice_digest="0" * 64)
    assert reply["ok"] is False and "notice" in reply["error"]
    reply, _ = await intent(
        models, sent, "consent", name="demo-restricted", notice_digest=row["notice_digest"]
    )
    assert reply == {
        "type": "reply",
        "request_id": reply["request_id"],
        "ok": True,
        "error": None,
        "data": {"name": "demo-restricted", "access": "consented"},
    }
    assert [m["name"] for m in models.models] == before
    assert next(m for m in models.models if m["name"] == "demo-restricted")["access"] == "consented"
    reply, _ = await intent(models, sent, "consent", name="demo-free")
    assert reply["ok"] is False and "does not need consent" in reply["error"]


async def test_set_period(source: RestSource, sent: list[Sent]) -> None:
    chart = await make(widgets.SpendingChart, source)
    reply, _ = await intent(chart, sent, "set_period", period="week")
    assert reply["ok"] is True
    assert chart.period == "week" and chart.usage["period"] == "week"
    assert len(chart.usage["buckets"]) == 7
    reply, _ = await intent(chart, sent, "set_period", period="decade")
    assert reply["ok"] is False and "period must be one of" in reply["error"]
    assert chart.period == "week"


async def test_refresh_intent_and_unknown_intents(source: RestSource, sent: list[Sent]) -> None:
    card = await make(widgets.BalanceCard, source)
    reply, _ = await intent(card, sent, "refresh")
    assert reply["ok"] is True and reply["error"] is None
    reply, _ = await intent(card, sent, "format_disk")
    assert reply == {**reply, "ok": False, "error": "unknown request 'format_disk'"}
    reply, _ = await intent(card, sent, "save_key", id="1; DROP TABLE", name="x")
    assert reply["ok"] is False and "whole number" in reply["error"]
    # Not an intent at all: ignored, no reply.
    count = len(sent)
    await run(
        card._handle_msg,
        {"content": {"data": {"method": "custom", "content": {"x": 1}}}, "buffers": []},
    )
    assert len(sent) == count


class Flaky(FakeSource):
    def __init__(self) -> None:
        super().__init__()
        self.down = True

    def profile(self) -> dict[str, Any]:
        if self.down:
            raise ConnectionError("the gateway is not reachable")
        return super().profile()


async def test_loading_and_error_states(sent: list[Sent]) -> None:
    flaky = Flaky()
    card = await make(widgets.BalanceCard, flaky)
    assert card.profile is None
    assert card.error == "Could not load the profile: the gateway is not reachable"
    assert card.loading is False
    loading_updates = [
        m.data["state"]["loading"] for m in sent if m.data and "loading" in m.data.get("state", {})
    ]
    assert True in loading_updates and loading_updates[-1] is False
    flaky.down = False
    assert await run(card.refresh) is True
    assert card.error == "" and card.profile["user"]["username"] == "grace"


async def test_notify_call_refreshes_live_widgets(source: RestSource, sent: list[Sent]) -> None:
    keys = await make(widgets.KeysTable, source)
    assert keys in hooks.live_widgets()
    await run(source.create_key, "made-elsewhere")
    assert keys.api_keys == []
    widgets.notify_call("demo-free")
    deadline = time.monotonic() + 10
    while not keys.api_keys and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert [k["name"] for k in keys.api_keys] == ["made-elsewhere"]
    keys.close()
    assert keys not in hooks.live_widgets()


async def test_periodic_refresh(sent: list[Sent]) -> None:
    fake = FakeSource()
    card = await make(widgets.BalanceCard, fake, refresh_interval=0.2)
    deadline = time.monotonic() + 10
    while fake.calls.get("profile", 0) < 3 and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert fake.calls["profile"] >= 3
    card.refresh_interval = 0
    card.close()
    settled = fake.calls["profile"]
    await asyncio.sleep(0.5)
    assert fake.calls["profile"] == settled


class Leaky(FakeSource):
    """A source that wrongly sends raw keys in its key list."""

    def keys(self, include_revoked: bool = False) -> list[dict[str, Any]]:
        return [{**k, "key": "sk_" + "x" * 43} for k in super().keys(include_revoked)]


async def test_raw_key_fields_are_dropped_before_syncing(sent: list[Sent]) -> None:
    keys = await make(widgets.KeysTable, Leaky())
    assert keys.api_keys and all("key" not in k for k in keys.api_keys)
    assert all("sk_" + "x" * 43 not in m.text() for m in sent)


async def test_widget_without_source_explains(monkeypatch: pytest.MonkeyPatch) -> None:
    import lumen_jupyter.widgets.profile as profile_module

    def missing() -> Any:
        raise RuntimeError("The profile widgets need a data source: pass one")

    monkeypatch.setattr(profile_module, "default_source", missing)
    with pytest.raises(RuntimeError, match="need a data source"):
        widgets.Profile()


async def test_default_source_is_the_kernel_client(
    jp_serverapp: Any,
    http_server: Any,
    http_server_port: Any,
    jp_base_url: str,
    sent: list[Sent],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Inside a kernel started by the server, ``Profile()`` needs no source: the kernel
    client finds the server from the kernel's environment."""
    pytest.importorskip("lumen_jupyter.kernel.client.lumen_client")
    app = jp_serverapp.extension_manager.extension_apps["lumen_jupyter"]
    app = next(iter(app))
    port = http_server_port[0].getsockname()[1]
    monkeypatch.setenv("LUMEN_JUPYTER_URL", f"http://127.0.0.1:{port}{jp_base_url}")
    monkeypatch.setenv("LUMEN_KERNEL_TOKEN", app.kernel_credentials.issue("widget-kernel"))
    profile = await run(widgets.Profile, refresh_interval=0)
    assert await run(profile.wait, 30)
    assert profile.error == ""
    assert profile.profile["user"]["username"] == "ada"
    assert [m["name"] for m in profile.models] == ["demo-free", "demo-pro", "demo-restricted"]
    reply, buffers = await intent(profile, sent, "create_key")
    assert reply["ok"] is True and buffers[0].startswith(b"sk_")
    await intent(profile, sent, "discard_key", id=reply["data"]["id"])


class Gated(FakeSource):
    """A source whose profile answers only when the test opens the gate; the other
    parts each take ``delay`` seconds."""

    def __init__(self, delay: float = 0.0) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.delay = delay

    def profile(self) -> dict[str, Any]:
        assert self.gate.wait(10)
        return super().profile()

    def keys(self, include_revoked: bool = False) -> list[dict[str, Any]]:
        time.sleep(self.delay)
        return super().keys(include_revoked)

    def models(self) -> list[dict[str, Any]]:
        time.sleep(self.delay)
        return super().models()

    def usage(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        time.sleep(self.delay)
        return super().usage(*args, **kwargs)


async def test_the_skeleton_first_then_each_part_as_it_arrives(sent: list[Sent]) -> None:
    gated = Gated()
    started = time.monotonic()
    profile = await run(widgets.Profile, gated, refresh_interval=0)
    # The constructor did not wait for the source: the view paints its skeleton.
    assert time.monotonic() - started < 1.0
    assert profile.loading is True and profile.profile is None
    deadline = time.monotonic() + 10
    while not (profile.api_keys and profile.models and profile.usage):
        assert time.monotonic() < deadline, "the other parts did not arrive"
        await asyncio.sleep(0.05)
    # Keys, models and usage are shown while the profile is still on its way.
    assert profile.loading is True and profile.profile is None
    gated.gate.set()
    assert await run(profile.wait, 10)
    assert profile.loading is False and profile.profile is not None and profile.error == ""
    profile.close()


async def test_parts_are_fetched_in_parallel(sent: list[Sent]) -> None:
    gated = Gated(delay=0.6)
    gated.gate.set()
    profile = await make(widgets.Profile, gated, autoload=False)
    started = time.monotonic()
    assert await run(profile.refresh) is True
    # three parts of 0.6 s each: together, not one after another (1.8 s)
    assert time.monotonic() - started < 1.4
    profile.close()
