"""Plain-text rendering for ``jupyter lumen``: aligned tables and short summaries.

Kept apart from :mod:`lumen_jupyter.cli` so the command logic stays readable.
Everything here turns the JSON-ready dictionaries of the service (and of the CLI's
own ``users`` query) into text for a terminal, with no dependency beyond the
standard library.  Strings that users control (key names, notebook paths) are
stripped of control characters so they cannot drive the administrator's terminal.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from .core.money import format_coins
from .core.wire import Key


def clean(value: Any) -> str:
    """``value`` as one line of text, control characters replaced by ``?``."""
    text = "" if value is None else str(value)
    return "".join("?" if unicodedata.category(c).startswith("C") else c for c in text)


def when(iso: str | None, never: str = "never") -> str:
    """``2026-03-04T12:00:00.000Z`` as ``2026-03-04 12:00``; the tables say it is UTC."""
    if not iso:
        return never
    return iso[:16].replace("T", " ")


def count(value: int) -> str:
    return f"{value:,}"


def coins(micro: int) -> str:
    return format_coins(micro)


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], numeric: Collection[int]) -> str:
    """Columns padded to their widest cell; the columns in ``numeric`` align right."""
    cells = [[clean(h) for h in headers]] + [[clean(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = []
    for row in cells:
        parts = [
            cell.rjust(widths[i]) if i in numeric else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ]
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


def pool_source(source: str | None) -> str:
    if source is None:
        return "-"
    if source == "user":
        return "own pool"
    if source.startswith("group:"):
        return f"group {source[len('group:') :]}"
    return f"{source} pool"


def pool_text(username: str, state: Mapping[str, Any], own: Mapping[str, Any] | None) -> str:
    """The pool a user resolves to, their balance and the next refill."""
    kind = state["state"]
    name = clean(username)
    if kind == "none":
        lines = [
            f"{name}: no pool - model calls are refused",
            f"  set one with: jupyter lumen pool {name} --max COINS",
        ]
    elif kind == "unlimited":
        lines = [f"{name}: unlimited ({pool_source(state['source'])}) - no balance is kept"]
    else:
        headline = "blocked (max 0) - model calls are refused" if kind == "blocked" else "limited"
        lines = [f"{name}: {headline}, from {pool_source(state['source'])}"]
        balance = state["balance"]["text"]
        debt = " (in debt)" if state["balance"]["micro"] < 0 else ""
        lines.append(f"  balance   {balance} of max {state['max']['text']} coins{debt}")
        refresh = state["refresh_per_hour"]
        if refresh["micro"] > 0:
            upcoming = when(state.get("next_refill_at"), "-")
            lines.append(f"  refill    +{refresh['text']} coins/hour, next at {upcoming} UTC")
        else:
            lines.append("  refill    none")
    if own is not None:
        lines.append(f"  own pool  {own_pool_text(own)}")
    return "\n".join(lines)


def own_pool_text(own: Mapping[str, Any]) -> str:
    if own["max"] is None:
        return "unlimited (max -2)"
    return (
        f"max {own['max']['text']}, refresh {own['refresh']['text']}/hour, "
        f"starting {own['starting']['text']}"
    )


def keys_text(username: str, keys: Sequence[Key]) -> str:
    if not keys:
        return f"{clean(username)} has no keys"
    headers = [
        "ID",
        "NAME",
        "HINT",
        "STATUS",
        "REQUESTS",
        "TOKENS",
        "COINS",
        "BUDGET",
        "EXPIRES (UTC)",
        "LAST USED (UTC)",
    ]
    rows = [
        [
            str(k["id"]),
            k["name"],
            k["hint"],
            "expired" if k["expired"] and k["status"] == "active" else k["status"],
            count(k["requests"]),
            count(k["tokens"]),
            k["coins"],
            k["budget"] or "-",
            when(k["expires_at"]) if k["expires_at"] else "never",
            when(k["last_used_at"]),
        ]
        for k in keys
    ]
    return table(headers, rows, numeric={0, 4, 5, 6, 7})


def usage_text(username: str, history: Mapping[str, Any]) -> str:
    """Totals per series over the period, and a total row."""
    period = history["period"]
    span = f"{history['start']} to {history['end']}"
    title = "all time" if period == "all" else f"the last {period}"
    heading = f"{clean(username)}: usage over {title} ({span}), by {history['group_by']}"
    totals: Mapping[str, Mapping[str, int]] = history["totals"]
    if not totals:
        return f"{heading}\nno usage in this period"
    headers = [history["group_by"].upper(), "REQUESTS", "INPUT", "OUTPUT", "TOKENS", "COINS"]
    fields = ("requests", "input_tokens", "output_tokens", "tokens")
    rows = []
    for name in history["series"]:
        c = totals[name]
        rows.append([name, *(count(c[f]) for f in fields), coins(c["coins_micro"])])
    rows.append(
        [
            "TOTAL",
            *(count(sum(c[f] for c in totals.values())) for f in fields),
            coins(sum(c["coins_micro"] for c in totals.values())),
        ]
    )
    return heading + "\n" + table(headers, rows, numeric={1, 2, 3, 4, 5})


def users_text(users: Sequence[Mapping[str, Any]]) -> str:
    if not users:
        return "no accounts yet (one is made when a user first opens Jupyter with Lumen)"
    headers = ["USER", "POOL", "STATE", "BALANCE", "MAX", "REFILL/H", "REQUESTS", "USED"]
    headers.append("LAST USED (UTC)")
    rows = []
    for u in users:
        limited = u["state"] in ("limited", "blocked")
        rows.append(
            [
                u["username"],
                pool_source(u["source"]),
                u["state"],
                u["balance"]["text"] if limited else "-",
                u["max"]["text"] if limited else "-",
                u["refresh_per_hour"]["text"] if limited else "-",
                count(u["requests"]),
                u["coins_used"]["text"],
                when(u["last_used_at"]),
            ]
        )
    return table(headers, rows, numeric={3, 4, 5, 6, 7})
