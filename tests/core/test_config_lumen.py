"""Lumen's own schema (versions 1-3), read with Lumen's meaning: each key, the policy it
resolves to, and the mistakes that must stop a server rather than change its policy.

The YAML here is written for these tests in Lumen's format; nothing is copied.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from lumen_jupyter.cli import main
from lumen_jupyter.core.access import resolve_access
from lumen_jupyter.core.catalog import Access, Catalog, PoolSpec, Rule
from lumen_jupyter.core.config import load_config_file, parse_config, resolve_database_url
from lumen_jupyter.core.errors import ConfigError
from lumen_jupyter.core.money import MICRO
from lumen_jupyter.core.policy import policy_report
from lumen_jupyter.core.pools import resolve_pool
from lumen_jupyter.store import Store, sqlite_url

SHIPPED_STYLE = """
app:
  name: Campus AI
  secret_key: ""
  database:
    url: postgresql://gw:pw@db.internal:5432/gateway
    pool_timeout: 10
oauth2:
  client_id:
  client_secret:
  scopes: openid email profile
admins:
  - root@campus.example
api:
  consent: true
  prometheus:
    enabled: false
rate_limiting:
  limit: "45 per minute"
groups:
  # Groups come from the admin UI; rules below assign them at login.
  # physics:
  #   rules:
  #     - field: member_of
  #       contains: physics
  #   max: 0
models:
  - name: big
    active: true
    input_cost_per_million: 3
    output_cost_per_million: 9
    endpoints:
      - url: https://llm.example/v1
        api_key: sk-one
"""

DEVELOPMENT_STYLE = """
version: 2
app:
  graylist_default_notice: old notice text
  database:
    url: sqlite:///local.db
defaults:
  models:
    access: blocked
    ack_message: Trained abroad; mind the bias.
  tokens:
    max: 30
    refresh: 0.2
    starting: 25
groups:
  lecturers:
    max: 60
    model_access:
      default: allowed
    rules:
      - field: affiliation
        contains: faculty@
  pupils:
    max: 8
    refresh: 0.01
    starting: 4
    model_access:
      default: blocked
      allowed: [echo]
  testers:
    model_access:
      allowed: [locked]
projects:
  default:
    max: 10
users:
  Maria@Campus.example:
    groups: [testers]
  default:
    groups: [everybody]
models:
  - name: echo
    endpoints:
      - {url: "http://localhost:7000/v1", api_key: k}
  - name: picky
    needs_ack: true
    endpoints:
      - {url: "http://localhost:7000/v1", api_key: k}
  - name: locked
    access: blocked
    endpoints:
      - {url: "http://localhost:7000/v1", api_key: k}
  - name: gone
    disabled: true
    endpoints:
      - {url: "http://localhost:7000/v1", api_key: k}
