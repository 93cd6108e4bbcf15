"""What the magics show about spending: usage history, estimates, chat answers, help.

Pure functions from the REST API's JSON to :mod:`.render` views (see :mod:`.views`
for the profile, keys and models).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .render import BarChart, Cell, Fields, Markdown, Notice, Stack, Table, View, esc, fmt_int
from .views import coins_text, counter_coins

# -- usage and estimates -----------------------------------------------------------------------

_METRICS = {
    "coins": ("coins", "coins"),
    "tokens": ("tokens", "tokens"),
    "requests": ("requests", "requests"),
}


def metric_value(counters: Mapping[str, Any], metric: str) -> float:
    if metric == "coins":
        micro = counters.get("coins_micro")
        if isinstance(micro, int):
            return micro / 1_000_000
        try:
            return float(counters.get("coins") or 0)
        except (TypeError, ValueError):
            return 0.0
    return float(counters.get(metric) or 0)


def usage_totals(history: Mapping[str, Any]) -> Table:
    by = history.get("group_by", "model")
    rows = []
    for name in history.get("series") or []:
        c = (history.get("totals") or {}).get(name) or {}
        rows.append(
            [
                name,
                fmt_int(c.get("requests")),
                fmt_int(c.get("input_tokens")),
                fmt_int(c.get("output_tokens")),
                counter_coins(c),
            ]
        )
    return Table(
        [str(by).capitalize(), "Requests", "Input tokens", "Output tokens", "Coins"],
        rows,
        title=f"Usage by {by}, {history.get('start')} to {history.get('end')} "
        f"({history.get('period')})"
        + (f" in {history['notebook']}" if history.get("notebook") else ""),
        right=frozenset({"Requests", "Input tokens", "Output tokens", "Coins"}),
        empty="No usage in this period.",
    )


def usage_chart(history: Mapping[str, Any], metric: str = "coins") -> BarChart:
    series = list(history.get("series") or [])
    labels, values = [], []
    for bucket in history.get("buckets") or []:
        labels.append(str(bucket.get("start")))
        cells = bucket.get("values") or {}
        values.append([metric_value(cells.get(name) or {}, metric) for name in series])
    return BarChart(
        labels,
        series,
        values,
        title=f"{_METRICS[metric][0].capitalize()} per {history.get('bucket')}",
        unit=_METRICS[metric][1],
    )


def estimate_view(estimate: Mapping[str, Any], pool: Mapping[str, Any] | None) -> View:
    cap = {
        "max_tokens": "your max_tokens",
        "model": "the model's output limit",
        "default": "the default cap",
    }.get(str(estimate.get("output_cap")), "")
    pairs: list[tuple[str, Any]] = [
        ("Model", estimate.get("model")),
        (
            "Input",
            f"{fmt_int(estimate.get('input_tokens'))} tokens (estimated) × "
            f"{coins_text(estimate.get('input_cost_per_million'))}/M = "
            f"{coins_text(estimate.get('input_coins'))} coins",
        ),
        (
            "Output (at most)",
            f"{fmt_int(estimate.get('max_output_tokens'))} tokens ({cap}) × "
            f"{coins_text(estimate.get('output_cost_per_million'))}/M = "
            f"{coins_text(estimate.get('output_coins'))} coins",
        ),
        (
            "Worst case",
            Cell(
                f"{coins_text(estimate.get('worst_case'))} coins",
                f"<b>{esc(coins_text(estimate.get('worst_case')))} coins</b>",
            ),
        ),
    ]
    if pool and pool.get("state") == "limited":
        balance = int((pool.get("balance") or {}).get("micro", 0) or 0)
        worst = int((estimate.get("worst_case") or {}).get("micro", 0) or 0)
        verdict = "fits" if worst <= balance else "does NOT fit: lower --max-tokens"
        pairs.append(("Your balance", f"{coins_text(pool.get('balance'))} coins ({verdict})"))
    return Fields(pairs, title="Worst-case cost before sending")


# -- chat ----------------------------------------------------------------------------------------


def chat_reply(markdown: str, plain: str, footer: str | None, *, streaming: bool) -> View:
    """The answer as Markdown (already made safe) with a small footer line."""
    tail = "▍" if streaming else ""
    body_md = markdown + tail
    body_text = plain + tail
    if footer:
        body_md += f"\n\n<sub>{esc(footer)}</sub>"
        body_text += f"\n\n[{footer}]"
    return Markdown(body_md, body_text)


def help_view() -> View:
    rows = [
        ["%lumen", "Your profile: coins, keys, models (the dashboard)"],
        ["%lumen balance", "Coins available and the next refill"],
        ["%lumen keys [--all]", "Your API keys (--all: revoked ones too)"],
        ["%lumen keys new NAME [--save FILE]", "Create a key; shown once, never saved"],
        ["%lumen keys revoke ID", "Revoke a key (its history is kept)"],
        ["%lumen models [--filter TEXT] [--all]", "Models, access, status, prices"],
        ["%lumen models NAME", "One model in detail, with its notice"],
        ["%lumen consent MODEL [--accept]", "Read a model's notice and accept it"],
        [
            "%lumen usage [--period P] [--by B] [--plot]",
            "Spending: P week|month|year|all, B model|notebook|cell|key|source "
            "(cell: this notebook's cells, or --notebook PATH)",
        ],
        ['%lumen estimate MODEL "prompt" [--max-tokens N]', "Worst-case coins before sending"],
        ["%lumen status", "Which gateway and credential this kernel uses"],
        [
            "%%lumen [-m MODEL] [--system TEXT] [--new] [--continue]",
            "Chat: the cell is the prompt; {name} inserts a variable; the conversation "
            "continues across cells until --new or -m names another model "
            "(--continue keeps it then)",
        ],
    ]
    return Stack(
        [
            Table(["Command", "What it does"], rows, title="lumen magics"),
            Notice(
                'Default chat model: `%config LumenMagics.default_model = "demo-pro"`. '
                "In Python: `lumen_jupyter.client()`, `lumen_jupyter.openai_client()`."
            ),
        ]
    )
