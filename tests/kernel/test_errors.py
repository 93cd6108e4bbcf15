"""Every gateway error becomes one line that says what to do (a fake gateway answers)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest

from lumen_jupyter.kernel.client.connection import Connection
from lumen_jupyter.kernel.client.errors import LumenAPIError, format_time
from lumen_jupyter.kernel.client.lumen_client import LumenClient

KEY = "sk_" + "Q" * 39 + "wxyz"


def fake_client(status: int, body: Any, *, kind: str = "key") -> LumenClient:
    """A client whose every request gets ``status`` and ``body``."""

    def answer(request: httpx.Request) -> httpx.Response:
        headers = {"x-should-retry": "false"} if status == 429 else {}
        return httpx.Response(status, json=body, headers=headers)

    secret = KEY if kind == "key" else "lkt_" + "t" * 43
    connection = Connection(
        "http://gw/lumen/v1/", "http://gw/lumen/api/", secret, kind=kind, origin="test"
    )
    return LumenClient(connection=connection, transport=httpx.MockTransport(answer))


def error(message: str, code: str, kind: str = "invalid_request_error", **extra: Any) -> Any:
    return {"error": {"message": message, "type": kind, "code": code, **extra}}


def chat_error(status: int, body: Any, kind: str = "key") -> LumenAPIError:
    client = fake_client(status, body, kind=kind)
    with pytest.raises(LumenAPIError) as raised:
        list(client.stream_chat("demo-pro", "hello"))
    return raised.value


def test_revoked_key() -> None:
    failure = chat_error(401, error("Invalid API key: unknown or revoked", "invalid_api_key"))
    assert failure.status == 401 and failure.code == "invalid_api_key"
    line = failure.one_line()
    assert "sk_Q…wxyz is unknown or revoked" in line and "%lumen keys new NAME" in line
    assert KEY not in line


def test_stale_kernel_credential() -> None:
    failure = chat_error(
        401, error("Invalid kernel credential; restart the kernel", "invalid_api_key"), "kernel"
    )
    assert "Restart the kernel" in failure.one_line()


def test_consent_needed() -> None:
    body = error(
        "'demo-restricted' needs your one-time consent first",
        "consent_required",
        "permission_error",
    )
    client = fake_client(403, body)
    with pytest.raises(LumenAPIError) as raised:
        list(client.stream_chat("demo-restricted", "hi"))
    assert raised.value.one_line() == (
        "'demo-restricted' needs your one-time consent. Run `%lumen consent demo-restricted` "
        "to read its notice and accept it."
    )


def test_no_access_no_pool_blocked_pool() -> None:
    assert (
        "no access to 'demo-pro'. Ask an administrator"
        in chat_error(403, error("You do not have access", "model_blocked")).one_line()
    )
    assert "No coin budget is set up" in chat_error(403, error("No pool", "no_pool")).one_line()
    assert "blocked (max 0)" in chat_error(403, error("blocked", "pool_blocked")).one_line()
    assert "does not exist" in chat_error(404, error("no such model", "model_not_found")).one_line()


def test_coins_exhausted_names_the_next_refill() -> None:
    refill = (datetime.now(timezone.utc) + timedelta(minutes=30)).replace(second=0, microsecond=0)
    iso = refill.isoformat().replace("+00:00", "Z")
    body = error(
        "Coin budget exhausted: your balance is 0 coins. The next refill (+1 coins/hour) comes "
        f"at {iso}",
        "coins_exhausted",
        "insufficient_quota",
        next_refill_at=iso,
    )
    failure = chat_error(429, body)
    assert failure.next_refill_at == iso
    when = format_time(iso)
    assert failure.one_line() == (
        f"Coin budget exhausted: your balance is 0 coins. Next refill at {when}."
    )
    assert when is not None and when.endswith(" UTC")


def test_no_healthy_endpoint_and_rate_limit() -> None:
    line = chat_error(503, error("No healthy endpoint", "no_healthy_endpoint")).one_line()
    assert line.startswith("'demo-pro' has no healthy endpoint right now; nothing was charged.")
    line = chat_error(
        429,
        error(
            "Rate limit of 5 calls per minute reached; retry in 7 s",
            "rate_limited",
            "rate_limit_error",
        ),
    ).one_line()
    assert line == "Rate limit of 5 calls per minute reached; retry in 7 s."


def test_a_mid_stream_error_is_raised() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        events = [
            {"model": "demo-pro", "choices": [{"delta": {"content": "Hel"}}]},
            error(
                "The upstream of 'demo-pro' closed the stream early",
                "upstream_dropped",
                "api_error",
            ),
        ]
        text = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
        return httpx.Response(200, text=text, headers={"content-type": "text/event-stream"})

    connection = Connection("http://gw/v1/", None, KEY, kind="key", origin="test")
    client = LumenClient(connection=connection, transport=httpx.MockTransport(answer))
    seen = []
    with pytest.raises(LumenAPIError) as raised:
        for event in client.stream_chat("demo-pro", "hi"):
            seen.append(event)
    assert [e.text for e in seen] == ["Hel"]
    assert "closed the stream early" in raised.value.one_line()
    assert "Try again" in raised.value.one_line()


def test_unreachable_gateway() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    connection = Connection("http://127.0.0.1:9/v1/", None, KEY, kind="key", origin="test")
    client = LumenClient(connection=connection, transport=httpx.MockTransport(refuse))
    with pytest.raises(LumenAPIError) as raised:
        client.v1_models()
    assert raised.value.code == "connection_error"
    assert raised.value.one_line() == (
        "Cannot reach the Lumen gateway at http://127.0.0.1:9/v1/models (ConnectError). "
        "Is the Jupyter server still running?"
    )


def test_ipython_shows_one_line_instead_of_a_traceback() -> None:
    failure = chat_error(403, error("needs consent", "consent_required"))
    assert failure._render_traceback_() == [f"LumenAPIError: {failure.one_line()}"]
    assert str(failure) == failure.one_line()
    assert "LumenAPIError(status=403" in repr(failure)


def test_a_non_json_error_page() -> None:
    def html(request: httpx.Request) -> httpx.Response:
        return httpx.Response(502, text="<html>Bad gateway</html>")

    connection = Connection("http://gw/v1/", None, KEY, kind="key", origin="test")
    client = LumenClient(connection=connection, transport=httpx.MockTransport(html))
    with pytest.raises(LumenAPIError) as raised:
        client.v1_models()
    assert raised.value.one_line() == (
        "The gateway answered HTTP 502 without details. Try again in a minute."
    )


def test_coins_exhausted_in_a_pool_that_never_refills() -> None:
    body = error(
        "Coin budget exhausted: your balance is 0 coins. This pool does not refill: ask an "
        "administrator to grant more coins",
        "coins_exhausted",
        "insufficient_quota",
    )
    line = chat_error(429, body).one_line()
    assert line == (
        "Coin budget exhausted: your balance is 0 coins. This pool does not refill: ask an "
        "administrator for more coins."
    )
    assert "refill at" not in line.lower() and "wait" not in line
