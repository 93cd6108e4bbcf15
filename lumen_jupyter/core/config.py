"""Reading a Lumen-style YAML configuration (version 2 subset) into a Catalog.

Every mistake is reported as a :class:`ConfigError` naming the entry and the
field, e.g. ``models[1] 'gpt-4o': input_cost_per_million must be a number >= 0
(got 'cheap')`` - never a bare traceback.  An admin's existing Lumen file works:
unknown top-level sections (``app``, ``oauth2``, ``chat`` ...) are ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from .catalog import (
    Catalog,
    EndpointSpec,
    GroupSpec,
    ModelSpec,
    PoolSpec,
    Rule,
    Secret,
    UserSpec,
)
from .errors import ConfigError
from .money import coins_to_micro

UNLIMITED = -2


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


def parse_config(data: Any, *, base: Catalog | None = None, origin: str = "config") -> Catalog:
    if not isinstance(data, Mapping):
        raise ConfigError(f"{origin}: the top level must be a mapping")
    version = data.get("version", 2)
    if version not in (1, 2, 3):
        raise ConfigError(f"{origin}: version must be 1, 2 or 3 (got {version!r})")
    start = base or Catalog()
    defaults = _mapping(data.get("defaults", {}), "defaults")
    default_pool = start.default_pool
    if "tokens" in defaults:
        default_pool = parse_pool(defaults["tokens"], "defaults.tokens")
    default_rule = start.default_rule
    if "models" in defaults:
        default_rule = parse_rule(defaults["models"], "defaults.models")
    api = _mapping(data.get("api", {}), "api")
    require_consent = _bool(api.get("consent", start.require_consent), "api.consent")
    models = dict(start.models)
    if "models" in data:
        models = {}
        raw_models = data["models"]
        if not isinstance(raw_models, list):
            raise ConfigError("models must be a list of model entries")
        for index, entry in enumerate(raw_models):
            model = parse_model(entry, index)
            if model.name in models:
                raise ConfigError(f"models[{index}] '{model.name}': name is used twice")
            models[model.name] = model
    groups = dict(start.groups)
    for name, entry in _mapping(data.get("groups", {}), "groups").items():
        groups[str(name)] = parse_group(str(name), entry)
    users = dict(start.users)
    for name, entry in _mapping(data.get("users", {}), "users").items():
        users[str(name)] = parse_user(str(name), entry)
    return Catalog(
        models=models,
        groups=groups,
        users=users,
        default_pool=default_pool,
        default_rule=default_rule,
        require_consent=require_consent,
    )


def parse_pool(value: Any, where: str) -> PoolSpec:
    """``{max, refresh, starting}`` in coins; ``max: -2`` is unlimited, 0 blocked."""
    entry = _mapping(value, where)
    unknown = set(entry) - {"max", "refresh", "starting"}
    if unknown:
        raise ConfigError(
            f"{where}: unknown field {sorted(unknown)[0]!r} (use max, refresh, starting)"
        )
    if "max" not in entry:
        raise ConfigError(f"{where}: max is required (-2 unlimited, 0 blocked, else coins)")
    raw_max = entry["max"]
    maximum = _coins(raw_max, f"{where}.max", allow_negative=True)
    if maximum < 0 and raw_max != UNLIMITED:
        raise ConfigError(f"{where}.max must be -2 (unlimited), 0 (blocked) or positive")
    refresh = _coins(entry.get("refresh", 0), f"{where}.refresh", allow_negative=True)
    starting = _coins(
        entry.get("starting", 0 if raw_max == UNLIMITED else raw_max),
        f"{where}.starting",
        allow_negative=True,
    )
    return PoolSpec(
        max_micro=None if raw_max == UNLIMITED else maximum,
        refresh_micro=refresh,
        starting_micro=starting,
    )


def parse_rule(value: Any, where: str) -> Rule:
    try:
        return Rule(str(value).lower())
    except ValueError:
        raise ConfigError(f"{where} must be 'allowed' or 'blocked' (got {value!r})") from None


def parse_model(entry: Any, index: int) -> ModelSpec:
    where = f"models[{index}]"
    data = _mapping(entry, where)
    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"{where}: name is required and must be a non-empty string")
    where = f"{where} '{name}'"
    access_raw = data.get("access")
    needs_consent = _bool(data.get("needs_consent", False), f"{where}: needs_consent")
    access: Rule | None = None
    if access_raw is not None:
        if str(access_raw).lower() == "needs_ack":
            access, needs_consent = Rule.ALLOWED, True
        else:
            access = parse_rule(access_raw, f"{where}: access")
    endpoints_raw = data.get("endpoints", [])
    if not isinstance(endpoints_raw, list):
        raise ConfigError(f"{where}: endpoints must be a list")
    endpoints = tuple(
        parse_endpoint(e, f"{where}: endpoints[{i}]", name) for i, e in enumerate(endpoints_raw)
    )
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
        active=_bool(data.get("active", data.get("enabled", True)), f"{where}: active"),
        access=access,
        needs_consent=needs_consent,
        notice=_text(data.get("notice", ""), f"{where}: notice") or "",
        description=_text(data.get("description"), f"{where}: description"),
        max_model_len=_count(
            data.get("max_model_len", data.get("max_input_tokens")),
            f"{where}: max_model_len",
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
    return EndpointSpec(
        url=url.rstrip("/"),
        model=upstream,
        api_key=Secret(api_key),
        **parse_endpoint_transport(data, where),
    )


def parse_endpoint_transport(data: Mapping[str, Any], where: str) -> dict[str, Any]:
    """An endpoint's ``proxy``, ``verify`` (true, false or a CA bundle's path),
    ``ca_certs``, ``client_cert`` and ``client_key``; files must exist."""
    found: dict[str, Any] = {}
    proxy = data.get("proxy")
    if proxy is not None:
        if not isinstance(proxy, str) or not proxy.startswith(("http://", "https://")):
            raise ConfigError(f"{where}: proxy must be an http:// or https:// address")
        found["proxy"] = Secret(proxy)
    verify = data.get("verify")
    if isinstance(verify, str):
        found["ca_certs"] = verify
    elif verify is not None:
        found["verify"] = _bool(verify, f"{where}: verify")
    for name in ("ca_certs", "client_cert", "client_key"):
        value = data.get(name)
        if value is not None:
            found[name] = _text(value, f"{where}: {name}")
    for name in ("ca_certs", "client_cert", "client_key"):
        path = found.get(name)
        if path is not None and not Path(path).expanduser().is_file():
            raise ConfigError(f"{where}: {name} names no readable file: {path}")
        if path is not None:
            found[name] = str(Path(path).expanduser())
    if "client_key" in found and "client_cert" not in found:
        raise ConfigError(f"{where}: client_key needs client_cert")
    return found


def parse_rules(value: Any, where: str) -> tuple[dict[str, Rule], Rule | None]:
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


def parse_group(name: str, entry: Any) -> GroupSpec:
    where = f"groups.{name}"
    data = _mapping(entry if entry is not None else {}, where)
    rules, default = parse_rules(data.get("models"), f"{where}.models")
    pool = parse_pool(data["tokens"], f"{where}.tokens") if "tokens" in data else None
    return GroupSpec(
        name=name,
        pool=pool,
        rules=rules,
        default_rule=default,
        members=frozenset(_strings(data.get("members"), f"{where}.members") or ()),
        active=_bool(data.get("active", True), f"{where}.active"),
    )


def parse_user(name: str, entry: Any) -> UserSpec:
    where = f"users.{name}"
    data = _mapping(entry if entry is not None else {}, where)
    rules, default = parse_rules(data.get("models"), f"{where}.models")
    pool = parse_pool(data["tokens"], f"{where}.tokens") if "tokens" in data else None
    return UserSpec(
        name=name,
        pool=pool,
        rules=rules,
        default_rule=default,
        groups=frozenset(_strings(data.get("groups"), f"{where}.groups") or ()),
        email=_text(data.get("email"), f"{where}.email"),
        display_name=_text(data.get("display_name", data.get("name")), f"{where}.display_name"),
    )


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where} must be a mapping (got {type(value).__name__})")
    return value


def _coins(value: Any, where: str, *, allow_negative: bool = False) -> int:
    try:
        micro = coins_to_micro(value)
    except ValueError:
        raise ConfigError(f"{where} must be a number (got {value!r})") from None
    if micro < 0 and not allow_negative:
        raise ConfigError(f"{where} must be a number >= 0 (got {value!r})")
    return micro


def _bool(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    raise ConfigError(f"{where} must be true or false (got {value!r})")


def _optional_bool(value: Any, where: str) -> bool | None:
    return None if value is None else _bool(value, where)


def _text(value: Any, where: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return str(value)
    raise ConfigError(f"{where} must be text (got {type(value).__name__})")


def _count(value: Any, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{where} must be a positive whole number (got {value!r})")
    return value


def _strings(value: Any, where: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where} must be a list of strings")
    return tuple(value)
