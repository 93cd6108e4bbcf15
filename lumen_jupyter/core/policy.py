"""The policy a configuration resolves to, scope by scope, for ``jupyter lumen check-config``.

An administrator moving a file from Lumen needs to see what it *means* here
before a server enforces it: for everyone, for each group and for each user
entry, which pool applies and what each model's access is.  This is the same
resolution the server runs (:mod:`lumen_jupyter.core.access` and
:mod:`lumen_jupyter.core.pools`), applied to an imagined member of each scope.
"""

from __future__ import annotations

from typing import Any

from .access import resolve_rule
from .catalog import EVERYONE, Catalog, GroupSpec, PoolSpec, Rule, UserSpec
from .money import format_coins
from .pools import resolve_pool


def model_access(catalog: Catalog, user: UserSpec, groups: list[GroupSpec]) -> dict[str, str]:
    """Each model's access: allowed, needs_ack (allowed after a consent), blocked, disabled."""
    result: dict[str, str] = {}
    for name, model in catalog.models.items():
        if not model.active:
            result[name] = "disabled"
            continue
        rule = resolve_rule(model, user, groups, catalog.default_rule)
        if rule is Rule.BLOCKED:
            result[name] = "blocked"
        else:
            result[name] = "needs_ack" if model.needs_consent else "allowed"
    return result


def pool_json(spec: PoolSpec | None, source: str | None) -> dict[str, Any]:
    if spec is None:
        return {"state": "none", "source": None}
    if spec.unlimited:
        return {"state": "unlimited", "source": source}
    assert spec.max_micro is not None
    return {
        "state": "blocked" if spec.blocked else "limited",
        "source": source,
        "max": format_coins(spec.max_micro),
        "refresh_per_hour": format_coins(spec.refresh_micro),
        "starting": format_coins(spec.starting_micro),
    }


def scope_policy(
    catalog: Catalog, label: str, username: str, extra: frozenset[str]
) -> dict[str, Any]:
    user = catalog.user(username)
    groups = catalog.groups_of(username, extra)
    resolved = resolve_pool(user.pool, groups, catalog.default_pool)
    return {
        "scope": label,
        "groups": [g.name for g in groups],
        "pool": pool_json(
            None if resolved is None else resolved.spec,
            None if resolved is None else resolved.source,
        ),
        "access": model_access(catalog, user, groups),
    }


_NOBODY = "\x00anyone"  # a username no entry can have: "everyone else"


def policy_report(catalog: Catalog) -> dict[str, Any]:
    """The resolved policy: the models, then everyone else, each group, each user entry."""
    scopes = [scope_policy(catalog, "everyone else", _NOBODY, frozenset())]
    for name in sorted(catalog.groups):
        if name != EVERYONE:
            scopes.append(scope_policy(catalog, f"group {name}", _NOBODY, frozenset({name})))
    for name in sorted(catalog.users):
        if name != EVERYONE:
            scopes.append(scope_policy(catalog, f"user {name}", name, frozenset()))
    return {
        "models": [
            {
                "name": model.name,
                "disabled": not model.active,
                "access": None if model.access is None else model.access.value,
                "needs_ack": model.needs_consent,
                "notice": model.notice if model.needs_consent else None,
                "input_cost_per_million": format_coins(model.input_price_micro),
                "output_cost_per_million": format_coins(model.output_price_micro),
                "endpoints": len(model.endpoints),
            }
            for model in catalog.models.values()
        ],
        "consent_required_on_api": catalog.require_consent,
        "default_access": catalog.default_rule.value,
        "scopes": scopes,
        "rate_limit_per_minute": catalog.rate_limit_per_minute,
        "admins": list(catalog.admins),
        "unused_keys": list(catalog.unused_keys),
    }
