"""Pools and model-access rules of a scope (the defaults, a group, a user), in both dialects.

Ours writes a pool as ``tokens: {max, refresh, starting}`` and rules as a
``models:`` mapping; Lumen writes the pool fields flat on the scope (or under
``pool:`` for a user) and rules as ``model_access: {default, allowed, blocked}``,
with the older ``whitelist``/``blacklist``/``graylist`` lists and a user's
``models: [..]`` allow-list.  Every form reads into the same
:class:`~lumen_jupyter.core.catalog.PoolSpec` and rule maps, with one meaning:
fields a scope's pool leaves out come from ``defaults.tokens`` (Lumen's rule).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .catalog import EVERYONE, GroupSpec, PoolSpec, Rule, UserSpec
from .config_values import _bool, _coins, _mapping, _section, _strings, _text
from .errors import ConfigError

UNLIMITED = -2
POOL_FIELDS = ("max", "refresh", "starting")

_RULE_WORDS = {
    "allowed": Rule.ALLOWED,
    "blocked": Rule.BLOCKED,
    # Lumen's version-1 words, still accepted by Lumen.
    "whitelist": Rule.ALLOWED,
    "blacklist": Rule.BLOCKED,
    "graylist": Rule.ALLOWED,  # allowed, and the model then needs a consent
}
_ACCESS_LISTS = ("allowed", "blocked", "whitelist", "blacklist", "graylist")

GROUP_FIELDS = {"tokens", "models", "model_access", "members", "active", "rules", *POOL_FIELDS}
USER_FIELDS = {
    "tokens",
    "pool",
    "models",
    "model_access",
    "groups",
    "email",
    "display_name",
    "name",
    *POOL_FIELDS,
}


@dataclass
class ScopeContext:
    """What parsing one scope needs from the rest of the file, and what it reports back."""

    token_defaults: Mapping[str, Any] | None = None
    unused: list[str] = field(default_factory=list)
    #: Models named in a ``graylist``: Lumen makes each of them need a consent.
    graylisted: set[str] = field(default_factory=set)


def parse_rule(value: Any, where: str) -> Rule:
    rule = _RULE_WORDS.get(str(value).strip().lower()) if isinstance(value, str) else None
    if rule is None:
        raise ConfigError(f"{where} must be 'allowed' or 'blocked' (got {value!r})")
    return rule


def parse_pool(value: Any, where: str, fallback: Mapping[str, Any] | None = None) -> PoolSpec:
    """``{max, refresh, starting}`` in coins; ``max: -2`` is unlimited, 0 blocked.

    Fields left out come from ``fallback`` (``defaults.tokens``); ``starting``
    defaults to this pool's ``max``.  Without ``max`` here or in the fallback the
    pool is an error rather than a guess.
    """
    entry = _mapping(value, where)
    unknown = set(entry) - set(POOL_FIELDS)
    if unknown:
        raise ConfigError(
            f"{where}: unknown field {sorted(unknown)[0]!r} (use max, refresh, starting)"
        )
    fallback = fallback or {}
    if "max" in entry:
        raw_max = entry["max"]
    elif "max" in fallback:
        raw_max = fallback["max"]
    else:
        raise ConfigError(f"{where}: max is required (-2 unlimited, 0 blocked, else coins)")
    maximum = _coins(raw_max, f"{where}.max", allow_negative=True)
    if maximum < 0 and raw_max != UNLIMITED:
        raise ConfigError(f"{where}.max must be -2 (unlimited), 0 (blocked) or positive")
    if raw_max == UNLIMITED:
        return PoolSpec(max_micro=None)  # refresh and starting mean nothing without a cap
    refresh = _coins(
        entry.get("refresh", fallback.get("refresh", 0)), f"{where}.refresh", allow_negative=True
    )
    if "starting" in entry:
        raw_starting = entry["starting"]
    elif "max" in entry or "starting" not in fallback:
        raw_starting = raw_max
    else:
        raw_starting = fallback["starting"]
    starting = _coins(raw_starting, f"{where}.starting", allow_negative=True)
    return PoolSpec(
        max_micro=maximum,
        refresh_micro=refresh,
        starting_micro=starting,
    )


def scope_pool(data: Mapping[str, Any], where: str, ctx: ScopeContext) -> PoolSpec | None:
    """The pool a group or user entry sets, in whichever form it uses, or ``None``."""
    forms = [key for key in ("tokens", "pool") if key in data]
    flat = {key: data[key] for key in POOL_FIELDS if key in data}
    if flat:
        forms.append("max/refresh/starting")
    if len(forms) > 1:
        raise ConfigError(f"{where}: give the pool once, as {' or '.join(forms)}, not both")
    if not forms:
        return None
    if flat:
        return parse_pool(flat, where, ctx.token_defaults)
    key = forms[0]
    return parse_pool(data[key], f"{where}.{key}", ctx.token_defaults)


def parse_rules(value: Any, where: str) -> tuple[dict[str, Rule], Rule | None]:
    """Our ``models:`` form: a default word, or ``{default: .., <model>: ..}``."""
    if value is None:
        return {}, None
    if isinstance(value, str):
        return {}, parse_rule(value, where)
    rules: dict[str, Rule] = {}
    default: Rule | None = None
    for model, rule in _mapping(value, where).items():
        if str(model) == "default":
            default = parse_rule(rule, f"{where}.default")
        else:
            rules[str(model)] = parse_rule(rule, f"{where}.{model}")
    return rules, default


def parse_model_access(
    value: Any, where: str, ctx: ScopeContext
) -> tuple[dict[str, Rule], Rule | None]:
    """Lumen's ``model_access: {default, allowed: [..], blocked: [..]}`` and older lists.

    ``*`` in a list sets the scope's default; a ``graylist`` entry allows the model
    and makes it need a consent (Lumen moves the consent onto the model).
    """
    if value is None:
        return {}, None
    if isinstance(value, str):
        return {}, parse_rule(value, where)
    data = _mapping(value, where)
    unknown = set(data) - {"default", *_ACCESS_LISTS}
    if unknown:
        raise ConfigError(
            f"{where}: unknown field {sorted(unknown)[0]!r} (use default, allowed, blocked)"
        )
    rules: dict[str, Rule] = {}
    default: Rule | None = None
    for key in _ACCESS_LISTS:
        rule = _RULE_WORDS[key]
        for name in _strings(data.get(key), f"{where}.{key}") or ():
            if name == "*":
                default = rule
                continue
            if rules.get(name, rule) is not rule:
                raise ConfigError(f"{where}: model {name!r} is listed as allowed and as blocked")
            rules[name] = rule
            if key == "graylist":
                ctx.graylisted.add(name)
    if "default" in data:
        default = parse_rule(data["default"], f"{where}.default")
    return rules, default


def scope_rules(
    data: Mapping[str, Any], where: str, ctx: ScopeContext, *, lists_allowed: bool
) -> tuple[dict[str, Rule], Rule | None]:
    """A scope's rules from ``models`` (ours; a user's list is Lumen's) or ``model_access``."""
    if "models" in data and "model_access" in data:
        raise ConfigError(f"{where}: give model rules once, as models or model_access, not both")
    if "model_access" in data:
        return parse_model_access(data["model_access"], f"{where}.model_access", ctx)
    models = data.get("models")
    if isinstance(models, list):
        if not lists_allowed:
            raise ConfigError(
                f"{where}.models: a list of models is Lumen's retired group form, which Lumen "
                "ignores; write model_access: {allowed: [...]} to grant them"
            )
        names = _strings(models, f"{where}.models") or ()
        return {name: Rule.ALLOWED for name in names}, None
    return parse_rules(models, f"{where}.models")


