"""Reading a YAML configuration - ours, or a Lumen admin's own file - into a Catalog.

Two dialects share one schema and one meaning: ours (``tokens:``, a ``models:``
rule mapping, ``access: needs_ack`` + ``notice``) and Lumen's versions 1-3
(``disabled``, ``needs_ack`` + ``ack_message``, flat ``max``/``refresh``/``starting``,
``model_access``, ``users`` keyed by email, ``rate_limiting``, ``app.database.url``).
Every mistake is a :class:`ConfigError` naming the entry and the field, e.g.
``models[1] 'gpt-4o': input_cost_per_million must be a number >= 0 (got 'cheap')``.
Keys Lumen reads that have no effect here (OAuth, themes, group ``rules``,
``projects`` ...) are collected in :attr:`Catalog.unused_keys`, so the server
can list them; a key that would change policy and cannot be honoured is an error.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from .catalog import (
    Catalog,
    EndpointSpec,
    GroupSpec,
    ModelSpec,
    Rule,
    Secret,
    UserSpec,
)
from .config_scopes import (
    UNLIMITED,
    ScopeContext,
    parse_model_access,
    parse_pool,
    parse_rate_limit,
    parse_rule,
    parse_rules,
)
from .config_scopes import parse_group as _parse_group
from .config_scopes import parse_user as _parse_user
from .config_values import (
    _bool,
    _coins,
    _count,
    _mapping,
    _optional_bool,
    _section,
    _strings,
    _text,
)
from .errors import ConfigError

__all__ = [
    "UNLIMITED",
    "load_config_file",
    "parse_config",
    "parse_endpoint",
    "parse_group",
    "parse_model",
    "parse_model_access",
    "parse_pool",
    "parse_rule",
    "parse_rules",
    "parse_user",
    "resolve_database_url",
]

#: Top-level sections that have a meaning here; any other is listed as unused.
SECTIONS = {"version", "api", "defaults", "models", "groups", "users", "admins"}
SECTIONS |= {"rate_limiting", "app"}

MODEL_FIELDS = {
    "name",
    "model_name",
    "input_cost_per_million",
    "output_cost_per_million",
    "endpoints",
    "active",
    "enabled",
    "disabled",
    "access",
    "needs_ack",
    "needs_consent",
    "ack_message",
    "notice",
    "description",
    "max_model_len",
    "max_input_tokens",
    "context_window",
    "max_output_tokens",
    "supports_function_calling",
    "supports_reasoning",
    "knowledge_cutoff",
    "input_modalities",
    "output_modalities",
}
#: Model fields Lumen reads that change nothing here (links, UI hints, audio prices -
#: the gateway serves no audio endpoints).
MODEL_FIELDS_UNUSED = {"url", "supports_vision", "audio_cost_per_hour", "audio_cost_per_minute"}


def load_config_file(path: Path, base: Catalog | None = None) -> Catalog:
    """Parse the YAML file at ``path``; ``base`` supplies what the file leaves out."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read configuration file {path}: {exc.strerror}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
    return parse_config(data if data is not None else {}, base=base, origin=str(path))


def resolve_database_url(url: str, config_dir: Path) -> str:
    """A relative SQLite path in ``app.database.url`` is relative to the YAML file."""
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/"):
        rest = url[len(prefix) :]
        if rest and not rest.startswith(":memory:"):
            return prefix + str((config_dir / rest).resolve())
    return url


