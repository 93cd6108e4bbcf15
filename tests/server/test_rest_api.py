"""The profile REST API on a real Jupyter server (pytest-jupyter), embedded default."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest


async def test_profile_on_first_launch(api: Any) -> None:
    status, profile = await api("GET", "profile")
    assert status == 200
    assert profile["user"]["username"] == "ada"
    assert profile["user"]["display_name"] == "Ada Lovelace"
    assert profile["user"]["initials"] == "AL"
    assert profile["user"]["avatar_url"].startswith("https://www.gravatar.com/avatar/")
    assert "d=mp" in profile["user"]["avatar_url"]
    tiles = profile["tiles"]
    assert tiles["groups"] == []
    assert tiles["coins_used"] == {"micro": 0, "text": "0"}
    assert tiles["tokens_used"] == 0
    assert tiles["favorite_model"] is None
    pool = profile["pool"]
    assert pool["state"] == "limited"
    assert pool["balance"]["text"] == "20"
    assert pool["max"]["text"] == "20"
    assert pool["refresh_per_hour"]["text"] == "1"
    assert pool["exhausted"] is False
    assert pool["next_refill_at"].endswith("Z")
    assert profile["web_chat"]["conversations"] == 0
    assert profile["web_chat"]["last_used_at"] is None


async def test_key_lifecycle_dialog_order(api: Any) -> None:
    # The seed's dialog: the key is shown first, then named and saved.
    status, draft = await api("POST", "keys", {})
    assert status == 201
    raw = draft["key"]
    assert re.fullmatch(r"sk_[A-Za-z0-9_-]{43}", raw)
    assert draft["status"] == "draft"
    assert draft["hint"] == f"{raw[:4]}…{raw[-4:]}"
    status, listed = await api("GET", "keys")
    assert listed["keys"] == []  # a draft is not usable and not listed
    status, saved = await api("PATCH", f"keys/{draft['id']}", {"name": "my-research-script"})
    assert status == 200 and saved["status"] == "active"
    assert "key" not in saved
    status, listed = await api("GET", "keys")
    assert [k["name"] for k in listed["keys"]] == ["my-research-script"]
    assert raw not in json.dumps(listed)
    # Revoke keeps the row, visible with include_revoked.
    status, revoked = await api("DELETE", f"keys/{draft['id']}")
    assert status == 200 and revoked["result"] == "revoked"
    status, listed = await api("GET", "keys")
    assert listed["keys"] == []
    status, listed = await api("GET", "keys?include_revoked=true")
    assert listed["keys"][0]["status"] == "revoked"
    assert listed["keys"][0]["revoked_at"].endswith("Z")


async def test_discarding_a_draft_leaves_nothing(api: Any) -> None:
    _, draft = await api("POST", "keys", {})
    status, result = await api("DELETE", f"keys/{draft['id']}")
    assert status == 200 and result["result"] == "discarded"
    _, listed = await api("GET", "keys?include_revoked=true")
    assert listed["keys"] == []


async def test_named_key_is_active_at_once(api: Any) -> None:
    status, created = await api("POST", "keys", {"name": "jupyter-notebook"})
    assert status == 201 and created["status"] == "active"
    _, listed = await api("GET", "keys")
    assert listed["keys"][0]["hint"] == created["hint"]


async def test_models_and_consent(api: Any) -> None:
    status, body = await api("GET", "models")
    assert status == 200
    rows = {m["name"]: m for m in body["models"]}
    assert set(rows) == {"demo-free", "demo-pro", "demo-restricted"}
    assert rows["demo-free"]["access"] == "allowed"
    assert rows["demo-pro"]["input_cost_per_million"]["text"] == "50"
    restricted = rows["demo-restricted"]
    assert restricted["access"] == "needs_ack"
    assert restricted["notice"] and restricted["notice_digest"]
    assert all(m["status"] == "ok" for m in rows.values())
    status, err = await api("POST", "models/demo-restricted/consent", {"notice_digest": "0" * 64})
    assert status == 400 and err["error"]["code"] == "notice_changed"
    status, after = await api(
        "POST",
        "models/demo-restricted/consent",
        {"notice_digest": restricted["notice_digest"]},
    )
    assert status == 200 and after["access"] == "consented"
    status, again = await api("POST", "models/demo-restricted/consent", {})
    assert status == 200 and again["access"] == "consented"
    status, err = await api("POST", "models/demo-free/consent", {})
    assert status == 400 and "does not need consent" in err["error"]["message"]
    status, detail = await api("GET", "models/demo-pro")
    assert status == 200 and detail["max_model_len"] == 32768
    status, err = await api("GET", "models/nope")
    assert status == 404 and err["error"]["code"] == "model_not_found"


async def test_usage_history_shape(api: Any) -> None:
    status, usage = await api("GET", "usage?period=week")
    assert status == 200
    assert usage["bucket"] == "day" and len(usage["buckets"]) == 7
    status, usage = await api("GET", "usage?period=year&group_by=source")
    assert status == 200 and usage["bucket"] == "month"


@pytest.mark.parametrize(
    ("method", "path", "body", "fragment"),
    [
        ("POST", "keys", "{not json", "not valid JSON"),
        ("POST", "keys", "[1, 2]", "JSON object"),
        ("POST", "keys", {"name": ""}, "must not be empty"),
        ("POST", "keys", {"name": 7}, "must be a string"),
        ("POST", "keys", {"name": "x" * 101}, "at most 100"),
        ("POST", "keys", {"nam": "typo"}, "unknown field"),
        ("PATCH", "keys/abc", {"name": "x"}, "whole number"),
        ("PATCH", "keys/1", {}, "send"),
        ("DELETE", "keys/-1", None, "whole number"),
        ("GET", "keys?include_revoked=maybe", None, "true or false"),
        ("GET", "usage?period=decade", None, "period must be one of"),
        ("GET", "usage?bucket=hour", None, "bucket must be one of"),
        ("GET", "usage?group_by=color", None, "group_by must be one of"),
        ("POST", "models/demo-restricted/consent", {"notice_digest": 5}, "must be a string"),
    ],
)
async def test_bad_input_is_a_clear_400(
    api: Any, method: str, path: str, body: Any, fragment: str
) -> None:
    status, err = await api(method, path, body)
    assert status == 400, err
    assert fragment in err["error"]["message"]


async def test_unknown_key_id_is_404(api: Any) -> None:
    status, err = await api("PATCH", "keys/999", {"name": "x"})
    assert status == 404 and err["error"]["code"] == "not_found"
    status, err = await api("DELETE", "keys/999")
    assert status == 404 and "999" in err["error"]["message"]


async def test_openapi_matches_routes(api: Any) -> None:
    from lumen_jupyter.server.rest import api_routes

    status, doc = await api("GET", "openapi.json")
    assert status == 200 and doc["openapi"].startswith("3.")
    documented = {(path, method.upper()) for path, ops in doc["paths"].items() for method in ops}
    served = set()
    for pattern, handler in api_routes(""):
        path = re.sub(r"\(\[\^/\]\+\)", "{}", pattern)
        for method in ("GET", "POST", "PATCH", "DELETE", "PUT"):
            if method.lower() in handler.__dict__:
                served.add((path, method))
    normalized = {(re.sub(r"\{[^}]+\}", "{}", p), m) for p, m in documented}
    assert normalized == served
