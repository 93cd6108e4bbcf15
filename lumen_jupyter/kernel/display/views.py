"""What the magics show about you: profile, balance, keys and models, from the REST JSON.

Pure functions from dictionaries to :mod:`.render` views, so they are easy to test
and reuse.  Nothing here holds or shows a raw key, except :func:`key_reveal`, whose
output the magics replace with :func:`key_placeholder` (see :mod:`.reveal`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ...core.money import format_coins
from ..client.errors import format_time
from .render import (
    Cell,
    Fields,
    Notice,
    Stack,
    Table,
    View,
    esc,
    fmt_int,
    fmt_time,
)

ACCESS_LABELS = {
    "allowed": "Allowed",
    "blocked": "Blocked",
    "needs_ack": "Need Consent",
    "consented": "Consented",
}


def counter_coins(counters: Mapping[str, Any]) -> str:
    """The coins of a counters object: its text, else its micro-coins."""
    if counters.get("coins") is not None:
        return coins_text(counters["coins"])
    return format_coins(int(counters.get("coins_micro") or 0))


def coins_text(value: Any) -> str:
    if isinstance(value, Mapping):
        return str(value.get("text", "0"))
    if value is None:
        return "—"
    return str(value)


# -- balance and profile ---------------------------------------------------------------------


def balance_line(pool: Mapping[str, Any]) -> tuple[str, str]:
    """(one line, level) for the Coins Available and Refill Rate tiles."""
    state = pool.get("state")
    if state == "none":
        return "No coin budget is set up for you (ask an administrator).", "warn"
    if state == "unlimited":
        return "Coins available: Unlimited.", "ok"
    if state == "blocked":
        return "Your coin pool is blocked (max 0): ask an administrator.", "error"
    balance, maximum = coins_text(pool.get("balance")), coins_text(pool.get("max"))
    line = f"Coins available: {balance} / {maximum}"
    refresh = pool.get("refresh_per_hour") or {}
    refill = format_time(pool.get("next_refill_at"))
    if int(refresh.get("micro", 0) or 0) > 0:
        line += f" · refill +{coins_text(refresh)}/hr"
        if refill:
            line += f", next at {refill}"
    level = "ok"
    if pool.get("exhausted"):
        if int(refresh.get("micro", 0) or 0) > 0:
            line += " · exhausted: model calls wait for the refill"
        else:
            line += " · exhausted: this pool does not refill, ask an administrator for coins"
        level = "error"
    return line + ".", level


def _progress(pool: Mapping[str, Any]) -> Cell:
    text, _ = balance_line(pool)
    text = text.removeprefix("Coins available: ").rstrip(".")
    if pool.get("state") != "limited":
        return Cell(text)
    maximum = int((pool.get("max") or {}).get("micro", 0) or 0)
    balance = int((pool.get("balance") or {}).get("micro", 0) or 0)
    if maximum <= 0:
        return Cell(text)
    share = max(0.0, min(1.0, balance / maximum))
    bar = (
        '<span style="display:inline-block;width:120px;height:8px;background:'
        'var(--jp-layout-color3,#ddd);border-radius:4px;vertical-align:middle;margin-right:6px">'
        f'<span style="display:block;width:{share * 100:.0f}%;height:8px;border-radius:4px;'
        'background:var(--jp-brand-color1,#1976d2)"></span></span>'
    )
    return Cell(text, bar + esc(text))


def profile_view(
    profile: Mapping[str, Any],
    keys: Sequence[Mapping[str, Any]],
    models: Sequence[Mapping[str, Any]],
) -> View:
    """The Profile page as text and HTML (the fallback when no widget is available)."""
    user = profile.get("user") or {}
    tiles = profile.get("tiles") or {}
    pool = profile.get("pool") or {}
    chat = profile.get("web_chat") or {}
    name = user.get("display_name") or user.get("username") or "?"
    who = f"{name} ({user.get('username')})" if user.get("username") != name else name
    if user.get("email"):
        who += f" · {user['email']}"
    summary = Fields(
        [
            ("Groups", ", ".join(tiles.get("groups") or []) or "—"),
            ("Coins available", _progress(pool)),
            ("Coins used", coins_text(tiles.get("coins_used"))),
            ("Tokens used", fmt_int(tiles.get("tokens_used"))),
            ("Favorite model", tiles.get("favorite_model") or "—"),
            (
                "Web chat usage",
                f"{fmt_int(chat.get('conversations'))} conversations · "
                f"{fmt_int(chat.get('requests'))} requests · {fmt_int(chat.get('tokens'))} tokens "
                f"· {coins_text(chat.get('coins'))} coins · last used "
                f"{fmt_time(chat.get('last_used_at'))}",
            ),
        ],
        title=who,
    )
    return Stack(
        [
            summary,
            keys_table(keys),
            models_table(models, title="Model Access"),
            Notice(
                "`%lumen keys new NAME` · `%lumen models NAME` · `%lumen usage --plot` · "
                "`%lumen help`"
            ),
        ]
    )


def limited_view(
    reason: str, v1_models: Sequence[Mapping[str, Any]], session: Mapping[str, Any], url: str
) -> View:
    """What can be shown without a profile API: models, prices, status, this session."""
    return Stack(
        [
            Notice(
                f"{reason}. Balance, keys, consent and usage history are not available here; "
                "below are the models you can call and this session's own usage.",
                "warn",
            ),
            v1_models_table(v1_models, title=f"Models at {url}"),
            session_view(session),
        ]
    )


def session_view(session: Mapping[str, Any]) -> View:
    rows = []
    for name, row in (session.get("by_model") or {}).items():
        coins = coins_text(row.get("coins")) if row.get("coins") else "?"
        rows.append([name, fmt_int(row["requests"]), fmt_int(row["tokens"]), coins])
    note = None
    if not session.get("all_priced", True):
        note = "? = price unknown for that model."
    return Table(
        ["Model", "Requests", "Tokens", "Coins"],
        rows,
        title=f"This session since {fmt_time(session.get('since'))}: "
        f"{coins_text(session.get('coins'))} coins",
        right=frozenset({"Requests", "Tokens", "Coins"}),
        note=note,
        empty="No model calls yet in this session.",
    )


# -- keys --------------------------------------------------------------------------------------


def keys_table(keys: Sequence[Mapping[str, Any]]) -> Table:
    ordered = sorted(keys, key=lambda k: (str(k.get("name") or "").lower(), k.get("id", 0)))
    rows = []
    struck = set()
    for index, key in enumerate(ordered):
        if key.get("status") == "revoked":
            struck.add(index)
        rows.append(
            [
                str(key.get("id")),
                key.get("name") or "(unnamed)",
                key.get("hint") or "…",
                fmt_int(key.get("requests")),
                fmt_int(key.get("tokens")),
                coins_text(key.get("coins")),
                _budget_text(key),
                _expiry_text(key),
                fmt_time(key.get("last_used_at")),
            ]
        )
    return Table(
        ["ID", "Name", "Hint", "Requests", "Tokens", "Coins", "Budget", "Expires", "Last used"],
        rows,
        title="API Keys",
        right=frozenset({"ID", "Requests", "Tokens", "Coins", "Budget"}),
        struck=frozenset(struck),
        empty="No API keys yet: `%lumen keys new NAME` creates one.",
    )


def _budget_text(key: Mapping[str, Any]) -> str:
    """``"-"`` for a key limited by the pool only, else the coins left of its budget."""
    budget = key.get("budget_micro")
    if budget is None:
        return "-"
    left = max(0, int(budget) - int(key.get("coins_micro") or 0))
    return f"{format_coins(left)} left of {format_coins(int(budget))}"


def _expiry_text(key: Mapping[str, Any]) -> str:
    if not key.get("expires_at"):
        return "never"
    when = fmt_time(key.get("expires_at"))
    return f"expired {when}" if key.get("expired") else when


def key_reveal(created: Mapping[str, Any], raw: str, seconds: float) -> View:
    """The new key, shown once; the magics replace this output soon after."""
    name = created.get("name") or "(unnamed)"
    when = f"{seconds:g} s" if seconds < 120 else f"{seconds / 60:g} min"
    plain = (
        f"New API key '{name}' (id {created.get('id')}): {raw}\n"
        f"Copy it now: it is shown once, and hidden in {when} or when you run another cell, "
        "so it is never saved in this notebook."
    )
    markup = (
        '<div class="lumen-key-reveal" style="border-left:3px solid '
        'var(--jp-warn-color1,#f57c00);padding:4px 8px">'
        f"New API key <b>{esc(name)}</b> (id {esc(created.get('id'))}):<br>"
        f'<input type="text" readonly value="{esc(raw)}" size="52" '
        'style="font-family:monospace" onclick="this.select()"> '
        f"<button onclick=\"navigator.clipboard.writeText('{esc(raw)}');"
        "this.textContent='Copied'\">Copy</button><br>"
        f"<small>Copy it now: it is shown once, and hidden in {esc(when)} or when you run "
        "another cell, so it is never saved in this notebook.</small></div>"
    )
    return _Raw(plain, markup)


def key_placeholder(created: Mapping[str, Any]) -> View:
    name = created.get("name") or "(unnamed)"
    return Notice(
        f"API key '{name}' (id {created.get('id')}, {created.get('hint')}) was created. "
        "It was shown once and is not stored in this notebook; if you did not copy it, "
        f"revoke it with `%lumen keys revoke {created.get('id')}` and create another.",
        "ok",
    )


class _Raw(View):
    def __init__(self, plain: str, markup: str) -> None:
        self._plain = plain
        self._markup = markup

    def text(self) -> str:
        return self._plain

    def html(self) -> str:
        return self._markup

    def __repr__(self) -> str:
        return "<one-time key display>"


# -- models ------------------------------------------------------------------------------------


def _price_pair(model: Mapping[str, Any]) -> str:
    return (
        f"{coins_text(model.get('input_cost_per_million'))} / "
        f"{coins_text(model.get('output_cost_per_million'))}"
    )


def _status_cell(status: str | None) -> Cell:
    colors = {"ok": "#388e3c", "degraded": "#f57c00", "down": "#d32f2f", "disabled": "#757575"}
    text = status or "?"
    color = colors.get(text, "#757575")
    return Cell(text, f'<span style="color:{color}">● {esc(text)}</span>')


def visible_models(
    models: Sequence[Mapping[str, Any]], *, show_all: bool = False, text: str | None = None
) -> list[Mapping[str, Any]]:
    """The Model Access rows the profile page shows by default, filtered by name."""
    rows = []
    for model in models:
        hidden = not model.get("active", True) or model.get("access") == "blocked"
        if hidden and not show_all:
            continue
        if text and text.lower() not in str(model.get("name", "")).lower():
            continue
        rows.append(model)
    return rows


def models_table(models: Sequence[Mapping[str, Any]], *, title: str = "Models") -> Table:
    rows = []
    for model in models:
        usage = model.get("usage") or {}
        access = str(model.get("access") or "")
        label = ACCESS_LABELS.get(access, access or "?")
        rows.append(
            [
                model.get("name"),
                Cell(label, f"<b>{esc(label)}</b>" if access == "needs_ack" else None),
                _status_cell(model.get("status")),
                _price_pair(model),
                fmt_int(usage.get("requests")),
                fmt_int(usage.get("tokens")),
                coins_text(usage.get("coins")),
                fmt_time(usage.get("last_used_at")),
            ]
        )
    needs = [m.get("name") for m in models if m.get("access") == "needs_ack"]
    note = "Prices in coins per million tokens (input / output)."
    if needs:
        note += f" Need consent: `%lumen consent {needs[0]}`."
    return Table(
        ["Model", "Access", "Status", "Price in/out", "Requests", "Tokens", "Coins", "Last used"],
        rows,
        title=title,
        right=frozenset({"Requests", "Tokens", "Coins"}),
        note=note,
        empty="No models match.",
    )


def v1_models_table(models: Sequence[Mapping[str, Any]], *, title: str = "Models") -> Table:
    rows = []
    for model in models:
        instances = model.get("instances") or {}
        rows.append(
            [
                model.get("id"),
                _status_cell(model.get("status")),
                _price_pair(model),
                f"{instances.get('healthy', '?')}/{instances.get('configured', '?')}"
                if instances
                else "—",
                fmt_int(model.get("max_model_len")) if model.get("max_model_len") else "—",
            ]
        )
    return Table(
        ["Model", "Status", "Price in/out", "Healthy", "Context"],
        rows,
        title=title,
        right=frozenset({"Context"}),
        note="Prices in coins per million tokens (input / output).",
        empty="No models are available to you.",
    )


def model_detail(model: Mapping[str, Any]) -> View:
    usage = model.get("usage") or {}
    abilities = []
    if model.get("supports_function_calling"):
        abilities.append("function calling")
    if model.get("supports_reasoning"):
        abilities.append("reasoning")
    modalities_in = ", ".join(model.get("input_modalities") or []) or "—"
    modalities_out = ", ".join(model.get("output_modalities") or []) or "—"
    access = str(model.get("access") or "")
    pairs: list[tuple[str, Any]] = [
        ("Description", model.get("description") or "—"),
        ("Access", ACCESS_LABELS.get(access, access or "—")),
        ("Status", _status_cell(model.get("status"))),
        ("Input price", f"{coins_text(model.get('input_cost_per_million'))} coins / M tokens"),
        ("Output price", f"{coins_text(model.get('output_cost_per_million'))} coins / M tokens"),
        (
            "Context window",
            fmt_int(model.get("max_model_len")) + " tokens" if model.get("max_model_len") else "—",
        ),
        (
            "Max output",
            fmt_int(model.get("max_output_tokens")) + " tokens"
            if model.get("max_output_tokens")
            else "—",
        ),
        ("Capabilities", ", ".join(abilities) or "—"),
        ("Modalities", f"{modalities_in} → {modalities_out}"),
        ("Knowledge cutoff", model.get("knowledge_cutoff") or "—"),
        (
            "Your usage",
            f"{fmt_int(usage.get('requests'))} requests · {fmt_int(usage.get('tokens'))} tokens "
            f"· {coins_text(usage.get('coins'))} coins · last used "
            f"{fmt_time(usage.get('last_used_at'))}",
        ),
    ]
    parts: list[View] = [Fields(pairs, title=str(model.get("name")))]
    if model.get("needs_consent") and model.get("notice"):
        parts.append(notice_view(model))
    return Stack(parts)


def notice_view(model: Mapping[str, Any], *, how_to_accept: bool = True) -> View:
    name = model.get("name")
    state = ""
    if model.get("access") == "consented":
        state = "You have accepted it."
    elif how_to_accept:
        state = f"Accept it with `%lumen consent {name} --accept`."
    text = f"Notice for {name}:\n{model.get('notice')}" + (f"\n{state}" if state else "")
    markup = (
        '<div class="lumen-notice-text" style="border:1px solid '
        'var(--jp-border-color2,#e0e0e0);padding:6px 10px;margin:4px 0;max-width:60em">'
        f"<div style='font-weight:600'>Notice for {esc(name)}</div>"
        f"<p style='white-space:pre-wrap'>{esc(model.get('notice'))}</p>"
        f"<small>{esc(state).replace('`', '')}</small></div>"
    )
    return _Raw(text, markup)