def parse_config(data: Any, *, base: Catalog | None = None, origin: str = "config") -> Catalog:
    if not isinstance(data, Mapping):
        raise ConfigError(f"{origin}: the top level must be a mapping")
    version = data.get("version") or 1  # Lumen reads a missing version as 1
    if isinstance(version, str) and version.strip().isdigit():
        version = int(version)  # as Lumen does: version: "2"
    if isinstance(version, bool) or version not in (1, 2, 3):
        raise ConfigError(f"{origin}: version must be 1, 2 or 3 (got {version!r})")
    start = base or Catalog()
    unused = [str(key) for key in data if str(key) not in SECTIONS]
    app = _section(data.get("app"), "app")
    database_url, default_ack = _app_section(app, unused)
    api = _section(data.get("api"), "api")
    unused += [f"api.{key}" for key in api if key != "consent"]
    require_consent = _bool(api.get("consent", start.require_consent), "api.consent")

    defaults = _section(data.get("defaults"), "defaults")
    unknown = set(defaults) - {"tokens", "models"}
    if unknown:
        raise ConfigError(f"defaults: unknown field {sorted(unknown)[0]!r} (use tokens, models)")
    default_pool = start.default_pool
    token_defaults: Mapping[str, Any] | None = None
    if defaults.get("tokens") is not None:
        default_pool = parse_pool(defaults["tokens"], "defaults.tokens")
        token_defaults = defaults["tokens"]
    default_rule = start.default_rule
    raw_default = defaults.get("models")
    if isinstance(raw_default, Mapping):
        default_rule, ack = _model_defaults(raw_default)
        default_ack = ack if ack is not None else default_ack
    elif raw_default is not None:
        default_rule = parse_rule(raw_default, "defaults.models")

    ctx = ScopeContext(token_defaults=token_defaults, unused=unused)
    models = dict(start.models)
    if "models" in data:
        models = {}
        raw_models = data["models"] if data["models"] is not None else []
        if not isinstance(raw_models, list):
            raise ConfigError("models must be a list of model entries")
        for index, entry in enumerate(raw_models):
            model = parse_model(entry, index, default_ack=default_ack, unused=unused)
            if model.name in models:
                raise ConfigError(f"models[{index}] '{model.name}': name is used twice")
            models[model.name] = model
    groups = dict(start.groups)
    for name, entry in _section(data.get("groups"), "groups").items():
        groups[str(name)] = _parse_group(str(name), entry, ctx)
    users = dict(start.users)
    for name, entry in _section(data.get("users"), "users").items():
        users[str(name)] = _parse_user(str(name), entry, ctx)
    for name in sorted(ctx.graylisted):
        if name in models and not models[name].needs_consent:
            models[name] = replace(models[name], needs_consent=True)

    rate_limit = start.rate_limit_per_minute
    limits = _section(data.get("rate_limiting"), "rate_limiting")
    unused += [f"rate_limiting.{key}" for key in limits if key != "limit"]
    if "limit" in limits:
        rate_limit = parse_rate_limit(limits["limit"], "rate_limiting.limit")
    admins = start.admins
    if "admins" in data:
        admins = _strings(data["admins"], "admins") or ()
        if admins:
            unused.append("admins")
    return Catalog(
        models=models,
        groups=groups,
        users=users,
        default_pool=default_pool,
        default_rule=default_rule,
        require_consent=require_consent,
        database_url=database_url or start.database_url,
        rate_limit_per_minute=rate_limit,
        admins=admins,
        unused_keys=tuple(dict.fromkeys(unused)),
    )


def _app_section(app: Mapping[str, Any], unused: list[str]) -> tuple[str | None, str | None]:
    """``app.database.url`` and the legacy ``app.graylist_default_notice``; the rest is unused."""
    database_url: str | None = None
    for key, value in app.items():
        if key == "database" and value is not None:
            database = _mapping(value, "app.database")
            url = database.get("url")
            if url is not None:
                if not isinstance(url, str) or "://" not in url:
                    raise ConfigError("app.database.url must be a database URL")
                database_url = url
            unused += [f"app.database.{k}" for k in database if k != "url"]
        elif key != "graylist_default_notice":
            unused.append(f"app.{key}")
    notice = _text(app.get("graylist_default_notice"), "app.graylist_default_notice")
    return database_url, notice or None


def _model_defaults(raw: Mapping[str, Any]) -> tuple[Rule, str | None]:
    """Lumen's ``defaults.models: {access, ack_message}``; access defaults to blocked."""
    unknown = set(raw) - {"access", "ack_message"}
    if unknown:
        raise ConfigError(
            f"defaults.models: unknown field {sorted(unknown)[0]!r} (use access, ack_message)"
        )
    rule = parse_rule(raw.get("access", "blocked"), "defaults.models.access")
    ack = _text(raw.get("ack_message"), "defaults.models.ack_message")
    return rule, ack or None