"""


def access_of(
    catalog: Catalog, model: str, username: str, extra: frozenset[str] = frozenset()
) -> Access:
    spec = catalog.models[model]
    groups = catalog.groups_of(username, extra)
    return resolve_access(spec, catalog.user(username), groups, catalog, None)


def test_a_shipped_style_file_loads_unchanged() -> None:
    catalog = parse_config(yaml.safe_load(SHIPPED_STYLE))
    assert catalog.groups == {}  # every group commented out: None, not an error
    assert catalog.default_pool is None  # Lumen's default pool is max 0: nobody may spend
    assert catalog.default_rule is Rule.BLOCKED
    assert access_of(catalog, "big", "anyone") is Access.BLOCKED
    assert catalog.database_url == "postgresql://gw:pw@db.internal:5432/gateway"
    assert catalog.rate_limit_per_minute == 45
    assert catalog.admins == ("root@campus.example",)
    assert set(catalog.unused_keys) == {
        "oauth2",
        "app.name",
        "app.secret_key",
        "app.database.pool_timeout",
        "api.prometheus",
        "admins",
    }


@pytest.fixture
def dev() -> Catalog:
    return parse_config(yaml.safe_load(DEVELOPMENT_STYLE))


def test_a_development_style_file_has_lumens_policy(dev: Catalog) -> None:
    # defaults.models as a mapping: the access and the default acknowledgement text.
    assert dev.default_rule is Rule.BLOCKED
    assert dev.models["picky"].needs_consent
    assert dev.models["picky"].notice == "Trained abroad; mind the bias."  # beats app.graylist_...
    assert not dev.models["gone"].active
    # Group pools: flat fields, the missing ones from defaults.tokens; starting defaults to max.
    assert dev.groups["lecturers"].pool == PoolSpec(60 * MICRO, 200_000, 60 * MICRO)
    assert dev.groups["pupils"].pool == PoolSpec(8 * MICRO, 10_000, 4 * MICRO)
    assert dev.groups["testers"].pool is None
    assert dev.default_pool == PoolSpec(30 * MICRO, 200_000, 25 * MICRO)
    # A user keyed by email, served under a username, with the email known.
    maria = dev.for_user("maria", "maria@campus.example")
    assert [g.name for g in maria.groups_of("maria")] == ["testers"]
    assert access_of(maria, "locked", "maria") is Access.ALLOWED  # a group rule beats access
    assert access_of(dev, "locked", "someone", frozenset({"lecturers"})) is Access.BLOCKED
    assert access_of(dev, "echo", "someone", frozenset({"lecturers"})) is Access.ALLOWED
    assert access_of(dev, "picky", "someone", frozenset({"lecturers"})) is Access.NEEDS_ACK
    assert access_of(dev, "picky", "someone", frozenset({"pupils"})) is Access.BLOCKED
    assert access_of(dev, "echo", "someone", frozenset({"pupils"})) is Access.ALLOWED
    assert access_of(dev, "echo", "someone") is Access.BLOCKED  # no group: the global default
    assert access_of(dev, "gone", "someone", frozenset({"lecturers"})) is Access.BLOCKED
    pool = resolve_pool(None, dev.groups_of("someone", frozenset({"lecturers", "pupils"})), None)
    assert pool is not None and pool.source == "group:lecturers"  # the highest max wins
    assert {"projects", "groups.lecturers.rules"} <= set(dev.unused_keys)


def test_the_users_default_entry_and_the_default_group_apply_to_everyone() -> None:
    catalog = parse_config(
        {
            "groups": {
                "default": {"max": 3},
                "everybody": {"model_access": {"default": "allowed"}},
            },
            "users": {"default": {"groups": ["everybody"]}},
            "models": [{"name": "m"}],
        }
    )
    assert [g.name for g in catalog.groups_of("anyone")] == ["default", "everybody"]
    assert access_of(catalog, "m", "anyone") is Access.ALLOWED
    pool = resolve_pool(None, catalog.groups_of("anyone"), catalog.default_pool)
    assert pool is not None and pool.spec.max_micro == 3 * MICRO
    with pytest.raises(ConfigError, match=r"users\.default: this entry applies to everyone"):
        parse_config({"users": {"default": {"max": 5}}})


def test_users_keyed_by_email_and_members_listed_by_email() -> None:
    catalog = parse_config(
        {
            "defaults": {"tokens": {"max": 1}},
            "groups": {"lab": {"members": ["Ada@Example.org"], "max": 9}},
            "users": {"ada@example.org": {"max": 4, "model_access": {"allowed": ["m"]}}},
            "models": [{"name": "m"}],
        }
    )
    assert access_of(catalog, "m", "ada") is Access.BLOCKED  # unknown until the email is known
    mine = catalog.for_user("ada", "ADA@example.org")
    assert mine.users["ada"].pool == PoolSpec(4 * MICRO, 0, 4 * MICRO)
    assert mine.users["ada"].email == "ada@example.org"
    assert [g.name for g in mine.groups_of("ada")] == ["lab"]
    assert access_of(mine, "m", "ada") is Access.ALLOWED
    # A username that is the email needs no email at all.
    assert catalog.for_user("ada@example.org").user("ada@example.org").pool is not None


@pytest.mark.parametrize(
    ("access", "expected"),
    [
        ({"default": "allowed", "blocked": ["b"]}, {"a": Access.ALLOWED, "b": Access.BLOCKED}),
        ({"default": "blocked", "allowed": ["a"]}, {"a": Access.ALLOWED, "b": Access.BLOCKED}),
        ({"whitelist": ["a"], "blacklist": ["b"]}, {"a": Access.ALLOWED, "b": Access.BLOCKED}),
        ({"whitelist": ["*"], "blacklist": ["b"]}, {"a": Access.ALLOWED, "b": Access.BLOCKED}),
        ({"default": "whitelist"}, {"a": Access.ALLOWED, "b": Access.ALLOWED}),
        ({"graylist": ["a"]}, {"a": Access.NEEDS_ACK, "b": Access.BLOCKED}),
        ("blocked", {"a": Access.BLOCKED, "b": Access.BLOCKED}),
    ],
)
def test_every_form_of_model_access(access: Any, expected: dict[str, Access]) -> None:
    catalog = parse_config(
        {
            "groups": {"g": {"model_access": access}},
            "models": [{"name": "a"}, {"name": "b"}],
        }
    )
    got = {name: access_of(catalog, name, "u", frozenset({"g"})) for name in expected}
    assert got == expected


def test_a_users_older_list_form_allows_models() -> None:
    catalog = parse_config(
        {"users": {"u@x.org": {"models": ["a"]}}, "models": [{"name": "a"}, {"name": "b"}]}
    )
    mine = catalog.for_user("u", "u@x.org")
    assert access_of(mine, "a", "u") is Access.ALLOWED
    assert access_of(mine, "b", "u") is Access.BLOCKED


def test_model_keys() -> None:
    catalog = parse_config(
        {
            "version": 3,
            "models": [
                {"model_name": "by-model-name", "context_window": 4096, "url": "https://card"},
                {"name": "v1-off", "active": False},
                {"name": "own-ack", "needs_ack": True, "ack_message": "A", "notice": "N"},
                {"name": "our-notice", "access": "needs_ack", "notice": "N"},
                {"name": "plain-ack", "needs_ack": True},
            ],
        }
    )
    assert catalog.models["by-model-name"].max_model_len == 4096
    assert not catalog.models["v1-off"].active
    assert catalog.models["own-ack"].notice == "A"
    assert catalog.models["our-notice"].notice == "N"
    assert catalog.models["plain-ack"].needs_consent and catalog.models["plain-ack"].notice == ""
    assert {"models[].url", "models[].notice"} <= set(catalog.unused_keys)


def test_rate_limit_forms() -> None:
    def limit(value: Any) -> int | None:
        return parse_config({"rate_limiting": {"limit": value}}).rate_limit_per_minute

    assert limit("30 per minute") == 30
    assert limit("30/minute") == 30
    assert limit("12 per 1 minute") == 12
    assert limit("8 PER MINUTES") == 8
    assert limit("50 per minute; 20 per minute") == 20
    assert limit(7) == 7
    assert parse_config({}).rate_limit_per_minute is None


def test_database_url_relative_to_the_file(tmp_path: Path) -> None:
    assert resolve_database_url("sqlite:///x.db", tmp_path) == f"sqlite:///{tmp_path / 'x.db'}"
    assert resolve_database_url("sqlite:////abs/x.db", tmp_path) == "sqlite:////abs/x.db"
    assert resolve_database_url("postgresql://h/db", tmp_path) == "postgresql://h/db"


@pytest.mark.parametrize("version", [None, 1, 2, 3, "2"])
def test_versions(version: Any) -> None:
    catalog = parse_config({"version": version, "models": [{"name": "m", "disabled": True}]})
    assert not catalog.models["m"].active


@pytest.mark.parametrize("version", [4, "two", True, 2.5])
def test_unknown_versions(version: Any) -> None:
    with pytest.raises(ConfigError, match="version must be 1, 2 or 3"):
        parse_config({"version": version})


def test_empty_sections_load() -> None:
    catalog = parse_config(
        {"app": None, "api": None, "defaults": None, "groups": None, "users": None, "models": None}
    )
    assert (catalog.models, catalog.groups, catalog.users) == ({}, {}, {})
    assert parse_config({"groups": {"g": None}}).groups["g"].pool is None


BAD = [
    (
        "disabled-vs-active",
        {"models": [{"name": "x", "disabled": True, "active": True}]},
        "disabled and active contradict",
    ),
    (
        "active-false-with-access",
        {"models": [{"name": "x", "active": False, "access": "allowed"}]},
        "write disabled: true",
    ),
    ("names-differ", {"models": [{"name": "x", "model_name": "y"}]}, "name and model_name differ"),
    (
        "unknown-model-field",
        {"models": [{"name": "x", "input_cost_per_milion": 1}]},
        "unknown field 'input_cost_per_milion'",
    ),
    (
        "two-context-windows",
        {"models": [{"name": "x", "context_window": 1, "max_model_len": 2}]},
        "context window once",
    ),
    ("pool-twice", {"groups": {"g": {"max": 1, "tokens": {"max": 2}}}}, "give the pool once"),
    ("pool-without-any-max", {"groups": {"g": {"refresh": 1}}}, "groups.g: max is required"),
    ("group-list-of-models", {"groups": {"g": {"models": ["a"]}}}, "model_access: {allowed"),
    (
        "rules-twice",
        {"users": {"u": {"models": ["a"], "model_access": {"allowed": ["a"]}}}},
        "models or model_access",
    ),
    (
        "allowed-and-blocked",
        {"groups": {"g": {"model_access": {"allowed": ["a"], "blocked": ["a"]}}}},
        "listed as allowed and as blocked",
    ),
    (
        "bad-access-word",
        {"groups": {"g": {"model_access": {"default": "graylisted"}}}},
        "groups.g.model_access.default must be 'allowed' or 'blocked'",
    ),
    (
        "unknown-access-list",
        {"groups": {"g": {"model_access": {"greylist": ["a"]}}}},
        "unknown field 'greylist'",
    ),
    ("unknown-group-field", {"groups": {"g": {"maximum": 1}}}, "unknown field 'maximum'"),
    ("hourly-rate-limit", {"rate_limiting": {"limit": "1000 per hour"}}, "cannot be honoured"),
    ("two-minute-limit", {"rate_limiting": {"limit": "10 per 2 minutes"}}, "cannot be honoured"),
    ("unreadable-rate-limit", {"rate_limiting": {"limit": "lots"}}, "cannot read 'lots'"),
    ("bad-database-url", {"app": {"database": {"url": "nowhere"}}}, "app.database.url"),
    (
        "bad-defaults-models",
        {"defaults": {"models": {"acces": "allowed"}}},
        "unknown field 'acces'",
    ),
]


@pytest.mark.parametrize(("document", "fragment"), [pytest.param(*c[1:], id=c[0]) for c in BAD])
def test_what_cannot_be_honoured_is_an_error(document: Any, fragment: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(document)
    assert fragment in err.value.message


def test_policy_report_and_check_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(DEVELOPMENT_STYLE, encoding="utf-8")
    report = policy_report(load_config_file(path))
    scopes = {s["scope"]: s for s in report["scopes"]}
    assert scopes["everyone else"]["pool"]["source"] == "default"
    assert scopes["group pupils"]["pool"] == {
        "state": "limited",
        "source": "group:pupils",
        "max": "8",
        "refresh_per_hour": "0.01",
        "starting": "4",
    }
    assert scopes["group pupils"]["access"] == {
        "echo": "allowed",
        "picky": "blocked",
        "locked": "blocked",
        "gone": "disabled",
    }
    assert scopes["user Maria@Campus.example"]["access"]["locked"] == "allowed"

    assert main(["check-config", str(path), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["database_url"] == f"sqlite:///{tmp_path / 'local.db'}"
    assert printed["scopes"] == report["scopes"]
    assert main(["check-config", str(path)]) == 0
    text = capsys.readouterr().out
    assert "  group pupils (groups: pupils)\n" in text  # users.default's 'everybody' is no group
    assert "    pool: 8 coins max, +0.01/hour, starts at 4 (group:pupils)" in text
    assert "Read but not used here:" in text and "  groups.lecturers.rules" in text

    path.write_text("groups:\n  g:\n    max: lots\n", encoding="utf-8")
    assert main(["check-config", str(path)]) == 2
    assert "groups.g.max must be a number (got 'lots')" in capsys.readouterr().err


def test_the_cli_uses_the_files_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LUMEN_DATABASE_URL", raising=False)
    path = tmp_path / "config.yaml"
    path.write_text("app:\n  database:\n    url: sqlite:///gateway.db\n", encoding="utf-8")
    assert main(["users", "--config", str(path)]) == 2
    assert f"no database at {tmp_path / 'gateway.db'}" in capsys.readouterr().err
    store = Store(sqlite_url(tmp_path / "gateway.db"))
    store.migrate()
    store.dispose()
    assert main(["grant", "ada", "3", "--create", "--config", str(path), "--json"]) == 0
    capsys.readouterr()
    assert main(["users", "--config", str(path), "--json"]) == 0
    assert [u["username"] for u in json.loads(capsys.readouterr().out)["users"]] == ["ada"]