def _check_fields(data: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = set(map(str, data)) - allowed
    if unknown:
        raise ConfigError(
            f"{where}: unknown field {sorted(unknown)[0]!r} (known: {', '.join(sorted(allowed))})"
        )


def parse_group(name: str, entry: Any, ctx: ScopeContext | None = None) -> GroupSpec:
    ctx = ctx or ScopeContext()
    where = f"groups.{name}"
    data = _section(entry, where)
    _check_fields(data, GROUP_FIELDS, where)
    if "rules" in data:
        ctx.unused.append(f"{where}.rules")
    rules, default = scope_rules(data, where, ctx, lists_allowed=False)
    return GroupSpec(
        name=name,
        pool=scope_pool(data, where, ctx),
        rules=rules,
        default_rule=default,
        members=frozenset(_strings(data.get("members"), f"{where}.members") or ()),
        active=_bool(data.get("active", True), f"{where}.active"),
    )


def parse_user(name: str, entry: Any, ctx: ScopeContext | None = None) -> UserSpec:
    ctx = ctx or ScopeContext()
    where = f"users.{name}"
    data = _section(entry, where)
    _check_fields(data, USER_FIELDS, where)
    if name == EVERYONE and set(data) - {"groups"}:
        raise ConfigError(
            f"{where}: this entry applies to everyone and may only list groups "
            "(set everyone's pool and access under defaults.tokens and defaults.models)"
        )
    rules, default = scope_rules(data, where, ctx, lists_allowed=True)
    return UserSpec(
        name=name,
        pool=scope_pool(data, where, ctx),
        rules=rules,
        default_rule=default,
        groups=frozenset(_strings(data.get("groups"), f"{where}.groups") or ()),
        email=_text(data.get("email"), f"{where}.email"),
        display_name=_text(data.get("display_name", data.get("name")), f"{where}.display_name"),
    )


_LIMIT = re.compile(
    r"^\s*(\d+)\s*(?:per|/)\s*(\d+)?\s*(second|minute|min|hour|day|month|year)s?\s*$",
    re.IGNORECASE,
)


def parse_rate_limit(value: Any, where: str) -> int:
    """``rate_limiting.limit`` as calls per minute per key: ``"30 per minute"``, ``"30/minute"``.

    Lumen takes any limit of its rate-limit library (``"1000 per hour"``, several
    joined by ``;``); the gateway counts calls in a one-minute window, so a limit
    over another period would not be what the file says - it is an error.
    """
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where} must be like '30 per minute' (got {value!r})")
    limits: list[int] = []
    for part in re.split(r"[;,]", value):
        if not part.strip():
            continue
        match = _LIMIT.match(part)
        if match is None:
            raise ConfigError(f"{where}: cannot read {part.strip()!r} (write '30 per minute')")
        count, multiple, unit = int(match[1]), int(match[2] or 1), match[3].lower()
        if unit not in ("minute", "min") or multiple != 1:
            raise ConfigError(
                f"{where}: {part.strip()!r} cannot be honoured here: the gateway limits calls "
                "per minute; write it as 'N per minute'"
            )
        limits.append(count)
    if not limits:
        raise ConfigError(f"{where} must be like '30 per minute' (got {value!r})")
    return min(limits)