def parse_model(
    entry: Any,
    index: int,
    *,
    default_ack: str | None = None,
    unused: list[str] | None = None,
) -> ModelSpec:
    where = f"models[{index}]"
    data = _mapping(entry, where)
    name = data.get("name", data.get("model_name"))
    if "name" in data and "model_name" in data and data["name"] != data["model_name"]:
        raise ConfigError(f"{where}: name and model_name differ; give one")
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"{where}: name is required and must be a non-empty string")
    where = f"{where} '{name}'"
    unknown = set(map(str, data)) - MODEL_FIELDS - MODEL_FIELDS_UNUSED
    if unknown:
        raise ConfigError(f"{where}: unknown field {sorted(unknown)[0]!r}")
    if unused is not None:
        unused += [f"models[].{key}" for key in sorted(MODEL_FIELDS_UNUSED & set(data))]
    access, needs_consent = _model_access(data, where)
    notice = _text(data.get("notice"), f"{where}: notice") or ""
    ack = _text(data.get("ack_message"), f"{where}: ack_message") or default_ack
    if ack:
        if notice and needs_consent and unused is not None:
            unused.append("models[].notice")
        notice = ack
    endpoints_raw = data.get("endpoints", [])
    if not isinstance(endpoints_raw, list):
        raise ConfigError(f"{where}: endpoints must be a list")
    endpoints = tuple(
        parse_endpoint(e, f"{where}: endpoints[{i}]", name) for i, e in enumerate(endpoints_raw)
    )
    context = [k for k in ("max_model_len", "max_input_tokens", "context_window") if k in data]
    if len(context) > 1:
        raise ConfigError(f"{where}: give the context window once ({' or '.join(context)})")
    modalities_in = data.get("input_modalities")
    modalities_out = data.get("output_modalities")
    return ModelSpec(
        name=name,
        input_price_micro=_coins(
            data.get("input_cost_per_million", 0), f"{where}: input_cost_per_million"
        ),
        output_price_micro=_coins(
            data.get("output_cost_per_million", 0), f"{where}: output_cost_per_million"
        ),
        endpoints=endpoints,
        active=_active(data, where),
        access=access,
        needs_consent=needs_consent,
        notice=notice,
        description=_text(data.get("description"), f"{where}: description"),
        max_model_len=_count(
            data.get(context[0]) if context else None, f"{where}: {context[0] if context else ''}"
        ),
        max_output_tokens=_count(data.get("max_output_tokens"), f"{where}: max_output_tokens"),
        supports_function_calling=_optional_bool(
            data.get("supports_function_calling"), f"{where}: supports_function_calling"
        ),
        supports_reasoning=_optional_bool(
            data.get("supports_reasoning"), f"{where}: supports_reasoning"
        ),
        knowledge_cutoff=_text(data.get("knowledge_cutoff"), f"{where}: knowledge_cutoff"),
        input_modalities=_strings(modalities_in, f"{where}: input_modalities"),
        output_modalities=_strings(modalities_out, f"{where}: output_modalities"),
    )


def _model_access(data: Mapping[str, Any], where: str) -> tuple[Rule | None, bool]:
    """The model's own rule and whether it needs a consent (``needs_ack`` is Lumen's word)."""
    flags = [k for k in ("needs_ack", "needs_consent") if k in data]
    needs_consent = any(_bool(data[k], f"{where}: {k}") for k in flags)
    if len(flags) == 2 and data["needs_ack"] != data["needs_consent"]:
        raise ConfigError(f"{where}: needs_ack and needs_consent differ; give one")
    access_raw = data.get("access")
    if access_raw is None:
        return None, needs_consent
    if str(access_raw).strip().lower() == "needs_ack":
        return Rule.ALLOWED, True
    return parse_rule(access_raw, f"{where}: access"), needs_consent


def _active(data: Mapping[str, Any], where: str) -> bool:
    """``disabled: true`` (Lumen) or ``active``/``enabled: false`` (ours, Lumen v1): off."""
    states = {
        key: _bool(data[key], f"{where}: {key}") != (key == "disabled")
        for key in ("disabled", "active", "enabled")
        if key in data
    }
    if len(set(states.values())) > 1:
        raise ConfigError(f"{where}: {' and '.join(states)} contradict each other")
    active = all(states.values())
    if not active and "disabled" not in states and "access" in data:
        # Lumen ignores a v1 'active: false' next to 'access'; this file would then mean
        # one thing to Lumen and another here.
        raise ConfigError(
            f"{where}: active: false next to access is ambiguous (Lumen ignores it); "
            "write disabled: true to turn the model off"
        )
    return active


def parse_group(name: str, entry: Any) -> GroupSpec:
    return _parse_group(name, entry)


def parse_user(name: str, entry: Any) -> UserSpec:
    return _parse_user(name, entry)


def parse_endpoint(entry: Any, where: str, model_name: str) -> EndpointSpec:
    data = _mapping(entry, where)
    url = data.get("url")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise ConfigError(f"{where}: url must be an http:// or https:// address")
    api_key = data.get("api_key", "")
    if api_key is None:
        api_key = ""
    if not isinstance(api_key, str):
        raise ConfigError(f"{where}: api_key must be a string")
    upstream = data.get("model", model_name)
    if not isinstance(upstream, str) or not upstream:
        raise ConfigError(f"{where}: model must be a non-empty string")
    return EndpointSpec(url=url.rstrip("/"), model=upstream, api_key=Secret(api_key))
