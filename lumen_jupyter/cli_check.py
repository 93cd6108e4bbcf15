"""``jupyter lumen check-config FILE``: validate a configuration and show what it means.

Kept apart from :mod:`lumen_jupyter.cli` because it needs no database: it reads
the file as the server would (Lumen's schema or ours), and prints the resolved
policy - the pool and each model's access for everyone, each group and each
user entry - plus the keys the file sets that have no effect here.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from . import cli_format as fmt
from .core.catalog import Catalog
from .core.config import load_config_file, resolve_database_url
from .core.policy import policy_report

ACCESS_ORDER = ("allowed", "needs_ack", "blocked", "disabled")


def check_config(file: str) -> tuple[dict[str, Any], str]:
    """The JSON report and its text; a bad file raises :class:`ConfigError`."""
    path = Path(file).expanduser()
    catalog = load_config_file(path, base=Catalog())
    report = policy_report(catalog)
    report["file"] = str(path)
    report["database_url"] = _safe_url(catalog.database_url, path)
    return report, report_text(report)


def _safe_url(url: str | None, path: Path) -> str | None:
    """The store the file names, its password hidden."""
    if url is None:
        return None
    try:
        return make_url(resolve_database_url(url, path.parent)).render_as_string(hide_password=True)
    except ArgumentError:
        return "(not a database URL)"


def pool_line(pool: Mapping[str, Any]) -> str:
    source = f" ({pool['source']})" if pool.get("source") else ""
    if pool["state"] == "none":
        return "no pool: model calls are refused"
    if pool["state"] == "unlimited":
        return f"unlimited{source}"
    if pool["state"] == "blocked":
        return f"blocked (max 0){source}"
    return (
        f"{pool['max']} coins max, +{pool['refresh_per_hour']}/hour, "
        f"starts at {pool['starting']}{source}"
    )


def access_lines(access: Mapping[str, str]) -> list[str]:
    lines = []
    for state in ACCESS_ORDER:
        names = [fmt.clean(n) for n, s in access.items() if s == state]
        if names:
            lines.append(f"    {state}: {', '.join(names)}")
    return lines


def report_text(report: Mapping[str, Any]) -> str:
    lines = [f"{fmt.clean(report['file'])}: OK", "", "Models:"]
    rows = []
    for model in report["models"]:
        state = "disabled" if model["disabled"] else (model["access"] or "inherits")
        if model["needs_ack"] and not model["disabled"]:
            state += " + consent"
        notice = fmt.clean(model["notice"] or "")
        rows.append(
            [
                fmt.clean(model["name"]),
                state,
                f"{model['input_cost_per_million']} / {model['output_cost_per_million']}",
                str(model["endpoints"]),
                notice if len(notice) <= 60 else notice[:57] + "...",
            ]
        )
    if rows:
        headers = ["MODEL", "ACCESS", "COINS/1M IN/OUT", "ENDPOINTS", "NOTICE"]
        lines.append(fmt.table(headers, rows, ()))
    else:
        lines.append("  (none)")
    lines += ["", f"Models no rule covers: {report['default_access']}"]
    if not report["consent_required_on_api"]:
        lines.append("api.consent is false: needs_ack models are callable without consent")
    if report["rate_limit_per_minute"] is not None:
        lines.append(f"Rate limit: {report['rate_limit_per_minute']} calls per minute per key")
    if report["database_url"]:
        lines.append(f"Database (unless a trait names one): {fmt.clean(report['database_url'])}")
    lines += ["", "Pool and access:"]
    for scope in report["scopes"]:
        groups = ", ".join(scope["groups"]) or "none"
        lines.append(f"  {fmt.clean(scope['scope'])} (groups: {fmt.clean(groups)})")
        lines.append(f"    pool: {pool_line(scope['pool'])}")
        lines += access_lines(scope["access"])
    if report["unused_keys"]:
        lines += ["", "Read but not used here:"]
        lines += [f"  {fmt.clean(key)}" for key in report["unused_keys"]]
    return "\n".join(lines)
